"""Progress bars for long sampling loops: pixel-by-pixel samplers, diffusion chains, Langevin
dynamics, incremental audio generation.

Off by default, so library calls and tests print nothing; the CLI turns them on (``gmcore
sample``, ``gmcore edit``, ``gmcore dream``, and ``gmcore train``'s end-of-run samples unless
``--no-progress``), and so can a user::

    with gm.progress.show_progress():
        x = model.sample(64)

A bar is drawn with tqdm when it is installed (the ``train`` extra) on stderr, and vanishes when
its loop ends; without tqdm, or for loops of fewer than :data:`MIN_STEPS` steps, nothing is
shown. The engine itself never imports tqdm: only an enabled bar does.

>>> with show_progress(False):
...     [i for i in steps(range(3), "demo")]
[0, 1, 2]
"""
from __future__ import annotations

import contextlib
import threading

__all__ = ["show_progress", "enabled", "steps", "Bar", "MIN_STEPS"]

MIN_STEPS = 10
_state = threading.local()


def enabled() -> bool:
    return getattr(_state, "on", False)


@contextlib.contextmanager
def show_progress(on: bool = True):
    """Inside, long sampling loops draw a progress bar (in this thread)."""
    previous = enabled()
    _state.on = bool(on)
    try:
        yield
    finally:
        _state.on = previous


class Bar:
    """A bar over ``total`` steps (``update(k)`` moves it to k done; ``close()`` ends it); does
    nothing when progress is off, tqdm is missing or ``total < MIN_STEPS``. Also usable as the
    ``progress(i, n)`` callback of the diffusion samplers."""

    def __init__(self, total: int, desc: str = ""):
        self._bar = None
        if enabled() and total >= MIN_STEPS:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=int(total), desc=desc, unit="step", leave=False, dynamic_ncols=True)

    def update(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(int(done) - self._bar.n)
            if self._bar.n >= self._bar.total:
                self.close()

    def __call__(self, done: int, total: int | None = None) -> None:
        self.update(done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def steps(iterable, desc: str = "", total: int | None = None):
    """``iterable``, advancing a :class:`Bar` as it is consumed (``total`` defaults to its
    ``len``)."""
    total = len(iterable) if total is None else total
    bar = Bar(total, desc)
    try:
        for k, item in enumerate(iterable):
            yield item
            bar.update(k + 1)
    finally:
        bar.close()
