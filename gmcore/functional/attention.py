"""Fused scaled-dot-product attention: the ``attention`` kernel family and its differentiable op.

``softmax(q k^T * scale + mask) v`` computed flash-attention style: the kernels save only the
per-row logsumexp ``lse`` (no L x S matrix is held for backward, as torch) and the backward
recomputes the probabilities from it. The math and its derivation are in ``csrc/attention.h``.

Implementations (arrays: q (BH, L, E), k (BH, S, E), v (BH, S, Ev), C-contiguous, float32 or
float64; ``forward -> (out (BH, L, Ev), lse (BH, L))``, ``backward -> (dq, dk, dv)``):

=========== ====== ===========================================================================
name        device where
=========== ====== ===========================================================================
cpp         cpu    ``csrc/attention_cpu.cpp`` via ``gmcore._C`` (blocked, OpenMP, no BLAS)
reference   cpu    :func:`attention_forward_reference` / ``_backward_reference`` (NumPy BLAS)
triton      cuda   ``kernels/triton/attention.py`` (flash-attention forward and backward)
cuda        cuda   ``csrc/attention.cu`` via ``gmcore._C`` (a thread per row: cross-checks)
reference   cuda   the reference functions on CuPy
=========== ====== ===========================================================================

An additive mask reaches the kernels as :class:`MaskView`: a C-contiguous base array read at
``offsets[b] + i * row_stride + j * col_stride`` (strides may be 0), so a mask broadcast over
batch, heads or rows is never materialised.

:class:`ScaledDotProductAttention` runs the dispatched kernels; its backward runs the fused
kernel when the backward is not recorded and rebuilds the gradient from tensor ops when it is
(``create_graph=True``), so gradients of any order stay available.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import backend, dispatch
from ..autograd import Function, is_grad_enabled
from ..tensor import Tensor

__all__ = ["MaskView", "ScaledDotProductAttention", "fused_attention", "fusable", "safe_softmax",
           "attention_forward_reference", "attention_backward_reference"]

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class MaskView(NamedTuple):
    """An additive (BH, L, S) mask as a base array, per-slice offsets and two strides."""

    base: object         # C-contiguous array of the query's dtype
    offsets: object      # int64 (BH,) element offsets into base
    row_stride: int
    col_stride: int

    def dense(self, L, S):
        """The (BH, L, S) mask as an array (the reference implementations read it this way)."""
        xp = backend.xp_of(self.base)
        idx = (self.offsets[:, None, None] + xp.arange(L)[:, None] * self.row_stride
               + xp.arange(S) * self.col_stride)
        return self.base.reshape(-1)[idx]


def _mask_view(mask, lead, L, S):
    """MaskView of an additive mask broadcast to ``lead + (L, S)`` (None passes through)."""
    if mask is None:
        return None
    xp = backend.xp_of(mask)
    base = xp.ascontiguousarray(mask)
    full = xp.broadcast_to(base, tuple(lead) + (L, S))
    item = base.dtype.itemsize
    strides = [s // item for s in full.strides]
    offsets = xp.zeros(lead, dtype=np.int64)
    for d, (n, st) in enumerate(zip(lead, strides[:-2])):
        shape = [1] * len(lead)
        shape[d] = n
        offsets = offsets + (xp.arange(n, dtype=np.int64) * st).reshape(shape)
    return MaskView(base, xp.ascontiguousarray(offsets.reshape(-1)), int(strides[-2]),
                    int(strides[-1]))


# ---- reference implementations (the specification; BLAS through xp.matmul) ---------------------

def _scores(q, k, mask, scale, causal):
    xp = backend.xp_of(q)
    L, S = q.shape[-2], k.shape[-2]
    s = xp.matmul(q, k.swapaxes(-1, -2))
    s *= scale
    if mask is not None:
        s += mask.dense(L, S)
    if causal:
        allowed = xp.tril(xp.ones((L, S), dtype=bool))
        s = backend.where(allowed, s, xp.asarray(-np.inf, dtype=s.dtype))
    return s


def attention_forward_reference(q, k, v, mask, scale, causal):
    """``(out, lse)`` with the full (BH, L, S) score matrix: max-shifted softmax; a row with no
    allowed key gives out = 0 and lse = -inf."""
    xp = backend.xp_of(q)
    BH, L, S, Ev = q.shape[0], q.shape[1], k.shape[1], v.shape[2]
    if S == 0:
        return xp.zeros((BH, L, Ev), q.dtype), xp.full((BH, L), -np.inf, q.dtype)
    s = _scores(q, k, mask, scale, causal)
    m = s.max(axis=-1, keepdims=True)
    m = backend.where(xp.isfinite(m), m, xp.zeros_like(m))
    s -= m
    e = xp.exp(s, out=s)
    l = e.sum(axis=-1, keepdims=True)
    pos = l > 0
    out = xp.matmul(e, v)
    out /= backend.where(pos, l, xp.ones_like(l))
    with np.errstate(divide="ignore"):
        lse = backend.where(pos, m + xp.log(backend.where(pos, l, xp.ones_like(l))),
                            xp.asarray(-np.inf, dtype=q.dtype))
    return out, lse[..., 0]


def attention_backward_reference(q, k, v, out, dout, lse, mask, scale, causal):
    """``(dq, dk, dv)`` recomputing the probabilities from the saved ``lse``."""
    xp = backend.xp_of(q)
    if k.shape[1] == 0 or q.shape[1] == 0:
        return xp.zeros_like(q), xp.zeros_like(k), xp.zeros_like(v)
    s = _scores(q, k, mask, scale, causal)
    # rows with lse = -inf have no allowed key: shifting by +inf makes every term exp(-inf) = 0
    shift = backend.where(lse == -np.inf, xp.asarray(np.inf, dtype=lse.dtype), lse)
    s -= shift[..., None]
    p = xp.exp(s, out=s)
    dv = xp.matmul(p.swapaxes(-1, -2), dout)
    dp = xp.matmul(dout, v.swapaxes(-1, -2))
    dp -= (dout * out).sum(axis=-1, keepdims=True)
    dp *= p
    dq = xp.matmul(dp, k)
    dq *= scale
    dk = xp.matmul(dp.swapaxes(-1, -2), q)
    dk *= scale
    return dq, dk, dv


# ---- loaders ---------------------------------------------------------------------------------

def _mask_args(mask):
    return (None, None, 0, 0) if mask is None else tuple(mask)


def _load_cpp(op):
    def load():
        _C = dispatch.require_C()
        if op == "forward":
            def attention_forward_cpp(q, k, v, mask, scale, causal):
                return _C.attention_forward_cpu(q, k, v, *_mask_args(mask), float(scale),
                                                bool(causal))
            return attention_forward_cpp

        def attention_backward_cpp(q, k, v, out, dout, lse, mask, scale, causal):
            return _C.attention_backward_cpu(q, k, v, out, dout, lse, *_mask_args(mask),
                                             float(scale), bool(causal))
        return attention_backward_cpp
    return load


def _load_triton(op):
    def load():
        dispatch.require_cupy()
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"triton is not installed ({exc})") from None
        from ..kernels.triton import attention as tr
        return tr.attention_forward if op == "forward" else tr.attention_backward
    return load


def _load_cuda(op):
    def load():
        cp = dispatch.require_cupy()
        _C = dispatch.require_C(cuda=True)

        def mask_ptrs(mask):
            if mask is None:
                return 0, 0, 0, 0
            return mask.base.data.ptr, mask.offsets.data.ptr, mask.row_stride, mask.col_stride

        def attention_forward_cuda(q, k, v, mask, scale, causal):
            BH, L, E = q.shape
            S, Ev = k.shape[1], v.shape[2]
            with q.device:
                out = cp.empty((BH, L, Ev), q.dtype)
                lse = cp.empty((BH, L), q.dtype)
                _C.attention_forward_cuda(q.data.ptr, k.data.ptr, v.data.ptr, *mask_ptrs(mask),
                                          out.data.ptr, lse.data.ptr, BH, L, S, E, Ev,
                                          float(scale), bool(causal), q.dtype.name,
                                          cp.cuda.get_current_stream().ptr)
            return out, lse

        def attention_backward_cuda(q, k, v, out, dout, lse, mask, scale, causal):
            BH, L, E = q.shape
            S, Ev = k.shape[1], v.shape[2]
            with q.device:
                dq, dk, dv = cp.empty_like(q), cp.empty_like(k), cp.empty_like(v)
                _C.attention_backward_cuda(q.data.ptr, k.data.ptr, v.data.ptr, out.data.ptr,
                                           dout.data.ptr, lse.data.ptr, *mask_ptrs(mask),
                                           dq.data.ptr, dk.data.ptr, dv.data.ptr, BH, L, S, E, Ev,
                                           float(scale), bool(causal), q.dtype.name,
                                           cp.cuda.get_current_stream().ptr)
            return dq, dk, dv

        return attention_forward_cuda if op == "forward" else attention_backward_cuda
    return load


def _load_reference(op, cuda=False):
    def load():
        if cuda:
            dispatch.require_cupy()
        return attention_forward_reference if op == "forward" else attention_backward_reference
    return load


# Preference order = registration order (fastest first, measured with
# benchmarks/bench_engine.py --suite ops --only attention); GMCORE_KERNELS overrides.
for _op in ("forward", "backward"):
    dispatch.register("attention", _op, "cpu", "cpp", _load_cpp(_op))
    dispatch.register("attention", _op, "cpu", "reference", _load_reference(_op))
    dispatch.register("attention", _op, "cuda", "triton", _load_triton(_op))
    dispatch.register("attention", _op, "cuda", "cuda", _load_cuda(_op))
    dispatch.register("attention", _op, "cuda", "reference", _load_reference(_op, cuda=True))
del _op


# ---- tensor-level helpers ----------------------------------------------------------------------

class _SafeSoftmax(Function):
    """Softmax over the last dim; all ``-inf`` rows give zeros (not NaN). Backward saves the
    output only, with tensor ops, so gradients of any order are available."""

    @staticmethod
    def forward(ctx, x):
        xp = backend.xp_of(x)
        m = x.max(axis=-1, keepdims=True)
        # an all -inf row has max -inf: shift by 0 instead, so exp gives 0 (not exp(nan))
        m = backend.where(xp.isfinite(m), m, xp.zeros_like(m))
        e = xp.exp(x - m)
        s = e.sum(axis=-1, keepdims=True)
        y = e / backend.where(s > 0, s, xp.ones_like(s))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved_tensors
        gy = g * y
        return gy - y * gy.sum(-1, keepdim=True)


def safe_softmax(x):
    """Softmax over the last dim in which an all ``-inf`` row gives zeros (torch's attention)."""
    if x.shape[-1] == 0:
        return x
    return _SafeSoftmax.apply(x)


def _sum_to(a, shape):
    """Sum array ``a`` down to ``shape``, a shape it was broadcast from."""
    shape = tuple(shape)
    if a.shape == shape:
        return a
    extra = a.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, n in enumerate(shape)
                                       if n == 1 and a.shape[extra + i] != 1)
    return a.sum(axis=axes).reshape(shape) if axes else a.reshape(shape)


def _recorded_backward(q, k, v, mask, g, scale, causal):
    """The gradient as tensor ops (itself differentiable): the create_graph=True path."""
    L, S = q.shape[-2], k.shape[-2]
    s = (q @ k.mT) * scale
    if causal:
        xp = q._xp()
        s = s.masked_fill(Tensor(~xp.tril(xp.ones((L, S), dtype=bool))), float("-inf"))
    if mask is not None:
        s = s + mask
    p = safe_softmax(s)
    dv = p.mT @ g
    dp = g @ v.mT
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    dq = (ds @ k) * scale
    dk = (ds.mT @ q) * scale
    return dq.sum_to_size(q.shape), dk.sum_to_size(k.shape), dv.sum_to_size(v.shape)


class ScaledDotProductAttention(Function):
    """Fused attention through the ``attention`` kernels; ``mask`` is additive (or None) and
    receives no gradient (callers send a mask that needs one to the tensor-op path)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scale, causal):
        xp = backend.xp_of(q)
        lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        L, E, S, Ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
        BH = math.prod(lead)

        def flat(a, n, f):
            return xp.ascontiguousarray(xp.broadcast_to(a, lead + (n, f))).reshape(BH, n, f)

        q3, k3, v3 = flat(q, L, E), flat(k, S, E), flat(v, S, Ev)
        mview = _mask_view(mask, lead, L, S)
        impl = dispatch.get("attention", "forward", backend.device_of(q).type)
        out3, lse = impl(q3, k3, v3, mview, scale, causal)
        out = out3.reshape(lead + (L, Ev))
        ctx.meta = (lead, mview, scale, causal)
        ctx.save_for_backward(q, k, v, mask, q3, k3, v3, out3, lse)
        return out

    @staticmethod
    def backward(ctx, g):
        lead, mview, scale, causal = ctx.meta
        if is_grad_enabled():  # create_graph=True: build the gradient from tensor ops
            q, k, v, mask = ctx.saved_tensors[:4]
            return _recorded_backward(q, k, v, mask, g, scale, causal) + (None, None, None)
        q, k, v, _, q3, k3, v3, out3, lse = ctx.saved_arrays
        xp = backend.xp_of(q3)
        g3 = xp.ascontiguousarray(g.data).reshape(out3.shape)
        impl = dispatch.get("attention", "backward", backend.device_of(q3).type)
        dq, dk, dv = impl(q3, k3, v3, out3, g3, lse, mview, scale, causal)
        grads = []
        for d, x in ((dq, q), (dk, k), (dv, v)):
            grads.append(Tensor(_sum_to(d.reshape(lead + d.shape[1:]), x.shape)))
        return tuple(grads) + (None, None, None)


def fused_attention(query, key, value, mask=None, scale=None, is_causal=False):
    """Fused ``softmax(query @ key^T * scale + mask) @ value`` on float32/float64 Tensors.

    ``mask`` is an additive float Tensor broadcasting to (..., L, S) that needs no gradient,
    or None. Argument checks are the caller's
    (:func:`gmcore.nn.functional.scaled_dot_product_attention` makes them and chooses this path).

    >>> import gmcore as gm
    >>> q = k = v = gm.eye(3).reshape(1, 3, 3)
    >>> out = fused_attention(q, k, v, is_causal=True)
    >>> [round(x, 4) for x in out[0, 0].tolist()]
    [1.0, 0.0, 0.0]
    """
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    return ScaledDotProductAttention.apply(query, key, value, mask, scale, bool(is_causal))


def fusable(query, key, value, mask):
    """Whether :func:`fused_attention` takes these inputs (kernel dtype, a mask that needs no
    gradient and broadcasts to the batch of query/key/value)."""
    if query.data.dtype not in _KERNEL_DTYPES or query.shape[-1] == 0:
        return False
    if mask is None:
        return True
    if mask.requires_grad or mask.data.dtype != query.data.dtype:
        return False
    try:
        lead = np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
        full = lead + (query.shape[-2], key.shape[-2])
        return np.broadcast_shapes(tuple(mask.shape), full) == full
    except ValueError:
        return False
