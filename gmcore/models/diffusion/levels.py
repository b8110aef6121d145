"""x0 as a distribution over the data's levels (``gmcore train ddpm --predict levels``).

Images on L discrete levels ``v_0 .. v_{L-1}`` of [-1, 1] (digits: 17) are diffused as reals,
but x0 is known to sit on a level. The network outputs, per pixel, L logits ``l_k`` (what the
rest of the image says about the pixel), and the prediction is the mean of the posterior over
the levels that adds the Gaussian likelihood of the pixel's own noisy value::

    log p(x0 = v_k | x_t)  =  l_k - (x_t - a v_k)^2 / (2 s^2)  + const,
    a = sqrt(abar_t),  s = sqrt(1 - abar_t),
    x0_hat = sum_k p(x0 = v_k | x_t) v_k.

This is the exact posterior when the pixels are independent with prior ``softmax(l)``; with
context in ``l`` it is any distribution over the levels, so nothing is lost at high noise
(``l`` decides). At low noise the likelihood term dominates and x0_hat snaps to the level
nearest ``x_t / a`` *exactly*, which a network predicting eps, x0 or v as reals can only
approximate. That matters for the variational bound: its terms are ``0.5 (SNR_{t-1} - SNR_t)
||x0 - x0_hat||^2`` (fixed small variances), so an x0 error e at signal-to-noise ratio 10^4
(the linear schedule's first steps) costs about 10^4 e^2 / 2 nats a pixel; an eps-predicting
net makes errors there it cannot avoid, and the 17-level digits' bound pays for it.
(The same idea as the categorical posteriors of continuous diffusion for categorical data,
Dieleman et al. 2022, "Continuous diffusion for categorical data", and the discrete-data
decoders of Kingma et al. 2021, "Variational Diffusion Models", here on ordinal pixel levels.)

Training: the cross-entropy of the true level under that posterior, in nats per dimension
(a proper scoring rule: its minimum is the true posterior, whose mean is E[x0 | x_t]).

>>> import gmcore as gm
>>> from gmcore.schedules import NoiseSchedule
>>> head = LevelsHead(NoiseSchedule.linear(1000), num_levels=17)
>>> x0 = gm.full((1, 1, 2, 2), 0.25)                       # level 10 of 17 on [-1, 1]
>>> x_t = 0.995 * x0 + 0.01 * gm.randn(1, 1, 2, 2)          # the first step: nearly clean
>>> logits = gm.zeros(1, 17, 2, 2)                          # a network that knows nothing
>>> head.x0(logits, x_t, gm.tensor([0])).flatten().tolist()  # snaps to the level anyway
[0.25, 0.25, 0.25, 0.25]
"""
from __future__ import annotations

from ... import creation as gc
from ...tensor import Tensor
from .gaussian_diffusion import _row

__all__ = ["LevelsHead"]


class LevelsHead:
    """Turns ``C * L`` logits per pixel into the posterior over the L levels and its mean
    (see the module docstring). ``schedule`` is the diffusion's (its timesteps index it)."""

    def __init__(self, schedule, num_levels: int):
        if int(num_levels) < 2:
            raise ValueError(f"LevelsHead: num_levels must be >= 2, got {num_levels}")
        self.schedule = schedule
        self.num_levels = int(num_levels)

    def logit_channels(self, channels: int) -> int:
        """Network output channels for ``channels`` image channels: L logits each."""
        return channels * self.num_levels

    def _values(self, like: Tensor) -> Tensor:
        L = self.num_levels
        return (gc.arange(L, dtype=like.dtype, device=like.device) * (2.0 / (L - 1)) - 1.0).reshape(1, 1, L, 1, 1)

    def log_posterior(self, logits: Tensor, x_t: Tensor, t) -> Tensor:
        """``log p(x0 = v_k | x_t)``: (B, C, L, H, W) from logits (B, C * L, H, W)."""
        B, C, H, W = (int(v) for v in x_t.shape)
        L = self.num_levels
        if tuple(logits.shape) != (B, C * L, H, W):
            raise ValueError(f"LevelsHead: logits must be (B, C * {L}, H, W) = {(B, C * L, H, W)} for x_t "
                             f"{tuple(x_t.shape)}, got {tuple(logits.shape)}")
        a = _row(self.schedule, "sqrt_alphas_cumprod", t, x_t).reshape(B, 1, 1, 1, 1)
        var = _row(self.schedule, "one_minus_alphas_cumprod", t, x_t).reshape(B, 1, 1, 1, 1)
        diff = x_t.reshape(B, C, 1, H, W) - a * self._values(x_t)
        return (logits.reshape(B, C, L, H, W) - diff * diff / (2.0 * var)).log_softmax(2)

    def posterior_mean(self, log_posterior: Tensor) -> Tensor:
        """``sum_k p(v_k | x_t) v_k`` from :meth:`log_posterior`'s (B, C, L, H, W): (B, C, H, W)."""
        return (log_posterior.exp() * self._values(log_posterior)).sum(2)

    def level_nll(self, log_posterior: Tensor, x0: Tensor) -> Tensor:
        """``-log p(x0 | x_t)`` of the levels of ``x0`` under :meth:`log_posterior`'s, averaged
        over the dimensions: (B,) nats."""
        picked = log_posterior.gather(2, self.level_index(x0).unsqueeze(2))         # (B, C, 1, H, W)
        return -picked.reshape(picked.shape[0], -1).mean(1)

    def x0(self, logits: Tensor, x_t: Tensor, t) -> Tensor:
        """The posterior mean ``sum_k p(v_k | x_t) v_k``, shaped as ``x_t``."""
        return self.posterior_mean(self.log_posterior(logits, x_t, t))

    def level_index(self, x0: Tensor) -> Tensor:
        """The level of each value of ``x0`` (on the levels of [-1, 1]) as int64."""
        return ((x0 + 1.0) * (0.5 * (self.num_levels - 1))).round().long()

    def cross_entropy(self, logits: Tensor, x_t: Tensor, t, x0: Tensor) -> Tensor:
        """``-log p(x0 | x_t)`` of the true levels, averaged over the dimensions: (B,) nats."""
        return self.level_nll(self.log_posterior(logits, x_t, t), x0)
