"""Tap convolution in Triton: implicit GEMM over a list of active kernel taps.

The contract (three functions, exact semantics) is in ``csrc/masked_conv.h``: a conv2d
(cross-correlation, groups=1) that visits only the taps ``(ky, kx)`` listed in ``taps``; the
weights of the other taps are never read and get a zero gradient.

GEMM views (M output positions, K = taps x channels):

* forward     ``y (M=N*Ho*Wo, O) = sum_t  x_t (M, C) @ w_t (C, O)`` -- a program owns a
  ``BLOCK_M x BLOCK_O`` tile of y, loops over the taps and over C in ``BLOCK_C`` chunks; ``x_t`` is
  gathered with computed addresses (the padding is a masked load reading 0).
* input_grad  ``gx (N*H*W, C) = sum_t gy_t (., O) @ w_t^T (O, C)`` in gather form (no atomics): for
  input row iy and tap ky the output row is ``oy = (iy + pad_top - ky*dh) / sh``, read only where
  that division is exact and lands inside [0, Ho).
* weight_grad ``gw_t (O, C) = gy (O, M) @ x_t (M, C)``: a program per (O-block x C-block, tap,
  split of M); each split writes its partial sum, the launcher adds the splits (deterministic) and
  scatters the taps into the dense (O, C, KH, KW) gradient, zero at inactive taps.

The weight is packed once per call to ``(T, C, O)`` / ``(T, O, C)`` (a gather of the active taps,
O(O*C*T)): the tile loads are then contiguous and inactive taps are never touched.

Precision: float32 inputs accumulate in float32 with ``tl.dot`` in IEEE float32 by default (the
reference and the other implementations agree to float32 rounding); set ``ALLOW_TF32 = True``
(module attribute) or pass ``allow_tf32=True`` for tensor-core TF32 products, about 1e-3
relative error, as PyTorch's cuDNN default. float64 inputs run a true float64 path (``tl.dot`` in
float64, float64 accumulation).

The same forward serves a plain conv2d: ``all_taps(kh, kw)`` lists every tap.

Launchers take NumPy arrays under ``TRITON_INTERPRET=1`` and CuPy arrays on a GPU (launched
like the other families, on Triton's current stream); all outputs are new arrays.
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from gmcore.backend import xp_of
from gmcore.kernels._masked_conv_cuda import (_device_taps, check_forward, check_input_grad,
                                              check_weight_grad, weight_grad_splits)
from gmcore.kernels._launch import cdiv, interpreting, tl_arg

__all__ = ["tap_conv2d_forward", "tap_conv2d_input_grad", "tap_conv2d_weight_grad", "all_taps",
           "ALLOW_TF32", "SM90_KERNELS"]

# TF32 tensor-core products for float32 inputs (faster, ~1e-3 relative error). Off: exact fp32.
ALLOW_TF32 = False


@triton.jit
def _mma(a, b, acc, ALLOW_TF32: tl.constexpr):
    if ALLOW_TF32:
        return tl.dot(a, b, acc, input_precision="tf32")
    return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _fwd_kernel(x_ptr, wp_ptr, b_ptr, taps_ptr, y_ptr, N, C, H, W, O, Ho, Wo, T,
                sh, sw, pt, pl, dh, dw, HAS_BIAS: tl.constexpr, ALLOW_TF32: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr):
    # int64 from the first product on: N*C*H*W and N*O*Ho*Wo may pass 2^31
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    ohw = (offs_m * 0 + Ho) * Wo  # an int64 tensor (a 1 may arrive as a constexpr)
    m_ok = offs_m < N * ohw
    o_ok = offs_o < O
    n = offs_m // ohw
    p = offs_m - n * ohw
    oy = p // Wo
    ox = p - oy * Wo
    hw = (ohw * 0 + H) * W
    x_row0 = x_ptr + n * C * hw  # image n, channel 0
    acc = tl.zeros([BLOCK_M, BLOCK_O], dtype=tl.float64 if x_ptr.dtype.element_ty == tl.float64
                   else tl.float32)
    w_tap = wp_ptr  # tap t's (C, O) slice; advanced by pointer steps (64-bit addresses)
    for t in range(T):
        ky = tl.load(taps_ptr + 2 * t)
        kx = tl.load(taps_ptr + 2 * t + 1)
        iy = oy * sh - pt + ky * dh
        ix = ox * sw - pl + kx * dw
        ok = m_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        x_row = x_row0 + iy * W + ix
        for c0 in range(0, C, BLOCK_C):
            cs = c0 + tl.arange(0, BLOCK_C)
            c_ok = cs < C
            a = tl.load(x_row[:, None] + cs[None, :].to(tl.int64) * hw[:, None],
                        mask=ok[:, None] & c_ok[None, :], other=0.0)
            b = tl.load(w_tap + cs[:, None] * O + offs_o[None, :],
                        mask=c_ok[:, None] & o_ok[None, :], other=0.0)
            acc = _mma(a, b, acc, ALLOW_TF32)
        w_tap += C * O
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_o, mask=o_ok, other=0.0).to(acc.dtype)[None, :]
    y_offs = (n * O * ohw + p)[:, None] + offs_o[None, :].to(tl.int64) * ohw[:, None]
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & o_ok[None, :])


@triton.jit
def _dgrad_kernel(gy_ptr, wq_ptr, taps_ptr, gx_ptr, N, C, H, W, O, Ho, Wo, T,
                  sh, sw, pt, pl, dh, dw, ALLOW_TF32: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr):
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # input positions
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw = (offs_m * 0 + H) * W
    m_ok = offs_m < N * hw
    c_ok = offs_c < C
    n = offs_m // hw
    q = offs_m - n * hw
    iy = q // W
    ix = q - iy * W
    ohw = (hw * 0 + Ho) * Wo
    gy_row0 = gy_ptr + n * O * ohw
    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float64 if gy_ptr.dtype.element_ty == tl.float64
                   else tl.float32)
    w_tap = wq_ptr  # tap t's (O, C) slice
    for t in range(T):
        ky = tl.load(taps_ptr + 2 * t)
        kx = tl.load(taps_ptr + 2 * t + 1)
        ty = iy + pt - ky * dh  # = oy * sh for the output row that reads iy through ky
        tx = ix + pl - kx * dw
        oy = ty // sh  # negative ty: whatever the rounding, the mask below rejects it
        ox = tx // sw
        ok = m_ok & (ty >= 0) & (tx >= 0) & (oy * sh == ty) & (ox * sw == tx) & (oy < Ho) & (ox < Wo)
        gy_row = gy_row0 + oy * Wo + ox
        for o0 in range(0, O, BLOCK_O):
            oc = o0 + tl.arange(0, BLOCK_O)
            o_ok = oc < O
            a = tl.load(gy_row[:, None] + oc[None, :].to(tl.int64) * ohw[:, None],
                        mask=ok[:, None] & o_ok[None, :], other=0.0)
            b = tl.load(w_tap + oc[:, None] * C + offs_c[None, :],
                        mask=o_ok[:, None] & c_ok[None, :], other=0.0)
            acc = _mma(a, b, acc, ALLOW_TF32)
        w_tap += O * C
    gx_offs = (n * C * hw + q)[:, None] + offs_c[None, :].to(tl.int64) * hw[:, None]
    tl.store(gx_ptr + gx_offs, acc.to(gx_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])


@triton.jit
def _wgrad_kernel(x_ptr, gy_ptr, taps_ptr, part_ptr, N, C, H, W, O, Ho, Wo, T, CHUNK,
                  sh, sw, pt, pl, dh, dw, ALLOW_TF32: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr):
    n_cblk = tl.cdiv(C, BLOCK_C)
    pid = tl.program_id(0)
    t = tl.program_id(1)
    s = tl.program_id(2)
    offs_o = (pid // n_cblk) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_c = (pid % n_cblk) * BLOCK_C + tl.arange(0, BLOCK_C)
    o_ok = offs_o < O
    c_ok = offs_c < C
    ky = tl.load(taps_ptr + 2 * t)
    kx = tl.load(taps_ptr + 2 * t + 1)
    base = tl.arange(0, BLOCK_M).to(tl.int64)
    ohw = (base * 0 + Ho) * Wo
    hw = (base * 0 + H) * W
    m_total = N * ohw
    start = s.to(tl.int64) * CHUNK
    acc = tl.zeros([BLOCK_O, BLOCK_C], dtype=tl.float64 if x_ptr.dtype.element_ty == tl.float64
                   else tl.float32)
    for m0 in range(0, CHUNK, BLOCK_M):
        offs_m = start + m0 + base
        m_ok = offs_m < m_total
        n = offs_m // ohw
        p = offs_m - n * ohw
        oy = p // Wo
        ox = p - oy * Wo
        iy = oy * sh - pt + ky * dh
        ix = ox * sw - pl + kx * dw
        ok = m_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        g = tl.load(gy_ptr + (n * O * ohw + p)[None, :] + offs_o[:, None].to(tl.int64) * ohw[None, :],
                    mask=o_ok[:, None] & m_ok[None, :], other=0.0)
        a = tl.load(x_ptr + (n * C * hw + iy * W + ix)[:, None] + offs_c[None, :].to(tl.int64) * hw[:, None],
                    mask=ok[:, None] & c_ok[None, :], other=0.0)
        acc = _mma(g, a, acc, ALLOW_TF32)
    # partial[s, t, o, c]
    row = (s.to(tl.int64) * T + t) * O
    offs = (row + offs_o)[:, None].to(tl.int64) * C + offs_c[None, :]
    tl.store(part_ptr + offs, acc.to(part_ptr.dtype.element_ty), mask=o_ok[:, None] & c_ok[None, :])


# ---- launchers --------------------------------------------------------------------------------

def all_taps(kh, kw):
    """Every tap of a ``kh x kw`` kernel, row-major (a plain conv2d as a tap convolution).

    >>> all_taps(2, 2).tolist()
    [[0, 0], [0, 1], [1, 0], [1, 1]]
    """
    ky, kx = np.meshgrid(np.arange(kh, dtype=np.int64), np.arange(kw, dtype=np.int64), indexing="ij")
    return np.stack([ky.ravel(), kx.ravel()], axis=1)


def _blocks(m, wide, narrow, block_m, block_w, block_k, fp64):
    """Tile sizes: given ones win; else the GPU defaults (64 x 64, K step 32; 16 for float64, whose
    tiles take twice the registers and shared memory) or, in the interpreter (~0.5 ms per program),
    tiles as large as the problem (few programs)."""
    lo = 16  # tl.dot needs every tile side >= 16
    if interpreting():
        bm = block_m or max(lo, min(256, triton.next_power_of_2(m)))
        bw = block_w or max(lo, min(128, triton.next_power_of_2(wide)))
        bk = block_k or max(lo, min(128, triton.next_power_of_2(narrow)))
        return bm, bw, bk
    bm = block_m or 64
    bw = block_w or max(lo, min(64, triton.next_power_of_2(wide)))
    bk = block_k or max(lo, min(16 if fp64 else 32, triton.next_power_of_2(narrow)))
    return bm, bw, bk


def _tf32(allow_tf32, dtype):
    use = ALLOW_TF32 if allow_tf32 is None else bool(allow_tf32)
    return use and dtype == np.float32


def _c(xp, a):
    """C-contiguous; under the interpreter also writable: it copies every pointer argument back
    after the launch, which fails on a read-only NumPy array (cached masks and tap lists are)."""
    a = xp.ascontiguousarray(a)
    return a.copy() if xp is np and not a.flags.writeable else a


def _taps(xp, taps):
    if xp is np:
        return _c(np, np.asarray(taps, dtype=np.int64))
    return _device_taps(xp, taps)  # uploaded once per tap list and device


def tap_conv2d_forward(x, w, bias, taps, geom, out_hw, *, block_m=None, block_o=None, block_c=None,
                       num_warps=4, allow_tf32=None):
    """y (N, O, Ho, Wo) = bias + sum over the active taps of w[:, :, ky, kx] @ x (shifted/strided).

    >>> import numpy as np
    >>> x = np.ones((1, 2, 3, 3)); w = np.ones((4, 2, 3, 3))
    >>> y = tap_conv2d_forward(x, w, None, all_taps(3, 3), ((1, 1), (1, 1), (1, 1)), (3, 3))
    >>> y[0, 0].tolist()
    [[8.0, 12.0, 8.0], [12.0, 18.0, 12.0], [8.0, 12.0, 8.0]]
    """
    dims, (sh, sw, pt, pl, dh, dw) = check_forward(x, w, bias, taps, geom, out_hw,
                                                   fn="masked_conv triton tap_conv2d_forward")
    N, C, H, W, O, KH, KW, Ho, Wo, T = dims
    xp = xp_of(x)
    y = xp.empty((N, O, Ho, Wo), dtype=x.dtype)
    M = N * Ho * Wo
    if M == 0 or O == 0:
        return y
    taps = _taps(xp, taps)
    # (T, C, O): the active taps only, contiguous along O for the tile loads
    wp = xp.ascontiguousarray(w[:, :, taps[:, 0], taps[:, 1]].transpose(2, 1, 0))
    x = _c(xp, x)
    bm, bo, bc = _blocks(M, O, C, block_m, block_o, block_c, x.dtype == np.float64)
    has_bias = bias is not None
    b = _c(xp, bias) if has_bias else wp  # an unused pointer without bias
    _fwd_kernel[(cdiv(M, bm), cdiv(O, bo))](
        tl_arg(x), tl_arg(wp), tl_arg(b), tl_arg(taps), tl_arg(y), N, C, H, W, O, Ho, Wo, T,
        sh, sw, pt, pl, dh, dw, HAS_BIAS=has_bias, ALLOW_TF32=_tf32(allow_tf32, x.dtype),
        BLOCK_M=bm, BLOCK_O=bo, BLOCK_C=bc, num_warps=num_warps)
    return y


def tap_conv2d_input_grad(gy, w, taps, geom, in_hw, *, block_m=None, block_o=None, block_c=None,
                          num_warps=4, allow_tf32=None):
    """gx (N, C, H, W): the adjoint of :func:`tap_conv2d_forward` in x (a transposed tap conv).

    >>> import numpy as np
    >>> gx = tap_conv2d_input_grad(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), np.array([[0, 0]]),
    ...                            ((2, 2), (0, 0), (1, 1)), (3, 3))
    >>> gx[0, 0].tolist()
    [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]
    """
    dims, (sh, sw, pt, pl, dh, dw) = check_input_grad(gy, w, taps, geom, in_hw,
                                                      fn="masked_conv triton tap_conv2d_input_grad")
    N, C, H, W, O, KH, KW, Ho, Wo, T = dims
    xp = xp_of(gy)
    gx = xp.empty((N, C, H, W), dtype=gy.dtype)
    M = N * H * W
    if M == 0 or C == 0:
        return gx
    taps = _taps(xp, taps)
    wq = xp.ascontiguousarray(w[:, :, taps[:, 0], taps[:, 1]].transpose(2, 0, 1))  # (T, O, C)
    gy = _c(xp, gy)
    bm, bc, bo = _blocks(M, C, O, block_m, block_c, block_o, gy.dtype == np.float64)
    _dgrad_kernel[(cdiv(M, bm), cdiv(C, bc))](
        tl_arg(gy), tl_arg(wq), tl_arg(taps), tl_arg(gx), N, C, H, W, O, Ho, Wo, T,
        sh, sw, pt, pl, dh, dw, ALLOW_TF32=_tf32(allow_tf32, gy.dtype),
        BLOCK_M=bm, BLOCK_O=bo, BLOCK_C=bc, num_warps=num_warps)
    return gx


def tap_conv2d_weight_grad(x, gy, taps, geom, kernel_hw, *, block_m=None, block_o=None, block_c=None,
                           splits=None, num_warps=4, allow_tf32=None):
    """gw (O, C, KH, KW): the adjoint of :func:`tap_conv2d_forward` in w; exactly 0 at inactive taps.

    Deterministic: each split of the N*Ho*Wo sum writes its own partial, added here in order.

    >>> import numpy as np
    >>> gw = tap_conv2d_weight_grad(np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)), np.array([[1, 1]]),
    ...                             ((1, 1), (1, 1), (1, 1)), (3, 3))
    >>> gw[0, 0].tolist()
    [[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]
    """
    dims, (sh, sw, pt, pl, dh, dw) = check_weight_grad(x, gy, taps, geom, kernel_hw,
                                                       fn="masked_conv triton tap_conv2d_weight_grad")
    N, C, H, W, O, KH, KW, Ho, Wo, T = dims
    xp = xp_of(x)
    gw = xp.zeros((O, C, KH, KW), dtype=x.dtype)
    M = N * Ho * Wo
    if M == 0 or O == 0 or C == 0:
        return gw
    taps = _taps(xp, taps)
    x = _c(xp, x)
    gy = _c(xp, gy)
    bm, bo, bc = _blocks(M, O, C, block_m, block_o, block_c, x.dtype == np.float64)
    tiles = cdiv(O, bo) * cdiv(C, bc)
    if splits is None:
        splits = 1 if interpreting() else weight_grad_splits(M, tiles * T, bm)
    chunk = cdiv(cdiv(M, max(1, int(splits))), bm) * bm  # whole BLOCK_M steps per split
    splits = cdiv(M, chunk)
    part = xp.empty((splits, T, O, C), dtype=x.dtype)
    _wgrad_kernel[(tiles, T, splits)](
        tl_arg(x), tl_arg(gy), tl_arg(taps), tl_arg(part), N, C, H, W, O, Ho, Wo, T, chunk,
        sh, sw, pt, pl, dh, dw, ALLOW_TF32=_tf32(allow_tf32, x.dtype),
        BLOCK_M=bm, BLOCK_O=bo, BLOCK_C=bc, num_warps=num_warps)
    g = part[0] if splits == 1 else part.sum(axis=0)  # (T, O, C)
    gw[:, :, taps[:, 0], taps[:, 1]] = g.transpose(1, 2, 0)
    return gw


# ---- sm_90 compile check (tests/kernels/test_triton_compile.py) --------------------------------

_GEO = {"N": "i32", "C": "i32", "H": "i32", "W": "i32", "O": "i32", "Ho": "i32", "Wo": "i32", "T": "i32",
        "sh": "i32", "sw": "i32", "pt": "i32", "pl": "i32", "dh": "i32", "dw": "i32"}


def _sig(kind, t):
    if kind == "fwd":
        ptrs = {"x_ptr": f"*{t}", "wp_ptr": f"*{t}", "b_ptr": f"*{t}", "taps_ptr": "*i64", "y_ptr": f"*{t}"}
    elif kind == "dgrad":
        ptrs = {"gy_ptr": f"*{t}", "wq_ptr": f"*{t}", "taps_ptr": "*i64", "gx_ptr": f"*{t}"}
    else:
        ptrs = {"x_ptr": f"*{t}", "gy_ptr": f"*{t}", "taps_ptr": "*i64", "part_ptr": f"*{t}"}
    sig = dict(ptrs, **_GEO)
    if kind == "wgrad":  # CHUNK sits after T
        sig = dict(ptrs, **{k: v for k, v in _GEO.items() if k in ("N", "C", "H", "W", "O", "Ho", "Wo", "T")},
                   CHUNK="i32", **{k: _GEO[k] for k in ("sh", "sw", "pt", "pl", "dh", "dw")})
    return sig


def _ones(sig, names):
    """The signature with ``names`` specialised to the constant 1, as Triton's JIT does for int
    arguments equal to 1 (stride 1, dilation 1, W = 1 of a 1-D conv)."""
    return {k: v for k, v in sig.items() if k not in names}, {k: 1 for k in names}


_F32 = {"BLOCK_M": 64, "BLOCK_O": 64, "BLOCK_C": 32}
_F64 = {"BLOCK_M": 64, "BLOCK_O": 64, "BLOCK_C": 16}
_UNIT = ("H", "sh", "sw", "dh", "dw", "T")  # a 1-D causal conv at stride/dilation 1, one tap
_s1, _c1 = _ones(_sig("fwd", "fp32"), _UNIT)
_s2, _c2 = _ones(_sig("dgrad", "fp32"), _UNIT)
_s3, _c3 = _ones(_sig("wgrad", "fp32"), _UNIT)

SM90_KERNELS = [
    (_fwd_kernel, _sig("fwd", "fp32"), dict(_F32, HAS_BIAS=True, ALLOW_TF32=False)),
    (_fwd_kernel, _sig("fwd", "fp32"), dict(_F32, HAS_BIAS=False, ALLOW_TF32=True)),
    (_fwd_kernel, _sig("fwd", "fp64"), dict(_F64, HAS_BIAS=True, ALLOW_TF32=False)),
    (_fwd_kernel, _s1, dict(_F32, HAS_BIAS=True, ALLOW_TF32=False, **_c1)),
    (_dgrad_kernel, _sig("dgrad", "fp32"), dict(_F32, ALLOW_TF32=False)),
    (_dgrad_kernel, _sig("dgrad", "fp64"), dict(_F64, ALLOW_TF32=False)),
    (_dgrad_kernel, _s2, dict(_F32, ALLOW_TF32=True, **_c2)),
    (_wgrad_kernel, _sig("wgrad", "fp32"), dict(_F32, ALLOW_TF32=False)),
    (_wgrad_kernel, _sig("wgrad", "fp64"), dict(_F64, ALLOW_TF32=False)),
    (_wgrad_kernel, _s3, dict(_F32, ALLOW_TF32=True, **_c3)),
]
