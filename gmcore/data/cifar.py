"""CIFAR-10 from the "python version" batches (``data_batch_1..5``, ``test_batch``).

The batches are pickles written by Python 2 (dict keys ``b"data"``, ``b"labels"``); they are
read through the restricted unpickler of ``_unpickle`` so a tampered file can't run code.
"""
import os
from pathlib import Path

import numpy as np

from ._images import ImageArrayDataset, check_labels, check_split
from ._unpickle import safe_load
from .errors import DataError

__all__ = ["CIFAR10", "load_cifar_batch"]

_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]
_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _get(d, key):
    """``d[key]`` accepting both bytes (Python 2 pickles) and str keys."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    return None


def _label_array(labels, path):
    """The labels as an array; a list must hold plain ints (np.asarray of a hostile nested list
    could build an array far larger than the file)."""
    if isinstance(labels, np.ndarray):
        return labels
    if isinstance(labels, (list, tuple)) and all(type(v) is int for v in labels):
        try:
            return np.array(labels, dtype=np.int64)
        except OverflowError:
            raise DataError(f"{path}: a label does not fit in int64") from None
    kinds = sorted({type(v).__name__ for v in labels}) if isinstance(labels, (list, tuple)) else None
    raise DataError(f"{path}: 'labels' must be a list of ints or an integer array, got "
                    f"{type(labels).__name__}" + (f" of {', '.join(kinds)}" if kinds else ""))


def load_cifar_batch(path):
    """One CIFAR-10 batch file: uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)``.

    >>> import tempfile, os, pickle, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "test_batch")
    >>> with open(p, "wb") as f:
    ...     pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 7]}, f, protocol=2)
    >>> x, y = load_cifar_batch(p)
    >>> x.shape, y.tolist()
    ((2, 3, 32, 32), [3, 7])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch file not found: {path}")
    d = safe_load(path.read_bytes(), source=str(path))
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict with 'data' and 'labels', got {type(d).__name__}")
    data, labels = _get(d, "data"), _get(d, "labels")
    if data is None or labels is None:
        raise DataError(f"{path}: missing key {'data' if data is None else 'labels'!r} "
                        f"(keys: {sorted(map(repr, d))})")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) \
            else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {desc}")
    labels = _label_array(labels, path)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: 'labels' must be {data.shape[0]} integers, got {labels.dtype} "
                        f"array of shape {labels.shape}")
    check_labels(labels, len(_NAMES), path)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


class CIFAR10(ImageArrayDataset):
    """CIFAR-10 from the python batches in ``root`` (or ``root/cifar-10-batches-py``).

    Examples are ``(image (3, 32, 32) float32 in [0, 1], label)``; ``num_levels`` is 256;
    ``scale`` as for ``Digits`` (``False`` gives uint8). 50000 train / 10000 test images for the
    real data. Images stay uint8 in memory and are converted per batch.
    """

    def __init__(self, root, split="train", scale=True):
        check_split(split)
        if root is None:
            raise ValueError("CIFAR10 needs root=<folder holding data_batch_1..5 and test_batch>; "
                             "nothing is downloaded")
        root = Path(os.fspath(root)).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"CIFAR-10 folder not found: {root}")
        if not (root / "test_batch").is_file() and (root / "cifar-10-batches-py").is_dir():
            root = root / "cifar-10-batches-py"
        parts = [load_cifar_batch(root / name) for name in (_TRAIN if split == "train" else _TEST)]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        if len(x) == 0:
            raise DataError(f"{root}: the CIFAR-10 {split} batches hold no images; an empty data set "
                            "can't be trained or evaluated")
        super().__init__(x, y, num_levels=256, name="cifar10", scale=scale, classes=_NAMES)
        self.split, self.root = split, str(root)
