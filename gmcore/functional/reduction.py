"""Reductions: ``sum``, ``sum_to_size``, ``mean`` (more reductions build on these)."""
import numpy as np

from .._dtype import as_dtype
from ..autograd import Function
from ..backend import xp_of
from ._util import normalize_dims

__all__ = ["sum", "sum_to_size", "mean"]


def _keepdim_shape(shape, dims):
    return tuple(1 if i in dims else s for i, s in enumerate(shape))


class Sum(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim, dtype):
        dims = normalize_dims(dim, a.ndim)
        if dtype is not None:
            a = a.astype(as_dtype(dtype).np)
        elif a.dtype.kind in "biu":
            a = a.astype(np.int64)  # as PyTorch: integer sums accumulate in int64
        ctx.in_shape, ctx.dims = a.shape, dims
        return xp_of(a).sum(a, axis=dims, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        if g.ndim != len(ctx.in_shape):
            g = g.reshape(_keepdim_shape(ctx.in_shape, ctx.dims))
        return g.expand(ctx.in_shape), None, None, None


class SumToSize(Function):
    """Sum a broadcast result back to ``shape``; the adjoint of ``expand``."""

    @staticmethod
    def forward(ctx, a, shape):
        shape = tuple(shape)
        lead = a.ndim - len(shape)
        if lead < 0:
            raise RuntimeError(f"sum_to_size: shape {shape} has more dimensions than the "
                               f"input {tuple(a.shape)}")
        dims = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(shape) if s == 1 and a.shape[lead + i] != 1)
        for i, s in enumerate(shape):
            if s != 1 and a.shape[lead + i] != s:
                raise RuntimeError(f"sum_to_size: size {tuple(a.shape)} is not expandable "
                                   f"from {shape}")
        ctx.in_shape = a.shape
        out = xp_of(a).sum(a, axis=dims, keepdims=True) if dims else a
        return out.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.expand(ctx.in_shape), None


def sum(input, dim=None, keepdim=False, *, dtype=None):
    """Sum over all elements, or over ``dim`` (an int or a tuple of ints).

    >>> import gmcore as gm
    >>> gm.ones(2, 3).sum(1).tolist()
    [3.0, 3.0]
    """
    return Sum.apply(input, dim, keepdim, dtype)


def sum_to_size(input, shape):
    """Sum ``input`` down to a shape it was broadcast from."""
    shape = tuple(shape)
    if tuple(input.shape) == shape:
        return input
    return SumToSize.apply(input, shape)


def mean(input, dim=None, keepdim=False, *, dtype=None):
    """Arithmetic mean over all elements or over ``dim``; needs a floating dtype (or ``dtype=``)."""
    if dtype is not None:
        input = input.to(dtype)
    if input.data.dtype.kind != "f":
        raise RuntimeError(f"mean: expected a floating point input, got {input.dtype}; "
                           "pass dtype= or convert with .float()")
    dims = normalize_dims(dim, input.ndim)
    n = 1
    for d in dims:
        n *= input.shape[d]
    return Sum.apply(input, dim, keepdim, None) / max(n, 1) if n else \
        Sum.apply(input, dim, keepdim, None) * float("nan")
