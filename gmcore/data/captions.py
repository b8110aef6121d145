"""Captions made from digit labels, and the word-level vocabulary that tokenizes them (for
glide-core, :mod:`gmcore.models.diffusion.glide_core`).

A caption is a template filled with the digit's English word or its numeral: the template
``"a handwritten {word}"`` gives ``"a handwritten seven"`` for label 7, ``"the digit {num}"``
gives ``"the digit 7"``. :data:`TRAIN_TEMPLATES` are the only ones a model sees in training;
:data:`HELD_OUT_TEMPLATES` recombine the same words in new phrasings (and swap word and numeral
forms), for the test of whether the model reads the digit out of a caption it never saw.

The vocabulary (:data:`VOCAB`) is fixed and small: two special tokens, ``<pad>`` (id 0) and
``<eot>`` (id 1, the end of every caption), then every word of the templates, the ten digit words
and the ten numerals, in sorted order. Every word of a held-out template also occurs in a
training template, so none of them has an untrained embedding. Tokenizing lowercases the
caption, drops the punctuation ``. , ! ? ; :`` and splits it on whitespace; a word outside the
vocabulary is an error that names it. :func:`encode` lays captions out as fixed-length rows,
*left*-padded, so that the ``<eot>`` token always sits in the last position (the one a text
encoder pools). The empty caption (``""``: ``<eot>`` alone) is the null condition of
classifier-free guidance.

>>> caption(7, "a handwritten {word}")
'a handwritten seven'
>>> encode(["the digit 7", ""]).tolist()
[[0, 0, 0, 0, 0, 28, 14, 9, 1], [0, 0, 0, 0, 0, 0, 0, 0, 1]]
>>> tokenize("a handwritten eleven")
Traceback (most recent call last):
...
ValueError: unknown word 'eleven' in the caption 'a handwritten eleven' (the vocabulary: ...)
"""
from __future__ import annotations

import re

import numpy as np

__all__ = ["DIGIT_WORDS", "TRAIN_TEMPLATES", "HELD_OUT_TEMPLATES", "VOCAB", "PAD", "EOT", "CONTEXT",
           "caption", "digit_captions", "tokenize", "encode"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {word}: the digit's English word, {num}: its numeral
TRAIN_TEMPLATES = (
    "{word}",
    "{num}",
    "a handwritten {word}",
    "the digit {num}",
    "the number {word}",
    "a picture of the digit {num}",
    "a drawing of the number {num}",
    "an image of the digit {word}",
)
# new phrasings of the training words, numeral and word forms swapped: for the test figure only
HELD_OUT_TEMPLATES = (
    "a handwritten {num}",
    "the digit {word}",
    "the number {num}",
    "a picture of the number {word}",
    "a drawing of the digit {word}",
    "an image of the number {num}",
)

PAD, EOT = 0, 1
_PUNCTUATION = re.compile(r"[.,!?;:]")


def _template_words(templates) -> set:
    return {w for t in templates for w in t.replace("{word}", "").replace("{num}", "").split()}


VOCAB = ("<pad>", "<eot>") + tuple(sorted(_template_words(TRAIN_TEMPLATES + HELD_OUT_TEMPLATES)
                                          | set(DIGIT_WORDS) | {str(d) for d in range(10)}))
_IDS = {w: i for i, w in enumerate(VOCAB)}

# the longest template has 6 words; 8 words + <eot> leave room for a user's longer prompt
CONTEXT = 9


def caption(label: int, template: str) -> str:
    """The caption of digit ``label`` (0-9) by ``template`` (``{word}`` / ``{num}`` fields)."""
    label = int(label)
    if not 0 <= label <= 9:
        raise ValueError(f"captions: a digit label must be in [0, 9], got {label}")
    return template.format(word=DIGIT_WORDS[label], num=str(label))


def digit_captions(labels, template_ids, templates=TRAIN_TEMPLATES) -> list:
    """One caption per label: label i with template ``templates[template_ids[i] % len(templates)]``.

    >>> digit_captions([3, 0], [2, 1])
    ['a handwritten three', '0']
    """
    labels, ids = np.asarray(labels).reshape(-1), np.asarray(template_ids).reshape(-1)
    if labels.shape != ids.shape:
        raise ValueError(f"captions: {labels.size} labels but {ids.size} template ids")
    return [caption(y, templates[int(i) % len(templates)]) for y, i in zip(labels, ids)]


def tokenize(text: str) -> list:
    """The token ids of ``text``'s words (lowercased, punctuation dropped), without ``<eot>``;
    words outside :data:`VOCAB` raise a ValueError naming them."""
    if not isinstance(text, str):
        raise TypeError(f"captions: a caption must be a str, got {type(text).__name__}")
    words = _PUNCTUATION.sub(" ", text.lower()).split()
    unknown = [w for w in dict.fromkeys(words) if w not in _IDS or w in ("<pad>", "<eot>")]
    if unknown:
        names = ", ".join(repr(w) for w in unknown)
        raise ValueError(f"unknown word{'s' if len(unknown) > 1 else ''} {names} in the caption {text!r} "
                         f"(the vocabulary: {' '.join(VOCAB[2:])})")
    return [_IDS[w] for w in words]


def encode(captions, context: int = CONTEXT) -> np.ndarray:
    """int64 (len(captions), context): each caption's tokens then ``<eot>``, left-padded with
    ``<pad>``; a caption longer than ``context - 1`` words is an error naming it."""
    if isinstance(captions, str):
        raise TypeError("captions: encode takes a list of captions, not one str")
    out = np.full((len(captions), context), PAD, dtype=np.int64)
    for row, text in enumerate(captions):
        ids = tokenize(text) + [EOT]
        if len(ids) > context:
            raise ValueError(f"the caption {text!r} has {len(ids) - 1} words; at most {context - 1} fit")
        out[row, context - len(ids):] = ids
    return out
