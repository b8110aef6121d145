"""logsumexp over one or more dims: the reference math and its compiled kernels.

Implementations of the ``logsumexp`` kernel family (all take a C-contiguous (rows, cols)
float32/float64 array and return the (rows,) row-wise logsumexp):

=========== ====== ==========================================================
name        device where
=========== ====== ==========================================================
cpp         cpu    ``csrc/logsumexp_cpu.cpp`` via ``gmcore._C`` (OpenMP)
reference   cpu    :func:`logsumexp_rows_reference` below (NumPy)
cuda        cuda   ``csrc/logsumexp.cu`` via ``gmcore._C`` (one block per row)
reference   cuda   :func:`logsumexp_rows_reference` below (CuPy)
=========== ====== ==========================================================

The compiled ones share their per-element math (``csrc/logsumexp.h``).
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend, dispatch
from ..autograd import Function

__all__ = ["logsumexp", "LogSumExp", "logsumexp_rows_reference"]


# ---- implementations: (rows, cols) array -> (rows,) array ----------------------------------

def logsumexp_rows_reference(x2d):
    """``m + log(sum(exp(x - m)))`` per row, with ``m = max`` replaced by 0 where not finite.

    The guard keeps an all ``-inf`` row at ``-inf`` (not NaN) and a row holding ``+inf`` at
    ``+inf``; NaN propagates. This is the specification the kernels are tested against.
    """
    xp = backend.xp_of(x2d)
    m = x2d.max(axis=-1, keepdims=True)
    m = backend.where(xp.isfinite(m), m, xp.zeros_like(m))
    if xp is np:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # log(0) = -inf is wanted
            return np.log(np.exp(x2d - m).sum(axis=-1)) + m[:, 0]
    return xp.log(xp.exp(x2d - m).sum(axis=-1)) + m[:, 0]


def _load_reference_cuda():
    dispatch.require_cupy()
    return logsumexp_rows_reference


def _load_cpp():
    _C = dispatch.require_C()
    return _C.logsumexp_rows_cpu


def _load_cuda():
    cp = dispatch.require_cupy()
    _C = dispatch.require_C(cuda=True)

    def logsumexp_rows_cuda(x2d):
        rows, cols = x2d.shape
        with x2d.device:
            out = cp.empty(rows, dtype=x2d.dtype)
            stream = cp.cuda.get_current_stream().ptr
            _C.logsumexp_rows_cuda(x2d.data.ptr, out.data.ptr, rows, cols, x2d.dtype.name, stream)
        return out

    return logsumexp_rows_cuda


# Preference order = registration order (fastest first); GMCORE_KERNELS overrides.
dispatch.register("logsumexp", "forward", "cpu", "cpp", _load_cpp)
dispatch.register("logsumexp", "forward", "cpu", "reference", lambda: logsumexp_rows_reference)
dispatch.register("logsumexp", "forward", "cuda", "cuda", _load_cuda)
dispatch.register("logsumexp", "forward", "cuda", "reference", _load_reference_cuda)

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- the differentiable op --------------------------------------------------------------------

def _normalize_dims(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    n = max(ndim, 1)
    out = []
    for d in dims:
        d = int(d)
        if not -n <= d < n:
            raise IndexError(f"logsumexp: dim {d} out of range for a tensor with {ndim} dims")
        d %= n
        if d in out:
            raise ValueError(f"logsumexp: dim {d} appears more than once in {dim!r}")
        out.append(d)
    return tuple(sorted(out)) if ndim else ()


class LogSumExp(Function):
    """``log(sum(exp(x), dims))``, computed stably.

    Forward moves the reduced dims to the end and runs the dispatched kernel on the contiguous
    (rows, cols) view. Backward, written with tensor ops so that it is itself differentiable:
    d lse / d x = exp(x - lse) (the softmax along the reduced dims), so
    ``grad_x = grad * exp(x - lse)`` with ``grad`` and ``lse`` broadcast back over the dims.
    """

    @staticmethod
    def forward(ctx, x, dim, keepdim=False):
        xp = backend.xp_of(x)
        dims = _normalize_dims(dim, x.ndim)
        kept = tuple(d for d in range(x.ndim) if d not in dims)
        batch_shape = tuple(x.shape[d] for d in kept)
        keep_shape = tuple(1 if d in dims else x.shape[d] for d in range(x.ndim))
        rows = math.prod(batch_shape)
        cols = math.prod(x.shape[d] for d in dims)

        if x.ndim == 0 or not dims:
            lse = x.astype(x.dtype if x.dtype.kind == "f" else np.float64, copy=True).reshape(rows)
        elif cols == 0:
            lse = xp.full(rows, -np.inf, dtype=x.dtype if x.dtype.kind == "f" else np.float64)
        else:
            moved = x.transpose(kept + dims) if dims != tuple(range(len(kept), x.ndim)) else x
            x2d = xp.ascontiguousarray(moved.reshape(rows, cols))
            if x2d.dtype in _KERNEL_DTYPES:
                impl = dispatch.get("logsumexp", "forward", backend.device_of(x2d).type)
            else:  # kernels cover float32/float64; other dtypes run the reference math
                impl = logsumexp_rows_reference
            lse = impl(x2d)

        out = lse.reshape(keep_shape if keepdim else batch_shape)
        ctx.keep_shape = keep_shape
        ctx.save_for_backward(x, out)  # the output comes back graph-connected: double backward
        return out

    @staticmethod
    def backward(ctx, grad):
        x, out = ctx.saved_tensors
        keep = ctx.keep_shape
        return grad.reshape(keep) * (x - out.reshape(keep)).exp(), None, None


def logsumexp(input, dim=None, keepdim=False):
    """``log(sum(exp(input), dim))`` without overflow; ``dim`` is an int, a tuple or None (all).

    An all ``-inf`` slice gives ``-inf``, a slice holding ``+inf`` gives ``+inf``, NaN propagates.

    >>> import gmcore as gm
    >>> x = gm.tensor([[0.0, 0.0], [1000.0, 1000.0]], dtype=gm.float64, requires_grad=True)
    >>> y = gm.logsumexp(x, 1)
    >>> [round(v, 4) for v in y.tolist()]
    [0.6931, 1000.6931]
    """
    return LogSumExp.apply(input, dim, keepdim)
