"""Normalisation in Triton (layer_norm, group_norm, batch_norm): the primary GPU path.

Same four launchers and signatures as the other implementations (gmcore/functional/_norm.py);
math and derivation in csrc/norm.h. One program per row (row layout) or per channel (channel
layout) streams its elements in BLOCK-sized tiles: a first loop for the sums (shifted moments, or
sum(w dy) and sum(w dy xh) in the backward), a second to write. Sums accumulate in float64, as
the CPU kernels do; each element is normalised in float64 and rounded once. dweight/dbias of the
row layout come from a second kernel, one program per channel.

Launchers take NumPy arrays under ``TRITON_INTERPRET=1`` and CuPy arrays on a GPU; ``eps`` goes
in as a float64 array (a Python float would be typed float32).
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from ...backend import xp_of
from .._launch import tl_arg

__all__ = ["row_forward", "row_backward", "chan_forward", "chan_backward", "SM90_KERNELS"]

BLOCK = 1024


@triton.jit
def _row_forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, p_ptr, M, G, K, S,
                        HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    base = r * M
    k0 = tl.load(x_ptr + base).to(tl.float64)
    s1 = tl.zeros([BLOCK], tl.float64)
    s2 = tl.zeros([BLOCK], tl.float64)
    for start in range(0, M, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < M
        d = tl.where(m, tl.load(x_ptr + base + offs, mask=m, other=0.0).to(tl.float64) - k0, 0.0)
        s1 += d
        s2 += d * d
    inv = tl.load(p_ptr + 1)
    dm = tl.sum(s1, axis=0) * inv
    var = tl.maximum(tl.sum(s2, axis=0) * inv - dm * dm, 0.0)
    mean = k0 + dm
    rs = 1.0 / tl.sqrt(var + tl.load(p_ptr))
    tl.store(mean_ptr + r, mean)
    tl.store(rstd_ptr + r, rs)
    c0 = (r % G) * K
    for start in range(0, M, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < M
        c = c0 + offs // S
        scale = tl.zeros([BLOCK], tl.float64) + rs
        if HAS_W:
            scale = scale * tl.load(w_ptr + c, mask=m, other=0.0).to(tl.float64)
        yv = (tl.load(x_ptr + base + offs, mask=m, other=0.0).to(tl.float64) - mean) * scale
        if HAS_B:
            yv = yv + tl.load(b_ptr + c, mask=m, other=0.0).to(tl.float64)
        tl.store(y_ptr + base + offs, yv.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _row_dx_kernel(x_ptr, dy_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, p_ptr, M, G, K, S,
                   HAS_W: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    base = r * M
    mu = tl.load(mean_ptr + r)
    rs = tl.load(rstd_ptr + r)
    c0 = (r % G) * K
    a = tl.zeros([BLOCK], tl.float64)
    q = tl.zeros([BLOCK], tl.float64)
    for start in range(0, M, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < M
        wdy = tl.load(dy_ptr + base + offs, mask=m, other=0.0).to(tl.float64)
        if HAS_W:
            wdy = wdy * tl.load(w_ptr + c0 + offs // S, mask=m, other=0.0).to(tl.float64)
        xh = (tl.load(x_ptr + base + offs, mask=m, other=0.0).to(tl.float64) - mu) * rs
        a += wdy
        q += tl.where(m, wdy * xh, 0.0)
    inv = tl.load(p_ptr + 1)
    ma = tl.sum(a, axis=0) * inv
    mb = tl.sum(q, axis=0) * inv
    for start in range(0, M, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < M
        wdy = tl.load(dy_ptr + base + offs, mask=m, other=0.0).to(tl.float64)
        if HAS_W:
            wdy = wdy * tl.load(w_ptr + c0 + offs // S, mask=m, other=0.0).to(tl.float64)
        xh = (tl.load(x_ptr + base + offs, mask=m, other=0.0).to(tl.float64) - mu) * rs
        dx = rs * (wdy - ma - xh * mb)
        tl.store(dx_ptr + base + offs, dx.to(dx_ptr.dtype.element_ty), mask=m)


@triton.jit
def _row_params_kernel(x_ptr, dy_ptr, mean_ptr, rstd_ptr, dw_ptr, db_ptr, Nb, M, G, K, S,
                       BLOCK: tl.constexpr):
    # channel c = g * K + k covers rows n * G + g, positions k * S .. k * S + S - 1 of each
    c = tl.program_id(0).to(tl.int64)
    g = c // K
    k = c % K
    sdy = tl.zeros([BLOCK], tl.float64)
    sdyxh = tl.zeros([BLOCK], tl.float64)
    for start in range(0, Nb * S, BLOCK):
        i = start + tl.arange(0, BLOCK)
        m = i < Nb * S
        r = (i // S) * G + g
        j = r * M + k * S + i % S
        gv = tl.load(dy_ptr + j, mask=m, other=0.0).to(tl.float64)
        xh = (tl.load(x_ptr + j, mask=m, other=0.0).to(tl.float64)
              - tl.load(mean_ptr + r, mask=m, other=0.0)) * tl.load(rstd_ptr + r, mask=m, other=0.0)
        sdy += gv
        sdyxh += gv * xh
    tl.store(dw_ptr + c, tl.sum(sdyxh, axis=0).to(dw_ptr.dtype.element_ty))
    tl.store(db_ptr + c, tl.sum(sdy, axis=0).to(db_ptr.dtype.element_ty))


@triton.jit
def _chan_forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, var_ptr, rstd_ptr, p_ptr, N, C,
                         S, TRAIN: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                         BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    M = N * S
    if TRAIN:
        k0 = tl.load(x_ptr + c * S).to(tl.float64)
        s1 = tl.zeros([BLOCK], tl.float64)
        s2 = tl.zeros([BLOCK], tl.float64)
        for start in range(0, M, BLOCK):
            i = start + tl.arange(0, BLOCK)
            m = i < M
            j = ((i // S) * C + c) * S + i % S
            d = tl.where(m, tl.load(x_ptr + j, mask=m, other=0.0).to(tl.float64) - k0, 0.0)
            s1 += d
            s2 += d * d
        inv = tl.load(p_ptr + 1)
        dm = tl.sum(s1, axis=0) * inv
        var = tl.maximum(tl.sum(s2, axis=0) * inv - dm * dm, 0.0)
        mu = k0 + dm
        rs = 1.0 / tl.sqrt(var + tl.load(p_ptr))
        tl.store(mean_ptr + c, mu)
        tl.store(var_ptr + c, var)
        tl.store(rstd_ptr + c, rs)
    else:
        mu = tl.load(mean_ptr + c)
        rs = tl.load(rstd_ptr + c)
    scale = rs
    if HAS_W:
        scale = scale * tl.load(w_ptr + c).to(tl.float64)
    shift = 0.0
    if HAS_B:
        shift = tl.load(b_ptr + c).to(tl.float64)
    for start in range(0, M, BLOCK):
        i = start + tl.arange(0, BLOCK)
        m = i < M
        j = ((i // S) * C + c) * S + i % S
        yv = (tl.load(x_ptr + j, mask=m, other=0.0).to(tl.float64) - mu) * scale + shift
        tl.store(y_ptr + j, yv.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _chan_backward_kernel(x_ptr, dy_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr,
                          p_ptr, N, C,
                          S, TRAIN: tl.constexpr, HAS_W: tl.constexpr, NEED_DX: tl.constexpr,
                          BLOCK: tl.constexpr):
    c = tl.program_id(0).to(tl.int64)
    M = N * S
    mu = tl.load(mean_ptr + c)
    rs = tl.load(rstd_ptr + c)
    wk = 1.0
    if HAS_W:
        wk = tl.load(w_ptr + c).to(tl.float64)
    sdy = tl.zeros([BLOCK], tl.float64)
    sdyxh = tl.zeros([BLOCK], tl.float64)
    for start in range(0, M, BLOCK):
        i = start + tl.arange(0, BLOCK)
        m = i < M
        j = ((i // S) * C + c) * S + i % S
        gv = tl.load(dy_ptr + j, mask=m, other=0.0).to(tl.float64)
        xh = (tl.load(x_ptr + j, mask=m, other=0.0).to(tl.float64) - mu) * rs
        sdy += gv
        sdyxh += tl.where(m, gv * xh, 0.0)
    tdy = tl.sum(sdy, axis=0)
    tdyxh = tl.sum(sdyxh, axis=0)
    tl.store(dw_ptr + c, tdyxh.to(dw_ptr.dtype.element_ty))
    tl.store(db_ptr + c, tdy.to(db_ptr.dtype.element_ty))
    if NEED_DX:
        inv = tl.load(p_ptr + 1)
        ma = 0.0
        mb = 0.0
        if TRAIN:
            ma = wk * tdy * inv
            mb = wk * tdyxh * inv
        for start in range(0, M, BLOCK):
            i = start + tl.arange(0, BLOCK)
            m = i < M
            j = ((i // S) * C + c) * S + i % S
            gv = tl.load(dy_ptr + j, mask=m, other=0.0).to(tl.float64)
            xh = (tl.load(x_ptr + j, mask=m, other=0.0).to(tl.float64) - mu) * rs
            dx = rs * (wk * gv - ma - xh * mb)
            tl.store(dx_ptr + j, dx.to(dx_ptr.dtype.element_ty), mask=m)


# ---- launchers ---------------------------------------------------------------------------------

def _params(eps, count, like):
    """(eps, 1 / count) as float64 on the array's device (Python floats would be float32)."""
    return xp_of(like).asarray(np.array([eps, 1.0 / max(count, 1)], dtype=np.float64))


def _or(a, fallback):
    return fallback if a is None else a


def row_forward(x2, w, b, G, K, S, eps):
    xp = xp_of(x2)
    R, M = x2.shape
    y = xp.empty_like(x2)
    mean, rstd = xp.full(R, np.nan), xp.full(R, np.nan)
    if R and M:
        _row_forward_kernel[(int(R),)](
            tl_arg(x2), tl_arg(_or(w, x2)), tl_arg(_or(b, x2)), tl_arg(y), tl_arg(mean),
            tl_arg(rstd), tl_arg(_params(eps, M, x2)), int(M), int(G), int(K), int(S),
            HAS_W=w is not None, HAS_B=b is not None, BLOCK=BLOCK)
    return y, mean, rstd


def row_backward(x2, dy2, w, mean, rstd, G, K, S, need_dw, need_db):
    xp = xp_of(x2)
    R, M = x2.shape
    dx = xp.empty_like(x2)
    C = int(G) * int(K)
    dw = xp.zeros(C, x2.dtype)
    db = xp.zeros(C, x2.dtype)
    if R and M:
        _row_dx_kernel[(int(R),)](tl_arg(x2), tl_arg(dy2), tl_arg(_or(w, x2)), tl_arg(mean),
                                  tl_arg(rstd), tl_arg(dx), tl_arg(_params(0.0, M, x2)), int(M),
                                  int(G), int(K), int(S),
                                  HAS_W=w is not None, BLOCK=BLOCK)
        if need_dw or need_db:
            _row_params_kernel[(C,)](tl_arg(x2), tl_arg(dy2), tl_arg(mean), tl_arg(rstd),
                                     tl_arg(dw), tl_arg(db), int(R // G), int(M), int(G), int(K),
                                     int(S), BLOCK=BLOCK)
    return dx, dw if need_dw else None, db if need_db else None


def chan_forward(x3, w, b, mean, rstd, eps, train):
    xp = xp_of(x3)
    N, C, S = x3.shape
    y = xp.empty_like(x3)
    var = None
    if train:
        mean, var, rstd = xp.full(C, np.nan), xp.full(C, np.nan), xp.full(C, np.nan)
    if C and N * S:
        _chan_forward_kernel[(int(C),)](
            tl_arg(x3), tl_arg(_or(w, x3)), tl_arg(_or(b, x3)), tl_arg(y), tl_arg(mean),
            tl_arg(_or(var, mean)), tl_arg(rstd), tl_arg(_params(eps, N * S, x3)), int(N), int(C),
            int(S),
            TRAIN=bool(train), HAS_W=w is not None, HAS_B=b is not None, BLOCK=BLOCK)
    return y, mean, var, rstd


def chan_backward(x3, dy3, w, mean, rstd, train, need_dx, need_dw, need_db):
    xp = xp_of(x3)
    N, C, S = x3.shape
    dx = xp.empty_like(x3) if need_dx else None
    dw = xp.zeros(C, x3.dtype)
    db = xp.zeros(C, x3.dtype)
    if C and N * S:
        _chan_backward_kernel[(int(C),)](
            tl_arg(x3), tl_arg(dy3), tl_arg(_or(w, x3)), tl_arg(mean), tl_arg(rstd),
            tl_arg(_or(dx, x3)), tl_arg(dw), tl_arg(db), tl_arg(_params(0.0, N * S, x3)), int(N),
            int(C), int(S),
            TRAIN=bool(train), HAS_W=w is not None, NEED_DX=bool(need_dx), BLOCK=BLOCK)
    return dx, dw if need_dw else None, db if need_db else None


# Every kernel with a representative signature, compiled for sm_90 by
# tests/kernels/test_triton_compile.py.
_F32, _F64, _I = "*fp32", "*fp64", "i32"
SM90_KERNELS = [
    (_row_forward_kernel, {"x_ptr": _F32, "w_ptr": _F32, "b_ptr": _F32, "y_ptr": _F32,
                           "mean_ptr": _F64, "rstd_ptr": _F64, "p_ptr": _F64, "M": _I, "G": _I,
                           "K": _I, "S": _I}, {"HAS_W": True, "HAS_B": True, "BLOCK": BLOCK}),
    (_row_dx_kernel, {"x_ptr": _F32, "dy_ptr": _F32, "w_ptr": _F32, "mean_ptr": _F64,
                      "rstd_ptr": _F64, "dx_ptr": _F32, "p_ptr": _F64, "M": _I, "G": _I, "K": _I,
                      "S": _I},
     {"HAS_W": True, "BLOCK": BLOCK}),
    (_row_params_kernel, {"x_ptr": _F32, "dy_ptr": _F32, "mean_ptr": _F64, "rstd_ptr": _F64,
                          "dw_ptr": _F32, "db_ptr": _F32, "Nb": _I, "M": _I, "G": _I, "K": _I,
                          "S": _I}, {"BLOCK": BLOCK}),
    (_chan_forward_kernel, {"x_ptr": _F32, "w_ptr": _F32, "b_ptr": _F32, "y_ptr": _F32,
                            "mean_ptr": _F64, "var_ptr": _F64, "rstd_ptr": _F64, "p_ptr": _F64,
                            "N": _I, "C": _I, "S": _I},
     {"TRAIN": True, "HAS_W": True, "HAS_B": True, "BLOCK": BLOCK}),
    (_chan_forward_kernel, {"x_ptr": _F64, "w_ptr": _F64, "b_ptr": _F64, "y_ptr": _F64,
                            "mean_ptr": _F64, "var_ptr": _F64, "rstd_ptr": _F64, "p_ptr": _F64,
                            "N": _I, "C": _I, "S": _I},
     {"TRAIN": False, "HAS_W": False, "HAS_B": False, "BLOCK": BLOCK}),
    (_chan_backward_kernel, {"x_ptr": _F32, "dy_ptr": _F32, "w_ptr": _F32, "mean_ptr": _F64,
                             "rstd_ptr": _F64, "dx_ptr": _F32, "dw_ptr": _F32, "db_ptr": _F32,
                             "p_ptr": _F64, "N": _I, "C": _I, "S": _I},
     {"TRAIN": True, "HAS_W": True, "NEED_DX": True, "BLOCK": BLOCK}),
]
