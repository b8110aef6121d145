"""softmax / log_softmax along one dim and cross entropy on class indices: the reference math
and its compiled kernels (the ``softmax`` kernel family).

Every implementation takes the input as a C-contiguous ``(outer, C, inner)`` array, C the
reduced (class) dim, so a softmax over any dim runs without a transpose:

=========== ====== ==========================================================
name        device where
=========== ====== ==========================================================
cpp         cpu    ``csrc/softmax_cpu.cpp`` via ``gmcore._C`` (OpenMP, SIMD)
reference   cpu    the ``*_reference`` functions below (NumPy)
triton      cuda   ``kernels/triton/softmax.py``
cuda        cuda   ``csrc/softmax.cu`` via ``gmcore._C``
reference   cuda   the ``*_reference`` functions below (CuPy)
=========== ====== ==========================================================

Ops: ``forward`` / ``backward`` (softmax, or log_softmax with ``log=True``) and
``ce_forward`` / ``ce_backward`` (cross entropy with class weights, ``ignore_index`` and label
smoothing; the formulas are in ``csrc/softmax.h``). Each is one pass over the data.

The fused backward runs when the backward is not being recorded; with ``create_graph=True`` it
is built from tensor ops, so gradients of gradients stay available on every implementation.
"""
import math
import warnings

import numpy as np

from .. import autograd, backend, dispatch
from ..autograd import Function
from ..backend import xp_of
from ..tensor import Tensor
from ._util import normalize_dim

__all__ = ["softmax", "log_softmax", "Softmax", "LogSoftmax", "CrossEntropy",
           "softmax_forward_reference", "softmax_backward_reference",
           "cross_entropy_forward_reference", "cross_entropy_backward_reference"]

FAMILY = "softmax"
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- reference implementations: (outer, C, inner) arrays ---------------------------------------

def softmax_forward_reference(x3, log):
    """softmax (or log_softmax) over axis 1, with torch's max shift (an all -inf slice -> NaN)."""
    xp = xp_of(x3)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        z = x3 - x3.max(axis=1, keepdims=True)
        if log:
            return z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))
        e = xp.exp(z)
        e /= e.sum(axis=1, keepdims=True)
        return e


def softmax_backward_reference(y3, g3, log):
    """``y (g - sum(g y))`` (softmax) or ``g - exp(y) sum(g)`` (log_softmax) over axis 1."""
    xp = xp_of(y3)
    if log:
        return g3 - xp.exp(y3) * g3.sum(axis=1, keepdims=True)
    gy = g3 * y3
    return gy - y3 * gy.sum(axis=1, keepdims=True)


def _ce_common(x3, target, weight, ignore_index):
    xp = xp_of(x3)
    valid = target != ignore_index
    safe = backend.where(valid, target, xp.zeros_like(target))
    w = xp.ones(target.shape, dtype=x3.dtype) if weight is None else weight[safe]
    wt = backend.where(valid, w, xp.zeros_like(w))
    return xp, valid, safe, wt


def cross_entropy_forward_reference(x3, target, weight, ignore_index, eps, wsum):
    """Per-position ``(loss, target weight, lse)``, each (outer, inner); see csrc/softmax.h.

    ``loss = (1 - eps) w_t (lse - x_t) + eps / C (wsum lse - sum_c w_c x_c)``, 0 where
    ``target == ignore_index`` (whose weight is then 0).
    """
    C = x3.shape[1]
    xp, valid, safe, wt = _ce_common(x3, target, weight, ignore_index)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = x3.max(axis=1)
        lse = xp.log(xp.exp(x3 - m[:, None]).sum(axis=1)) + m
        xt = xp.take_along_axis(x3, safe[:, None], axis=1)[:, 0]
        loss = (1 - eps) * wt * (lse - xt)
        if eps:
            sx = (x3 if weight is None else x3 * weight[:, None]).sum(axis=1)
            loss = loss + eps / C * (wsum * lse - sx)
    loss = backend.where(valid, loss, xp.zeros_like(loss)).astype(x3.dtype, copy=False)
    return loss, wt, lse.astype(x3.dtype, copy=False)


def cross_entropy_backward_reference(x3, target, weight, lse, gl, ignore_index, eps, wsum):
    """d loss / d x given ``gl`` = d out / d loss per position (outer, inner): with
    ``p = exp(x - lse)``, ``dx_c = gl [(1 - eps) w_t (p_c - [c == t]) + eps / C (wsum p_c - w_c)]``.
    """
    C = x3.shape[1]
    xp, valid, safe, wt = _ce_common(x3, target, weight, ignore_index)
    with np.errstate(invalid="ignore", over="ignore"):
        p = xp.exp(x3 - lse[:, None])
        a = gl * ((1 - eps) * wt + eps * wsum / C)
        d = gl * (1 - eps) * wt
        wc = 1.0 if weight is None else weight[None, :, None]
        dx = a[:, None] * p - (gl * (eps / C))[:, None] * wc
        onehot = xp.arange(C)[None, :, None] == safe[:, None]
        dx -= onehot * d[:, None]
    return backend.where(valid[:, None], dx, xp.zeros_like(dx)).astype(x3.dtype, copy=False)


# ---- registrations -----------------------------------------------------------------------------

_REFERENCE = {"forward": softmax_forward_reference, "backward": softmax_backward_reference,
              "ce_forward": cross_entropy_forward_reference,
              "ce_backward": cross_entropy_backward_reference}
_CPP = {"forward": "softmax_forward_cpu", "backward": "softmax_backward_cpu",
        "ce_forward": "cross_entropy_forward_cpu", "ce_backward": "cross_entropy_backward_cpu"}


def _load_cpp(op):
    _C = dispatch.require_C()
    if not hasattr(_C, _CPP[op]):
        raise RuntimeError(f"gmcore._C has no {_CPP[op]} (rebuild the extension)")
    return getattr(_C, _CPP[op])


def _load_reference_cuda(op):
    dispatch.require_cupy()
    return _REFERENCE[op]


def _load_triton(op):
    dispatch.require_cupy()
    try:
        from gmcore.kernels.triton import softmax as mod
    except ImportError as exc:
        raise ImportError(f"triton kernels unavailable ({exc})") from None
    return getattr(mod, op)


def _load_cuda(op):
    dispatch.require_cupy()
    _C = dispatch.require_C(cuda=True)
    if not hasattr(_C, "softmax_forward_cuda"):
        raise RuntimeError("gmcore._C has no softmax_forward_cuda (rebuild the extension)")
    return _cuda_launchers(_C)[op]


def _cuda_launchers(_C):
    """Array-level wrappers over the ``_C`` CUDA entry points (pointers, CuPy's stream)."""
    import cupy as cp

    def stream():
        return cp.cuda.get_current_stream().ptr

    def forward(x3, log):
        y = cp.empty_like(x3)
        _C.softmax_forward_cuda(x3.data.ptr, y.data.ptr, *x3.shape, bool(log), x3.dtype.name,
                                stream())
        return y

    def backward(y3, g3, log):
        dx = cp.empty_like(y3)
        _C.softmax_backward_cuda(y3.data.ptr, g3.data.ptr, dx.data.ptr, *y3.shape, bool(log),
                                 y3.dtype.name, stream())
        return dx

    def ce_forward(x3, target, weight, ignore_index, eps, wsum):
        outer, _, inner = x3.shape
        loss, wt, lse = (cp.empty((outer, inner), dtype=x3.dtype) for _ in range(3))
        wptr = 0 if weight is None else weight.data.ptr
        _C.cross_entropy_forward_cuda(x3.data.ptr, target.data.ptr, wptr, loss.data.ptr,
                                      wt.data.ptr, lse.data.ptr, *x3.shape, int(ignore_index),
                                      float(eps), float(wsum), x3.dtype.name, stream())
        return loss, wt, lse

    def ce_backward(x3, target, weight, lse, gl, ignore_index, eps, wsum):
        dx = cp.empty_like(x3)
        wptr = 0 if weight is None else weight.data.ptr
        _C.cross_entropy_backward_cuda(x3.data.ptr, target.data.ptr, wptr, lse.data.ptr,
                                       gl.data.ptr, dx.data.ptr, *x3.shape, int(ignore_index),
                                       float(eps), float(wsum), x3.dtype.name, stream())
        return dx

    return {"forward": forward, "backward": backward, "ce_forward": ce_forward,
            "ce_backward": ce_backward}


def _bind(loader, op):
    return lambda: loader(op)


# Preference order = registration order (fastest first); GMCORE_KERNELS overrides.
for _op in ("forward", "backward", "ce_forward", "ce_backward"):
    dispatch.register(FAMILY, _op, "cpu", "cpp", _bind(_load_cpp, _op))
    dispatch.register(FAMILY, _op, "cpu", "reference", _bind(lambda op: _REFERENCE[op], _op))
    dispatch.register(FAMILY, _op, "cuda", "triton", _bind(_load_triton, _op))
    dispatch.register(FAMILY, _op, "cuda", "cuda", _bind(_load_cuda, _op))
    dispatch.register(FAMILY, _op, "cuda", "reference", _bind(_load_reference_cuda, _op))


def _impl(op, a):
    if a.dtype not in _KERNEL_DTYPES:  # kernels cover float32/float64; others run the reference
        return _REFERENCE[op]
    return dispatch.get(FAMILY, op, backend.device_of(a).type)


def _shaped(a, shape):
    """``a`` (a fresh kernel output) reshaped in place: it stays an array that owns its data, so
    the engine stores it as a leaf's .grad without a copy."""
    try:
        a.shape = shape
        return a
    except (AttributeError, ValueError):
        return a.reshape(shape)


def _as3(a, d):
    """``a`` as a C-contiguous (outer, C, inner) array, C = a.shape[d] (a view when possible)."""
    xp = xp_of(a)
    shape = a.shape
    return xp.ascontiguousarray(a).reshape(math.prod(shape[:d]), shape[d], math.prod(shape[d + 1:]))


# ---- softmax / log_softmax ---------------------------------------------------------------------

class _SoftmaxBase(Function):
    """softmax (``LOG = False``) or log_softmax over one dim.

    Forward and the unrecorded backward are one dispatched kernel each, on the output y alone;
    the recorded backward (create_graph) is written with tensor ops:
    softmax ``dx = y (g - sum(g y))``, log_softmax ``dx = g - exp(y) sum(g)``.
    """
    LOG = False

    @classmethod
    def forward(cls, ctx, x, dim):
        d = normalize_dim(dim, x.ndim)  # a 0-d input accepts dim 0 or -1 only (torch)
        ctx.dim = None if x.ndim == 0 else d
        xp = xp_of(x)
        if x.ndim == 0 or x.size == 0:
            y = xp.zeros_like(x) if cls.LOG else xp.ones_like(x)
        else:
            x3 = _as3(x, d)
            y = _impl("forward", x3)(x3, cls.LOG).reshape(x.shape)
        ctx.save_for_backward(y)
        return y

    @classmethod
    def backward(cls, ctx, g):
        if autograd.is_grad_enabled():  # recorded: tensor ops, differentiable again
            y, = ctx.saved_tensors
            if cls.LOG:
                s = g if ctx.dim is None else g.sum(ctx.dim, keepdim=True)
                return g - y.exp() * s, None
            gy = g * y
            s = gy if ctx.dim is None else gy.sum(ctx.dim, keepdim=True)
            return gy - y * s, None
        y, = ctx.saved_arrays
        if ctx.dim is None or y.size == 0:  # 0-d: the derivative is 0; empty: nothing to do
            return Tensor(xp_of(y).zeros_like(y)), None
        y3 = _as3(y, ctx.dim)
        g3 = _as3(g.data.astype(y.dtype, copy=False), ctx.dim)
        return Tensor(_shaped(_impl("backward", y3)(y3, g3, cls.LOG), y.shape)), None


class Softmax(_SoftmaxBase):
    LOG = False


class LogSoftmax(_SoftmaxBase):
    LOG = True


def _softmax_input(input, dim, dtype, op):
    if dtype is not None:
        input = input.to(dtype)
    if not input.is_floating_point():
        raise TypeError(f"{op}(): expected a floating point input, got {input.dtype} "
                        "(pass dtype=gmcore.float32 to convert)")
    if dim is None:  # PyTorch's legacy implicit choice
        dim = 0 if input.ndim in (0, 1, 3) else 1
        warnings.warn(f"Implicit dimension choice for {op} has been deprecated. Change the call "
                      "to include dim=X as an argument.", UserWarning, stacklevel=3)
    return input, dim


def softmax(input, dim=None, dtype=None):
    """``exp(x) / sum(exp(x))`` along ``dim``, computed with the max subtracted (no overflow).

    >>> import gmcore as gm
    >>> gm.softmax(gm.tensor([[1.0, 1.0], [0.0, 1000.0]]), dim=1).tolist()
    [[0.5, 0.5], [0.0, 1.0]]
    """
    input, dim = _softmax_input(input, dim, dtype, "softmax")
    return Softmax.apply(input, dim)


def log_softmax(input, dim=None, dtype=None):
    """``x - logsumexp(x)`` along ``dim`` (stable: finite even for huge logits).

    >>> import gmcore as gm
    >>> gm.log_softmax(gm.tensor([0.0, 1000.0]), dim=0).tolist()
    [-1000.0, 0.0]
    """
    input, dim = _softmax_input(input, dim, dtype, "log_softmax")
    return LogSoftmax.apply(input, dim)


# ---- cross entropy on class indices ------------------------------------------------------------

class CrossEntropy(Function):
    """Cross entropy of logits ``x`` (class dim ``cdim``) and int64 class indices, reduced.

    Called by ``gmcore.nn.functional.cross_entropy`` after its argument checks; ``weight`` is a
    raw array in x's dtype (or None), constant as in torch. Forward keeps the per-position lse
    for the backward; the mean divides by the summed target weights (NaN when every target is
    ignored, as torch).
    """

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, eps, reduction, cdim):
        C = x.shape[cdim]
        x3 = _as3(x, cdim)
        t2 = xp_of(target).ascontiguousarray(target, dtype=np.int64).reshape(x3.shape[0],
                                                                             x3.shape[2])
        wsum = float(C) if weight is None else float(weight.sum())
        loss, wt, lse = _impl("ce_forward", x3)(x3, t2, weight, ignore_index, eps, wsum)
        ctx.args = (t2, weight, ignore_index, eps, wsum, reduction, cdim)
        ctx.lse = lse
        ctx.save_for_backward(x)
        if reduction == "none":
            return loss.reshape(target.shape)
        total = loss.sum()
        if reduction == "sum":
            return total
        ctx.denom = wt.sum()
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored: 0 / 0 = NaN (torch)
            return total / ctx.denom

    @staticmethod
    def backward(ctx, g):
        t2, weight, ignore_index, eps, wsum, reduction, cdim = ctx.args
        x, = ctx.saved_tensors
        xd = x.data
        xp = xp_of(xd)
        pos = t2.shape  # (outer, inner)
        if reduction == "mean":
            g = g / Tensor(xp.asarray(ctx.denom, dtype=xd.dtype))
        if autograd.is_grad_enabled():  # recorded: dx = gl (p A - B), p = softmax(x)
            return _ce_backward_tensor(x, g, t2, weight, ignore_index, eps, wsum, cdim), \
                None, None, None, None, None, None
        gd = g.data.astype(xd.dtype, copy=False)
        gl = xp.ascontiguousarray(xp.broadcast_to(gd.reshape(pos) if gd.ndim else gd, pos))
        x3 = _as3(xd, cdim)
        dx = _impl("ce_backward", x3)(x3, t2, weight, ctx.lse, gl, ignore_index, eps, wsum)
        return Tensor(_shaped(dx, xd.shape)), None, None, None, None, None, None


def _ce_backward_tensor(x, g, t2, weight, ignore_index, eps, wsum, cdim):
    """The cross-entropy gradient from tensor ops (differentiable in x and g):
    ``dx = gl (p A - B)``, p = softmax(x), with the constants ``A = (1 - eps) w_t + eps wsum / C``
    per position and ``B = (1 - eps) w_t [c == t] + eps / C w_c`` (both 0 where ignored)."""
    xd = x.data
    xp = xp_of(xd)
    C = xd.shape[cdim]
    _, valid, safe, wt = _ce_common(xd.reshape(t2.shape[0], C, t2.shape[1]), t2, weight,
                                    ignore_index)
    wc = xp.ones(C, dtype=xd.dtype) if weight is None else weight
    A = ((1 - eps) * wt + eps * wsum / C) * valid  # (outer, inner)
    B = (1 - eps) * wt[:, None] * (xp.arange(C)[None, :, None] == safe[:, None]) \
        + (eps / C) * wc[None, :, None]  # (outer, C, inner)
    B = B * valid[:, None]
    keep = tuple(1 if d == cdim else n for d, n in enumerate(xd.shape))  # x's shape, C -> 1
    gl = g.reshape(keep) if g.ndim else g
    return gl * (Softmax.apply(x, cdim) * Tensor(A.astype(xd.dtype).reshape(keep))
                 - Tensor(B.astype(xd.dtype).reshape(xd.shape)))
