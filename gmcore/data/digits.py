"""The embedded 8x8 handwritten digits (UCI optdigits test set, via scikit-learn's copy).

The file ``digits.csv.gz`` ships inside the package (licence: ``DIGITS_LICENSE.txt``, CC BY 4.0).
1797 images, pixels are integers 0..16 (so ``num_levels == 17``). The train/test split is a
permutation drawn once from ``numpy.random.Generator(PCG64(seed=0))``: the first 1500 indices
are the training set, the remaining 297 the test set. That permutation is part of the data
definition and never changes between gmcore versions.
"""
import functools
import gzip
import importlib.resources
import zlib

import numpy as np

from ._images import ImageArrayDataset, check_split

__all__ = ["Digits", "load_digits_arrays", "DIGITS_TRAIN_SIZE", "DIGITS_TEST_SIZE"]

DIGITS_TRAIN_SIZE = 1500
DIGITS_TEST_SIZE = 297
_N, _SPLIT_SEED = 1797, 0


@functools.lru_cache(maxsize=None)
def _read_csv():
    res = importlib.resources.files(__package__).joinpath("digits.csv.gz")
    where = str(res)
    try:
        with res.open("rb") as raw, gzip.open(raw, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"the embedded digits file is missing: {where} "
                                "(a broken gmcore install?)") from None
    except (OSError, EOFError, zlib.error, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"the embedded digits file {where} is corrupt: {e}") from None
    if table.shape != (_N, 65):
        raise ValueError(f"the embedded digits file {where} has shape {table.shape}, expected "
                         f"({_N}, 65)")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"the embedded digits file {where} has values out of range")
    pixels = pixels.astype(np.uint8).reshape(_N, 1, 8, 8)
    labels = labels.astype(np.int64)
    pixels.flags.writeable = labels.flags.writeable = False   # the cache is shared
    return pixels, labels


@functools.lru_cache(maxsize=None)
def _split_indices():
    perm = np.random.Generator(np.random.PCG64(_SPLIT_SEED)).permutation(_N)
    return np.sort(perm[:DIGITS_TRAIN_SIZE]), np.sort(perm[DIGITS_TRAIN_SIZE:])


def load_digits_arrays(split="train"):
    """The raw arrays of one split: uint8 levels ``(N, 1, 8, 8)`` in 0..16 and int64 labels.

    >>> x, y = load_digits_arrays("test")
    >>> x.shape, x.dtype, int(x.max()), y.shape
    ((297, 1, 8, 8), dtype('uint8'), 16, (297,))
    """
    check_split(split)
    pixels, labels = _read_csv()
    idx = _split_indices()[0 if split == "train" else 1]
    return pixels[idx], labels[idx]


class Digits(ImageArrayDataset):
    """8x8 handwritten digits: ``(image (1, 8, 8), label)``; 1500 train / 297 test images.

    Args:
        split: ``"train"`` or ``"test"``.
        scale: float32 images in ``[0, 1]`` (``level / 16``); ``False`` gives uint8 levels 0..16.
        binarize: ``None``, ``"threshold"`` (``level / 16 > 0.5``) or ``"stochastic"``.
        seed: seed of the stochastic binarization.

    ``num_levels`` is 17 (2 when binarized): a pixel value ``v`` in ``[0, 1]`` stands for the
    level ``round(v * 16)``, which is what bits/dim must be computed over.

    >>> ds = Digits("train")
    >>> len(ds), ds.shape, ds.num_levels
    (1500, (1, 8, 8), 17)
    >>> x, y = ds[0]
    >>> x.dtype, float(x.min()) >= 0.0, float(x.max()) <= 1.0, 0 <= int(y) <= 9
    (dtype('float32'), True, True, True)
    """

    def __init__(self, split="train", scale=True, binarize=None, seed=0):
        x, y = load_digits_arrays(split)
        super().__init__(x, y, num_levels=17, name="digits", scale=scale, binarize=binarize,
                         seed=seed)
        self.split = split
