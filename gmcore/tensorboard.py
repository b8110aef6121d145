"""TensorBoard event files for ``gmcore train ... --tensorboard`` (the optional ``tensorboard``
extra: tensorboardX writes the files without TensorFlow or torch).

The files go into the run folder itself, so ``tensorboard --logdir runs`` shows every run under
its folder's name. What is written:

* every metrics row as scalars, ``train/<key>`` and ``test/<key>`` at the row's step (the same
  numbers as ``metrics.jsonl``);
* at each evaluation of a model on images, a grid of samples (``samples``), drawn with a fixed
  seed from the weights used for sampling (EMA when kept), and rank 0 only under ``mpiexec``;
* every ``--tensorboard-histograms N`` steps, histograms of each parameter (``weights/<name>``)
  and of its last gradient (``grads/<name>``);
* the configs once, as text (``config``).

A resumed run starts its writer with ``purge_step`` just after the checkpoint's step, so
TensorBoard drops the events of the steps the resumed run redoes, as ``metrics.jsonl`` drops
their rows.

>>> import tempfile
>>> with RunWriter(tempfile.mkdtemp(), {"model": "vae"}) as tb:   # doctest: +SKIP
...     tb.row({"step": 1, "split": "train", "loss": 0.5})
"""
from __future__ import annotations

import json
import numbers
import time
from pathlib import Path

import numpy as np

__all__ = ["RunWriter", "require"]

INSTALL = "pip install 'gmcore[tensorboard]' (tensorboardX)"


def require():
    """The ``tensorboardX.SummaryWriter`` class, or an ImportError saying how to install it."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as exc:
        raise ImportError(f"--tensorboard needs tensorboardX, which is not installed: {INSTALL}") from exc
    return SummaryWriter


class RunWriter:
    """The event writer of one run folder (see the module docstring for what it writes)."""

    def __init__(self, folder, config: dict, start_step: int = 0):
        writer_cls = require()
        self.folder = Path(folder)
        # A resumed run redoes the steps after its checkpoint: TensorBoard drops their old events.
        # tensorboardX names the file by the second it opens it, so a run resumed within the same
        # second would truncate the last one's file: a nanosecond suffix keeps every file, sorted
        # in the order the runs wrote them (TensorBoard reads a folder's files in name order).
        self._w = writer_cls(logdir=str(self.folder), purge_step=start_step + 1 if start_step > 0 else None,
                             filename_suffix=f".{time.time_ns():020d}")
        if start_step == 0:
            text = json.dumps(config, indent=1)
            # TensorBoard renders text as markdown: an indented block keeps the JSON as it is
            self._w.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)

    def row(self, row: dict) -> None:
        """A metrics.jsonl row as scalars ``<split>/<key>`` at ``row["step"]``."""
        step, split = int(row["step"]), row.get("split", "train")
        for key, value in row.items():
            if key in ("step", "split") or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            if np.isfinite(value):
                self._w.add_scalar(f"{split}/{key}", float(value), step)

    def image(self, tag: str, grid: np.ndarray, step: int) -> None:
        """A (H, W, C) uint8 image, C = 1 or 3."""
        grid = np.asarray(grid)
        if grid.ndim != 3 or grid.shape[2] not in (1, 3) or grid.dtype != np.uint8:
            raise ValueError(f"image {tag!r}: expected an (H, W, 1 or 3) uint8 grid, got {grid.dtype} "
                             f"{grid.shape}")
        self._w.add_image(tag, np.repeat(grid, 3, axis=2) if grid.shape[2] == 1 else grid, step,
                          dataformats="HWC")

    def histograms(self, model, step: int) -> None:
        """Each parameter's values and its current gradient (where it has one)."""
        from . import backend

        for name, p in model.named_parameters():
            self._w.add_histogram(f"weights/{name}", backend.to_device(p.data, "cpu").astype(np.float64), step)
            if p.grad is not None:
                self._w.add_histogram(f"grads/{name}", backend.to_device(p.grad.data, "cpu").astype(np.float64),
                                      step)

    def flush(self) -> None:
        self._w.flush()

    def close(self) -> None:
        self._w.close()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
