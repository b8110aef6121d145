"""Fused diffusion kernels in Triton (the primary GPU path; CPU interpreter in CI).

Launchers take C-contiguous (B, N) arrays (CuPy on a GPU, NumPy under ``TRITON_INTERPRET=1``),
int64 timesteps (B,), the packed (11, T) coefficient table of ``NoiseSchedule.table`` and the
(T,) loss weights in the data dtype, and return new arrays; same signatures as the other
implementations (gmcore/functional/diffusion.py). Math: gmcore/functional/_diffusion_reference.py
(the derivation of the hybrid backward is in csrc/diffusion.h).

Every kernel runs on a 2-D grid (example, chunk of BLOCK elements), so the example's
coefficients are scalar loads and per-example branches (t = 0) are scalar branches. The loss
forwards run one program per example, looping over its elements; sums accumulate in the data
dtype (tree reduction within a block).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._math import logsigmoid, sigmoid
from ...backend import xp_of
from .._launch import cdiv, tl_arg

# table rows (gmcore.schedules.ROWS)
# (globals read inside @triton.jit functions must be tl.constexpr)
_SQRT_ACP = tl.constexpr(0)
_SQRT_1M_ACP = tl.constexpr(1)
_SQRT_RECIP = tl.constexpr(2)
_SQRT_RECIPM1 = tl.constexpr(3)
_COEF1 = tl.constexpr(4)
_COEF2 = tl.constexpr(5)
_POST_LOGVAR = tl.constexpr(6)
_LOG_BETA = tl.constexpr(7)
_LARGE_LOGVAR = tl.constexpr(8)
_ACP = tl.constexpr(9)
_ONE_M_ACP = tl.constexpr(10)
_LN2 = tl.constexpr(0.6931471805599453)
_LOG_MIN = tl.constexpr(-27.631021115928547)  # log(1e-12)
BLOCK = 1024
LOSS_BLOCK = 1024


@triton.jit
def _clip1(x):
    # clamp to [-1, 1]; NaN passes through (as the reference)
    return tl.where(x < -1.0, -1.0, tl.where(x > 1.0, 1.0, x))


@triton.jit
def _q_sample_kernel(x0_ptr, noise_ptr, t_ptr, tab_ptr, out_ptr, N, nT, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    base = b.to(tl.int64) * N
    tb = tl.load(t_ptr + b)
    a = tl.load(tab_ptr + _SQRT_ACP * nT + tb)
    s = tl.load(tab_ptr + _SQRT_1M_ACP * nT + tb)
    x = tl.load(x0_ptr + base + offs, mask=m)
    n = tl.load(noise_ptr + base + offs, mask=m)
    tl.store(out_ptr + base + offs, a * x + s * n, mask=m)


@triton.jit
def _predict_x0_kernel(xt_ptr, eps_ptr, t_ptr, tab_ptr, out_ptr, N, nT, CLIP: tl.constexpr,
                       BLOCK: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    base = b.to(tl.int64) * N
    tb = tl.load(t_ptr + b)
    sr = tl.load(tab_ptr + _SQRT_RECIP * nT + tb)
    srm1 = tl.load(tab_ptr + _SQRT_RECIPM1 * nT + tb)
    x0 = sr * tl.load(xt_ptr + base + offs, mask=m) - srm1 * tl.load(eps_ptr + base + offs, mask=m)
    if CLIP:
        x0 = _clip1(x0)
    tl.store(out_ptr + base + offs, x0, mask=m)


@triton.jit
def _ddpm_kernel(xt_ptr, mo_ptr, noise_ptr, t_ptr, tab_ptr, out_ptr, N, nT, VAR_CODE: tl.constexpr,
                 CLIP: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    base = b.to(tl.int64) * N
    if VAR_CODE == 2:
        mbase = b.to(tl.int64) * (2 * N)
    else:
        mbase = base
    tb = tl.load(t_ptr + b)
    sr = tl.load(tab_ptr + _SQRT_RECIP * nT + tb)
    srm1 = tl.load(tab_ptr + _SQRT_RECIPM1 * nT + tb)
    c1 = tl.load(tab_ptr + _COEF1 * nT + tb)
    c2 = tl.load(tab_ptr + _COEF2 * nT + tb)
    x = tl.load(xt_ptr + base + offs, mask=m)
    e = tl.load(mo_ptr + mbase + offs, mask=m)
    x0 = sr * x - srm1 * e
    if CLIP:
        x0 = _clip1(x0)
    mean = c1 * x0 + c2 * x
    if tb == 0:  # the last step: the mean, noise not read
        tl.store(out_ptr + base + offs, mean, mask=m)
    else:
        lo = tl.load(tab_ptr + _POST_LOGVAR * nT + tb)
        if VAR_CODE == 2:
            hi = tl.load(tab_ptr + _LOG_BETA * nT + tb)
            frac = (tl.load(mo_ptr + mbase + N + offs, mask=m) + 1.0) * 0.5
            lv = frac * hi + (1.0 - frac) * lo
        elif VAR_CODE == 1:
            lv = tl.load(tab_ptr + _LARGE_LOGVAR * nT + tb) + tl.zeros_like(x)
        else:
            lv = lo + tl.zeros_like(x)
        n = tl.load(noise_ptr + base + offs, mask=m)
        tl.store(out_ptr + base + offs, mean + tl.exp(lv * 0.5) * n, mask=m)


@triton.jit
def _ddim_kernel(xt_ptr, eps_ptr, noise_ptr, t_ptr, tp_ptr, tab_ptr, out_ptr, N, nT, eta_ptr,
                 CLIP: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    base = b.to(tl.int64) * N
    tb = tl.load(t_ptr + b)
    tp = tl.load(tp_ptr + b)
    sr = tl.load(tab_ptr + _SQRT_RECIP * nT + tb)
    srm1 = tl.load(tab_ptr + _SQRT_RECIPM1 * nT + tb)
    acp_t = tl.load(tab_ptr + _ACP * nT + tb)
    om_t = tl.load(tab_ptr + _ONE_M_ACP * nT + tb)
    tpc = tl.maximum(tp, 0)
    has_prev = tp >= 0
    acp_p = tl.where(has_prev, tl.load(tab_ptr + _ACP * nT + tpc), 1.0)
    om_p = tl.where(has_prev, tl.load(tab_ptr + _ONE_M_ACP * nT + tpc), 0.0)
    # abar_prev - abar_t from whichever rows are small: no cancellation in float32
    diff = tl.where(acp_p <= 0.5, acp_p - acp_t, om_t - om_p)
    r = tl.maximum(om_p / om_t * diff / acp_p, 0.0)
    sigma = tl.load(eta_ptr) * tl.sqrt(r)
    dc = tl.sqrt(tl.maximum(om_p - sigma * sigma, 0.0))
    sa = tl.sqrt(acp_p)
    x = tl.load(xt_ptr + base + offs, mask=m)
    e = tl.load(eps_ptr + base + offs, mask=m)
    x0 = sr * x - srm1 * e
    if CLIP:
        x0 = _clip1(x0)
        e = (sr * x - x0) / srm1
    res = sa * x0 + dc * e
    if sigma != 0:  # eta = 0 or the final step: noise not read
        res = res + sigma * tl.load(noise_ptr + base + offs, mask=m)
    tl.store(out_ptr + base + offs, res, mask=m)


@triton.jit
def _eps_loss_fwd_kernel(p_ptr, n_ptr, t_ptr, w_ptr, out_ptr, N, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    base = b.to(tl.int64) * N
    acc = tl.zeros([BLOCK], dtype=out_ptr.dtype.element_ty)
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < N
        d = tl.load(p_ptr + base + offs, mask=m, other=0.0) - tl.load(n_ptr + base + offs, mask=m, other=0.0)
        acc += d * d
    w = tl.load(w_ptr + tl.load(t_ptr + b))
    tl.store(out_ptr + b, w * (tl.sum(acc, axis=0) / N))


@triton.jit
def _eps_loss_bwd_kernel(p_ptr, n_ptr, t_ptr, w_ptr, g_ptr, out_ptr, N, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    base = b.to(tl.int64) * N
    s = tl.load(g_ptr + b) * tl.load(w_ptr + tl.load(t_ptr + b)) * 2.0 / N
    d = tl.load(p_ptr + base + offs, mask=m) - tl.load(n_ptr + base + offs, mask=m)
    tl.store(out_ptr + base + offs, s * d, mask=m)


@triton.jit
def _cdf_logit(z):  # u(z) = 2K (z + A z^3): Phi~(z) = sigmoid(u(z))
    return 1.5957691216057308 * (z + 0.044715 * z * z * z)


@triton.jit
def _cdf_logit_d(z):  # u'(z)
    return 1.5957691216057308 * (1.0 + 0.134145 * z * z)


@triton.jit
def _vb_kl(x0, xt, mp, lp, dlp, c1, c2, lo):
    """KL term (nats) and its derivative w.r.t. v."""
    mq = c1 * x0 + c2 * xt
    d = mq - mp
    e1 = tl.exp(lo - lp)
    e2 = d * d * tl.exp(-lp)
    return 0.5 * (-1.0 + lp - lo + e1 + e2), 0.5 * (1.0 - e1 - e2) * dlp


@triton.jit
def _vb_nll(x0, mp, lp, dlp):
    """Discretized Gaussian decoder NLL (nats) at t = 0 and its derivative w.r.t. v."""
    inv = tl.exp(-(0.5 * lp))
    cc = x0 - mp
    a = inv * (cc - 1.0 / 255.0)
    b = inv * (cc + 1.0 / 255.0)
    ua = _cdf_logit(a)
    ub = _cdf_logit(b)
    sa = sigmoid(ua)
    sna = sigmoid(-ua)
    sb = sigmoid(ub)
    snb = sigmoid(-ub)
    # left edge: log Phi~(b); right edge: log(1 - Phi~(a)); middle: log(Phi~(b) - Phi~(a))
    l_left = logsigmoid(ub)
    d_left = -b * _cdf_logit_d(b) * snb
    l_right = logsigmoid(-ua)
    d_right = a * _cdf_logit_d(a) * sa
    delta = tl.where(a > 0, sna - snb, sb - sa)
    ok_mid = delta >= 1e-12
    safe = tl.where(ok_mid, delta, 1.0)
    l_mid = tl.log(safe)
    d_mid = (a * _cdf_logit_d(a) * sa * sna - b * _cdf_logit_d(b) * sb * snb) / safe
    left = x0 < -0.999
    right = x0 > 0.999
    logp = tl.where(left, l_left, tl.where(right, l_right, l_mid))
    dlds = tl.where(left, d_left, tl.where(right, d_right, d_mid))
    ok = tl.where(left, l_left >= _LOG_MIN, tl.where(right, l_right >= _LOG_MIN, ok_mid))
    # (a bare float in tl.where would be rounded to fp32 first: build it in logp's dtype)
    logp = tl.where(ok, logp, tl.zeros_like(logp) + _LOG_MIN)
    dlds = tl.where(ok, dlds, 0.0)
    return -logp, -dlds * 0.5 * dlp


@triton.jit
def _hybrid_fwd_kernel(mo_ptr, x0_ptr, xt_ptr, n_ptr, t_ptr, tab_ptr, w_ptr, out_ptr, N, nT, vbw_ptr,
                       BLOCK: tl.constexpr):
    b = tl.program_id(0)
    base = b.to(tl.int64) * N
    mbase = b.to(tl.int64) * (2 * N)
    tb = tl.load(t_ptr + b)
    sr = tl.load(tab_ptr + _SQRT_RECIP * nT + tb)
    srm1 = tl.load(tab_ptr + _SQRT_RECIPM1 * nT + tb)
    c1 = tl.load(tab_ptr + _COEF1 * nT + tb)
    c2 = tl.load(tab_ptr + _COEF2 * nT + tb)
    lo = tl.load(tab_ptr + _POST_LOGVAR * nT + tb)
    hi = tl.load(tab_ptr + _LOG_BETA * nT + tb)
    mse = tl.zeros([BLOCK], dtype=out_ptr.dtype.element_ty)
    vb = tl.zeros([BLOCK], dtype=out_ptr.dtype.element_ty)
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < N
        e = tl.load(mo_ptr + mbase + offs, mask=m, other=0.0)
        v = tl.load(mo_ptr + mbase + N + offs, mask=m, other=0.0)
        x0 = tl.load(x0_ptr + base + offs, mask=m, other=0.0)
        xt = tl.load(xt_ptr + base + offs, mask=m, other=0.0)
        d = e - tl.load(n_ptr + base + offs, mask=m, other=0.0)
        mse += d * d
        mp = c1 * (sr * xt - srm1 * e) + c2 * xt
        frac = (v + 1.0) * 0.5
        lp = frac * hi + (1.0 - frac) * lo
        dlp = (hi - lo) * 0.5
        if tb == 0:
            val, _dv = _vb_nll(x0, mp, lp, dlp)
        else:
            val, _dv = _vb_kl(x0, xt, mp, lp, dlp, c1, c2, lo)
        vb += tl.where(m, val, 0.0)
    w = tl.load(w_ptr + tb)
    total = tl.sum(mse, axis=0) / N + tl.load(vbw_ptr) * (tl.sum(vb, axis=0) / N / _LN2)
    tl.store(out_ptr + b, w * total)


@triton.jit
def _hybrid_bwd_kernel(mo_ptr, x0_ptr, xt_ptr, n_ptr, t_ptr, tab_ptr, w_ptr, g_ptr, out_ptr, N, nT,
                       vbw_ptr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    base = b.to(tl.int64) * N
    mbase = b.to(tl.int64) * (2 * N)
    tb = tl.load(t_ptr + b)
    sr = tl.load(tab_ptr + _SQRT_RECIP * nT + tb)
    srm1 = tl.load(tab_ptr + _SQRT_RECIPM1 * nT + tb)
    c1 = tl.load(tab_ptr + _COEF1 * nT + tb)
    c2 = tl.load(tab_ptr + _COEF2 * nT + tb)
    lo = tl.load(tab_ptr + _POST_LOGVAR * nT + tb)
    hi = tl.load(tab_ptr + _LOG_BETA * nT + tb)
    gw = tl.load(g_ptr + b) * tl.load(w_ptr + tb)
    e = tl.load(mo_ptr + mbase + offs, mask=m, other=0.0)
    v = tl.load(mo_ptr + mbase + N + offs, mask=m, other=0.0)
    x0 = tl.load(x0_ptr + base + offs, mask=m, other=0.0)
    xt = tl.load(xt_ptr + base + offs, mask=m, other=0.0)
    n = tl.load(n_ptr + base + offs, mask=m, other=0.0)
    tl.store(out_ptr + mbase + offs, gw * 2.0 / N * (e - n), mask=m)
    mp = c1 * (sr * xt - srm1 * e) + c2 * xt
    frac = (v + 1.0) * 0.5
    lp = frac * hi + (1.0 - frac) * lo
    dlp = (hi - lo) * 0.5
    if tb == 0:
        _val, dv = _vb_nll(x0, mp, lp, dlp)
    else:
        _val, dv = _vb_kl(x0, xt, mp, lp, dlp, c1, c2, lo)
    tl.store(out_ptr + mbase + N + offs, gw * tl.load(vbw_ptr) / N / _LN2 * dv, mask=m)


# ---- launchers -------------------------------------------------------------------------------

def _scalar(value, like):
    """A float parameter as a 1-element array in the data dtype (Triton would type a Python
    float as fp32, losing float64 precision)."""
    return xp_of(like).full(1, value, dtype=like.dtype)


def _grid(B, N, block=BLOCK):
    return (int(B), max(1, cdiv(N, block)))


def q_sample(x0, noise, t, tab):
    B, N = x0.shape
    out = xp_of(x0).empty_like(x0)
    if B * N:
        _q_sample_kernel[_grid(B, N)](tl_arg(x0), tl_arg(noise), tl_arg(t), tl_arg(tab), tl_arg(out),
                                      int(N), int(tab.shape[1]), BLOCK=BLOCK)
    return out


def predict_x0(xt, eps, t, tab, clip):
    B, N = xt.shape
    out = xp_of(xt).empty_like(xt)
    if B * N:
        _predict_x0_kernel[_grid(B, N)](tl_arg(xt), tl_arg(eps), tl_arg(t), tl_arg(tab), tl_arg(out),
                                        int(N), int(tab.shape[1]), CLIP=bool(clip), BLOCK=BLOCK)
    return out


def ddpm_step(xt, model_out, noise, t, tab, var_code, clip):
    B, N = xt.shape
    out = xp_of(xt).empty_like(xt)
    if B * N:
        _ddpm_kernel[_grid(B, N)](tl_arg(xt), tl_arg(model_out), tl_arg(noise), tl_arg(t), tl_arg(tab),
                                  tl_arg(out), int(N), int(tab.shape[1]), VAR_CODE=int(var_code),
                                  CLIP=bool(clip), BLOCK=BLOCK)
    return out


def ddim_step(xt, eps, noise, t, t_prev, tab, eta, clip):
    B, N = xt.shape
    out = xp_of(xt).empty_like(xt)
    if B * N:
        _ddim_kernel[_grid(B, N)](tl_arg(xt), tl_arg(eps), tl_arg(noise), tl_arg(t), tl_arg(t_prev),
                                  tl_arg(tab), tl_arg(out), int(N), int(tab.shape[1]),
                                  tl_arg(_scalar(eta, xt)),
                                  CLIP=bool(clip), BLOCK=BLOCK)
    return out


def eps_loss_fwd(pred, noise, t, w):
    B, N = pred.shape
    out = xp_of(pred).empty(B, dtype=pred.dtype)
    _eps_loss_fwd_kernel[(int(B),)](tl_arg(pred), tl_arg(noise), tl_arg(t), tl_arg(w), tl_arg(out),
                                    int(N), BLOCK=LOSS_BLOCK)
    return out


def eps_loss_bwd(pred, noise, t, w, g):
    B, N = pred.shape
    out = xp_of(pred).empty_like(pred)
    if B * N:
        _eps_loss_bwd_kernel[_grid(B, N)](tl_arg(pred), tl_arg(noise), tl_arg(t), tl_arg(w), tl_arg(g),
                                          tl_arg(out), int(N), BLOCK=BLOCK)
    return out


def hybrid_fwd(model_out, x0, xt, noise, t, tab, w, vb_weight):
    B, N = x0.shape
    out = xp_of(x0).empty(B, dtype=x0.dtype)
    _hybrid_fwd_kernel[(int(B),)](tl_arg(model_out), tl_arg(x0), tl_arg(xt), tl_arg(noise), tl_arg(t),
                                  tl_arg(tab), tl_arg(w), tl_arg(out), int(N), int(tab.shape[1]),
                                  tl_arg(_scalar(vb_weight, x0)), BLOCK=LOSS_BLOCK)
    return out


def hybrid_bwd(model_out, x0, xt, noise, t, tab, w, vb_weight, g):
    B, N = x0.shape
    out = xp_of(x0).empty_like(model_out)
    if B * N:
        _hybrid_bwd_kernel[_grid(B, N)](tl_arg(model_out), tl_arg(x0), tl_arg(xt), tl_arg(noise),
                                        tl_arg(t), tl_arg(tab), tl_arg(w), tl_arg(g), tl_arg(out),
                                        int(N), int(tab.shape[1]), tl_arg(_scalar(vb_weight, x0)),
                                        BLOCK=BLOCK)
    return out


# Every kernel with a representative signature, compiled for sm_90 by
# tests/kernels/test_triton_compile.py.
_F32 = "*fp32"
_I64 = "*i64"
SM90_KERNELS = [
    (_q_sample_kernel, {"x0_ptr": _F32, "noise_ptr": _F32, "t_ptr": _I64, "tab_ptr": _F32,
                        "out_ptr": _F32, "N": "i32", "nT": "i32"}, {"BLOCK": BLOCK}),
    (_predict_x0_kernel, {"xt_ptr": _F32, "eps_ptr": _F32, "t_ptr": _I64, "tab_ptr": _F32,
                          "out_ptr": _F32, "N": "i32", "nT": "i32"}, {"CLIP": True, "BLOCK": BLOCK}),
    (_ddpm_kernel, {"xt_ptr": _F32, "mo_ptr": _F32, "noise_ptr": _F32, "t_ptr": _I64,
                    "tab_ptr": _F32, "out_ptr": _F32, "N": "i32", "nT": "i32"},
     {"VAR_CODE": 2, "CLIP": True, "BLOCK": BLOCK}),
    (_ddpm_kernel, {"xt_ptr": "*fp64", "mo_ptr": "*fp64", "noise_ptr": "*fp64", "t_ptr": _I64,
                    "tab_ptr": "*fp64", "out_ptr": "*fp64", "N": "i32", "nT": "i32"},
     {"VAR_CODE": 1, "CLIP": False, "BLOCK": BLOCK}),
    (_ddim_kernel, {"xt_ptr": _F32, "eps_ptr": _F32, "noise_ptr": _F32, "t_ptr": _I64,
                    "tp_ptr": _I64, "tab_ptr": _F32, "out_ptr": _F32, "N": "i32", "nT": "i32",
                    "eta_ptr": _F32}, {"CLIP": True, "BLOCK": BLOCK}),
    (_eps_loss_fwd_kernel, {"p_ptr": _F32, "n_ptr": _F32, "t_ptr": _I64, "w_ptr": _F32,
                            "out_ptr": _F32, "N": "i32"}, {"BLOCK": LOSS_BLOCK}),
    (_eps_loss_bwd_kernel, {"p_ptr": _F32, "n_ptr": _F32, "t_ptr": _I64, "w_ptr": _F32,
                            "g_ptr": _F32, "out_ptr": _F32, "N": "i32"}, {"BLOCK": BLOCK}),
    (_hybrid_fwd_kernel, {"mo_ptr": _F32, "x0_ptr": _F32, "xt_ptr": _F32, "n_ptr": _F32,
                          "t_ptr": _I64, "tab_ptr": _F32, "w_ptr": _F32, "out_ptr": _F32,
                          "N": "i32", "nT": "i32", "vbw_ptr": _F32}, {"BLOCK": LOSS_BLOCK}),
    (_hybrid_bwd_kernel, {"mo_ptr": _F32, "x0_ptr": _F32, "xt_ptr": _F32, "n_ptr": _F32,
                          "t_ptr": _I64, "tab_ptr": _F32, "w_ptr": _F32, "g_ptr": _F32,
                          "out_ptr": _F32, "N": "i32", "nT": "i32", "vbw_ptr": _F32},
     {"BLOCK": BLOCK}),
    (_hybrid_fwd_kernel, {"mo_ptr": "*fp64", "x0_ptr": "*fp64", "xt_ptr": "*fp64", "n_ptr": "*fp64",
                          "t_ptr": _I64, "tab_ptr": "*fp64", "w_ptr": "*fp64", "out_ptr": "*fp64",
                          "N": "i32", "nT": "i32", "vbw_ptr": "*fp64"}, {"BLOCK": LOSS_BLOCK}),
]
