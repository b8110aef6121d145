"""Fused diffusion kernels for the CPU (numba): q_sample, x0 prediction, DDPM/DDIM steps, the
eps-MSE and hybrid losses with their backward.

Launchers take C-contiguous (B, N) arrays of one float dtype, int64 timesteps (B,), the
packed coefficient table (K, T) of ``NoiseSchedule.table`` (rows: gmcore.schedules.ROWS) in
the same dtype, and return new arrays. The math is that of
``gmcore/functional/_diffusion_reference.py`` (and csrc/diffusion.h); per-element arithmetic
runs in the input dtype, per-example sums accumulate in float64.

Elementwise kernels iterate over (example, chunk) pairs so a small batch still spreads over
the cores; the losses iterate over examples (one per-example sum each).

Hybrid backward, per element of an example with weight ``c = g_b w[t_b]``:
  d/d eps = c * 2 (eps - noise) / N          (vb has a stop-gradient on the mean)
  d/d v   = c * vb_weight / (N ln 2) * d vb / d v, with lp = frac max + (1 - frac) min,
  d lp / d v = (max - min) / 2 and
    KL:  d kl / d lp = (1 - exp(lq - lp) - (mq - mp)^2 exp(-lp)) / 2
    NLL: log-scale s = lp / 2, a = e^-s (c - h), b = e^-s (c + h), da/ds = -a, db/ds = -b,
         Phi~(z) = sigmoid(u(z)), u(z) = 2K (z + A z^3), phi~(z) = u'(z) sigmoid(u) sigmoid(-u):
         left edge  d log Phi~(b) / ds       = -b u'(b) sigmoid(-u(b))
         right edge d log(1 - Phi~(a)) / ds  =  a u'(a) sigmoid(u(a))
         middle     d log(Phi~(b) - Phi~(a)) / ds = (a phi~(a) - b phi~(b)) / delta
         (zero where a probability is clamped at 1e-12).
"""

from __future__ import annotations

import math
import types

import numpy as np
from numba import njit, prange

_CHUNK = 4096
# table rows (gmcore.schedules.ROWS)
_SQRT_ACP, _SQRT_1M_ACP, _SQRT_RECIP, _SQRT_RECIPM1 = 0, 1, 2, 3
_COEF1, _COEF2, _POST_LOGVAR, _LOG_BETA, _LARGE_LOGVAR, _ACP, _ONE_M_ACP = 4, 5, 6, 7, 8, 9, 10
_HW = 1.0 / 255.0
_EDGE = 0.999
_LOG_MIN = math.log(1e-12)
_TWO_K = 2.0 * math.sqrt(2.0 / math.pi)
_A = 0.044715
_LN2 = math.log(2.0)

_JIT = dict(parallel=True, cache=True, nogil=True)
_JIT_SERIAL = dict(cache=True, nogil=True)
# Work (elements) from which the parallel variant runs. The elementwise ops are memory-bound:
# one core nearly saturates its share of bandwidth, and on a busy machine a parallel region
# waits for every worker to be scheduled (milliseconds). The hybrid loss (~20 transcendental
# calls per element) passes 32x its size as work: parallel from 2^15 elements.
_PARALLEL_MIN = 1 << 20
_JIT_INLINE = dict(cache=True, inline="always")


@njit(**_JIT_INLINE)
def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit(**_JIT_INLINE)
def _logsigmoid(z):
    return min(z, 0.0) - math.log1p(math.exp(-abs(z)))


@njit(**_JIT_INLINE)
def _clip1(x):
    if x < -1.0:
        return x * 0.0 - 1.0
    if x > 1.0:
        return x * 0.0 + 1.0
    return x


# ---- elementwise -----------------------------------------------------------------------------

def _q_sample(x0, noise, t, tab, out):
    B, N = x0.shape
    nc = (N + _CHUNK - 1) // _CHUNK
    for k in prange(B * nc):
        b, c = k // nc, k % nc
        a = tab[_SQRT_ACP, t[b]]
        s = tab[_SQRT_1M_ACP, t[b]]
        for j in range(c * _CHUNK, min(N, (c + 1) * _CHUNK)):
            out[b, j] = a * x0[b, j] + s * noise[b, j]


def _predict_x0(xt, eps, t, tab, clip, out):
    B, N = xt.shape
    nc = (N + _CHUNK - 1) // _CHUNK
    for k in prange(B * nc):
        b, c = k // nc, k % nc
        sr = tab[_SQRT_RECIP, t[b]]
        srm1 = tab[_SQRT_RECIPM1, t[b]]
        for j in range(c * _CHUNK, min(N, (c + 1) * _CHUNK)):
            x0 = sr * xt[b, j] - srm1 * eps[b, j]
            out[b, j] = _clip1(x0) if clip else x0


def _ddpm_step(xt, mo, noise, t, tab, var_code, clip, out):
    B, N = xt.shape
    nc = (N + _CHUNK - 1) // _CHUNK
    one = tab[0, 0] * 0.0 + 1.0
    half = one * 0.5
    for k in prange(B * nc):
        b, c = k // nc, k % nc
        tb = t[b]
        sr, srm1 = tab[_SQRT_RECIP, tb], tab[_SQRT_RECIPM1, tb]
        c1, c2 = tab[_COEF1, tb], tab[_COEF2, tb]
        lo, hi = tab[_POST_LOGVAR, tb], tab[_LOG_BETA, tb]
        fixed = tab[_LARGE_LOGVAR, tb] if var_code == 1 else lo
        std = math.exp(fixed * half)  # one exp per example for the fixed variance types
        final = tb == 0
        for j in range(c * _CHUNK, min(N, (c + 1) * _CHUNK)):
            x = xt[b, j]
            x0 = sr * x - srm1 * mo[b, j]
            if clip:
                x0 = _clip1(x0)
            mean = c1 * x0 + c2 * x
            if final:
                out[b, j] = mean
                continue
            if var_code == 2:
                frac = (mo[b, N + j] + one) * half
                lv = frac * hi + (one - frac) * lo
                out[b, j] = mean + math.exp(lv * half) * noise[b, j]
            else:
                out[b, j] = mean + std * noise[b, j]


@njit(cache=True)
def _ddim_coefs(t, tp, tab, eta, coefs):
    """Per example: sqrt(abar_prev), the eps coefficient and sigma (DDIM eq. 12)."""
    for b in range(t.shape[0]):
        acp_t, om_t = tab[_ACP, t[b]], tab[_ONE_M_ACP, t[b]]
        if tp[b] >= 0:
            acp_p, om_p = tab[_ACP, tp[b]], tab[_ONE_M_ACP, tp[b]]
        else:
            acp_p, om_p = om_t * 0.0 + 1.0, om_t * 0.0
        # abar_prev - abar_t from whichever rows are small (no cancellation in float32)
        diff = acp_p - acp_t if acp_p <= 0.5 else om_t - om_p
        r = om_p / om_t * diff / acp_p
        sigma = eta * math.sqrt(max(r, 0.0))
        coefs[b, 0] = math.sqrt(acp_p)
        coefs[b, 1] = math.sqrt(max(om_p - sigma * sigma, 0.0))
        coefs[b, 2] = sigma


def _ddim_step(xt, eps, noise, t, tab, coefs, clip, out):
    B, N = xt.shape
    nc = (N + _CHUNK - 1) // _CHUNK
    for k in prange(B * nc):
        b, c = k // nc, k % nc
        sr, srm1 = tab[_SQRT_RECIP, t[b]], tab[_SQRT_RECIPM1, t[b]]
        sa, dc, sigma = coefs[b, 0], coefs[b, 1], coefs[b, 2]
        for j in range(c * _CHUNK, min(N, (c + 1) * _CHUNK)):
            x = xt[b, j]
            e = eps[b, j]
            x0 = sr * x - srm1 * e
            if clip:
                x0 = _clip1(x0)
                e = (sr * x - x0) / srm1
            base = sa * x0 + dc * e
            out[b, j] = base if sigma == 0 else base + sigma * noise[b, j]


# ---- losses ------------------------------------------------------------------------------------

def _eps_loss_fwd(pred, noise, t, w, out):
    B, N = pred.shape
    for b in prange(B):
        # 4 independent partial sums: no loop-carried dependency, so the loop vectorizes
        a0 = a1 = a2 = a3 = 0.0
        j = 0
        while j + 4 <= N:
            d0 = np.float64(pred[b, j] - noise[b, j])
            d1 = np.float64(pred[b, j + 1] - noise[b, j + 1])
            d2 = np.float64(pred[b, j + 2] - noise[b, j + 2])
            d3 = np.float64(pred[b, j + 3] - noise[b, j + 3])
            a0 += d0 * d0
            a1 += d1 * d1
            a2 += d2 * d2
            a3 += d3 * d3
            j += 4
        while j < N:
            d0 = np.float64(pred[b, j] - noise[b, j])
            a0 += d0 * d0
            j += 1
        out[b] = w[t[b]] * (((a0 + a1) + (a2 + a3)) / N)


def _eps_loss_bwd(pred, noise, t, w, g, out):
    B, N = pred.shape
    nc = (N + _CHUNK - 1) // _CHUNK
    for k in prange(B * nc):
        b, c = k // nc, k % nc
        s = g[b] * w[t[b]] * 2.0 / N
        s = pred[b, 0] * 0.0 + s  # in the input dtype
        for j in range(c * _CHUNK, min(N, (c + 1) * _CHUNK)):
            out[b, j] = s * (pred[b, j] - noise[b, j])


@njit(**_JIT_INLINE)
def _u2_du2(z):
    return _TWO_K * (z + _A * z * z * z), _TWO_K * (1.0 + 3.0 * _A * z * z)


@njit(**_JIT_INLINE)
def _vb_elem(x0, xt, eps, v, sr, srm1, c1, c2, lo, hi, t0):
    """(vb term in nats, its derivative w.r.t. v) for one element."""
    one = lo * 0.0 + 1.0
    half = one * 0.5
    x0p = sr * xt - srm1 * eps
    mp = c1 * x0p + c2 * xt
    frac = (v + one) * half
    lp = frac * hi + (one - frac) * lo
    dlp = (hi - lo) * half
    if not t0:
        mq = c1 * x0 + c2 * xt
        d = mq - mp
        e1 = math.exp(lo - lp)
        e2 = d * d * math.exp(-lp)
        kl = half * (-one + lp - lo + e1 + e2)
        return kl, half * (one - e1 - e2) * dlp
    # decoder NLL at t = 0 with log-scale s = lp / 2
    inv = math.exp(-(half * lp))
    cc = x0 - mp
    a = inv * (cc - _HW)
    bb = inv * (cc + _HW)
    ua, dua = _u2_du2(a)
    ub, dub = _u2_du2(bb)
    if x0 < -_EDGE:
        lpb = _logsigmoid(ub)
        if lpb < _LOG_MIN:
            return -_LOG_MIN + 0.0 * lo, 0.0 * lo
        dlds = -bb * dub * _sigmoid(-ub)
    elif x0 > _EDGE:
        lpb = _logsigmoid(-ua)
        if lpb < _LOG_MIN:
            return -_LOG_MIN + 0.0 * lo, 0.0 * lo
        dlds = a * dua * _sigmoid(ua)
    else:
        if a > 0:
            delta = _sigmoid(-ua) - _sigmoid(-ub)
        else:
            delta = _sigmoid(ub) - _sigmoid(ua)
        if delta < 1e-12:
            return -_LOG_MIN + 0.0 * lo, 0.0 * lo
        lpb = math.log(delta)
        pa = dua * _sigmoid(ua) * _sigmoid(-ua)
        pb = dub * _sigmoid(ub) * _sigmoid(-ub)
        dlds = (a * pa - bb * pb) / delta
    return -lpb, -dlds * half * dlp


def _hybrid_fwd(out, x0, xt, noise, t, tab, w, vb_weight, res):
    B, N = x0.shape
    for b in prange(B):
        tb = t[b]
        sr, srm1 = tab[_SQRT_RECIP, tb], tab[_SQRT_RECIPM1, tb]
        c1, c2 = tab[_COEF1, tb], tab[_COEF2, tb]
        lo, hi = tab[_POST_LOGVAR, tb], tab[_LOG_BETA, tb]
        mse = 0.0
        vb = 0.0
        for j in range(N):
            e = out[b, j]
            d = e - noise[b, j]
            mse += d * d
            val, _ = _vb_elem(x0[b, j], xt[b, j], e, out[b, N + j], sr, srm1, c1, c2, lo, hi,
                              tb == 0)
            vb += val
        res[b] = w[tb] * (mse / N + vb_weight * (vb / N / _LN2))


def _hybrid_bwd(out, x0, xt, noise, t, tab, w, vb_weight, g, grad):
    B, N = x0.shape
    nc = (N + _CHUNK - 1) // _CHUNK
    for k in prange(B * nc):
        b, c = k // nc, k % nc
        tb = t[b]
        sr, srm1 = tab[_SQRT_RECIP, tb], tab[_SQRT_RECIPM1, tb]
        c1, c2 = tab[_COEF1, tb], tab[_COEF2, tb]
        lo, hi = tab[_POST_LOGVAR, tb], tab[_LOG_BETA, tb]
        gw = g[b] * w[tb]
        se = lo * 0.0 + gw * 2.0 / N
        sv = lo * 0.0 + gw * vb_weight / (N * _LN2)
        for j in range(c * _CHUNK, min(N, (c + 1) * _CHUNK)):
            e = out[b, j]
            grad[b, j] = se * (e - noise[b, j])
            _, dv = _vb_elem(x0[b, j], xt[b, j], e, out[b, N + j], sr, srm1, c1, c2, lo, hi,
                             tb == 0)
            grad[b, N + j] = sv * dv


def _renamed(fn, suffix):
    """A copy of ``fn`` under another qualname, so numba caches its variants apart."""
    g = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__,
                           fn.__closure__)
    g.__qualname__ = fn.__qualname__ + suffix
    return g


# Each kernel compiled twice: a serial variant (prange runs as range) and a parallel one.
_KERNELS = {}
for _fn in (_q_sample, _predict_x0, _ddpm_step, _ddim_step, _eps_loss_fwd, _eps_loss_bwd,
            _hybrid_fwd, _hybrid_bwd):
    _KERNELS[_fn.__name__] = (njit(**_JIT_SERIAL)(_renamed(_fn, "_serial")), njit(**_JIT)(_fn))


def _k(name, work):
    return _KERNELS[name][work >= _PARALLEL_MIN]


# ---- launchers (arrays in, arrays out) ----------------------------------------------------------

def q_sample(x0, noise, t, tab):
    out = np.empty_like(x0)
    _k("_q_sample", out.size)(x0, noise, t, tab, out)
    return out


def predict_x0(xt, eps, t, tab, clip):
    out = np.empty_like(xt)
    _k("_predict_x0", out.size)(xt, eps, t, tab, bool(clip), out)
    return out


def ddpm_step(xt, model_out, noise, t, tab, var_code, clip):
    out = np.empty_like(xt)
    _k("_ddpm_step", out.size)(xt, model_out, noise, t, tab, int(var_code), bool(clip), out)
    return out


def ddim_step(xt, eps, noise, t, t_prev, tab, eta, clip):
    coefs = np.empty((xt.shape[0], 3), dtype=xt.dtype)
    _ddim_coefs(t, t_prev, tab, xt.dtype.type(eta), coefs)
    out = np.empty_like(xt)
    _k("_ddim_step", out.size)(xt, eps, noise, t, tab, coefs, bool(clip), out)
    return out


def eps_loss_fwd(pred, noise, t, w):
    out = np.empty(pred.shape[0], dtype=pred.dtype)
    _k("_eps_loss_fwd", pred.size)(pred, noise, t, w, out)
    return out


def eps_loss_bwd(pred, noise, t, w, g):
    out = np.empty_like(pred)
    _k("_eps_loss_bwd", out.size)(pred, noise, t, w, g, out)
    return out


def hybrid_fwd(model_out, x0, xt, noise, t, tab, w, vb_weight):
    res = np.empty(x0.shape[0], dtype=x0.dtype)
    _k("_hybrid_fwd", 32 * x0.size)(model_out, x0, xt, noise, t, tab, w, float(vb_weight), res)
    return res


def hybrid_bwd(model_out, x0, xt, noise, t, tab, w, vb_weight, g):
    grad = np.empty_like(model_out)
    _k("_hybrid_bwd", 32 * x0.size)(model_out, x0, xt, noise, t, tab, w, float(vb_weight), g, grad)
    return grad
