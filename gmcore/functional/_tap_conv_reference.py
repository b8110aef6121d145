"""Reference implementation of the tap-convolution contract (``masked_conv`` / ``causal_conv``).

A tap convolution is PyTorch's conv2d (cross-correlation, groups=1) restricted to a list of
active kernel taps ``(ky, kx)``; see ``/csrc/masked_conv.h`` and the contract in
:mod:`gmcore.functional.masked_conv`. With ``iy = oy*sh - pad_top + ky*dh`` and
``ix = ox*sw - pad_left + kx*dw`` (outside the input reads 0)::

    y[n, o, oy, ox] = bias[o] + sum_{(ky, kx) in taps} sum_c w[o, c, ky, kx] * x[n, c, iy, ix]

The three functions below are the specification the compiled implementations are tested
against. They are written with ``xp`` (NumPy or CuPy) as an im2col restricted to the active
taps: columns ``(N, T*C, Ho*Wo)`` (tap-major, channel-minor), so one batched GEMM
``(O, T*C) @ (N, T*C, Ho*Wo)`` writes ``(N, O, Ho*Wo)`` without an output transpose. Weights at
inactive taps are never read; the weight gradient is exactly 0 there.

Arguments (raw arrays, one float dtype): ``x`` (N, C, H, W), ``w`` (O, C, KH, KW),
``gy`` (N, O, Ho, Wo), ``taps`` int64 (T, 2), ``geom = ((sh, sw), (pad_top, pad_left),
(dh, dw))``, ``out_hw``/``in_hw``/``kernel_hw`` pairs of ints.
"""
from __future__ import annotations

from ..backend import xp_of

__all__ = ["tap_conv2d_forward", "tap_conv2d_input_grad", "tap_conv2d_weight_grad"]


def _tap_list(taps):
    return [(int(t[0]), int(t[1])) for t in (taps.tolist() if hasattr(taps, "tolist") else taps)]


def _span(out, stride, dil, k_max):
    """Rows (cols) of the padded frame the output grid reaches: ``(out-1)*s + k_max*d + 1``."""
    return (out - 1) * stride + k_max * dil + 1


def _padded(x, geom, out_hw, taps):
    """x placed in a zero frame whose origin is padded coordinate 0 (input row -pad_top)."""
    xp = xp_of(x)
    (sh, sw), (pt, pl), (dh, dw) = geom
    n, c, h, w = x.shape
    ho, wo = out_hw
    hb = _span(ho, sh, dh, max(t[0] for t in taps))
    wb = _span(wo, sw, dw, max(t[1] for t in taps))
    buf = xp.zeros((n, c, hb, wb), dtype=x.dtype)
    # the part of x that lands inside the frame (a big stride may only sample the padding)
    hv, wv = max(0, min(h, hb - pt)), max(0, min(w, wb - pl))
    buf[:, :, pt:pt + hv, pl:pl + wv] = x[:, :, :hv, :wv]
    return buf


def _columns(x, taps, geom, out_hw):
    """Columns (N, T, C, Ho, Wo): ``cols[:, t] = x_padded`` sampled through tap t."""
    xp = xp_of(x)
    (sh, sw), _, (dh, dw) = geom
    n, c = x.shape[:2]
    ho, wo = out_hw
    buf = _padded(x, geom, out_hw, taps)
    cols = xp.empty((n, len(taps), c, ho, wo), dtype=x.dtype)
    for t, (ky, kx) in enumerate(taps):
        r, q = ky * dh, kx * dw
        cols[:, t] = buf[:, :, r:r + (ho - 1) * sh + 1:sh, q:q + (wo - 1) * sw + 1:sw]
    return cols


def _tap_weight(w, taps):
    """The active taps' weights as the GEMM operand (O, T*C), tap-major like the columns."""
    xp = xp_of(w)
    ky = xp.asarray([t[0] for t in taps])
    kx = xp.asarray([t[1] for t in taps])
    o, c = w.shape[:2]
    return xp.ascontiguousarray(w[:, :, ky, kx].transpose(0, 2, 1)).reshape(o, len(taps) * c)


def tap_conv2d_forward(x, w, bias, taps, geom, out_hw):
    """``y (N, O, Ho, Wo)``: the tap convolution of x with the active taps of w, plus bias."""
    xp = xp_of(x)
    taps = _tap_list(taps)
    n, c = x.shape[:2]
    o = w.shape[0]
    ho, wo = out_hw
    cols = _columns(x, taps, geom, out_hw).reshape(n, len(taps) * c, ho * wo)
    y = xp.matmul(_tap_weight(w, taps), cols)  # (N, O, Ho*Wo)
    if bias is not None:
        y += bias.reshape(1, o, 1)
    return y.reshape(n, o, ho, wo)


def tap_conv2d_input_grad(gy, w, taps, geom, in_hw):
    """``gx (N, C, H, W)``: the adjoint of the forward in x (a transposed tap convolution)."""
    xp = xp_of(gy)
    taps = _tap_list(taps)
    (sh, sw), (pt, pl), (dh, dw) = geom
    n, o, ho, wo = gy.shape
    c = w.shape[1]
    h, wd = in_hw
    g2 = xp.ascontiguousarray(gy).reshape(n, o, ho * wo)
    gcols = xp.matmul(_tap_weight(w, taps).T, g2).reshape(n, len(taps), c, ho, wo)
    hb = max(_span(ho, sh, dh, max(t[0] for t in taps)), pt + h)
    wb = max(_span(wo, sw, dw, max(t[1] for t in taps)), pl + wd)
    buf = xp.zeros((n, c, hb, wb), dtype=gy.dtype)
    for t, (ky, kx) in enumerate(taps):
        r, q = ky * dh, kx * dw
        # one tap's strided slice has no repeated positions: += is a correct scatter-add
        buf[:, :, r:r + (ho - 1) * sh + 1:sh, q:q + (wo - 1) * sw + 1:sw] += gcols[:, t]
    return xp.ascontiguousarray(buf[:, :, pt:pt + h, pl:pl + wd])


def tap_conv2d_weight_grad(x, gy, taps, geom, kernel_hw):
    """``gw (O, C, KH, KW)``: the adjoint of the forward in w; exactly 0 at inactive taps."""
    xp = xp_of(x)
    taps = _tap_list(taps)
    n, c = x.shape[:2]
    _, o, ho, wo = gy.shape
    kh, kw = kernel_hw
    cols = _columns(x, taps, geom, (ho, wo)).reshape(n, len(taps) * c, ho * wo)
    g2 = xp.ascontiguousarray(gy).reshape(n, o, ho * wo)
    # (O, N*L) @ (N*L, T*C) as one GEMM over the batch folded into the reduction
    gt = xp.matmul(g2, cols.transpose(0, 2, 1)).sum(axis=0).reshape(o, len(taps), c)
    gw = xp.zeros((o, c, kh, kw), dtype=x.dtype)
    for t, (ky, kx) in enumerate(taps):
        gw[:, :, ky, kx] = gt[:, t]
    return gw
