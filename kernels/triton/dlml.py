"""Discretized logistic mixture NLL + fused gradient in Triton.

A program owns ``BLOCK`` consecutive positions of one example (grid: position blocks x B), so
every load of a parameter row is contiguous. The math is ``csrc/dlml.h`` (derivation there),
vectorised: all four bin cases are computed per lane and picked with ``tl.where`` (true
selects; the unselected lanes may hold inf/NaN, which a select never lets through). Pass 1
over the components keeps two online logsumexps (of the logits and of the component scores
lp_k = logit_k + sum_c logp_{c,k}); with a gradient it parks lp_k in grad's logit slot and the
unscaled per-channel derivatives in their slots. Pass 2 rescales them by the responsibilities
w_k = exp(lp_k - lse(lp)): d nll/d logit_k = softmax(logits)_k - w_k, the rest times -w_k.

``tl`` has exp and log but no expm1/log1p/tanh: they are built from exp/log with Kahan's
correction (``(u - 1) * x / log(u)``, accurate to a few ulps) so float64 stays float64-exact.
The per-call constants (bin half-width, edges, thresholds) arrive as a small array of the data
dtype: Python float arguments would be rounded to float32.

Launchers take NumPy arrays under ``TRITON_INTERPRET=1`` and CuPy arrays on a GPU.
"""
from __future__ import annotations

import math

import numpy as np
import triton
import triton.language as tl

from ._math import expm1, log1p, tanh
from .._launch import cdiv, interpreting, tl_arg

__all__ = ["dlml_forward", "SM90_KERNELS"]


@triton.jit
def _term(xc, mu, raw, h, lo_edge, hi_edge, d_min, log_thr, log_half_bins):
    """(logp, dlogp/dmu, dlogp/draw) of xc's bin; raw is the unclamped log-scale."""
    s = tl.where(raw < -7.0, -7.0, raw)  # NaN stays NaN
    inv = tl.exp(-s)
    cen = xc - mu
    a = inv * (cen + h)
    b = inv * (cen - h)
    u = inv * cen
    d = inv * (h + h)
    ea = tl.exp(-tl.abs(a))
    eb = tl.exp(-tl.abs(b))
    eu = tl.exp(-tl.abs(u))
    la = log1p(ea)
    lb = log1p(eb)
    sna = tl.where(a >= 0.0, ea, 1.0) / (1.0 + ea)   # sigmoid(-a), no cancellation
    sb = tl.where(b >= 0.0, 1.0, eb) / (1.0 + eb)
    su = tl.where(u >= 0.0, 1.0, eu) / (1.0 + eu)
    wide = d > d_min
    dd = tl.where(wide, d, 1.0)
    em = expm1(-dd)
    lp_first = tl.minimum(a, 0.0) - la
    lp_last = tl.minimum(-b, 0.0) - lb
    lp_int = lp_first + lp_last + tl.log(-em)
    lp_tail = u - s + 2.0 * (tl.minimum(-u, 0.0) - log1p(eu)) - log_half_bins
    du = 1.0 - 2.0 * su
    first = xc < lo_edge
    last = xc > hi_edge
    inner = wide & (lp_int > log_thr)
    logp = tl.where(first, lp_first, tl.where(last, lp_last, tl.where(inner, lp_int, lp_tail)))
    dmu = tl.where(first, -inv * sna,
                   tl.where(last, inv * sb, tl.where(inner, inv * (sb - sna), -inv * du)))
    ds = tl.where(first, -a * sna,
                  tl.where(last, b * sb,
                           tl.where(inner, -a * sna + b * sb - dd * (1.0 + em) / (-em), -u * du - 1.0)))
    ds = tl.where(raw >= -7.0, ds, 0.0)  # the clamp passes the gradient at -7 and above
    return logp, dmu, ds


@triton.jit
def _dlml_kernel(x_ptr, p_ptr, nll_ptr, g_ptr, c_ptr, N, K, C: tl.constexpr,
                 WANT_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    b = tl.program_id(1).to(tl.int64)
    n64 = N.to(tl.int64)
    if C == 3:
        S = 3 * K
        P = 10 * K
    else:
        S = 2 * K
        P = 3 * K
    h = tl.load(c_ptr + 0)
    lo_edge = tl.load(c_ptr + 1)
    hi_edge = tl.load(c_ptr + 2)
    d_min = tl.load(c_ptr + 3)
    log_thr = tl.load(c_ptr + 4)
    log_half_bins = tl.load(c_ptr + 5)
    xb = x_ptr + b * C * n64 + offs
    pb = p_ptr + b * P * n64 + offs
    gb = g_ptr + b * P * n64 + offs
    x0 = tl.load(xb, mask=mask, other=0.0)
    if C == 3:
        x1 = tl.load(xb + n64, mask=mask, other=0.0)
        x2 = tl.load(xb + 2 * n64, mask=mask, other=0.0)
    m1 = x0 * 0.0 - float("inf")
    s1 = x0 * 0.0
    m2 = m1
    s2 = s1
    for k in range(0, K):
        logit = tl.load(pb + k * n64, mask=mask, other=0.0)
        mo0 = (K + k) * n64
        mu0 = tl.load(pb + mo0, mask=mask, other=0.0)
        r0 = tl.load(pb + mo0 + K * n64, mask=mask, other=0.0)
        lp0, dmu0, ds0 = _term(x0, mu0, r0, h, lo_edge, hi_edge, d_min, log_thr, log_half_bins)
        acc = lp0
        if WANT_GRAD:
            tl.store(gb + mo0, dmu0, mask=mask)
            tl.store(gb + mo0 + K * n64, ds0, mask=mask)
        if C == 3:
            co0 = (K + 2 * K + k) * n64        # coefficient slot q sits at K + q*S + 2K
            co1 = (K + S + 2 * K + k) * n64
            co2 = (K + 2 * S + 2 * K + k) * n64
            t0 = tanh(tl.load(pb + co0, mask=mask, other=0.0))
            t1 = tanh(tl.load(pb + co1, mask=mask, other=0.0))
            t2 = tanh(tl.load(pb + co2, mask=mask, other=0.0))
            mo1 = (K + S + k) * n64
            mo2 = (K + 2 * S + k) * n64
            mu1 = tl.load(pb + mo1, mask=mask, other=0.0) + t0 * x0
            mu2 = tl.load(pb + mo2, mask=mask, other=0.0) + t1 * x0 + t2 * x1
            r1 = tl.load(pb + mo1 + K * n64, mask=mask, other=0.0)
            r2 = tl.load(pb + mo2 + K * n64, mask=mask, other=0.0)
            lp1, dmu1, ds1 = _term(x1, mu1, r1, h, lo_edge, hi_edge, d_min, log_thr, log_half_bins)
            lp2, dmu2, ds2 = _term(x2, mu2, r2, h, lo_edge, hi_edge, d_min, log_thr, log_half_bins)
            acc = acc + lp1 + lp2
            if WANT_GRAD:
                tl.store(gb + mo1, dmu1, mask=mask)
                tl.store(gb + mo1 + K * n64, ds1, mask=mask)
                tl.store(gb + mo2, dmu2, mask=mask)
                tl.store(gb + mo2 + K * n64, ds2, mask=mask)
                tl.store(gb + co0, dmu1 * (1.0 - t0 * t0) * x0, mask=mask)
                tl.store(gb + co1, dmu2 * (1.0 - t1 * t1) * x0, mask=mask)
                tl.store(gb + co2, dmu2 * (1.0 - t2 * t2) * x1, mask=mask)
        score = logit + acc
        m1n = tl.maximum(m1, logit)
        s1 = s1 * tl.exp(m1 - m1n) + tl.exp(logit - m1n)
        m1 = m1n
        m2n = tl.maximum(m2, score)
        s2 = s2 * tl.exp(m2 - m2n) + tl.exp(score - m2n)
        m2 = m2n
        if WANT_GRAD:
            tl.store(gb + k * n64, score, mask=mask)
    lse1 = m1 + tl.log(s1)
    lse2 = m2 + tl.log(s2)
    tl.store(nll_ptr + b * n64 + offs, lse1 - lse2, mask=mask)
    if WANT_GRAD:
        tl.debug_barrier()  # pass 2 reads what pass 1 stored
        for k in range(0, K):
            logit = tl.load(pb + k * n64, mask=mask, other=0.0)
            w = tl.exp(tl.load(gb + k * n64, mask=mask, other=0.0) - lse2)
            tl.store(gb + k * n64, tl.exp(logit - lse1) - w, mask=mask)
            for c in tl.static_range(C):
                mo = (K + c * S + k) * n64
                tl.store(gb + mo, -w * tl.load(gb + mo, mask=mask, other=0.0), mask=mask)
                tl.store(gb + mo + K * n64, -w * tl.load(gb + mo + K * n64, mask=mask, other=0.0),
                         mask=mask)
            if C == 3:
                for q in tl.static_range(3):
                    co = (K + q * S + 2 * K + k) * n64
                    tl.store(gb + co, -w * tl.load(gb + co, mask=mask, other=0.0), mask=mask)


def _consts(num_bins, dtype, xp):
    h = 1.0 / (num_bins - 1)
    thr = 1e-5 * 255.0 / (num_bins - 1)  # gmcore.functional._dlml_reference.tail_threshold
    vals = [h, -1.0 + h, 1.0 - h, 4.0 * thr, math.log(thr), math.log((num_bins - 1) / 2.0)]
    return xp.asarray(np.asarray(vals, dtype=dtype))


def dlml_forward(x3, p3, num_bins, want_grad, block=None):
    """x3 (B, C, N), p3 (B, P, N) C-contiguous float32/float64 -> (nll (B, N), grad or None).

    NumPy arrays under the interpreter, CuPy arrays on a GPU (launched on Triton's current
    stream of the device).
    """
    xp = np if isinstance(p3, np.ndarray) else __import__("cupy")
    if x3.dtype != p3.dtype or p3.dtype not in (np.float32, np.float64):
        raise ValueError(f"dlml triton kernel: x and params must share a float32/float64 dtype, "
                         f"got {x3.dtype} and {p3.dtype}")
    B, C, N = (int(s) for s in x3.shape)
    if C not in (1, 3):
        raise ValueError(f"dlml triton kernel: C must be 1 or 3, got {C}")
    K = int(p3.shape[1]) // (10 if C == 3 else 3)
    nll = xp.empty((B, N), dtype=p3.dtype)
    grad = xp.empty_like(p3) if want_grad else nll  # unused pointer when no gradient
    if B == 0 or N == 0:
        return nll, (grad if want_grad else None)
    if block is None:  # the interpreter pays per program: few, wide programs
        block = min(4096, triton.next_power_of_2(N)) if interpreting() else 128
    consts = _consts(num_bins, p3.dtype, xp)
    _dlml_kernel[(cdiv(N, block), B)](
        tl_arg(xp.ascontiguousarray(x3)), tl_arg(xp.ascontiguousarray(p3)), tl_arg(nll),
        tl_arg(grad), tl_arg(consts), N, K, C=C, WANT_GRAD=bool(want_grad), BLOCK=block)
    return nll, (grad if want_grad else None)


def _sig(dt):
    return {"x_ptr": f"*{dt}", "p_ptr": f"*{dt}", "nll_ptr": f"*{dt}", "g_ptr": f"*{dt}",
            "c_ptr": f"*{dt}", "N": "i32", "K": "i32"}


SM90_KERNELS = [
    (_dlml_kernel, _sig("fp32"), {"C": 3, "WANT_GRAD": True, "BLOCK": 128}),
    (_dlml_kernel, _sig("fp32"), {"C": 3, "WANT_GRAD": False, "BLOCK": 128}),
    (_dlml_kernel, _sig("fp32"), {"C": 1, "WANT_GRAD": True, "BLOCK": 128}),
    (_dlml_kernel, _sig("fp64"), {"C": 1, "WANT_GRAD": False, "BLOCK": 128}),
]
