"""CycleGAN's two unpaired domains, made from one labelled image data set.

Domain A is the images as they are; domain B the same kind of images under a known, invertible
map (``--domain-b``): ``rotate90`` (a quarter turn counter-clockwise, as ``numpy.rot90``),
``invert`` (intensity ``1 - x``) or ``transpose`` (a mirror about the main diagonal). The model
never sees the map; it is known here only to *judge* translations: an A->B translation mapped
back by the inverse should show the digit it came from.

The training split is cut in two disjoint halves by a fixed random permutation (seed 0, part of
the data definition as the digits' own split): the first half gives domain A, the second,
mapped, domain B. :func:`unpaired_domains` lays them side by side as one data set of
(a, label_a, b, label_b) rows, so the loop's shuffled loader draws both; row i holds two
different, unrelated images (the halves are in independent random orders), and no loss ever
relates a row's a to its b (instance norm keeps the examples of a batch independent too).
"""
from __future__ import annotations

import numpy as np

from ...data.loader import ArrayDataset

__all__ = ["DOMAIN_MAPS", "map_levels", "to_domain_b", "from_domain_b", "unpaired_domains", "SPLIT_SEED"]

DOMAIN_MAPS = ("rotate90", "invert", "transpose")
SPLIT_SEED = 0


def check_domain_map(kind: str, shape) -> None:
    if kind not in DOMAIN_MAPS:
        raise ValueError(f"unknown --domain-b {kind!r}; choose one of {', '.join(DOMAIN_MAPS)}")
    if kind in ("rotate90", "transpose") and shape[-1] != shape[-2]:
        raise ValueError(f"--domain-b {kind} needs square images, got {shape[-2]}x{shape[-1]} "
                         "(use --domain-b invert)")


def map_levels(kind: str, levels: np.ndarray, num_levels: int) -> np.ndarray:
    """Domain B's images from domain A's integer levels (N, C, H, W).

    >>> x = np.arange(4, dtype=np.uint8).reshape(1, 1, 2, 2)
    >>> map_levels("rotate90", x, 17)[0, 0].tolist(), map_levels("invert", x, 17)[0, 0].tolist()
    ([[1, 3], [0, 2]], [[16, 15], [14, 13]])
    """
    if kind == "rotate90":
        return np.ascontiguousarray(np.rot90(levels, 1, axes=(-2, -1)))
    if kind == "transpose":
        return np.ascontiguousarray(np.swapaxes(levels, -2, -1))
    if kind == "invert":
        return (num_levels - 1 - levels.astype(np.int64)).astype(levels.dtype)
    raise ValueError(f"unknown domain map {kind!r}; choose one of {', '.join(DOMAIN_MAPS)}")


def to_domain_b(kind: str, x):
    """The domain map on a Tensor of images (B, C, H, W) in [0, 1]."""
    if kind == "rotate90":      # numpy.rot90: transpose, then reverse the rows
        return x.transpose(-2, -1).flip(-2)
    if kind == "transpose":
        return x.transpose(-2, -1)
    if kind == "invert":
        return 1.0 - x
    raise ValueError(f"unknown domain map {kind!r}; choose one of {', '.join(DOMAIN_MAPS)}")


def from_domain_b(kind: str, x):
    """The inverse of :func:`to_domain_b`: a quarter turn clockwise for rotate90; the other maps
    are their own inverse.

    >>> import gmcore as gm
    >>> x = gm.rand(2, 1, 3, 3)
    >>> all(bool((from_domain_b(k, to_domain_b(k, x)) == x).all().item()) for k in DOMAIN_MAPS)
    True
    """
    if kind == "rotate90":
        return x.transpose(-2, -1).flip(-1)
    return to_domain_b(kind, x)


def unpaired_domains(dataset, kind: str) -> ArrayDataset:
    """Rows (a, label_a, b, label_b): domain A from one half of ``dataset`` (an image data set of
    (levels, labels) arrays), domain B from the other half under the map ``kind`` (see the module
    docstring); images scaled as ``dataset`` scales them."""
    arrays = getattr(dataset, "arrays", None)
    if arrays is None or len(arrays) != 2 or getattr(arrays[0], "ndim", 0) != 4:
        raise ValueError(f"cyclegan makes its domains from a data set of images with labels, not "
                         f"{getattr(dataset, 'name', type(dataset).__name__)!r}")
    levels, labels = np.asarray(arrays[0]), np.asarray(arrays[1])
    half = len(levels) // 2
    if half < 1:
        raise ValueError(f"cyclegan needs at least 2 images to split into two domains, got {len(levels)}")
    check_domain_map(kind, levels.shape)
    perm = np.random.Generator(np.random.PCG64(SPLIT_SEED)).permutation(len(levels))
    a, b = perm[:half], perm[half:2 * half]
    scale = dataset.transforms[0] if getattr(dataset, "transforms", None) else None
    b_levels = map_levels(kind, levels[b], int(getattr(dataset, "num_levels", 256)))
    return ArrayDataset(levels[a], labels[a], b_levels, labels[b], transforms=(scale, None, scale, None),
                        name=f"{getattr(dataset, 'name', 'images')} A|B ({kind})")
