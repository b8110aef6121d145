"""Discretized logistic mixture NLL + fused gradient: numba kernels (CPU).

Same math as ``csrc/dlml.h`` (derivation there) and the same tiling as ``csrc/dlml_cpu.cpp``:
``prange`` over tiles of one example and up to ``_TILE`` consecutive positions; inner loops run
over contiguous positions of one parameter row. Pass 1 per component k: the per-channel bin
terms (their unscaled derivatives go straight into ``grad``) and the component score
lp_k = logit_k + sum_c logp_{c,k}; then the two logsumexps over k per position,
nll = lse(logits) - lse(lp); pass 2 (gradient only) scales by the responsibilities:
d nll/d logit_k = softmax(logits)_k - w_k, d nll/d theta_{c,k} = -w_k d logp_{c,k}/d theta,
w = softmax(lp).

Arithmetic runs in float64 for both float32 and float64 arrays (scalar code: no cost to
speak of, and float32 results are then correctly rounded sums); outputs take the input dtype.
The fastmath flags leave out ``nnan``/``ninf``: inf and NaN keep their IEEE meaning.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["dlml_forward"]

_FM = {"nsz", "arcp", "contract", "afn", "reassoc"}
_TILE = 64
_LOG_SCALE_MIN = -7.0


@njit(fastmath=_FM, cache=True, inline="always")
def _bin_term(x, mu, s, h, lo_edge, hi_edge, d_min, log_thr, log_half_bins):
    """(logp, dlogp/dmu, dlogp/ds) of x's bin under Logistic(mu, exp(s)); see csrc/dlml.h."""
    inv = math.exp(-s)
    cen = x - mu
    if x < lo_edge:  # first bin
        a = inv * (cen + h)
        ea = math.exp(-abs(a))
        sna = (ea if a >= 0.0 else 1.0) / (1.0 + ea)  # sigmoid(-a)
        return min(a, 0.0) - math.log1p(ea), -inv * sna, -a * sna
    if x > hi_edge:  # last bin
        b = inv * (cen - h)
        eb = math.exp(-abs(b))
        sb = (1.0 if b >= 0.0 else eb) / (1.0 + eb)
        return min(-b, 0.0) - math.log1p(eb), inv * sb, b * sb
    d = inv * (2.0 * h)
    if d > d_min:
        a = inv * (cen + h)
        b = inv * (cen - h)
        em = math.expm1(-d)
        if b >= 0.0:
            eb = math.exp(-b)
            ea = eb * (1.0 + em)
        elif a <= 0.0:
            ea = math.exp(a)
            eb = ea * (1.0 + em)
        else:
            ea = math.exp(-a)
            eb = math.exp(b)
        logp = min(a, 0.0) + min(-b, 0.0) + math.log(-em / ((1.0 + ea) * (1.0 + eb)))
        if logp > log_thr:
            sna = (ea if a >= 0.0 else 1.0) / (1.0 + ea)  # sigmoid(-a)
            sb = (1.0 if b >= 0.0 else eb) / (1.0 + eb)
            return (logp, inv * (sb - sna),
                    -a * sna + b * sb - d * (1.0 + em) / (-em))
    u = inv * cen  # tail: midpoint density times the bin width
    eu = math.exp(-abs(u))
    su = (1.0 if u >= 0.0 else eu) / (1.0 + eu)
    du = 1.0 - 2.0 * su
    return (u - s + 2.0 * (min(-u, 0.0) - math.log1p(eu)) - log_half_bins,
            -inv * du, -u * du - 1.0)


@njit(fastmath=_FM, cache=True)
def _tile(t, x, p, nll, grad, want_grad, K, S, h, lo_edge, hi_edge, d_min, log_thr,
          log_half_bins):
    """One tile: example b = t // tiles, positions [n0, n0 + _TILE)."""
    _, C, N = x.shape
    tiles = (N + _TILE - 1) // _TILE
    b = t // tiles
    n0 = (t % tiles) * _TILE
    nt = min(_TILE, N - n0)
    lp = np.empty((K, _TILE))
    el = np.empty((K, _TILE))
    acc = np.empty(_TILE)
    for k in range(K):
        acc[:nt] = 0.0
        for c in range(C):
            mo = K + c * S + k
            so = mo + K
            q0 = c * (c - 1) // 2
            for i in range(nt):
                n = n0 + i
                mu = np.float64(p[b, mo, n])
                th0 = 0.0
                th1 = 0.0
                if c >= 1:
                    th0 = math.tanh(p[b, K + q0 * S + 2 * K + k, n])
                    mu += th0 * x[b, 0, n]
                if c >= 2:
                    th1 = math.tanh(p[b, K + (q0 + 1) * S + 2 * K + k, n])
                    mu += th1 * x[b, 1, n]
                raw = np.float64(p[b, so, n])
                s = _LOG_SCALE_MIN if raw < _LOG_SCALE_MIN else raw
                logp, dmu, ds = _bin_term(np.float64(x[b, c, n]), mu, s, h, lo_edge, hi_edge,
                                          d_min, log_thr, log_half_bins)
                acc[i] += logp
                if want_grad:
                    grad[b, mo, n] = dmu
                    grad[b, so, n] = ds if raw >= _LOG_SCALE_MIN else 0.0
                    if c >= 1:
                        grad[b, K + q0 * S + 2 * K + k, n] = dmu * (1.0 - th0 * th0) * x[b, 0, n]
                    if c >= 2:
                        grad[b, K + (q0 + 1) * S + 2 * K + k, n] = dmu * (1.0 - th1 * th1) * x[b, 1, n]
        for i in range(nt):
            lp[k, i] = p[b, k, n0 + i] + acc[i]
    for i in range(nt):
        n = n0 + i
        m1 = np.float64(p[b, 0, n])
        m2 = lp[0, i]
        for k in range(1, K):
            m1 = max(m1, p[b, k, n])
            m2 = max(m2, lp[k, i])
        s1 = 0.0
        s2 = 0.0
        for k in range(K):
            e1 = math.exp(p[b, k, n] - m1)
            e2 = math.exp(lp[k, i] - m2)
            el[k, i] = e1
            lp[k, i] = e2
            s1 += e1
            s2 += e2
        nll[b, n] = (m1 + math.log(s1)) - (m2 + math.log(s2))
        if want_grad:
            for k in range(K):
                el[k, i] /= s1
                lp[k, i] /= s2
    if want_grad:
        for k in range(K):
            for i in range(nt):
                grad[b, k, n0 + i] = el[k, i] - lp[k, i]
            for c in range(C):
                mo = K + c * S + k
                for i in range(nt):
                    grad[b, mo, n0 + i] *= -lp[k, i]
                    grad[b, mo + K, n0 + i] *= -lp[k, i]
            for q in range(C * (C - 1) // 2):
                co = K + q * S + 2 * K + k
                for i in range(nt):
                    grad[b, co, n0 + i] *= -lp[k, i]


@njit(parallel=True, fastmath=_FM, cache=True)
def _run_parallel(x, p, nll, grad, want_grad, K, S, h, lo_edge, hi_edge, d_min, log_thr,
                  log_half_bins):
    tiles = (x.shape[2] + _TILE - 1) // _TILE
    for t in prange(x.shape[0] * tiles):
        _tile(t, x, p, nll, grad, want_grad, K, S, h, lo_edge, hi_edge, d_min, log_thr,
              log_half_bins)


@njit(fastmath=_FM, cache=True)
def _run_serial(x, p, nll, grad, want_grad, K, S, h, lo_edge, hi_edge, d_min, log_thr,
                log_half_bins):
    tiles = (x.shape[2] + _TILE - 1) // _TILE
    for t in range(x.shape[0] * tiles):
        _tile(t, x, p, nll, grad, want_grad, K, S, h, lo_edge, hi_edge, d_min, log_thr,
              log_half_bins)


# Below this many (position, component, channel) terms the thread pool's wake-up costs more
# than the work (measured: ~10 ms on a busy 2-core machine for a few thousand terms).
_PARALLEL_MIN_TERMS = 1 << 16


def dlml_forward(x3, p3, num_bins, want_grad):
    """x3 (B, C, N), p3 (B, P, N) C-contiguous float32/float64 -> (nll (B, N), grad or None)."""
    if x3.dtype != p3.dtype or p3.dtype not in (np.float32, np.float64):
        raise ValueError(f"dlml numba kernel: x and params must share a float32/float64 dtype, "
                         f"got {x3.dtype} and {p3.dtype}")
    B, C, N = x3.shape
    per = 1 + 2 * C + C * (C - 1) // 2
    K = p3.shape[1] // per
    S = 3 * K if C == 3 else 2 * K
    h = 1.0 / (num_bins - 1)
    thr = 1e-5 * 255.0 / (num_bins - 1)  # gmcore.functional._dlml_reference.tail_threshold
    nll = np.empty((B, N), dtype=p3.dtype)
    grad = np.empty_like(p3) if want_grad else np.empty((0, 0, 0), dtype=p3.dtype)
    dt = p3.dtype.type  # edges and thresholds rounded to the data dtype, as the reference does
    run = _run_parallel if B * N * K * C >= _PARALLEL_MIN_TERMS else _run_serial
    run(np.ascontiguousarray(x3), np.ascontiguousarray(p3), nll, grad, bool(want_grad),
        K, S, h, float(dt(-1.0 + h)), float(dt(1.0 - h)), float(dt(4.0 * thr)),
        float(dt(math.log(thr))), math.log((num_bins - 1) / 2.0))
    return nll, (grad if want_grad else None)
