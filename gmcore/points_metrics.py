"""Sample-based figures for models of 2-D points, which need no likelihood (GANs have none).

* :func:`mode_coverage`: for data made of separated gaussian modes (``8gaussians``), how many
  modes the samples hit and how many samples are of high quality (Srivastava et al. 2017, VEEGAN,
  and the GAN literature after it: a sample is of high quality when it lies within 3 std of a
  mode's centre; a mode is hit when at least 1% of the samples are high-quality samples of it).
* :func:`energy_distance`: the energy distance between samples and held-out points
  (Szekely & Rizzo), ``2 E|X - Y| - E|X - X'| - E|Y - Y'|``: zero exactly when the two
  distributions are equal, so it compares any model on any 2-D set.
"""
from __future__ import annotations

import numpy as np

__all__ = ["mode_coverage", "energy_distance"]


def mode_coverage(samples, centres, std: float, within: float = 3.0, min_share: float = 0.01) -> dict:
    """``{"modes_hit", "modes", "high_quality_share"}`` of ``samples`` (N, 2) against modes at
    ``centres`` (K, 2) of standard deviation ``std``.

    >>> import numpy as np
    >>> centres = np.array([[0.0, 0.0], [5.0, 0.0]])
    >>> mode_coverage(np.array([[0.1, 0.0]] * 98 + [[9.0, 9.0]] * 2), centres, 0.1)
    {'modes_hit': 1, 'modes': 2, 'high_quality_share': 0.98}
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    c = np.asarray(centres, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("mode_coverage: the samples hold NaN or inf")
    dist = np.linalg.norm(x[:, None, :] - c[None, :, :], axis=2)      # (N, K)
    nearest = dist.argmin(1)
    good = dist[np.arange(len(x)), nearest] <= within * std
    counts = np.bincount(nearest[good], minlength=len(c))
    return {"modes_hit": int((counts >= min_share * len(x)).sum()), "modes": int(len(c)),
            "high_quality_share": float(good.mean())}


def _mean_distance(a, b, chunk: int = 1024) -> float:
    total = 0.0
    for i in range(0, len(a), chunk):
        total += np.linalg.norm(a[i:i + chunk, None, :] - b[None, :, :], axis=2).sum()
    return total / (len(a) * len(b))


def energy_distance(x, y) -> float:
    """The energy distance between point sets ``x`` (N, d) and ``y`` (M, d) (V-statistic form).

    >>> import numpy as np
    >>> a = np.random.default_rng(0).normal(size=(500, 2))
    >>> round(float(energy_distance(a, a)), 12), bool(energy_distance(a, a + 3.0) > 2.0)
    (0.0, True)
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("energy_distance: the points hold NaN or inf")
    return float(2.0 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y))
