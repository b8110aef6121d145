"""Character-level text for next-character prediction.

The text is a user file (UTF-8) or, by default, the standard library's pydoc topics
(``pydoc_data.topics.topics``: the values joined with ``"\\n"`` in sorted key order; about
465k characters, and its exact content differs between Python builds). The first
``train_fraction`` of the characters is the training text, the rest the test text. The
vocabulary is the sorted set of training characters plus one unknown symbol (``unk``,
U+FFFD by default) that test characters unseen in training map to.
"""
import os
from pathlib import Path

import numpy as np

from .loader import Dataset
from ._images import check_split

__all__ = ["CharText", "default_text"]

UNK = "\ufffd"


def default_text():
    """The pydoc topics text of this Python build (see the module docstring)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise ImportError("the default text needs the standard library's pydoc_data package, "
                          "which this Python build lacks; pass path=<a text file>") from None
    return "\n".join(topics[k] for k in sorted(topics))


def _read_text(path):
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None


class CharText(Dataset):
    """Sequences of ``seq_len`` character ids; the target is the input shifted by one.

    Example ``i`` is ``(x, y)`` with ``x = ids[s:s + seq_len]`` and
    ``y = ids[s + 1:s + seq_len + 1]`` (int64), ``s = i * stride`` within the split's text.

    Args:
        split: ``"train"`` (the first ``train_fraction`` of the characters) or ``"test"``.
        path: a UTF-8 text file; ``None`` for the pydoc topics text. ``text`` gives the
            string directly instead.
        seq_len: characters per example.
        stride: start-to-start distance of consecutive examples (default ``seq_len``: no
            overlap between inputs).
        unk: the symbol for test characters missing from the training text (always in the
            vocabulary, last unless it occurs in the training text).

    >>> ds = CharText(text="hello world, hello text", seq_len=4, train_fraction=0.8)
    >>> x, y = ds[0]
    >>> ds.decode(x), ds.decode(y)
    ('hell', 'ello')
    >>> ds.vocab_size == len(ds.vocab), ds.encode("lo").tolist() == [ds.stoi["l"], ds.stoi["o"]]
    (True, True)
    """

    def __init__(self, split="train", path=None, text=None, seq_len=64, stride=None,
                 train_fraction=0.9, unk=UNK):
        check_split(split)
        if path is not None and text is not None:
            raise ValueError("give path or text, not both")
        if text is None:
            text = default_text() if path is None else _read_text(path)
        source = "<text>" if path is None else str(path)
        seq_len = int(seq_len)
        stride = seq_len if stride is None else int(stride)
        if seq_len < 1 or stride < 1:
            raise ValueError(f"seq_len and stride must be positive, got {seq_len} and {stride}")
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
        cut = int(len(text) * train_fraction)
        train_text = text[:cut]
        if not train_text:
            raise ValueError(f"{source}: the text is empty")
        chars = sorted(set(train_text))
        if unk not in chars:
            chars.append(unk)
        self.vocab = "".join(chars)
        self.itos = list(chars)
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.unk = unk
        part = train_text if split == "train" else text[cut:]
        self.ids = self.encode(part)
        if len(self.ids) < seq_len + 1:
            raise ValueError(f"{source}: the {split} text has {len(self.ids)} characters, too few "
                             f"for one sequence of seq_len={seq_len} plus its target")
        self.seq_len, self.stride, self.split = seq_len, stride, split
        self.name, self.text_source = "text", source
        self._offsets = np.arange(seq_len + 1, dtype=np.int64)

    @property
    def vocab_size(self):
        return len(self.itos)

    @property
    def num_levels(self):
        """Values one position can take (the vocabulary size), as for image levels."""
        return len(self.itos)

    @property
    def shape(self):
        return (self.seq_len,)

    def encode(self, s):
        """A string as an int64 array of ids (unknown characters -> the ``unk`` id)."""
        u = self.stoi[self.unk]
        return np.fromiter((self.stoi.get(c, u) for c in s), dtype=np.int64, count=len(s))

    def decode(self, ids):
        """Ids (array, list or gmcore Tensor) back to a string."""
        from ..tensor import Tensor
        if isinstance(ids, Tensor):
            ids = ids.data
        if hasattr(ids, "get") and not isinstance(ids, (np.ndarray, dict)):   # a cupy array
            ids = ids.get()
        return "".join(self.itos[int(i)] for i in np.asarray(ids).reshape(-1))

    def __len__(self):
        return (len(self.ids) - 1 - self.seq_len) // self.stride + 1

    def __getitem__(self, index):
        n = len(self)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"index {index} is out of range for {n} sequences")
        s = (i % n) * self.stride
        w = self.ids[s:s + self.seq_len + 1]
        return w[:-1].copy(), w[1:].copy()

    def get_batch(self, indices):
        w = self.ids[np.asarray(indices, dtype=np.int64)[:, None] * self.stride + self._offsets]
        return w[:, :-1], w[:, 1:]
