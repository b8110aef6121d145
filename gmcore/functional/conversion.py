"""Dtype/device conversion and copies, differentiable (gradients flow back to the source)."""
from .. import backend
from .._dtype import as_dtype
from ..autograd import Function

__all__ = ["to", "clone"]


class To(Function):
    @staticmethod
    def forward(ctx, a, device, dtype):
        ctx.src_device, ctx.src_dtype = backend.device_of(a), a.dtype
        out = a
        if dtype is not None and out.dtype != dtype:
            out = out.astype(dtype)
        if device is not None:
            moved = backend.to_device(out, device)
            out = moved
        if out is a:
            out = a.copy()
        return out

    @staticmethod
    def backward(ctx, g):
        return g.to(ctx.src_device, ctx.src_dtype), None, None


class Clone(Function):
    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, g):
        return g


def to(input, device=None, dtype=None, copy=False):
    """The tensor on ``device`` with ``dtype``; the tensor itself when nothing changes."""
    npd = as_dtype(dtype).np if dtype is not None else None
    dev = backend.as_device(device) if device is not None else None
    same_dtype = npd is None or input.data.dtype == npd
    same_device = dev is None or dev == input.device
    if same_dtype and same_device and not copy:
        return input
    return To.apply(input, None if same_device else dev, None if same_dtype else npd)


def clone(input):
    """A copy that stays in the graph (gradient flows back to the original)."""
    return Clone.apply(input)
