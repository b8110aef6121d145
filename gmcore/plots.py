"""Pictures of a run: sample grids (Pillow) and loss curves (matplotlib, Agg backend).

Both write atomically (render to memory, then :func:`gmcore.io.atomic_write_bytes`). Pillow and
matplotlib are imported on call: they are the ``train`` extra, not engine dependencies.
"""
from __future__ import annotations

import io as _io
import math

import numpy as np

from .io import atomic_write_bytes
from .tensor import Tensor

__all__ = ["image_grid", "save_image_grid", "save_loss_curve"]


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
    test rows' ``eval_key`` (default: the test bits, labelled with their unit) on a second axis."""
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
        test = [r for r in records if r.get("split") == "test"]
        # rows written before the generic key existed have only test_bits_per_dim
        value = (lambda r: r.get("test_bits", r.get("test_bits_per_dim"))) if eval_key == "test_bits" \
            else (lambda r: r.get(eval_key))
        pts = [(r["step"], value(r)) for r in test if value(r) is not None]
        if pts:
            label = f"test bits/{test[-1].get('unit', 'dim')}" if eval_key == "test_bits" else eval_key
            ax2 = ax.twinx()
            ax2.plot(*zip(*pts), "o-", color="tab:red", label=label)
            ax2.set_ylabel(label)
            ax2.legend(loc="upper center")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
