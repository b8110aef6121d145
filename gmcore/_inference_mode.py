"""``inference_mode``: PyTorch's context manager and decorator for pure inference.

Here it is ``no_grad`` with a flag (``is_inference_mode_enabled``): nothing computed inside is
recorded, so results never require grad. PyTorch additionally forbids using such "inference
tensors" in autograd later; gmcore does not track that, they are plain tensors.
"""
import functools

from . import autograd

__all__ = ["inference_mode", "is_inference_mode_enabled"]

_depth = 0  # nesting count of active inference_mode(True) regions


def is_inference_mode_enabled():
    """True inside ``inference_mode()``."""
    return _depth > 0


class inference_mode:
    """Context manager and decorator: run without recording (as ``no_grad``).
    ``inference_mode(False)`` does nothing, as PyTorch's.

    >>> import gmcore as gm
    >>> x = gm.ones(2, requires_grad=True)
    >>> with gm.inference_mode():
    ...     y = x * 2
    ...     gm.is_inference_mode_enabled()
    True
    >>> y.requires_grad
    False
    >>> @gm.inference_mode()
    ... def f(t):
    ...     return t + 1
    >>> f(x).requires_grad
    False
    """

    def __init__(self, mode=True):
        self.mode = bool(mode)
        self._prev = []

    def __enter__(self):
        global _depth
        if self.mode:
            self._prev.append(autograd._grad_enabled)
            autograd._grad_enabled = False
            _depth += 1
        return self

    def __exit__(self, *exc):
        global _depth
        if self.mode:
            autograd._grad_enabled = self._prev.pop()
            _depth -= 1
        return False

    def __call__(self, func):
        mode = self.mode

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with inference_mode(mode):
                return func(*args, **kwargs)
        return wrapper
