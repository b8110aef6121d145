"""softmax / log_softmax / cross_entropy in Triton (the primary GPU path; CPU interpreter in CI).

Launchers take C-contiguous ``(outer, C, inner)`` arrays (CuPy on a GPU, NumPy under
``TRITON_INTERPRET=1``), int64 targets ``(outer, inner)`` and return new arrays; same signatures
as the reference functions in gmcore/functional/softmax.py. The math (and the derivation of the
cross-entropy gradient) is in csrc/softmax.h.

Each program owns BLOCK_J consecutive inner positions of one outer index and walks the classes
in [BLOCK_C, BLOCK_J] tiles: a max pass, a sum pass, a write pass (the tiles stay in L2 between
passes). With inner == 1 a program is one row (BLOCK_J = 1, wide BLOCK_C); otherwise the tile's
rows are contiguous runs of positions, so the loads are coalesced without a transpose.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ...backend import xp_of
from .._launch import cdiv, tl_arg

_NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def _tile(o, jb, C, inner, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr):
    """The program's base offset (int64), its positions j and their mask."""
    j = jb * BLOCK_J + tl.arange(0, BLOCK_J)
    base = o.to(tl.int64) * C * inner
    return base, j, j < inner


@triton.jit
def _max_sum(x_ptr, base, j, jm, C, inner, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr):
    """Per position: m = max_c x_c and s = sum_c exp(x_c - m) (all -inf -> NaN, as torch)."""
    m = tl.full([BLOCK_J], _NEG_INF, dtype=x_ptr.dtype.element_ty)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        msk = (c[:, None] < C) & jm[None, :]
        x = tl.load(x_ptr + base + c[:, None].to(tl.int64) * inner + j[None, :], mask=msk,
                    other=_NEG_INF)
        m = tl.maximum(m, tl.max(x, axis=0))
    s = tl.zeros([BLOCK_J], dtype=x_ptr.dtype.element_ty)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        msk = (c[:, None] < C) & jm[None, :]
        x = tl.load(x_ptr + base + c[:, None].to(tl.int64) * inner + j[None, :], mask=msk,
                    other=0.0)
        s += tl.sum(tl.where(msk, tl.exp(x - m[None, :]), 0.0), axis=0)
    return m, s


@triton.jit
def _softmax_fwd_kernel(x_ptr, y_ptr, C, inner, LOG: tl.constexpr, BLOCK_C: tl.constexpr,
                        BLOCK_J: tl.constexpr):
    base, j, jm = _tile(tl.program_id(0), tl.program_id(1), C, inner, BLOCK_C, BLOCK_J)
    m, s = _max_sum(x_ptr, base, j, jm, C, inner, BLOCK_C, BLOCK_J)
    lse = m + tl.log(s)
    inv = 1.0 / s
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        msk = (c[:, None] < C) & jm[None, :]
        off = base + c[:, None].to(tl.int64) * inner + j[None, :]
        x = tl.load(x_ptr + off, mask=msk, other=0.0)
        if LOG:
            y = x - lse[None, :]
        else:
            y = tl.exp(x - m[None, :]) * inv[None, :]
        tl.store(y_ptr + off, y, mask=msk)


@triton.jit
def _softmax_bwd_kernel(y_ptr, g_ptr, dx_ptr, C, inner, LOG: tl.constexpr, BLOCK_C: tl.constexpr,
                        BLOCK_J: tl.constexpr):
    base, j, jm = _tile(tl.program_id(0), tl.program_id(1), C, inner, BLOCK_C, BLOCK_J)
    s = tl.zeros([BLOCK_J], dtype=y_ptr.dtype.element_ty)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        msk = (c[:, None] < C) & jm[None, :]
        off = base + c[:, None].to(tl.int64) * inner + j[None, :]
        g = tl.load(g_ptr + off, mask=msk, other=0.0)
        if LOG:
            s += tl.sum(g, axis=0)
        else:
            s += tl.sum(g * tl.load(y_ptr + off, mask=msk, other=0.0), axis=0)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        msk = (c[:, None] < C) & jm[None, :]
        off = base + c[:, None].to(tl.int64) * inner + j[None, :]
        g = tl.load(g_ptr + off, mask=msk, other=0.0)
        y = tl.load(y_ptr + off, mask=msk, other=0.0)
        if LOG:
            dx = g - tl.exp(y) * s[None, :]
        else:
            dx = y * (g - s[None, :])
        tl.store(dx_ptr + off, dx, mask=msk)


@triton.jit
def _ce_fwd_kernel(x_ptr, t_ptr, w_ptr, loss_ptr, wt_ptr, lse_ptr, eps_ptr, wsum_ptr, C, inner,
                   ignore, HAS_W: tl.constexpr, SMOOTH: tl.constexpr, BLOCK_C: tl.constexpr,
                   BLOCK_J: tl.constexpr):
    o = tl.program_id(0)
    base, j, jm = _tile(o, tl.program_id(1), C, inner, BLOCK_C, BLOCK_J)
    m, s = _max_sum(x_ptr, base, j, jm, C, inner, BLOCK_C, BLOCK_J)
    lse = m + tl.log(s)
    p = o.to(tl.int64) * inner + j
    t = tl.load(t_ptr + p, mask=jm, other=0)
    valid = (t != ignore) & jm
    ts = tl.where(valid, t, 0)
    if HAS_W:
        w = tl.load(w_ptr + ts, mask=valid, other=0.0)
    else:
        w = tl.where(valid, 1.0, 0.0).to(x_ptr.dtype.element_ty)
    xt = tl.load(x_ptr + base + ts.to(tl.int64) * inner + j, mask=valid, other=0.0)
    eps = tl.load(eps_ptr)
    loss = (1.0 - eps) * w * (lse - xt)
    if SMOOTH:
        sx = tl.zeros([BLOCK_J], dtype=x_ptr.dtype.element_ty)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            msk = (c[:, None] < C) & jm[None, :]
            x = tl.load(x_ptr + base + c[:, None].to(tl.int64) * inner + j[None, :], mask=msk,
                        other=0.0)
            if HAS_W:
                x = x * tl.load(w_ptr + c, mask=c < C, other=0.0)[:, None]
            sx += tl.sum(x, axis=0)
        loss += eps / C * (tl.load(wsum_ptr) * lse - sx)
    tl.store(lse_ptr + p, lse, mask=jm)
    tl.store(wt_ptr + p, w, mask=jm)
    tl.store(loss_ptr + p, tl.where(valid, loss, 0.0), mask=jm)


@triton.jit
def _ce_bwd_kernel(x_ptr, t_ptr, w_ptr, lse_ptr, gl_ptr, dx_ptr, eps_ptr, wsum_ptr, C, inner,
                   ignore, HAS_W: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr):
    o = tl.program_id(0)
    base, j, jm = _tile(o, tl.program_id(1), C, inner, BLOCK_C, BLOCK_J)
    p = o.to(tl.int64) * inner + j
    t = tl.load(t_ptr + p, mask=jm, other=0)
    valid = (t != ignore) & jm
    ts = tl.where(valid, t, 0)
    if HAS_W:
        wt = tl.load(w_ptr + ts, mask=valid, other=0.0)
    else:
        wt = tl.where(valid, 1.0, 0.0).to(x_ptr.dtype.element_ty)
    gl = tl.load(gl_ptr + p, mask=jm, other=0.0)
    lse = tl.load(lse_ptr + p, mask=jm, other=0.0)
    eps = tl.load(eps_ptr)
    d = gl * (1.0 - eps) * wt          # dx_c = a p_c - b w_c - [c == t] d  (csrc/softmax.h)
    b = gl * eps / C
    a = d + b * tl.load(wsum_ptr)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        msk = (c[:, None] < C) & jm[None, :]
        off = base + c[:, None].to(tl.int64) * inner + j[None, :]
        x = tl.load(x_ptr + off, mask=msk, other=0.0)
        if HAS_W:
            wc = tl.load(w_ptr + c, mask=c < C, other=0.0)[:, None]
        else:
            wc = 1.0
        dx = a[None, :] * tl.exp(x - lse[None, :]) - b[None, :] * wc
        dx = dx - tl.where(c[:, None] == ts[None, :], d[None, :], 0.0)
        tl.store(dx_ptr + off, tl.where(valid[None, :], dx, 0.0), mask=msk)


# ---- launchers -------------------------------------------------------------------------------

def _blocks(C, inner):
    """(BLOCK_C, BLOCK_J): a whole row per program when inner == 1, else 32 x 64 tiles."""
    if inner == 1:
        return min(max(triton.next_power_of_2(int(C)), 16), 1024), 1
    return 32, 64


def _grid(outer, inner, block_j):
    return (int(outer), max(1, cdiv(inner, block_j)))


def _scalar(value, like):
    """A float parameter as a 1-element array in the data dtype (Triton would type a Python
    float as fp32, losing float64 precision)."""
    return xp_of(like).full(1, value, dtype=like.dtype)


def forward(x3, log):
    outer, C, inner = x3.shape
    y = xp_of(x3).empty_like(x3)
    if y.size:
        bc, bj = _blocks(C, inner)
        _softmax_fwd_kernel[_grid(outer, inner, bj)](tl_arg(x3), tl_arg(y), int(C), int(inner),
                                                     LOG=bool(log), BLOCK_C=bc, BLOCK_J=bj)
    return y


def backward(y3, g3, log):
    outer, C, inner = y3.shape
    dx = xp_of(y3).empty_like(y3)
    if dx.size:
        bc, bj = _blocks(C, inner)
        _softmax_bwd_kernel[_grid(outer, inner, bj)](tl_arg(y3), tl_arg(g3), tl_arg(dx), int(C),
                                                     int(inner), LOG=bool(log), BLOCK_C=bc,
                                                     BLOCK_J=bj)
    return dx


def ce_forward(x3, target, weight, ignore_index, eps, wsum):
    xp = xp_of(x3)
    outer, C, inner = x3.shape
    loss, wt, lse = (xp.empty((outer, inner), dtype=x3.dtype) for _ in range(3))
    if outer * inner:
        bc, bj = _blocks(C, inner)
        w = x3 if weight is None else weight  # any pointer when there is no weight
        _ce_fwd_kernel[_grid(outer, inner, bj)](
            tl_arg(x3), tl_arg(target), tl_arg(w), tl_arg(loss), tl_arg(wt), tl_arg(lse),
            tl_arg(_scalar(eps, x3)), tl_arg(_scalar(wsum, x3)), int(C), int(inner),
            int(ignore_index), HAS_W=weight is not None, SMOOTH=bool(eps), BLOCK_C=bc, BLOCK_J=bj)
    return loss, wt, lse


def ce_backward(x3, target, weight, lse, gl, ignore_index, eps, wsum):
    outer, C, inner = x3.shape
    dx = xp_of(x3).empty_like(x3)
    if dx.size:
        bc, bj = _blocks(C, inner)
        w = x3 if weight is None else weight
        _ce_bwd_kernel[_grid(outer, inner, bj)](
            tl_arg(x3), tl_arg(target), tl_arg(w), tl_arg(lse), tl_arg(gl), tl_arg(dx),
            tl_arg(_scalar(eps, x3)), tl_arg(_scalar(wsum, x3)), int(C), int(inner),
            int(ignore_index), HAS_W=weight is not None, BLOCK_C=bc, BLOCK_J=bj)
    return dx


_F32 = "*fp32"
_I64 = "*i64"
SM90_KERNELS = [
    (_softmax_fwd_kernel, {"x_ptr": _F32, "y_ptr": _F32, "C": "i32", "inner": "i32"},
     {"LOG": False, "BLOCK_C": 1024, "BLOCK_J": 1}),
    (_softmax_fwd_kernel, {"x_ptr": "*fp64", "y_ptr": "*fp64", "C": "i32", "inner": "i32"},
     {"LOG": True, "BLOCK_C": 32, "BLOCK_J": 64}),
    (_softmax_bwd_kernel, {"y_ptr": _F32, "g_ptr": _F32, "dx_ptr": _F32, "C": "i32", "inner": "i32"},
     {"LOG": False, "BLOCK_C": 32, "BLOCK_J": 64}),
    (_softmax_bwd_kernel, {"y_ptr": _F32, "g_ptr": _F32, "dx_ptr": _F32, "C": "i32", "inner": "i32"},
     {"LOG": True, "BLOCK_C": 1024, "BLOCK_J": 1}),
    (_ce_fwd_kernel, {"x_ptr": _F32, "t_ptr": _I64, "w_ptr": _F32, "loss_ptr": _F32, "wt_ptr": _F32,
                      "lse_ptr": _F32, "eps_ptr": _F32, "wsum_ptr": _F32, "C": "i32", "inner": "i32",
                      "ignore": "i64"},
     {"HAS_W": True, "SMOOTH": True, "BLOCK_C": 1024, "BLOCK_J": 1}),
    (_ce_fwd_kernel, {"x_ptr": _F32, "t_ptr": _I64, "w_ptr": _F32, "loss_ptr": _F32, "wt_ptr": _F32,
                      "lse_ptr": _F32, "eps_ptr": _F32, "wsum_ptr": _F32, "C": "i32", "inner": "i32",
                      "ignore": "i64"},
     {"HAS_W": False, "SMOOTH": False, "BLOCK_C": 32, "BLOCK_J": 64}),
    (_ce_bwd_kernel, {"x_ptr": _F32, "t_ptr": _I64, "w_ptr": _F32, "lse_ptr": _F32, "gl_ptr": _F32,
                      "dx_ptr": _F32, "eps_ptr": _F32, "wsum_ptr": _F32, "C": "i32", "inner": "i32",
                      "ignore": "i64"},
     {"HAS_W": True, "BLOCK_C": 1024, "BLOCK_J": 1}),
    (_ce_bwd_kernel, {"x_ptr": "*fp64", "t_ptr": _I64, "w_ptr": "*fp64", "lse_ptr": "*fp64",
                      "gl_ptr": "*fp64", "dx_ptr": "*fp64", "eps_ptr": "*fp64", "wsum_ptr": "*fp64",
                      "C": "i32", "inner": "i32", "ignore": "i64"},
     {"HAS_W": False, "BLOCK_C": 32, "BLOCK_J": 64}),
]
