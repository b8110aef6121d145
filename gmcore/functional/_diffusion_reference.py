"""The diffusion family's specification: every op as differentiable tensor math.

Each ``ref_*`` function takes tensors flattened to ``(B, N)`` (one row per example), the
per-example timesteps ``t`` as an int64 tensor ``(B,)`` and the packed coefficient table of
:meth:`gmcore.schedules.NoiseSchedule.table` as a constant tensor ``(K, T)``; it is written with
gmcore tensor ops only, so autodiff (double backward included) runs through it. The
``reference`` implementation registered with dispatch (:data:`REFERENCE_IMPL`) runs the same
functions on raw arrays under ``no_grad``; the kernels are tested against it in float64.

Row indices into the table follow :data:`gmcore.schedules.ROWS`.
"""

from __future__ import annotations

import math

from .. import autograd
from ..tensor import Tensor

# table rows (gmcore.schedules.ROWS)
SQRT_ACP, SQRT_1M_ACP, SQRT_RECIP_ACP, SQRT_RECIPM1_ACP = 0, 1, 2, 3
COEF1, COEF2, POST_LOGVAR, LOG_BETA, LARGE_LOGVAR, ACP, ONE_M_ACP = 4, 5, 6, 7, 8, 9, 10

VAR_TYPES = {"fixed_small": 0, "fixed_large": 1, "learned_range": 2}

# Discretized Gaussian decoder (improved DDPM): data in [-1, 1] on 256 levels, bins of half
# width 1/255, the edge bins open to -inf / +inf (|x| > 0.999), probabilities clamped at 1e-12.
BIN_HALF_WIDTH = 1.0 / 255.0
EDGE = 0.999
LOG_MIN_PROB = math.log(1e-12)
# Improved DDPM's tanh approximation of the standard normal CDF (Page 1977):
#   Phi(z) ~ 0.5 * (1 + tanh(K * (z + A * z**3))) = sigmoid(2 * K * (z + A * z**3))
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CDF_A = 0.044715
LN2 = math.log(2.0)


def _c(tab, row, t):
    """Coefficient ``tab[row, t]`` per example, shaped (B, 1) to broadcast over the row."""
    return tab[row][t].unsqueeze(1)


def ref_q_sample(x0, noise, t, tab):
    """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
    return _c(tab, SQRT_ACP, t) * x0 + _c(tab, SQRT_1M_ACP, t) * noise


def ref_predict_x0(xt, eps, t, tab, clip):
    """``x0 = x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps``, clamped to [-1, 1] if ``clip``."""
    x0 = _c(tab, SQRT_RECIP_ACP, t) * xt - _c(tab, SQRT_RECIPM1_ACP, t) * eps
    return x0.clamp(-1.0, 1.0) if clip else x0


def _learned_logvar(v, t, tab):
    """improved DDPM: ``frac = (v + 1) / 2``, log variance between log(posterior var) and log beta."""
    frac = (v + 1.0) * 0.5
    return frac * _c(tab, LOG_BETA, t) + (1.0 - frac) * _c(tab, POST_LOGVAR, t)


def ref_ddpm_step(xt, out, noise, t, tab, var_code, clip):
    """One ancestral step ``x_{t-1} = mean + exp(logvar / 2) noise`` (no noise where t = 0).

    ``mean = coef1 x0_pred + coef2 x_t``; ``out`` holds eps (B, N), or eps then v (B, 2N) for
    ``learned_range``.
    """
    n = xt.shape[1]
    eps = out[:, :n] if var_code == 2 else out
    x0 = ref_predict_x0(xt, eps, t, tab, clip)
    mean = _c(tab, COEF1, t) * x0 + _c(tab, COEF2, t) * xt
    if var_code == 0:
        logvar = _c(tab, POST_LOGVAR, t)
    elif var_code == 1:
        logvar = _c(tab, LARGE_LOGVAR, t)
    else:
        logvar = _learned_logvar(out[:, n:], t, tab)
    final = (t == 0).unsqueeze(1)
    return mean.where(final, mean + (logvar * 0.5).exp() * noise)


def ref_ddim_step(xt, eps, noise, t, t_prev, tab, eta, clip):
    """DDIM (Song et al. 2021, eq. 12) from step t to t_prev (t_prev = -1: abar_prev = 1).

    ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise`` with
    ``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)``. With
    ``clip`` the x0 prediction is clamped to [-1, 1] and eps re-derived from it (improved DDPM).
    ``1 - abar_t / abar_prev = (abar_prev - abar_t) / abar_prev``, the difference taken from the
    abar rows when abar_prev <= 1/2 and from the 1 - abar rows otherwise: either way the
    operands are small and keep their digits in float32. Where sigma = 0 (eta = 0, or
    the final step) the noise is not used at all.
    """
    x0 = ref_predict_x0(xt, eps, t, tab, clip)
    if clip:
        eps = (_c(tab, SQRT_RECIP_ACP, t) * xt - x0) / _c(tab, SQRT_RECIPM1_ACP, t)
    has_prev = (t_prev >= 0).unsqueeze(1)
    tp = t_prev.clamp(0, None)
    one = tab.new_ones(())
    acp_p = _c(tab, ACP, tp).where(has_prev, one)
    om_p = _c(tab, ONE_M_ACP, tp).where(has_prev, one * 0.0)
    acp_t, om_t = _c(tab, ACP, t), _c(tab, ONE_M_ACP, t)
    diff = (acp_p - acp_t).where(acp_p <= 0.5, om_t - om_p)  # abar_prev - abar_t, no cancellation
    sigma = eta * (om_p / om_t * diff / acp_p).clamp(0.0, None).sqrt()
    dir_coef = (om_p - sigma * sigma).clamp(0.0, None).sqrt()
    base = acp_p.sqrt() * x0 + dir_coef * eps
    return base.where(sigma == 0, base + sigma * noise)


def ref_eps_loss(pred, noise, t, w):
    """Per-example ``w[t] * mean_j (pred - noise)^2`` -> (B,)."""
    return w[t] * ((pred - noise) ** 2).mean(1)


def _u2(z):
    """``2 K (z + A z^3)``: the logit of the approximate normal CDF at z."""
    return (z + CDF_A * z * z * z) * (2.0 * SQRT_2_OVER_PI)


def ref_discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log P(x) of a Gaussian discretized on 256 bins of [-1, 1] (improved DDPM's decoder).

    ``Phi~(z) = sigmoid(u2(z))`` is the tanh approximation; the bin mass
    ``Phi~(b) - Phi~(a)`` is formed from the upper tails when a > 0 (cancellation-free; same
    value), the edge bins as ``log sigmoid``; every probability is clamped at 1e-12.
    """
    c = x - mean
    inv = (-log_scale).exp()
    a = inv * (c - BIN_HALF_WIDTH)
    b = inv * (c + BIN_HALF_WIDTH)
    ua, ub = _u2(a), _u2(b)
    log_cdf_plus = _logsigmoid(ub)
    log_one_minus_cdf_min = _logsigmoid(-ua)
    upper = (-ua).sigmoid() - (-ub).sigmoid()
    lower = ub.sigmoid() - ua.sigmoid()
    delta = upper.where(a > 0, lower)
    log_mid = delta.clamp(1e-12, None).log()
    lo = log_cdf_plus.clamp(LOG_MIN_PROB, None)
    hi = log_one_minus_cdf_min.clamp(LOG_MIN_PROB, None)
    return lo.where(x < -EDGE, hi.where(x > EDGE, log_mid))


def _logsigmoid(z):
    from .pointwise import logsigmoid
    return logsigmoid(z)


def ref_vb_terms(x0, xt, eps, v, t, tab):
    """Per-element variational-bound term in nats, improved DDPM's ``_vb_terms_bpd`` before the
    mean: ``KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))`` for t > 0, the decoder NLL
    ``-log p(x0 | x_1)`` for t = 0. ``eps`` should arrive detached (the stop-gradient on the
    mean): only the variance (through v) learns from this term.
    """
    x0_pred = _c(tab, SQRT_RECIP_ACP, t) * xt - _c(tab, SQRT_RECIPM1_ACP, t) * eps
    c1, c2 = _c(tab, COEF1, t), _c(tab, COEF2, t)
    mean_p = c1 * x0_pred + c2 * xt
    mean_q = c1 * x0 + c2 * xt
    logvar_q = _c(tab, POST_LOGVAR, t)
    logvar_p = _learned_logvar(v, t, tab)
    d = mean_q - mean_p
    kl = 0.5 * (-1.0 + logvar_p - logvar_q + (logvar_q - logvar_p).exp() + d * d * (-logvar_p).exp())
    nll = -ref_discretized_gaussian_log_likelihood(x0, mean_p, 0.5 * logvar_p)
    return kl.where((t > 0).unsqueeze(1), nll)


def ref_hybrid_loss(out, x0, xt, noise, t, tab, w, vb_weight):
    """Per-example ``w[t] * (mse + vb_weight * vb)`` -> (B,): improved DDPM's hybrid objective.

    ``out`` is (B, 2N): eps in the first N columns (the first C channels), v in the last N.
    ``mse = mean (eps - noise)^2``; ``vb`` = mean over the example of :func:`ref_vb_terms` in
    bits, with the stop-gradient on eps.
    """
    n = xt.shape[1]
    eps, v = out[:, :n], out[:, n:]
    mse = ((eps - noise) ** 2).mean(1)
    vb = ref_vb_terms(x0, xt, eps.detach(), v, t, tab).mean(1) / LN2
    return w[t] * (mse + vb_weight * vb)


# ---- the dispatch implementation "reference": raw arrays in, raw arrays out -------------------

class _Reference:
    """``reference`` implementation of every diffusion op (arrays in and out, see the kernels)."""

    @staticmethod
    def _run(fn, *args):
        wrapped = [Tensor(a) if _is_array(a) else a for a in args]
        with autograd.no_grad():
            return fn(*wrapped).data

    def q_sample(self, x0, noise, t, tab):
        return self._run(ref_q_sample, x0, noise, t, tab)

    def predict_x0(self, xt, eps, t, tab, clip):
        return self._run(ref_predict_x0, xt, eps, t, tab, bool(clip))

    def ddpm_step(self, xt, out, noise, t, tab, var_code, clip):
        return self._run(ref_ddpm_step, xt, out, noise, t, tab, int(var_code), bool(clip))

    def ddim_step(self, xt, eps, noise, t, t_prev, tab, eta, clip):
        return self._run(ref_ddim_step, xt, eps, noise, t, t_prev, tab, float(eta), bool(clip))

    def eps_loss_fwd(self, pred, noise, t, w):
        return self._run(ref_eps_loss, pred, noise, t, w)

    def eps_loss_bwd(self, pred, noise, t, w, g):
        return _vjp(ref_eps_loss, (pred, noise, t, w), 0, g)

    def hybrid_fwd(self, out, x0, xt, noise, t, tab, w, vb_weight):
        return self._run(ref_hybrid_loss, out, x0, xt, noise, t, tab, w, float(vb_weight))

    def hybrid_bwd(self, out, x0, xt, noise, t, tab, w, vb_weight, g):
        return _vjp(ref_hybrid_loss, (out, x0, xt, noise, t, tab, w, float(vb_weight)), 0, g)


def _is_array(a):
    return hasattr(a, "shape") and hasattr(a, "dtype") and not isinstance(a, (int, float))


def _vjp(fn, args, idx, g):
    """Gradient of ``fn(*args)`` w.r.t. argument ``idx`` against cotangent ``g`` (arrays)."""
    wrapped = [Tensor(a) if _is_array(a) else a for a in args]
    wrapped[idx].requires_grad = True
    with autograd.enable_grad():
        y = fn(*wrapped)
        (grad,) = autograd.grad(y, [wrapped[idx]], grad_outputs=[Tensor(g)])
    return grad.data


REFERENCE_IMPL = _Reference()
