"""2-D max and average pooling: the ``pool`` kernel family and its differentiable Functions.

Implementations work on raw arrays of P = N*C planes, (P, H, W) in and (P, Ho, Wo) out;
``geom = (kh, kw, sh, sw, ph, pw, dh, dw)`` (padding on both sides; the output size, which
``ceil_mode`` may make one larger, is passed in):

=========== ====== ========================================================================
name        device where
=========== ====== ========================================================================
cpp         cpu    ``csrc/pool_cpu.cpp`` via ``gmcore._C`` (OpenMP over planes)
reference   cpu    the ``*_reference`` functions below (NumPy: one strided slice per tap)
reference   cuda   the same on CuPy
=========== ====== ========================================================================

ops: ``max_pool2d`` ``(x, geom, out_hw) -> (y, idx)``, ``max_pool2d_backward``
``(gy, idx, in_hw) -> gx``, ``avg_pool2d`` ``(x, geom, out_hw, count_include_pad, divisor)
-> y`` and ``avg_pool2d_backward`` ``(gy, geom, in_hw, count_include_pad, divisor) -> gx``
(``divisor`` 0: none). Max pooling keeps the flat ``iy*W + ix`` argmax of every window (the
first maximum; a NaN beats any number, the first NaN wins; a window whose elements are all
-inf points at its first real element, as PyTorch) and its backward scatter-adds there.

Gradients of any order: each map's backward is another map of the closed set, so the
backward is recorded when ``create_graph=True`` and runs the kernels either way:

* ``MaxPool2d``       y = gather(x at argmax)  backward: gx = scatter(gy)
* ``_MaxScatter``     gx = scatter(gy)         backward: ggy = gather(ggx)
* ``_MaxGather``      g = gather(x)            backward: scatter(gg)
* ``AvgPool2d``       y = A x                  backward: gx = A^T gy
* ``_AvgPoolT``       gx = A^T gy              backward: A ggx
"""
from __future__ import annotations

import numpy as np

from .. import backend, dispatch
from ..autograd import Function

__all__ = ["MaxPool2d", "AvgPool2d", "max_pool2d_reference", "max_pool2d_backward_reference",
           "avg_pool2d_reference", "avg_pool2d_backward_reference"]

FAMILY = "pool"
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- reference (NumPy / CuPy through xp) ------------------------------------------------------

def _tap_slices(geom, out_hw, i, j):
    """The slice of the padded planes that tap (i, j) reads for every output."""
    kh, kw, sh, sw, ph, pw, dh, dw = geom
    ho, wo = out_hw
    return (slice(None), slice(i * dh, i * dh + (ho - 1) * sh + 1, sh),
            slice(j * dw, j * dw + (wo - 1) * sw + 1, sw))


def _padded_size(hw, geom, out_hw):
    """Rows/cols of a buffer covering the padded input and every tap of every window."""
    kh, kw, sh, sw, ph, pw, dh, dw = geom
    (h, w), (ho, wo) = hw, out_hw
    return (max(ph + h, (ho - 1) * sh + dh * (kh - 1) + 1),
            max(pw + w, (wo - 1) * sw + dw * (kw - 1) + 1))


def max_pool2d_reference(x, geom, out_hw):
    """``(y, idx)`` of (P, H, W) planes: the window maxima and their flat positions."""
    xp = backend.xp_of(x)
    kh, kw, sh, sw, ph, pw, dh, dw = geom
    p, h, w = x.shape
    ho, wo = out_hw
    floating = x.dtype.kind == "f"
    fill = -np.inf if floating else np.iinfo(x.dtype).min
    hb, wb = _padded_size((h, w), geom, out_hw)
    padded = xp.full((p, hb, wb), fill, dtype=x.dtype)
    padded[:, ph:ph + h, pw:pw + w] = x
    y0 = xp.arange(ho).reshape(-1, 1) * sh - ph  # window origins in the unpadded input
    x0 = xp.arange(wo).reshape(1, -1) * sw - pw
    best = xp.full((p, ho, wo), fill, dtype=x.dtype)
    # no real element at all (dilation only): the clamped first tap, as the kernel
    arg = xp.broadcast_to(xp.clip(y0, 0, h - 1) * w + xp.clip(x0, 0, w - 1), (p, ho, wo))
    seen = xp.zeros((ho, wo), dtype=bool)
    for i in range(kh):
        iy = y0 + i * dh
        for j in range(kw):
            ix = x0 + j * dw
            real = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)  # (Ho, Wo)
            v = padded[_tap_slices(geom, out_hw, i, j)]
            upd = v > best
            if floating:  # a NaN beats any number; the first NaN stays
                upd |= xp.isnan(v) & ~xp.isnan(best)
            upd = real & (upd | ~seen)  # the first real tap always counts
            best = backend.where(upd, v, best)
            arg = backend.where(upd, iy * w + ix, arg)
            seen = seen | real
    return best, xp.ascontiguousarray(arg, dtype=np.int64)


def max_pool2d_backward_reference(gy, idx, in_hw):
    """gx (P, H, W): zeros, then ``gx.flat[idx] += gy`` plane by plane."""
    xp = backend.xp_of(gy)
    p = gy.shape[0]
    h, w = in_hw
    gx = xp.zeros((p, h * w), dtype=gy.dtype)
    m = gy.shape[1] * gy.shape[2]  # (not -1: P may be 0)
    backend.scatter_add(gx, (xp.arange(p).reshape(-1, 1), idx.reshape(p, m)), gy.reshape(p, m))
    return gx.reshape(p, h, w)


def _avg_divisor(size, k, s, pad, out, count_include_pad):
    """Per-output divisor along one dim (PyTorch's avg_pool kernel): it is separable."""
    start = np.arange(out) * s - pad
    end = np.minimum(start + k, size + pad)
    if count_include_pad:
        return (end - start).astype(np.float64)
    return (np.minimum(end, size) - np.maximum(start, 0)).astype(np.float64)


def _avg_divisors(xp, dtype, hw, geom, out_hw, count_include_pad, divisor):
    kh, kw, sh, sw, ph, pw = geom[:6]
    if divisor:
        return xp.full(tuple(out_hw), float(divisor), dtype=dtype)
    dv = np.outer(_avg_divisor(hw[0], kh, sh, ph, out_hw[0], count_include_pad),
                  _avg_divisor(hw[1], kw, sw, pw, out_hw[1], count_include_pad))
    return xp.asarray(dv, dtype=dtype)


def avg_pool2d_reference(x, geom, out_hw, count_include_pad, divisor):
    """Window sums over zero padding, divided by PyTorch's divisor (``divisor`` 0: none)."""
    xp = backend.xp_of(x)
    kh, kw, sh, sw, ph, pw = geom[:6]
    p, h, w = x.shape
    hb, wb = _padded_size((h, w), geom, out_hw)
    padded = xp.zeros((p, hb, wb), dtype=x.dtype)
    padded[:, ph:ph + h, pw:pw + w] = x
    s = xp.zeros((p,) + tuple(out_hw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            s += padded[_tap_slices(geom, out_hw, i, j)]
    return s / _avg_divisors(xp, x.dtype, (h, w), geom, out_hw, count_include_pad, divisor)


def avg_pool2d_backward_reference(gy, geom, in_hw, count_include_pad, divisor):
    """The adjoint: every window's ``gy / divisor`` added to each of its elements."""
    xp = backend.xp_of(gy)
    kh, kw, sh, sw, ph, pw = geom[:6]
    p, ho, wo = gy.shape
    h, w = in_hw
    g = gy / _avg_divisors(xp, gy.dtype, in_hw, geom, (ho, wo), count_include_pad, divisor)
    hb, wb = _padded_size(in_hw, geom, (ho, wo))
    buf = xp.zeros((p, hb, wb), dtype=gy.dtype)
    for i in range(kh):
        for j in range(kw):
            buf[_tap_slices(geom, (ho, wo), i, j)] += g  # one tap hits each position once
    return xp.ascontiguousarray(buf[:, ph:ph + h, pw:pw + w])


# ---- cpp ----------------------------------------------------------------------------------------

def _load_cpp():
    _C = dispatch.require_C()
    if not hasattr(_C, "pool_max2d_forward_cpu"):
        raise RuntimeError("gmcore._C was built without the pool kernels (rebuild it)")
    return _C


def _cpp_ops(_C):
    def max_fwd(x, geom, out_hw):
        y = np.empty((x.shape[0],) + tuple(out_hw), dtype=x.dtype)
        idx = np.empty(y.shape, dtype=np.int64)
        _C.pool_max2d_forward_cpu(x, y, idx, tuple(geom))
        return y, idx

    def max_bwd(gy, idx, in_hw):
        gx = np.empty((gy.shape[0],) + tuple(in_hw), dtype=gy.dtype)
        _C.pool_max2d_backward_cpu(gy, idx, gx)
        return gx

    def avg_fwd(x, geom, out_hw, count_include_pad, divisor):
        y = np.empty((x.shape[0],) + tuple(out_hw), dtype=x.dtype)
        _C.pool_avg2d_forward_cpu(x, y, tuple(geom), bool(count_include_pad), int(divisor))
        return y

    def avg_bwd(gy, geom, in_hw, count_include_pad, divisor):
        gx = np.empty((gy.shape[0],) + tuple(in_hw), dtype=gy.dtype)
        _C.pool_avg2d_backward_cpu(gy, gx, tuple(geom), bool(count_include_pad), int(divisor))
        return gx

    return {"max_pool2d": max_fwd, "max_pool2d_backward": max_bwd, "avg_pool2d": avg_fwd,
            "avg_pool2d_backward": avg_bwd}


REFERENCE = {"max_pool2d": max_pool2d_reference,
             "max_pool2d_backward": max_pool2d_backward_reference,
             "avg_pool2d": avg_pool2d_reference,
             "avg_pool2d_backward": avg_pool2d_backward_reference}


def _bind(op):
    def cpp():
        return _cpp_ops(_load_cpp())[op]

    def reference_cuda():
        dispatch.require_cupy()
        return REFERENCE[op]

    return cpp, (lambda: REFERENCE[op]), reference_cuda


# Preference order = registration order (fastest first); GMCORE_KERNELS=pool=reference overrides.
for _op in REFERENCE:
    _cpp, _ref, _ref_cuda = _bind(_op)
    dispatch.register(FAMILY, _op, "cpu", "cpp", _cpp)
    dispatch.register(FAMILY, _op, "cpu", "reference", _ref)
    dispatch.register(FAMILY, _op, "cuda", "reference", _ref_cuda)


def _impl(op, a):
    """The dispatched implementation for array ``a``; other dtypes run the reference."""
    if a.dtype not in KERNEL_DTYPES:
        return REFERENCE[op]
    return dispatch.get(FAMILY, op, backend.device_of(a).type)


def _planes(a):
    """(P, H, W) C-contiguous view of an (N, C, H, W) array (a broadcast gradient is copied)."""
    return backend.xp_of(a).ascontiguousarray(a).reshape((-1,) + tuple(a.shape[-2:]))


# ---- the Functions ----------------------------------------------------------------------------

class MaxPool2d(Function):
    """``(y, idx)``, both (N, C, Ho, Wo): the window maxima of ``x`` (N, C, H, W) and their flat
    ``iy*W + ix`` positions (int64, not differentiable)."""

    @staticmethod
    def forward(ctx, x, geom, out_hw):
        n, c, h, w = x.shape
        y, idx = _impl("max_pool2d", x)(_planes(x), geom, out_hw)
        ctx.idx, ctx.in_hw = idx, (h, w)
        shape = (n, c) + tuple(out_hw)
        return y.reshape(shape), idx.reshape(shape)

    @staticmethod
    def backward(ctx, gy, _gidx=None):
        return _MaxScatter.apply(gy, ctx.idx, ctx.in_hw), None, None


class _MaxScatter(Function):
    @staticmethod
    def forward(ctx, gy, idx, in_hw):
        ctx.idx, ctx.in_hw = idx, in_hw
        gx = _impl("max_pool2d_backward", gy)(_planes(gy), idx, in_hw)
        return gx.reshape(tuple(gy.shape[:2]) + tuple(in_hw))

    @staticmethod
    def backward(ctx, ggx):
        return _MaxGather.apply(ggx, ctx.idx, ctx.in_hw), None, None


class _MaxGather(Function):
    @staticmethod
    def forward(ctx, x, idx, in_hw):
        ctx.idx, ctx.in_hw = idx, in_hw
        xp = backend.xp_of(x)
        p, ho, wo = idx.shape
        g = xp.take_along_axis(_planes(x).reshape(p, in_hw[0] * in_hw[1]), idx.reshape(p, ho * wo),
                               axis=1)
        return g.reshape(tuple(x.shape[:2]) + tuple(idx.shape[1:]))

    @staticmethod
    def backward(ctx, gg):
        return _MaxScatter.apply(gg, ctx.idx, ctx.in_hw), None, None


class AvgPool2d(Function):
    """``y`` (N, C, Ho, Wo) = window sums of ``x`` over zero padding / PyTorch's divisor."""

    @staticmethod
    def forward(ctx, x, geom, out_hw, count_include_pad, divisor):
        n, c, h, w = x.shape
        ctx.args = (geom, (h, w), out_hw, count_include_pad, divisor)
        y = _impl("avg_pool2d", x)(_planes(x), geom, out_hw, count_include_pad, divisor)
        return y.reshape((n, c) + tuple(out_hw))

    @staticmethod
    def backward(ctx, gy):
        return (_AvgPoolT.apply(gy, *ctx.args),) + (None,) * 4


class _AvgPoolT(Function):
    @staticmethod
    def forward(ctx, gy, geom, in_hw, out_hw, count_include_pad, divisor):
        ctx.args = (geom, out_hw, count_include_pad, divisor)
        gx = _impl("avg_pool2d_backward", gy)(_planes(gy), geom, in_hw, count_include_pad,
                                              divisor)
        return gx.reshape(tuple(gy.shape[:2]) + tuple(in_hw))

    @staticmethod
    def backward(ctx, ggx):
        return (AvgPool2d.apply(ggx, *ctx.args),) + (None,) * 5
