"""The Gaussian diffusion process apart from the network: training losses, the variational bound
and the samplers' shared math (the samplers themselves are in :mod:`.samplers`).

The network is seen only as a *model function* ``model_fn(x_t, t) -> output``: ``x_t`` is
``(B, C, ...)`` and ``t`` an int64 tensor ``(B,)`` of timesteps in ``[0, T)`` (labels and guidance
are closed over by the caller). The output has ``C`` channels, or ``2C`` with ``learn_sigma``:
channels ``[:C]`` the prediction (eps, x0 or v), channels ``[C:]`` the variance interpolation
``v_sigma`` in [-1, 1] (improved DDPM's learned range, the kernels' convention)::

    log sigma_t^2 = (v_sigma + 1) / 2 * log beta_t + (1 - v_sigma) / 2 * log beta~_t

with ``beta~_t`` the posterior variance (clipped at t = 0). Data ``x0`` lie in [-1, 1].

Forward process (Ho et al. 2020, "Denoising Diffusion Probabilistic Models")::

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,              eps ~ N(0, I)
    q(x_{t-1} | x_t, x0) = N(coef1_t x0 + coef2_t x_t, beta~_t)

Prediction targets, all interchangeable given ``x_t`` (``a = sqrt(abar_t)``, ``s = sqrt(1 -
abar_t)``, so ``a^2 + s^2 = 1``)::

    eps = (x_t - a x0) / s        x0 = (x_t - s eps) / a
    v   = a eps - s x0            (Salimans & Ho 2022, "Progressive Distillation", sec. 4)
    x0  = a x_t - s v             eps = s x_t + a v

Training (:meth:`GaussianDiffusion.training_losses`): Ho et al.'s L_simple, the per-example mean
squared error on the predicted target; with ``learn_sigma`` improved DDPM's hybrid objective
(Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", sec. 3.1)
``L_simple + lambda L_vlb`` with a stop-gradient on the mean in L_vlb (the variance alone learns
from it), ``lambda = 0.001``. L_vlb = T E_t[L_t] is estimated per example as ``T * L_t`` in bits
per dimension, so the per-example weight of the vb term is ``lambda * T`` (improved DDPM's
``RESCALED_MSE``).

Variational bound (:meth:`GaussianDiffusion.nll_bound`, Ho et al. eq. 5)::

    -log p(x0) <= L_T + sum_{t=1}^{T-1} L_t + L_0
    L_T = KL(q(x_{T-1} | x0) || N(0, I))                        (the prior term)
    L_t = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)),  t >= 1  (x_t ~ q(x_t | x0), one draw)
    L_0 = -log p(x0 | x_t at t = 0)                             (discretized Gaussian decoder)

(our indices are 0-based: the step ``t`` of the code is the step ``t + 1`` of the paper).

The fused kernels of :mod:`gmcore.functional.diffusion` do q_sample, the eps and hybrid losses and
the sampler steps; x0 and v predictions are converted with the tensor math above.

>>> import gmcore as gm
>>> from gmcore.schedules import NoiseSchedule
>>> d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-3, 0.05))
>>> model_fn = lambda x_t, t: 0.1 * x_t          # any function of (x_t, t)
>>> x0 = gm.rand(4, 1, 8, 8, generator=gm.Generator().manual_seed(0)) * 2 - 1
>>> t = gm.tensor([0, 10, 50, 99])
>>> loss, logs = d.training_losses(model_fn, x0, t, generator=gm.Generator().manual_seed(1))
>>> loss.shape, sorted(logs)
(gmcore.Size([4]), ['mse'])
"""
from __future__ import annotations

import math
import weakref

import numpy as np

from ... import autograd
from ... import creation as gc
from ... import functional as gf
from ..._dtype import int64
from ...schedules import NoiseSchedule
from ...tensor import Tensor

__all__ = ["GaussianDiffusion", "UniformSampler", "LossSecondMomentResampler",
           "normal_kl", "discretized_gaussian_log_likelihood", "stratified_timesteps"]

PREDICTIONS = ("eps", "x0", "v")
FIXED_VARS = ("fixed_small", "fixed_large")
LN2 = math.log(2.0)


# ---- small helpers ---------------------------------------------------------------------------

def _check_t(t, batch, T, fn, like):
    """Timesteps -> int64 Tensor (B,) on ``like``'s device (an int is broadcast), range-checked."""
    if isinstance(t, Tensor):
        if t.dtype.np.kind not in "iu":
            raise TypeError(f"{fn}: t must hold integer timesteps (int64), got {t.dtype}")
        if t.ndim == 0:
            t = t.reshape(1).expand(batch)
    else:
        arr = np.asarray(t)
        if isinstance(t, (bool, float)) or arr.dtype.kind not in "iu":
            raise TypeError(f"{fn}: t must be an int or an int64 tensor, got {t!r}")
        t = gc.tensor(np.broadcast_to(arr, (batch,)) if arr.ndim == 0 else arr,
                      dtype=int64, device=like.device)
    if tuple(t.shape) != (batch,):
        raise ValueError(f"{fn}: t must have shape ({batch},) (one timestep per example), got "
                         f"{tuple(t.shape)}")
    lo, hi = int(t.min().item()), int(t.max().item())
    if lo < 0 or hi >= T:
        raise ValueError(f"{fn}: t must lie in [0, {T - 1}], got values in [{lo}, {hi}]")
    return t.to(int64)


# per schedule: its coefficient rows as tensors, keyed by (row, dtype, device); computed in
# float64 by the schedule and cast once (as the kernels' packed table is)
_ROWS = weakref.WeakKeyDictionary()


def _row(schedule, name, t, like):
    """``schedule.<name>[t]`` per example, shaped (B, 1, ..., 1) to broadcast over ``like``,
    in ``like``'s dtype and on its device."""
    rows = _ROWS.setdefault(schedule, {})
    key = (name, like.dtype.name, str(like.device))
    row = rows.get(key)
    if row is None:
        row = rows[key] = gc.tensor(getattr(schedule, name), dtype=like.dtype, device=like.device)
    if not isinstance(t, Tensor):
        t = gc.tensor(np.asarray(t, dtype=np.int64), device=like.device)
    return row[t].reshape((like.shape[0],) + (1,) * (like.ndim - 1))


def normal_kl(mean1, logvar1, mean2, logvar2):
    """Elementwise ``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` in nats::

        0.5 * (logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2) - 1)

    >>> import gmcore as gm
    >>> z = gm.zeros(1)
    >>> normal_kl(z, z, z, z).item()
    0.0
    """
    d = mean1 - mean2
    return 0.5 * (logvar2 - logvar1 + (logvar1 - logvar2).exp() + d * d * (-logvar2).exp() - 1.0)


def _log_ndtr_upper(z):
    """``log(1 - Phi(z))`` via erfc, accurate in the upper tail."""
    return (0.5 * (z * (1.0 / math.sqrt(2.0))).erfc()).clamp(1e-12, None).log()


def discretized_gaussian_log_likelihood(x, mean, log_scale, num_levels):
    """Elementwise ``log P(x)`` of ``N(mean, exp(log_scale)^2)`` discretized on ``num_levels``
    evenly spaced levels of [-1, 1] (Ho et al. 2020, sec. 3.3): bins of width
    ``2 / (num_levels - 1)`` centred on the levels, the edge bins open to -inf and +inf. Uses the
    exact normal CDF (erfc, each bin's mass taken from the tail on its own side, so nothing
    cancels); probabilities are floored at 1e-12 as Ho et al.

    >>> import gmcore as gm
    >>> x = gm.tensor([-1.0, 0.0, 1.0])
    >>> lp = discretized_gaussian_log_likelihood(x, gm.zeros(3), gm.full((3,), -5.0), 17)
    >>> [round(v, 4) for v in lp.exp().tolist()]  # a narrow Gaussian at 0: all mass on level 0
    [0.0, 1.0, 0.0]
    """
    if not isinstance(num_levels, (int, np.integer)) or num_levels < 2:
        raise ValueError(f"discretized_gaussian_log_likelihood: num_levels must be an int >= 2, "
                         f"got {num_levels!r}")
    half = 1.0 / (num_levels - 1)
    inv = (-log_scale).exp()
    c = x - mean
    a = inv * (c - half)           # lower bin edge, standardised
    b = inv * (c + half)           # upper bin edge
    r = 1.0 / math.sqrt(2.0)
    # mass Phi(b) - Phi(a): from the upper tails when a > 0, from the lower tails otherwise
    upper = 0.5 * ((a * r).erfc() - (b * r).erfc())
    lower = 0.5 * ((-b * r).erfc() - (-a * r).erfc())
    mid = upper.where(a > 0, lower).clamp(1e-12, None).log()
    log_cdf_b = _log_ndtr_upper(-b)          # log Phi(b): the bottom bin, open to -inf
    log_sf_a = _log_ndtr_upper(a)            # log (1 - Phi(a)): the top bin, open to +inf
    edge = 1.0 - half                        # levels beyond it are the edge levels -1 and 1
    return log_cdf_b.where(x < -edge, log_sf_a.where(x > edge, mid))


def _sum_dims(x):
    """Sum over every dim but the batch dim -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(1)


# ---- the process ---------------------------------------------------------------------------

class GaussianDiffusion:
    """The diffusion process of a DDPM over a :class:`~gmcore.schedules.NoiseSchedule`.

    ``predict``: what the network outputs, ``"eps"`` (Ho et al.), ``"x0"`` or ``"v"`` (Salimans
    & Ho 2022). ``learn_sigma``: the network also outputs the variance interpolation (2C
    channels; improved DDPM); otherwise the reverse variance is fixed, ``fixed_var`` =
    ``"fixed_small"`` (the posterior variance beta~_t) or ``"fixed_large"`` (beta_t, with the
    t = 0 entry replaced by beta~_1 as improved DDPM). ``vb_weight`` is the hybrid loss's
    lambda (0.001 in improved DDPM); the per-example vb term (bits/dim) is weighted
    ``vb_weight * T``, as L_vlb = T E_t[L_t].

    With ``learn_sigma`` and ``predict="eps"`` the loss is the fused ``hybrid_loss`` kernel (its
    decoder term at t = 0 is over 256 levels, improved DDPM's tanh CDF approximation). With x0 or
    v predictions the same hybrid objective is written with tensor math here (the decoder
    term over 256 levels with the exact CDF); it is as supported as the eps case.

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> d = GaussianDiffusion(NoiseSchedule.cosine(50), predict="v", learn_sigma=True)
    >>> d.out_channels(1), d.num_timesteps
    (2, 50)
    """

    def __init__(self, schedule, predict="eps", learn_sigma=False, fixed_var="fixed_small",
                 vb_weight=0.001):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"GaussianDiffusion: schedule must be a NoiseSchedule, got "
                            f"{type(schedule).__name__}")
        if predict not in PREDICTIONS:
            raise ValueError(f"GaussianDiffusion: predict must be one of {PREDICTIONS}, got "
                             f"{predict!r}")
        if fixed_var not in FIXED_VARS:
            raise ValueError(f"GaussianDiffusion: fixed_var must be one of {FIXED_VARS}, got "
                             f"{fixed_var!r}")
        if not (isinstance(vb_weight, (int, float)) and vb_weight >= 0):
            raise ValueError(f"GaussianDiffusion: vb_weight must be a number >= 0, got "
                             f"{vb_weight!r}")
        self.schedule = schedule
        self.predict = predict
        self.learn_sigma = bool(learn_sigma)
        self.fixed_var = fixed_var
        self.vb_weight = float(vb_weight)

    def __repr__(self):
        return (f"GaussianDiffusion({self.schedule!r}, predict={self.predict!r}, "
                f"learn_sigma={self.learn_sigma}, fixed_var={self.fixed_var!r})")

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    @property
    def var_type(self) -> str:
        """The reverse-variance kind, as the ``ddpm_step`` kernel names it."""
        return "learned_range" if self.learn_sigma else self.fixed_var

    def out_channels(self, in_channels: int) -> int:
        """Channels the network must output for data with ``in_channels`` channels."""
        return 2 * in_channels if self.learn_sigma else in_channels

    # ---- the forward process and the conversions ---------------------------------------------

    def q_sample(self, x0, t, noise):
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (fused kernel)."""
        return gf.q_sample(x0, t, noise, self.schedule)

    def eps_from_x0(self, x_t, t, x0, schedule=None):
        """``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``."""
        s = schedule or self.schedule
        return (x_t - _row(s, "sqrt_alphas_cumprod", t, x_t) * x0) / \
            _row(s, "sqrt_one_minus_alphas_cumprod", t, x_t)

    def x0_from_eps(self, x_t, t, eps, schedule=None):
        """``x0 = x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps``."""
        s = schedule or self.schedule
        return _row(s, "sqrt_recip_alphas_cumprod", t, x_t) * x_t - \
            _row(s, "sqrt_recipm1_alphas_cumprod", t, x_t) * eps

    def v_from(self, x0, eps, t, schedule=None):
        """The v target ``sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (Salimans & Ho 2022)."""
        s = schedule or self.schedule
        return _row(s, "sqrt_alphas_cumprod", t, x0) * eps - \
            _row(s, "sqrt_one_minus_alphas_cumprod", t, x0) * x0

    def eps_from_v(self, x_t, t, v, schedule=None):
        """``eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v``."""
        s = schedule or self.schedule
        return _row(s, "sqrt_one_minus_alphas_cumprod", t, x_t) * x_t + \
            _row(s, "sqrt_alphas_cumprod", t, x_t) * v

    def x0_from_v(self, x_t, t, v, schedule=None):
        """``x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v``."""
        s = schedule or self.schedule
        return _row(s, "sqrt_alphas_cumprod", t, x_t) * x_t - \
            _row(s, "sqrt_one_minus_alphas_cumprod", t, x_t) * v

    def split_output(self, out, x_t, fn="model_fn"):
        """Check the network output's shape; return (prediction, v_sigma or None)."""
        if not isinstance(out, Tensor):
            raise TypeError(f"{fn} must return a gmcore Tensor, got {type(out).__name__}")
        c = x_t.shape[1]
        want = (x_t.shape[0], self.out_channels(c)) + tuple(x_t.shape[2:])
        if tuple(out.shape) != want:
            extra = " (prediction and variance channels: learn_sigma=True)" \
                if self.learn_sigma else ""
            raise ValueError(f"{fn} returned shape {tuple(out.shape)}; expected {want}{extra}")
        if self.learn_sigma:
            return out[:, :c], out[:, c:]
        return out, None

    def eps_and_x0(self, pred, x_t, t, schedule=None):
        """(eps, x0) from the network's prediction of ``self.predict`` (unclipped)."""
        if self.predict == "eps":
            return pred, self.x0_from_eps(x_t, t, pred, schedule)
        if self.predict == "x0":
            return self.eps_from_x0(x_t, t, pred, schedule), pred
        return self.eps_from_v(x_t, t, pred, schedule), self.x0_from_v(x_t, t, pred, schedule)

    def model_eps(self, model_fn, x_t, t, schedule=None, t_model=None):
        """Run the network at ``x_t``; return (eps, v_sigma or None). ``t`` indexes ``schedule``
        (default: the process's); ``t_model`` (default ``t``) is what the network is given
        (respaced samplers pass the original timesteps)."""
        out = model_fn(x_t, t if t_model is None else t_model)
        pred, v = self.split_output(out, x_t)
        if self.predict == "eps":
            return pred, v
        eps, _ = self.eps_and_x0(pred, x_t, t, schedule)
        return eps, v

    def sample(self, model_fn, shape=None, sampler="ddim", steps=None, eta=0.0,
               spacing="trailing", **kwargs):
        """Draw samples with :func:`.samplers.sample` (``sampler`` "ddpm", "ddim" or "pndm";
        the other keywords are the samplers')."""
        from .samplers import sample
        return sample(self, model_fn, shape, sampler=sampler, steps=steps, eta=eta,
                      spacing=spacing, **kwargs)

    # ---- training ------------------------------------------------------------------------

    def training_losses(self, model_fn, x0, t, noise=None, generator=None):
        """Per-example training loss ``(B,)`` and a dict of per-example logs.

        ``x0`` data in [-1, 1], ``(B, C, ...)``; ``t`` int64 ``(B,)`` (e.g. from
        :class:`UniformSampler`); ``noise`` defaults to a draw from ``generator``.

        * L_simple: ``mean over the example of (prediction - target)^2``, the target being
          ``noise`` (eps), ``x0`` or ``v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0``.
        * ``learn_sigma``: ``L_simple + lambda T vb`` with ``vb`` = L_t of the bound in bits per
          dim (KL for t > 0, the 256-level decoder NLL at t = 0), the model's mean detached.

        Logs: ``"mse"`` (L_simple) and, with ``learn_sigma``, ``"vb"`` (bits/dim), detached.
        Multiply the loss by an importance sampler's weights before averaging.

        >>> import gmcore as gm
        >>> from gmcore.schedules import NoiseSchedule
        >>> d = GaussianDiffusion(NoiseSchedule.linear(20, 1e-3, 0.1), learn_sigma=True)
        >>> x0 = gm.zeros(2, 1, 2, 2)
        >>> fn = lambda x, t: gm.zeros(2, 2, 2, 2)
        >>> loss, logs = d.training_losses(fn, x0, gm.tensor([0, 7]), noise=gm.zeros(2, 1, 2, 2))
        >>> sorted(logs), loss.shape
        (['mse', 'vb'], gmcore.Size([2]))
        """
        fn = "training_losses"
        if not isinstance(x0, Tensor) or x0.ndim < 2:
            raise ValueError(f"{fn}: x0 must be a (B, C, ...) tensor")
        T = self.num_timesteps
        t = _check_t(t, x0.shape[0], T, fn, x0)
        if noise is None:
            noise = gc.randn(*x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
        x_t = self.q_sample(x0, t, noise)
        out = model_fn(x_t, t)
        pred, v_sigma = self.split_output(out, x_t)
        logs = {}
        if self.predict == "eps" and self.learn_sigma:
            weight = self.vb_weight * T  # the kernel's per-example weight of vb (bits/dim)
            loss = gf.hybrid_loss(out, x0, x_t, noise, t, self.schedule, vb_weight=weight,
                                  reduction="none")
            with autograd.no_grad():
                mse = _sum_dims((pred - noise) ** 2) / pred[0].numel()
                logs["mse"] = mse
                if weight > 0:
                    logs["vb"] = (loss.detach() - mse) / weight
            return loss, logs
        if self.predict == "eps":
            target = noise
        elif self.predict == "x0":
            target = x0
        else:
            target = self.v_from(x0, noise, t)
        # the fused per-example mean squared error (weights None: t is not read)
        mse = gf.eps_mse_loss(pred, target.detach(), t, reduction="none")
        logs["mse"] = mse.detach()
        if not self.learn_sigma:
            return mse, logs
        _, x0_pred = self.eps_and_x0(pred.detach(), x_t, t)  # stop-gradient on the mean
        vb = self._vb_nats(x0, x_t, t, x0_pred, v_sigma, num_levels=256) / (pred[0].numel() * LN2)
        logs["vb"] = vb.detach()
        return mse + (self.vb_weight * T) * vb, logs

    # ---- the reverse process p(x_{t-1} | x_t) and the bound ----------------------------------

    def p_logvar(self, t, like, v_sigma=None, schedule=None):
        """``log sigma_t^2`` of p(x_{t-1} | x_t): the fixed variance, or the learned range."""
        s = schedule or self.schedule
        if v_sigma is None:
            if self.learn_sigma:
                raise ValueError("p_logvar: learn_sigma needs the network's variance channels")
            name = ("posterior_log_variance_clipped" if self.fixed_var == "fixed_small"
                    else "fixed_large_log_variance")
            return _row(s, name, t, like).expand(*like.shape)
        frac = (v_sigma + 1.0) * 0.5
        return frac * _row(s, "log_betas", t, like) + \
            (1.0 - frac) * _row(s, "posterior_log_variance_clipped", t, like)

    def q_posterior(self, x0, x_t, t, schedule=None):
        """Mean and log variance of ``q(x_{t-1} | x_t, x0)`` (log variance clipped at t = 0)."""
        s = schedule or self.schedule
        mean = _row(s, "posterior_mean_coef1", t, x_t) * x0 + \
            _row(s, "posterior_mean_coef2", t, x_t) * x_t
        return mean, _row(s, "posterior_log_variance_clipped", t, x_t).expand(*x_t.shape)

    def p_mean_variance(self, model_fn, x_t, t, clip_x0=True):
        """``p(x_{t-1} | x_t)``: dict with ``mean``, ``logvar``, ``x0`` (the prediction, clipped
        to [-1, 1] with ``clip_x0``) and ``eps``; the mean is the posterior mean at that x0."""
        t = _check_t(t, x_t.shape[0], self.num_timesteps, "p_mean_variance", x_t)
        out = model_fn(x_t, t)
        pred, v_sigma = self.split_output(out, x_t)
        eps, x0 = self.eps_and_x0(pred, x_t, t)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _ = self.q_posterior(x0, x_t, t)
        return {"mean": mean, "logvar": self.p_logvar(t, x_t, v_sigma), "x0": x0, "eps": eps}

    def _vb_nats(self, x0, x_t, t, x0_pred, v_sigma, num_levels):
        """L_t per example in nats: KL(q || p) where t > 0, the decoder NLL where t = 0."""
        mean_p, _ = self.q_posterior(x0_pred, x_t, t)
        return self._vb_from_p(x0, x_t, t, mean_p, self.p_logvar(t, x_t, v_sigma), num_levels)

    def _vb_from_p(self, x0, x_t, t, mean_p, logvar_p, num_levels):
        # each term is computed only when some example needs it: the decoder (~40 ops, erfc)
        # is needed only by the examples at t = 0, rare in a training batch
        has_first, has_later = bool((t == 0).any()), bool((t > 0).any())
        if has_later:
            mean_q, logvar_q = self.q_posterior(x0, x_t, t)
            kl = normal_kl(mean_q, logvar_q, mean_p, logvar_p)
            if not has_first:
                return _sum_dims(kl)
        nll = -discretized_gaussian_log_likelihood(x0, mean_p, 0.5 * logvar_p, num_levels)
        if not has_later:
            return _sum_dims(nll)
        later = (t > 0).reshape((x0.shape[0],) + (1,) * (x0.ndim - 1)).expand(*kl.shape)
        return _sum_dims(kl.where(later, nll))

    def vlb_terms(self, model_fn, x0, t, num_levels=256, noise=None, generator=None,
                  clip_x0=True):
        """L_t of the bound per example in nats ``(B,)`` (summed over the dims), at one
        ``x_t ~ q(x_t | x0)``: ``KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))`` where t > 0,
        the discretized Gaussian decoder ``-log p(x0 | x_t)`` over ``num_levels`` levels where
        t = 0. ``x0`` must lie on those levels of [-1, 1].

        >>> import gmcore as gm
        >>> from gmcore.schedules import NoiseSchedule
        >>> d = GaussianDiffusion(NoiseSchedule.linear(10, 1e-3, 0.2))
        >>> x0 = gm.zeros(2, 1, 2, 2)
        >>> oracle = lambda x, t: d.eps_from_x0(x, t, gm.zeros(2, 1, 2, 2))
        >>> [round(v, 6) for v in d.vlb_terms(oracle, x0, gm.tensor([3, 9])).tolist()]
        [0.0, 0.0]
        """
        fn = "vlb_terms"
        t = _check_t(t, x0.shape[0], self.num_timesteps, fn, x0)
        if noise is None:
            noise = gc.randn(*x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
        with autograd.no_grad():
            x_t = self.q_sample(x0, t, noise)
            p = self.p_mean_variance(model_fn, x_t, t, clip_x0=clip_x0)
            return self._vb_from_p(x0, x_t, t, p["mean"], p["logvar"], num_levels)

    def prior_kl(self, x0):
        """``L_T = KL(q(x_{T-1} | x0) || N(0, I))`` per example in nats ``(B,)``::

            0.5 * sum (abar x0^2 + (1 - abar) - log(1 - abar) - 1),   abar = abar_{T-1}
        """
        T = self.num_timesteps
        abar = float(self.schedule.alphas_cumprod[T - 1])
        om = float(self.schedule.one_minus_alphas_cumprod[T - 1])
        return _sum_dims(0.5 * (abar * x0 * x0 + (om - math.log(om) - 1.0)))

    def nll_bound(self, model_fn, x0, num_levels, timesteps=None, generator=None, clip_x0=True,
                  return_terms=False):
        """The variational bound on ``-log p(x0)`` in nats per example ``(B,)``.

        ``L_T + sum_{t=1}^{T-1} L_t + L_0`` (see the module notes), with the decoder L_0 over
        ``num_levels`` levels of [-1, 1] (digits 17, 8-bit images 256). One network pass per
        timestep: ``timesteps`` subsamples the KL terms (an *estimate* of the bound, not a
        bound; L_0 and L_T are always exact):

        * an int k: stratified sampling, unbiased: ``1 .. T-1`` cut into blocks of k consecutive
          timesteps, one timestep drawn uniformly in each block (``generator``), its term
          weighted by the block's length. (A fixed stride would be biased: the terms at small t,
          where most of the bound lies, vary fastest.)
        * a sequence of timesteps: ``sum_{t>=1} L_t`` estimated as ``(T - 1) / n`` times the sum
          of the n kept terms.

        Bits/dim: ``nats / (D ln 2)``. ``return_terms``: a dict ``total`` (B,), ``prior`` (B,),
        ``decoder`` (B,), ``kl`` (B, n), ``timesteps`` (the n kept KL timesteps) and
        ``weights`` (n,) (what each kept term stands for) instead.

        >>> import gmcore as gm
        >>> from gmcore.schedules import NoiseSchedule
        >>> d = GaussianDiffusion(NoiseSchedule.linear(20, 1e-3, 0.3))
        >>> x0 = gm.full((1, 1, 2, 2), 0.5)
        >>> oracle = lambda x, t: d.eps_from_x0(x, t, gm.full((1, 1, 2, 2), 0.5))
        >>> r = d.nll_bound(oracle, x0, num_levels=5, return_terms=True)
        >>> round(r["kl"].abs().max().item(), 6), round(r["decoder"].item(), 6)  # a point mass
        (0.0, 0.0)
        >>> bool(r["total"] == r["prior"])  # only the prior term is left
        True
        """
        fn = "nll_bound"
        T = self.num_timesteps
        if timesteps is None:
            kept = np.arange(1, T)
            weights = np.ones(kept.size)
        elif isinstance(timesteps, (int, np.integer)) and not isinstance(timesteps, bool):
            if timesteps < 1:
                raise ValueError(f"{fn}: timesteps as an int is a block length k >= 1, got {timesteps}")
            kept, weights = stratified_timesteps(1, T, int(timesteps), generator, x0.device)
        else:
            kept = np.unique(np.asarray(timesteps, dtype=np.int64))
            if kept.size and (kept.min() < 0 or kept.max() >= T):
                raise ValueError(f"{fn}: timesteps must lie in [0, {T - 1}]")
            kept = kept[kept > 0]
            weights = np.full(kept.size, (T - 1) / max(kept.size, 1))
        if kept.size == 0 and T > 1:
            raise ValueError(f"{fn}: the subsample keeps no KL term (t >= 1)")
        b = x0.shape[0]
        with autograd.no_grad():
            prior = self.prior_kl(x0)
            decoder = self.vlb_terms(model_fn, x0, 0, num_levels, generator=generator,
                                     clip_x0=clip_x0)
            kls = [self.vlb_terms(model_fn, x0, int(t), num_levels, generator=generator,
                                  clip_x0=clip_x0) for t in kept]
            kl = gf.stack(kls, 1) if kls else gc.zeros(b, 0, dtype=x0.dtype, device=x0.device)
            w = gc.tensor(weights, dtype=kl.dtype, device=x0.device)
            total = prior + decoder + (kl * w).sum(1)
        if return_terms:
            return {"total": total, "prior": prior, "decoder": decoder, "kl": kl,
                    "timesteps": kept, "weights": weights}
        return total


def stratified_timesteps(start: int, stop: int, block: int, generator=None, device="cpu"):
    """(timesteps, weights): ``[start, stop)`` cut into blocks of ``block`` consecutive timesteps
    (the last one shorter), one timestep drawn uniformly in each (``generator``), weighted by its
    block's length, so that a weighted sum of per-timestep terms estimates their full sum
    without bias.

    >>> import gmcore as gm
    >>> t, w = stratified_timesteps(1, 10, 4, gm.Generator().manual_seed(0))
    >>> [int(a) // 4 for a in t - 1], w.tolist()          # one in [1, 5), [5, 9), [9, 10)
    ([0, 1, 2], [4.0, 4.0, 1.0])
    """
    starts = np.arange(start, stop, block)
    sizes = np.minimum(starts + block, stop) - starts
    u = gc.rand(starts.size, dtype=np.float64, generator=generator, device=device).cpu().numpy()
    return starts + np.minimum((u * sizes).astype(np.int64), sizes - 1), sizes.astype(np.float64)


# ---- timestep samplers -------------------------------------------------------------------------

class UniformSampler:
    """Timesteps uniform on ``[0, T)``, importance weights all 1.

    >>> import gmcore as gm
    >>> t, w = UniformSampler(10).sample(4, generator=gm.Generator().manual_seed(0))
    >>> t.dtype, w.tolist()
    (gmcore.int64, [1.0, 1.0, 1.0, 1.0])
    """

    def __init__(self, num_timesteps: int):
        self.num_timesteps = int(num_timesteps)

    def weights(self):
        return np.ones(self.num_timesteps, dtype=np.float64)

    def sample(self, batch_size, generator=None, device="cpu"):
        """``(t, weights)``: ``t`` int64 ``(B,)`` drawn with probability ``p_t``, weights
        ``1 / (T p_t)`` (float32), so ``E[w L_t] = mean_t L_t``."""
        w = self.weights()
        p = w / w.sum()
        gen_device = generator.device if generator is not None else "cpu"
        u = gc.rand(batch_size, dtype=np.float64, device=gen_device,
                    generator=generator).cpu().numpy()
        # inverse CDF on the host: the same draws on every device, and no cupy choice()
        t = np.minimum(np.searchsorted(np.cumsum(p), u, side="right"), self.num_timesteps - 1)
        weights = 1.0 / (self.num_timesteps * p[t])
        return (gc.tensor(t.astype(np.int64), device=device),
                gc.tensor(weights.astype(np.float32), device=device))

    def update(self, t, losses):
        """Record per-example losses (no-op for the uniform sampler)."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class LossSecondMomentResampler(UniformSampler):
    """Improved DDPM's importance sampler for the VLB (Nichol & Dhariwal 2021, sec. 3.3):
    ``p_t ~ sqrt(E[L_t^2])`` over the last ``history`` losses of each t, mixed with a uniform
    ``uniform_prob`` (0.001); uniform until every t has ``history`` (10) losses.

    Its state (the loss history and the counts) is two arrays: ``state_dict`` /
    ``load_state_dict`` restore it exactly, so a resumed run draws the same timesteps.

    >>> import gmcore as gm
    >>> s = LossSecondMomentResampler(4, history=2)
    >>> s.update(gm.tensor([0, 1, 2, 3, 0, 1, 2, 3]), gm.tensor([1., 1, 1, 4, 1, 1, 1, 4]))
    >>> [round(v, 3) for v in (s.weights() / s.weights().sum()).tolist()]
    [0.143, 0.143, 0.143, 0.571]
    """

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        if history < 1 or not 0 <= uniform_prob <= 1:
            raise ValueError("LossSecondMomentResampler: need history >= 1 and "
                             "0 <= uniform_prob <= 1")
        self.history = int(history)
        self.uniform_prob = float(uniform_prob)
        self._losses = np.zeros((self.num_timesteps, self.history), dtype=np.float64)
        self._counts = np.zeros(self.num_timesteps, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool((self._counts == self.history).all())

    def weights(self):
        if not self.warmed_up():
            return np.ones(self.num_timesteps, dtype=np.float64)
        w = np.sqrt(np.mean(self._losses ** 2, axis=-1))
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update(self, t, losses):
        """Add per-example ``losses`` (B,) at timesteps ``t`` (B,) to the history (oldest
        dropped once full)."""
        ts = np.asarray(t.detach().cpu().numpy() if isinstance(t, Tensor) else t).reshape(-1)
        ls = np.asarray(losses.detach().cpu().numpy() if isinstance(losses, Tensor) else losses,
                        dtype=np.float64).reshape(-1)
        if ts.size and (ts.min() < 0 or ts.max() >= self.num_timesteps):
            raise ValueError(f"update: t must lie in [0, {self.num_timesteps - 1}]")
        if ts.shape != ls.shape:
            raise ValueError(f"update: t and losses must have the same length, got "
                             f"{ts.shape[0]} and {ls.shape[0]}")
        for tt, loss in zip(ts.tolist(), ls.tolist()):
            if self._counts[tt] == self.history:
                self._losses[tt, :-1] = self._losses[tt, 1:]
                self._losses[tt, -1] = loss
            else:
                self._losses[tt, self._counts[tt]] = loss
                self._counts[tt] += 1

    def state_dict(self):
        return {"losses": self._losses.copy(), "counts": self._counts.copy()}

    def load_state_dict(self, state):
        losses = np.asarray(state["losses"], dtype=np.float64)
        counts = np.asarray(state["counts"], dtype=np.int64)
        if losses.shape != self._losses.shape or counts.shape != self._counts.shape:
            raise ValueError(f"load_state_dict: expected losses {self._losses.shape} and counts "
                             f"{self._counts.shape}, got {losses.shape} and {counts.shape}")
        self._losses = losses.copy()
        self._counts = counts.copy()
