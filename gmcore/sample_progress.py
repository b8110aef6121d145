"""Fixed-noise samples over training, for models judged by their samples (GANs): at every
evaluation the run draws the same ``FRAME`` noise vectors through the current generator and
adds them as a row of ``progress.png``; the rows are kept in ``progress.npz`` (one array per
step) so that a resumed run continues the strip, after dropping the rows of steps it redoes.
"""
from __future__ import annotations

import io as _io
from pathlib import Path

import numpy as np

from .io import atomic_write_bytes

__all__ = ["FRAME", "record_frame", "trim_frames"]

FRAME = 8   # samples per row


def _load(path: Path) -> dict:
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _save(out_dir: Path, frames: dict) -> None:
    from .plots import save_image_grid

    buf = _io.BytesIO()
    np.savez(buf, **frames)
    atomic_write_bytes(out_dir / "progress.npz", buf.getvalue())
    if frames:
        rows = [frames[k] for k in sorted(frames)]
        save_image_grid(np.concatenate(rows, 0), out_dir / "progress.png", nrow=rows[0].shape[0])


def record_frame(out_dir, step: int, samples) -> None:
    """Add the row of ``samples`` (FRAME images (N, C, H, W) in [0, 1]) drawn at ``step``."""
    out_dir = Path(out_dir)
    arr = samples.detach().cpu().numpy() if hasattr(samples, "detach") else np.asarray(samples)
    frames = _load(out_dir / "progress.npz")
    frames[f"step_{int(step):09d}"] = np.asarray(arr, dtype=np.float32)
    _save(out_dir, frames)


def trim_frames(out_dir, step: int) -> None:
    """Drop the rows of steps after ``step`` (a resumed run redoes them)."""
    out_dir = Path(out_dir)
    frames = _load(out_dir / "progress.npz")
    kept = {k: v for k, v in frames.items() if int(k.split("_")[1]) <= step}
    if len(kept) != len(frames):
        _save(out_dir, kept)
