"""What a run on continuous 2-D data (moons, 8gaussians, checkerboard ...) reports beyond its
test NLL: the learned density on a grid, its total mass there, and the pictures.

* :func:`grid_bounds`: a box around the data, padded by half the data's extent on every side.
* :func:`log_density_grid`: ``log p`` of a model (``-model.nll``) at the centres of a
  ``steps x steps`` grid of cells over that box.
* ``density_mass``: the midpoint Riemann sum of ``p`` over the grid; a normalized density whose
  mass lies in the box gives 1 (the flow models' target: within 2%).
* :func:`points_report`: what ``gmcore train`` writes for such a run: ``samples.png`` (samples
  over the test data), ``density.png`` (heat map of ``p``), ``density_mass`` and the grid.
"""
from __future__ import annotations

import numpy as np

__all__ = ["grid_bounds", "log_density_grid", "density_mass", "points_report"]

GRID_STEPS = 200
SCATTER_SAMPLES = 1000   # samples drawn for samples.png on 2-D data
METRIC_SAMPLES = 2000    # samples behind the energy distance and the mode coverage


def grid_bounds(points, pad: float = 0.5) -> tuple:
    """``(xmin, xmax, ymin, ymax)`` around ``points`` (N, 2), each side padded by ``pad`` times
    the extent along its axis (at least 0.5 when the extent is 0).

    >>> grid_bounds(np.array([[0.0, 0.0], [2.0, 1.0]]))
    (-1.0, 3.0, -0.5, 1.5)
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
        raise ValueError(f"grid_bounds: points must be (N, 2) with N > 0, got shape {p.shape}")
    lo, hi = p.min(0), p.max(0)
    margin = np.maximum(pad * (hi - lo), 0.5 * (hi == lo))
    lo, hi = lo - margin, hi + margin
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _cell_centres(bounds, steps):
    x0, x1, y0, y1 = bounds
    xs = x0 + (np.arange(steps) + 0.5) * (x1 - x0) / steps
    ys = y0 + (np.arange(steps) + 0.5) * (y1 - y0) / steps
    return xs, ys


def log_density_grid(model, bounds, steps: int = GRID_STEPS, device="cpu", chunk: int = 8192):
    """``log p`` (steps, steps) at the cell centres, row ``i`` at the i-th y (bottom to top),
    column ``j`` at the j-th x; ``log p = -model.nll((points,))``. Run under ``no_grad``."""
    from . import creation
    from .random import Generator

    xs, ys = _cell_centres(bounds, steps)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None else None
    gen = Generator(device=device).manual_seed(0)   # unused by continuous densities
    out = []
    for i in range(0, len(pts), chunk):
        batch = creation.tensor(pts[i:i + chunk], dtype=dtype, device=device)
        out.append(-np.asarray(model.nll((batch,), generator=gen).detach().cpu().numpy(),
                               dtype=np.float64))
    return np.concatenate(out).reshape(steps, steps)


def density_mass(log_density: np.ndarray, bounds) -> float:
    """Midpoint Riemann sum of ``exp(log_density)`` over the grid's box.

    >>> b = (-6.0, 6.0, -6.0, 6.0)                     # a standard normal: mass 1
    >>> xs = -6 + (np.arange(120) + 0.5) * 0.1
    >>> gx, gy = np.meshgrid(xs, xs)
    >>> round(density_mass(-0.5 * (gx**2 + gy**2) - np.log(2 * np.pi), b), 6)
    1.0
    """
    x0, x1, y0, y1 = bounds
    ny, nx = log_density.shape
    area = (x1 - x0) / nx * (y1 - y0) / ny
    return float(np.exp(log_density).sum() * area)


def points_report(model, test_points, out_dir, generator, device="cpu",
                  num_samples: int = SCATTER_SAMPLES, steps: int = GRID_STEPS, modes=None) -> dict:
    """Write ``samples.png`` and ``density.png`` into ``out_dir`` and return ``{"density_mass",
    "density_grid": {...}}`` (the mass is left out when the model has no density, e.g. a GAN),
    with figures of METRIC_SAMPLES samples: ``energy_distance`` to the test points and, for data
    of separated modes (``modes = (centres, std)``, see ``Toy2D.modes``), the mode coverage
    (:mod:`gmcore.points_metrics`). The caller picks the weights (EMA), eval mode and no_grad."""
    from pathlib import Path

    from .plots import save_density_map, save_scatter
    from .points_metrics import energy_distance, mode_coverage

    out_dir = Path(out_dir)
    test_points = np.asarray(test_points, dtype=np.float64)
    bounds = grid_bounds(test_points)
    res = {}
    if num_samples:
        drawn = model.sample(max(num_samples, METRIC_SAMPLES), generator=generator)
        drawn = np.asarray(drawn.detach().cpu().numpy(), dtype=np.float64)
        save_scatter(drawn[:num_samples], out_dir / "samples.png", data=test_points, bounds=bounds,
                     title=f"{getattr(model, 'model_name', '')}: {num_samples} samples over the test data")
        metric = drawn[:METRIC_SAMPLES]
        res["figure_samples"] = len(metric)
        res["energy_distance"] = energy_distance(metric, test_points) if np.isfinite(metric).all() else None
        if modes is not None and np.isfinite(metric).all():
            res.update(mode_coverage(metric, *modes))
    try:
        logd = log_density_grid(model, bounds, steps, device=device)
    except NotImplementedError:   # a sampler without a density
        return res
    mass = density_mass(logd, bounds)
    save_density_map(np.exp(logd), bounds, out_dir / "density.png",
                     title=f"learned density (mass on the grid {mass:.4f})")
    res["density_mass"] = mass
    res["density_grid"] = {"bounds": list(bounds), "steps": steps}
    return res
