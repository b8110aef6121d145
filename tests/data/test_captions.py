"""Captions from digit labels (gmcore/data/captions.py): templates, the vocabulary, tokenizing
and the fixed-length layout glide-core's text encoder reads."""
import numpy as np
import pytest

from gmcore.data import captions as cap


def test_held_out_templates_are_new_phrasings_of_training_words():
    assert not set(cap.TRAIN_TEMPLATES) & set(cap.HELD_OUT_TEMPLATES)
    train_words = {w for t in cap.TRAIN_TEMPLATES for w in t.split() if "{" not in w}
    for t in cap.HELD_OUT_TEMPLATES:      # no held-out word has an embedding training never saw
        assert {w for w in t.split() if "{" not in w} <= train_words, t
    for field in ("{word}", "{num}"):      # both forms of the digit in training and held out
        assert any(field in t for t in cap.TRAIN_TEMPLATES)
        assert any(field in t for t in cap.HELD_OUT_TEMPLATES)


def test_vocabulary_and_captions():
    assert cap.VOCAB[cap.PAD] == "<pad>" and cap.VOCAB[cap.EOT] == "<eot>"
    assert len(set(cap.VOCAB)) == len(cap.VOCAB)
    assert {"seven", "7", "handwritten", "digit"} <= set(cap.VOCAB)
    assert cap.caption(7, "a handwritten {word}") == "a handwritten seven"
    assert cap.caption(0, "the digit {num}") == "the digit 0"
    ids = [0, 1, len(cap.TRAIN_TEMPLATES) + 2]                  # template ids wrap around
    assert cap.digit_captions([1, 2, 3], ids) == ["one", "2", "a handwritten three"]
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        cap.caption(10, "{num}")
    # every caption of every template tokenizes, within the context
    for t in cap.TRAIN_TEMPLATES + cap.HELD_OUT_TEMPLATES:
        assert cap.encode([cap.caption(d, t) for d in range(10)]).shape == (10, cap.CONTEXT)


def test_encode_left_pads_and_ends_every_caption_with_eot():
    ids = cap.encode(["A handwritten seven.", "7", ""])
    assert ids.dtype == np.int64 and ids.shape == (3, cap.CONTEXT)
    assert (ids[:, -1] == cap.EOT).all()                       # the pooled position
    assert [cap.VOCAB[i] for i in ids[0] if i != cap.PAD] == ["a", "handwritten", "seven", "<eot>"]
    assert (ids[2, :-1] == cap.PAD).all()                      # the empty caption: <eot> alone
    assert (ids[1, :-2] == cap.PAD).all() and cap.VOCAB[ids[1, -2]] == "7"


def test_unknown_words_and_long_captions_are_errors_naming_them():
    with pytest.raises(ValueError, match=r"unknown words 'eleven', 'cat' in the caption 'eleven cat eleven'"):
        cap.tokenize("eleven cat eleven")
    with pytest.raises(ValueError, match="unknown word '<eot>'"):   # special tokens are not words
        cap.tokenize("<eot>")
    with pytest.raises(ValueError, match="has 9 words; at most 8 fit"):
        cap.encode(["the digit " * 4 + "7"])
    with pytest.raises(TypeError, match="list of captions"):
        cap.encode("seven")
