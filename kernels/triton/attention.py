"""Fused scaled-dot-product attention in Triton (flash-attention forward and backward).

Forward: a program owns ``BLOCK_M`` query rows of one (batch*head) slice and streams the keys in
tiles of ``BLOCK_N``: per tile the (BLOCK_M, BLOCK_N) scores ``q.k * scale + mask``, masked to
-inf outside the sequence and past the diagonal when causal (torch's top-left alignment), fold
into the online-softmax state (m, l, acc) of csrc/attention.h. Only the tile exists; the row
``lse = m + log(l)`` is saved for backward (-inf and a zero output for a row with no key).

Backward (no atomics): ``_bwd_dkdv_kernel`` owns a key tile and loops over the query tiles that
can see it, recomputing ``p = exp(s - lse)`` and accumulating ``dv += p^T do`` and
``dk += ds^T q`` with ``ds = p (do.v - delta)``, ``delta = do.out`` (``_delta_kernel``);
``_bwd_dq_kernel`` owns a query tile and accumulates ``dq += ds k`` over the key tiles.

The launchers pass ``scale * q`` (so ``dk = ds^T (scale q)`` comes out scaled) and scale ``dq``
at the end: a Python float kernel argument is passed as fp32, which would round a float64 scale.
float32 products use ``tl.dot`` in IEEE precision (not TF32); float64 ones a broadcast product
in smaller tiles. Launchers take NumPy arrays under ``TRITON_INTERPRET=1`` and CuPy arrays on a
GPU, shaped as the ``attention`` family's (gmcore/functional/attention.py).
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from ...backend import xp_of
from .._launch import cdiv, tl_arg

__all__ = ["attention_forward", "attention_backward", "SM90_KERNELS"]


@triton.jit
def _mm(a, b, USE_DOT: tl.constexpr):
    """(M, K) x (K, N) in the tile's dtype."""
    if USE_DOT:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.sum(a[:, :, None] * b[None, :, :], axis=1)


@triton.jit
def _scores(q, kt, rows, cols, L, S, mask_ptr, moff, mrs, mcs, HAS_MASK: tl.constexpr,
            CAUSAL: tl.constexpr, USE_DOT: tl.constexpr):
    """The (BLOCK_M, BLOCK_N) scores of a tile (q comes pre-scaled), -inf where a key may not
    be seen."""
    s = _mm(q, kt, USE_DOT)
    inside = (rows[:, None] < L) & (cols[None, :] < S)
    if HAS_MASK:
        s += tl.load(mask_ptr + moff + rows[:, None].to(tl.int64) * mrs + cols[None, :] * mcs,
                     mask=inside, other=0.0)
    allowed = cols[None, :] < S
    if CAUSAL:
        allowed = allowed & (cols[None, :] <= rows[:, None])
    return tl.where(allowed, s, float("-inf"))


@triton.jit
def _fwd_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, moff_ptr, o_ptr, lse_ptr, L, S, E, EV, mrs, mcs,
                HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_EV: tl.constexpr,
                USE_DOT: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < L
    e = tl.arange(0, BLOCK_E)
    ev = tl.arange(0, BLOCK_EV)
    q = tl.load(q_ptr + b * L * E + rows[:, None] * E + e[None, :],
                mask=rmask[:, None] & (e[None, :] < E), other=0.0)
    dt = q.dtype
    moff = 0
    if HAS_MASK:
        moff = tl.load(moff_ptr + b)
    m_i = tl.full([BLOCK_M], float("-inf"), dt)
    l_i = tl.zeros([BLOCK_M], dtype=dt)
    acc = tl.zeros([BLOCK_M, BLOCK_EV], dtype=dt)
    hi = S
    if CAUSAL:
        hi = tl.minimum(S, (tl.program_id(1) + 1) * BLOCK_M)  # later keys: masked for every row
    for n0 in range(0, hi, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        kt = tl.load(k_ptr + b * S * E + cols[None, :] * E + e[:, None],
                     mask=(cols[None, :] < S) & (e[:, None] < E), other=0.0)
        s = _scores(q, kt, rows, cols, L, S, mask_ptr, moff, mrs, mcs, HAS_MASK, CAUSAL,
                    USE_DOT)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - shift)
        p = tl.exp(s - shift[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + b * S * EV + cols[:, None] * EV + ev[None, :],
                    mask=(cols[:, None] < S) & (ev[None, :] < EV), other=0.0)
        acc = acc * alpha[:, None] + _mm(p.to(dt), v, USE_DOT)
        m_i = m_new
    pos = l_i > 0
    inv = tl.where(pos, 1.0 / tl.where(pos, l_i, 1.0), 0.0)
    tl.store(o_ptr + b * L * EV + rows[:, None] * EV + ev[None, :], acc * inv[:, None],
             mask=rmask[:, None] & (ev[None, :] < EV))
    lse = tl.where(pos, m_i + tl.log(tl.where(pos, l_i, 1.0)), float("-inf"))
    tl.store(lse_ptr + b * L + rows, lse, mask=rmask)


@triton.jit
def _delta_kernel(o_ptr, do_ptr, delta_ptr, R, EV, BLOCK_R: tl.constexpr, BLOCK_EV: tl.constexpr):
    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    ev = tl.arange(0, BLOCK_EV)
    m = (rows[:, None] < R) & (ev[None, :] < EV)
    o = tl.load(o_ptr + rows[:, None] * EV + ev[None, :], mask=m, other=0.0)
    g = tl.load(do_ptr + rows[:, None] * EV + ev[None, :], mask=m, other=0.0)
    tl.store(delta_ptr + rows, tl.sum(o * g, axis=1), mask=rows < R)


@triton.jit
def _probs(q, kt, rows, cols, L, S, lse, mask_ptr, moff, mrs, mcs, HAS_MASK: tl.constexpr,
           CAUSAL: tl.constexpr, USE_DOT: tl.constexpr):
    """p = exp(s - lse), 0 for keys not seen and for rows with no key (lse = -inf)."""
    s = _scores(q, kt, rows, cols, L, S, mask_ptr, moff, mrs, mcs, HAS_MASK, CAUSAL, USE_DOT)
    shift = tl.where(lse == float("-inf"), float("inf"), lse)
    return tl.exp(s - shift[:, None])


@triton.jit
def _bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, mask_ptr, moff_ptr, dk_ptr,
                     dv_ptr, L, S, E, EV, mrs, mcs, HAS_MASK: tl.constexpr,
                     CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_E: tl.constexpr, BLOCK_EV: tl.constexpr, USE_DOT: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    n0 = tl.program_id(1) * BLOCK_N
    cols = n0 + tl.arange(0, BLOCK_N)
    cmask = cols < S
    e = tl.arange(0, BLOCK_E)
    ev = tl.arange(0, BLOCK_EV)
    kt = tl.load(k_ptr + b * S * E + cols[None, :] * E + e[:, None],
                 mask=cmask[None, :] & (e[:, None] < E), other=0.0)
    vt = tl.load(v_ptr + b * S * EV + cols[None, :] * EV + ev[:, None],
                 mask=cmask[None, :] & (ev[:, None] < EV), other=0.0)
    dt = kt.dtype
    moff = 0
    if HAS_MASK:
        moff = tl.load(moff_ptr + b)
    dk = tl.zeros([BLOCK_N, BLOCK_E], dtype=dt)
    dv = tl.zeros([BLOCK_N, BLOCK_EV], dtype=dt)
    lo = 0
    if CAUSAL:
        lo = (n0 // BLOCK_M) * BLOCK_M  # earlier rows see none of these keys
    for m0 in range(lo, L, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        rmask = rows < L
        q = tl.load(q_ptr + b * L * E + rows[:, None] * E + e[None, :],
                    mask=rmask[:, None] & (e[None, :] < E), other=0.0)
        g = tl.load(do_ptr + b * L * EV + rows[:, None] * EV + ev[None, :],
                    mask=rmask[:, None] & (ev[None, :] < EV), other=0.0)
        lse = tl.load(lse_ptr + b * L + rows, mask=rmask, other=float("-inf"))
        delta = tl.load(delta_ptr + b * L + rows, mask=rmask, other=0.0)
        p = _probs(q, kt, rows, cols, L, S, lse, mask_ptr, moff, mrs, mcs, HAS_MASK, CAUSAL,
                   USE_DOT).to(dt)
        dv += _mm(tl.trans(p), g, USE_DOT)
        ds = (p * (_mm(g, vt, USE_DOT) - delta[:, None])).to(dt)
        dk += _mm(tl.trans(ds), q, USE_DOT)
    tl.store(dk_ptr + b * S * E + cols[:, None] * E + e[None, :], dk,
             mask=cmask[:, None] & (e[None, :] < E))
    tl.store(dv_ptr + b * S * EV + cols[:, None] * EV + ev[None, :], dv,
             mask=cmask[:, None] & (ev[None, :] < EV))


@triton.jit
def _bwd_dq_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, mask_ptr, moff_ptr, dq_ptr,
                   L, S, E, EV, mrs, mcs, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
                   BLOCK_EV: tl.constexpr, USE_DOT: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < L
    e = tl.arange(0, BLOCK_E)
    ev = tl.arange(0, BLOCK_EV)
    q = tl.load(q_ptr + b * L * E + rows[:, None] * E + e[None, :],
                mask=rmask[:, None] & (e[None, :] < E), other=0.0)
    g = tl.load(do_ptr + b * L * EV + rows[:, None] * EV + ev[None, :],
                mask=rmask[:, None] & (ev[None, :] < EV), other=0.0)
    dt = q.dtype
    lse = tl.load(lse_ptr + b * L + rows, mask=rmask, other=float("-inf"))
    delta = tl.load(delta_ptr + b * L + rows, mask=rmask, other=0.0)
    moff = 0
    if HAS_MASK:
        moff = tl.load(moff_ptr + b)
    dq = tl.zeros([BLOCK_M, BLOCK_E], dtype=dt)
    hi = S
    if CAUSAL:
        hi = tl.minimum(S, (tl.program_id(1) + 1) * BLOCK_M)
    for n0 in range(0, hi, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < S
        kt = tl.load(k_ptr + b * S * E + cols[None, :] * E + e[:, None],
                     mask=cmask[None, :] & (e[:, None] < E), other=0.0)
        vt = tl.load(v_ptr + b * S * EV + cols[None, :] * EV + ev[:, None],
                     mask=cmask[None, :] & (ev[:, None] < EV), other=0.0)
        p = _probs(q, kt, rows, cols, L, S, lse, mask_ptr, moff, mrs, mcs, HAS_MASK, CAUSAL,
                   USE_DOT)
        ds = (p * (_mm(g, vt, USE_DOT) - delta[:, None])).to(dt)
        dq += _mm(ds, tl.trans(kt), USE_DOT)
    tl.store(dq_ptr + b * L * E + rows[:, None] * E + e[None, :], dq,
             mask=rmask[:, None] & (e[None, :] < E))


def _config(dtype, E, Ev):
    """(BLOCK_M, BLOCK_N, BLOCK_E, BLOCK_EV, USE_DOT) for the dtype and head sizes."""
    be = max(16, triton.next_power_of_2(max(int(E), 1)))
    bev = max(16, triton.next_power_of_2(max(int(Ev), 1)))
    if np.dtype(dtype) == np.float32:
        return 64, 64 if max(be, bev) <= 64 else 32, be, bev, True
    return 16, 16, be, bev, False  # float64: broadcast products, small tiles


def _mask_args(q, mask):
    """(mask base, offsets, row stride, col stride, HAS_MASK); q stands in when there is none."""
    if mask is None:
        return q, q, 0, 0, False
    return mask.base, mask.offsets, int(mask.row_stride), int(mask.col_stride), True


def attention_forward(q, k, v, mask, scale, causal):
    """``(out (BH, L, Ev), lse (BH, L))`` of C-contiguous q (BH, L, E), k (BH, S, E), v (BH, S, Ev)."""
    xp = xp_of(q)
    BH, L, E = q.shape
    S, Ev = k.shape[1], v.shape[2]
    out = xp.zeros((BH, L, Ev), dtype=q.dtype)
    lse = xp.full((BH, L), -np.inf, dtype=q.dtype)
    if BH == 0 or L == 0 or S == 0:
        return out, lse
    bm, bn, be, bev, use_dot = _config(q.dtype, E, Ev)
    mb, mo, mrs, mcs, has_mask = _mask_args(q, mask)
    q = xp.ascontiguousarray(q * q.dtype.type(scale))  # scores = (scale q).k: no float scalar arg
    _fwd_kernel[(BH, cdiv(L, bm))](
        tl_arg(q), tl_arg(k), tl_arg(v), tl_arg(mb), tl_arg(mo), tl_arg(out), tl_arg(lse),
        int(L), int(S), int(E), int(Ev), mrs, mcs, HAS_MASK=has_mask,
        CAUSAL=bool(causal), BLOCK_M=bm, BLOCK_N=bn, BLOCK_E=be, BLOCK_EV=bev, USE_DOT=use_dot)
    return out, lse


def attention_backward(q, k, v, out, dout, lse, mask, scale, causal):
    """``(dq, dk, dv)`` from the forward's ``out`` and ``lse`` and the output gradient ``dout``."""
    xp = xp_of(q)
    BH, L, E = q.shape
    S, Ev = k.shape[1], v.shape[2]
    dq, dk, dv = xp.zeros_like(q), xp.zeros_like(k), xp.zeros_like(v)
    if BH == 0 or L == 0 or S == 0:
        return dq, dk, dv
    bm, bn, be, bev, use_dot = _config(q.dtype, E, Ev)
    mb, mo, mrs, mcs, has_mask = _mask_args(q, mask)
    delta = xp.empty((BH, L), dtype=q.dtype)
    _delta_kernel[(cdiv(BH * L, 64),)](tl_arg(out), tl_arg(dout), tl_arg(delta), int(BH * L),
                                       int(Ev), BLOCK_R=64, BLOCK_EV=bev)
    qs = xp.ascontiguousarray(q * q.dtype.type(scale))  # dk = ds^T (scale q) comes out scaled
    args = (tl_arg(qs), tl_arg(k), tl_arg(v), tl_arg(dout), tl_arg(lse), tl_arg(delta), tl_arg(mb),
            tl_arg(mo))
    sizes = (int(L), int(S), int(E), int(Ev), mrs, mcs)
    meta = dict(HAS_MASK=has_mask, CAUSAL=bool(causal), BLOCK_M=bm, BLOCK_N=bn, BLOCK_E=be,
                BLOCK_EV=bev, USE_DOT=use_dot)
    _bwd_dkdv_kernel[(BH, cdiv(S, bn))](*args, tl_arg(dk), tl_arg(dv), *sizes, **meta)
    _bwd_dq_kernel[(BH, cdiv(L, bm))](*args, tl_arg(dq), *sizes, **meta)
    dq *= q.dtype.type(scale)
    return dq, dk, dv


def _sig(names, t):
    return {n: "*i64" if n == "moff_ptr" else f"*{t}" if n.endswith("_ptr") else "i32"
            for n in names}


_FWD = ["q_ptr", "k_ptr", "v_ptr", "mask_ptr", "moff_ptr", "o_ptr", "lse_ptr", "L", "S", "E", "EV",
        "mrs", "mcs"]
_DKDV = ["q_ptr", "k_ptr", "v_ptr", "do_ptr", "lse_ptr", "delta_ptr", "mask_ptr", "moff_ptr",
         "dk_ptr", "dv_ptr", "L", "S", "E", "EV", "mrs", "mcs"]
_DQ = ["q_ptr", "k_ptr", "v_ptr", "do_ptr", "lse_ptr", "delta_ptr", "mask_ptr", "moff_ptr", "dq_ptr",
       "L", "S", "E", "EV", "mrs", "mcs"]


def _meta(dtype, E, causal, has_mask):
    bm, bn, be, bev, use_dot = _config(dtype, E, E)
    return dict(HAS_MASK=has_mask, CAUSAL=causal, BLOCK_M=bm, BLOCK_N=bn, BLOCK_E=be, BLOCK_EV=bev,
                USE_DOT=use_dot)


# What CI compiles for sm_90 (tests/kernels/test_triton_compile.py). The float32 kernels' IEEE
# dots unroll into FMA loops and take ~30 s each to compile on a busy 2-core machine, so each
# appears once, at head size 32 (the E = 128 tiles were checked to compile too: 104 KiB of
# shared memory in the forward).
SM90_KERNELS = [
    (_fwd_kernel, _sig(_FWD, "fp32"), _meta(np.float32, 32, True, False)),
    (_fwd_kernel, _sig(_FWD, "fp64"), _meta(np.float64, 32, True, True)),
    (_delta_kernel, {"o_ptr": "*fp32", "do_ptr": "*fp32", "delta_ptr": "*fp32", "R": "i32",
                     "EV": "i32"}, {"BLOCK_R": 64, "BLOCK_EV": 32}),
    (_bwd_dkdv_kernel, _sig(_DKDV, "fp32"), _meta(np.float32, 32, False, True)),
    (_bwd_dkdv_kernel, _sig(_DKDV, "fp64"), _meta(np.float64, 32, True, False)),
    (_bwd_dq_kernel, _sig(_DQ, "fp32"), _meta(np.float32, 32, True, True)),
    (_bwd_dq_kernel, _sig(_DQ, "fp64"), _meta(np.float64, 32, False, True)),
]
