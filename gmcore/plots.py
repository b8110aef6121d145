"""Pictures of a run: sample grids (Pillow), loss curves, 2-D scatters and density maps (matplotlib, Agg).

Each writes atomically (render to memory, then :func:`gmcore.io.atomic_write_bytes`). Pillow and
matplotlib are imported on call: they are the ``train`` extra, not engine dependencies.
"""
from __future__ import annotations

import io as _io
import math

import numpy as np

from .io import atomic_write_bytes
from .tensor import Tensor

__all__ = ["image_grid", "save_image_grid", "save_loss_curve", "save_scatter", "save_density_map"]


def image_grid(images, nrow: int | None = None, padding: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile images (N, C, H, W) with values in [0, 1] into one (H', W', C) uint8 array.

    >>> image_grid(np.zeros((4, 1, 2, 2)), nrow=2).shape
    (7, 7, 1)
    """
    if isinstance(images, Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C = 1 or 3, got shape {images.shape}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    grid = np.full((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value)
    for i in range(n):
        r, q = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y:y + h, x:x + w] = images[i].transpose(1, 2, 0)
    return (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image_grid(images, path, nrow: int | None = None, scale: int = 4) -> None:
    """Write a PNG of the tiled images, each pixel enlarged ``scale`` times (nearest)."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("writing PNGs needs Pillow: pip install 'gmcore[train]'") from exc
    grid = image_grid(images, nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_loss_curve(records: list[dict], path, keys=("loss",), eval_key: str | None = "test_bits") -> None:
    """Plot training losses (``records``: the metrics log rows) against step into a PNG, and the
    test rows' ``eval_key`` (default: the test bits, labelled with their unit) on a second axis,
    with the validation rows' same figure (``val_...``) where the run has them."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'gmcore[train]'") from exc
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if r.get("split") == "train" and key in r]
        if pts:
            ax.plot(*zip(*pts), label=f"train {key}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if eval_key:
        ax2 = None
        # --val-split runs log "val" rows (val_bits, ...) beside the final test row
        for split, color in (("val", "tab:green"), ("test", "tab:red")):
            if split == "val" and not eval_key.startswith("test_"):
                continue
            rows = [r for r in records if r.get("split") == split]
            key = eval_key if split == "test" else "val_" + eval_key[len("test_"):]
            # rows written before the generic key existed have only test_bits_per_dim
            value = (lambda r, key=key: r.get(key, r.get(key + "_per_dim"))) if key.endswith("_bits") \
                else (lambda r, key=key: r.get(key))
            pts = [(r["step"], value(r)) for r in rows if value(r) is not None]
            if not pts:
                continue
            label = f"{split} bits/{rows[-1].get('unit', 'dim')}" if key.endswith("_bits") else \
                {"test_nll_nats": "test NLL (nats)", "val_nll_nats": "val NLL (nats)"}.get(key, key)
            ax2 = ax2 or ax.twinx()
            ax2.plot(*zip(*pts), "o-", color=color, label=label)
            ax2.set_ylabel(label.replace("val ", "").replace("test ", ""))
        if ax2 is not None:
            ax2.legend(loc="upper center")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _figure_png(fig, plt, path) -> None:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'gmcore[train]'") from exc
    return plt


def save_scatter(points, path, data=None, bounds=None, title: str = "") -> None:
    """A PNG scatter of 2-D ``points`` (N, 2) (samples), over ``data`` (M, 2) in grey when given;
    ``bounds`` = (xmin, xmax, ymin, ymax) fixes the axes."""
    if isinstance(points, Tensor):
        points = points.detach().cpu().numpy()
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"save_scatter: points must be (N, 2), got shape {points.shape}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if data is not None:
        data = np.asarray(data, dtype=np.float64)
        ax.scatter(data[:, 0], data[:, 1], s=3, c="0.7", label="data")
    ax.scatter(points[:, 0], points[:, 1], s=3, c="tab:blue", label="samples")
    if bounds is not None:
        ax.set_xlim(bounds[0], bounds[1])
        ax.set_ylim(bounds[2], bounds[3])
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _figure_png(fig, plt, path)


def save_density_map(density, bounds, path, title: str = "") -> None:
    """A PNG heat map of ``density`` (ny, nx) on the box ``bounds`` = (xmin, xmax, ymin, ymax),
    row 0 at the bottom."""
    density = np.asarray(density, dtype=np.float64)
    if density.ndim != 2:
        raise ValueError(f"save_density_map: density must be 2-D (ny, nx), got shape {density.shape}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    im = ax.imshow(density, origin="lower", extent=tuple(bounds), cmap="viridis", aspect="equal")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _figure_png(fig, plt, path)
