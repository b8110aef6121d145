"""2-D toy distributions for density models and GANs, generated from a seed (no downloads).

Every generator takes ``(n, noise, seed)`` and returns ``(points float32 (n, 2), labels int64
(n,))``; the label says which part of the distribution a point came from (moon, circle,
gaussian, square; 0 for the swiss roll). Geometry:

- ``moons``: two interleaving half circles of radius 1, centres (0, 0) and (1, 0.5).
- ``circles``: an outer circle of radius 1 and an inner one of radius ``factor`` (0.5).
- ``swiss_roll``: the spiral ``t (cos t, sin t)`` for ``t`` in ``[1.5 pi, 4.5 pi]``, scaled by 1/5
  (radius up to about 2.8).
- ``8gaussians``: 8 gaussians with centres on a circle of radius 2 (angles k pi/4), std ``noise``.
- ``checkerboard``: uniform on the 8 "black" squares of a 4x4 board covering ``[-2, 2]^2``.
"""
import numpy as np

from .loader import ArrayDataset
from ._images import check_split

__all__ = ["make_moons", "make_circles", "make_swiss_roll", "make_8gaussians",
           "make_checkerboard", "eight_gaussian_centres", "Toy2D", "TOY2D"]


def _rng(seed):
    return np.random.Generator(np.random.PCG64(seed))


def _split_counts(n, parts):
    """``n`` shared as evenly as possible between ``parts`` (the first ones get the extra)."""
    counts = np.full(parts, n // parts)
    counts[:n % parts] += 1
    return counts


def _finish(points, labels, noise, rng, shuffle=True):
    if noise:
        points = points + noise * rng.standard_normal(points.shape)
    if shuffle:
        p = rng.permutation(len(points))
        points, labels = points[p], labels[p]
    return points.astype(np.float32), labels.astype(np.int64)


def _check(n, noise):
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    return int(n)


def make_moons(n=1000, noise=0.05, seed=0):
    """Two interleaving half circles.

    >>> x, y = make_moons(6, seed=1)
    >>> x.shape, x.dtype, sorted(set(y.tolist()))
    ((6, 2), dtype('float32'), [0, 1])
    """
    n, rng = _check(n, noise), _rng(seed)
    a, b = _split_counts(n, 2)
    t0, t1 = rng.uniform(0, np.pi, a), rng.uniform(0, np.pi, b)
    upper = np.stack([np.cos(t0), np.sin(t0)], 1)
    lower = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)
    return _finish(np.concatenate([upper, lower]), np.repeat([0, 1], [a, b]), noise, rng)


def make_circles(n=1000, noise=0.05, seed=0, factor=0.5):
    """Two concentric circles (radii 1 and ``factor``), label 0 outer, 1 inner."""
    n, rng = _check(n, noise), _rng(seed)
    if not 0 < factor < 1:
        raise ValueError(f"factor must lie in (0, 1), got {factor}")
    a, b = _split_counts(n, 2)
    t0, t1 = rng.uniform(0, 2 * np.pi, a), rng.uniform(0, 2 * np.pi, b)
    outer = np.stack([np.cos(t0), np.sin(t0)], 1)
    inner = factor * np.stack([np.cos(t1), np.sin(t1)], 1)
    return _finish(np.concatenate([outer, inner]), np.repeat([0, 1], [a, b]), noise, rng)


def make_swiss_roll(n=1000, noise=0.05, seed=0):
    """A 2-D spiral ``t (cos t, sin t) / 5``, ``t`` uniform in ``[1.5 pi, 4.5 pi]``."""
    n, rng = _check(n, noise), _rng(seed)
    t = rng.uniform(1.5 * np.pi, 4.5 * np.pi, n)
    pts = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5.0
    return _finish(pts, np.zeros(n, np.int64), noise, rng, shuffle=False)


def eight_gaussian_centres(radius=2.0) -> np.ndarray:
    """(8, 2): the centres of ``8gaussians``' modes, at angles k pi / 4."""
    angle = np.arange(8) * (np.pi / 4)
    return radius * np.stack([np.cos(angle), np.sin(angle)], 1)


def make_8gaussians(n=1000, noise=0.1, seed=0, radius=2.0):
    """Eight gaussians (std ``noise``) centred on a circle of radius ``radius``."""
    n, rng = _check(n, noise), _rng(seed)
    k = rng.integers(0, 8, n)
    return _finish(eight_gaussian_centres(radius)[k], k, noise, rng, shuffle=False)


def make_checkerboard(n=1000, noise=0.0, seed=0):
    """Uniform points on the black squares of a 4x4 checkerboard over ``[-2, 2]^2``.

    A square ``(i, j)`` (column, row, from the bottom-left) is black when ``i + j`` is even; the
    label is its index ``0..7`` in row-major order of the black squares.
    """
    n, rng = _check(n, noise), _rng(seed)
    black = np.array([(i, j) for j in range(4) for i in range(4) if (i + j) % 2 == 0])
    k = rng.integers(0, len(black), n)
    pts = black[k] + rng.random((n, 2)) - 2.0
    return _finish(pts, k, noise, rng, shuffle=False)


TOY2D = {"moons": (make_moons, 0.05), "circles": (make_circles, 0.05),
         "swiss_roll": (make_swiss_roll, 0.05), "8gaussians": (make_8gaussians, 0.1),
         "checkerboard": (make_checkerboard, 0.0)}


class Toy2D(ArrayDataset):
    """A generated 2-D set as a dataset of ``(point float32 (2,), label)``.

    The train and test splits are independent draws: seeds ``SeedSequence([seed, 0])`` and
    ``SeedSequence([seed, 1])``, so they never share points.

    >>> ds = Toy2D("8gaussians", n=100, seed=3)
    >>> len(ds), ds.shape, ds.name
    (100, (2,), '8gaussians')
    """

    def __init__(self, kind="moons", n=1000, noise=None, seed=0, split="train"):
        check_split(split)
        if kind not in TOY2D:
            raise ValueError(f"unknown toy 2-D set {kind!r}; choose from {sorted(TOY2D)}")
        make, default_noise = TOY2D[kind]
        noise = default_noise if noise is None else float(noise)
        ss = np.random.SeedSequence([int(seed), 0 if split == "train" else 1])
        x, y = make(n, noise=noise, seed=ss)
        super().__init__(x, y, name=kind)
        self.split, self.noise, self.seed = split, noise, seed

    @property
    def points(self):
        return self.arrays[0]

    @property
    def modes(self):
        """``(centres (K, 2), std)`` of a set made of separated gaussian modes (``8gaussians``),
        for mode-coverage figures; None for the others."""
        return (eight_gaussian_centres(), self.noise) if self.name == "8gaussians" else None
