"""Approximate equality: ``isclose`` (elementwise, bool) and ``allclose`` (a Python bool)."""
import numpy as np

from ..backend import xp_of
from ..tensor import Tensor

__all__ = ["isclose", "allclose"]


def _operands(input, other, rtol, atol, op):
    for name, v in (("input", input), ("other", other)):
        if not isinstance(v, Tensor):
            raise TypeError(f"{op}(): {name} must be a Tensor, got {type(v).__name__}")
    if input.dtype != other.dtype:
        raise RuntimeError(f"{op}(): input ({input.dtype}) and other ({other.dtype}) must have "
                           "the same dtype (convert one with .to())")
    if input.device != other.device:
        raise RuntimeError(f"{op}(): input is on {input.device} but other is on {other.device}")
    if rtol < 0 or atol < 0:
        raise RuntimeError(f"{op}(): rtol and atol must be non-negative, got rtol={rtol}, "
                           f"atol={atol}")
    try:
        np.broadcast_shapes(input.data.shape, other.data.shape)
    except ValueError:
        raise RuntimeError(f"{op}(): shapes {tuple(input.shape)} and {tuple(other.shape)} "
                           "do not broadcast") from None
    return input.data, other.data


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """``|input - other| <= atol + rtol * |other|`` elementwise (bool); infinities are close
    only to themselves, NaN to NaN only with ``equal_nan``. Not symmetric, as PyTorch's.

    >>> import gmcore as gm
    >>> gm.isclose(gm.tensor([1.0, 2.0, float("nan")]),
    ...            gm.tensor([1.0 + 1e-9, 2.1, float("nan")])).tolist()
    [True, False, False]
    """
    a, b = _operands(input, other, rtol, atol, "isclose")
    xp = xp_of(a)
    if a.dtype.kind in "biu":  # exact types: avoid overflow in |a - b| by comparing in float64
        a, b = a.astype("float64"), b.astype("float64")
    return Tensor(xp.asarray(xp.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)))


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """True when every element of ``input`` is close to ``other`` (see ``isclose``).

    >>> import gmcore as gm
    >>> gm.allclose(gm.tensor([1.0, 2.0]), gm.tensor([1.0, 2.0 + 1e-7]))
    True
    """
    return bool(isclose(input, other, rtol, atol, equal_nan).data.all())
