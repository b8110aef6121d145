"""Variational dequantization (Ho et al. 2019, "Flow++", Sec. 3.1): a learned noise distribution
``q(u | x)`` on ``[0, 1)^D`` in place of uniform noise, so that a flow trained on ``x + u`` gets
a tighter bound on the discrete data's likelihood:

    log P(x) >= E_{u ~ q(u|x)} [ log p(x + u) - log q(u | x) ]

(uniform noise is the case ``log q = 0``). ``q`` is itself a flow, conditioned on ``x``: a draw
``eps`` from a standard logistic, a stack of affine couplings ``h = g(eps; x)`` whose networks
read features of ``x``, and ``u = sigmoid(h)``, so

    log q(u | x) = log p_logistic(eps) - log|det dg/deps| - sum log sigmoid'(h).

What differs from Flow++: affine couplings (checkerboard masks, scale ``exp(tanh(r))``) rather
than mixture-of-logistics CDF couplings, and a logistic base rather than a Gaussian. The logistic
base makes the start exact uniform dequantization: the couplings start as the identity (their
last layers are zero), ``u = sigmoid(eps)`` is uniform and ``log q = 0`` for every draw, so
training starts from the uniform bound, not from a worse one.

>>> import gmcore as gm
>>> deq = VariationalDequantizer((1, 4, 4), hidden=8, couplings=2)
>>> x = (gm.rand(3, 1, 4, 4) * 16).round() / 16            # images in [0, 1]
>>> u, log_q = deq(x, generator=gm.Generator().manual_seed(0))
>>> u.shape, log_q.shape, bool(((u > 0) & (u < 1)).all())
(gmcore.Size([3, 1, 4, 4]), gmcore.Size([3]), True)
>>> bool(log_q.abs().max() < 1e-4)                           # at the start: uniform noise
True
>>> bool((deq.log_prob(u, x) - log_q).abs().max() < 1e-4)     # the density of a given u
True
"""
from __future__ import annotations

from ... import creation
from ...functional import shape as _shape
from .. import functional as F
from ..activation import ReLU
from ..container import Sequential
from ..conv import Conv2d
from ..module import Module
from .base import FlowSequential
from .coupling import AffineCoupling, conv_conditioner

__all__ = ["VariationalDequantizer"]

# draws of the logistic base come from uniforms kept this far from 0 and 1 (float32-safe)
_EDGE = 1e-6


class _ContextConditioner(Module):
    """A coupling network that reads the conditioning half and the features of ``x``:
    Glow's conv 3x3 -> 1x1 -> 3x3 on their concatenation (the last conv zero-initialised)."""

    def __init__(self, channels, context_channels, hidden):
        super().__init__()
        self.net = conv_conditioner(channels + context_channels, 2 * channels, hidden)

    def forward(self, x_a, context):
        return self.net(_shape.cat([x_a, context], 1))


class VariationalDequantizer(Module):
    """``q(u | x)`` for images ``x`` of ``shape`` (C, H, W) in [0, 1] (see the module
    docstring). ``forward(x, generator)`` draws ``u`` in (0, 1) of ``x``'s shape and returns it
    with ``log q(u | x)`` per example, shape (B,); ``log_prob(u, x)`` scores given noise.

    ``hidden``: channels of the feature and coupling networks; ``couplings``: affine couplings,
    the checkerboard alternating.
    """

    def __init__(self, shape, hidden: int = 32, couplings: int = 4):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3:
            raise ValueError(f"VariationalDequantizer: shape must be (C, H, W), got {self.shape}")
        if hidden < 1 or couplings < 1:
            raise ValueError(f"VariationalDequantizer: hidden and couplings must be >= 1, got "
                             f"{hidden} and {couplings}")
        c = self.shape[0]
        self.features = Sequential(Conv2d(c, hidden, 3, padding=1), ReLU(),
                                   Conv2d(hidden, hidden, 3, padding=1), ReLU())
        self.flow = FlowSequential(*[
            AffineCoupling(_ContextConditioner(c, hidden, hidden), "checkerboard", i % 2, "tanh")
            for i in range(int(couplings))])

    def _check(self, x):
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"VariationalDequantizer{self.shape}: got images of shape "
                             f"{tuple(x.shape)}")

    @staticmethod
    def _log_q(eps, h, logdet):
        """log q(u | x) per example from the base draw, its image h and log|det dh/deps|."""
        log_base = F.logsigmoid(eps) + F.logsigmoid(-eps)       # log of the logistic density
        log_jac_sigmoid = F.logsigmoid(h) + F.logsigmoid(-h)    # log sigmoid'(h)
        return (log_base - log_jac_sigmoid).reshape(eps.shape[0], -1).sum(1) - logdet

    def forward(self, x, generator=None):
        self._check(x)
        v = creation.rand(*x.shape, generator=generator, device=x.device, dtype=x.dtype)
        v = v * (1 - 2 * _EDGE) + _EDGE
        eps = v.log() - (1 - v).log()                    # a standard logistic draw
        h, logdet = self.flow(eps, self.features(x - 0.5))
        return h.sigmoid(), self._log_q(eps, h, logdet)

    def log_prob(self, u, x):
        """``log q(u | x)`` (B,) of given noise ``u`` in (0, 1), by inverting the couplings."""
        self._check(x)
        if tuple(u.shape) != tuple(x.shape):
            raise ValueError(f"VariationalDequantizer: noise of shape {tuple(u.shape)} for images "
                             f"of shape {tuple(x.shape)}")
        h = u.log() - (1 - u).log()
        eps, inv_logdet = self.flow.inverse(h, self.features(x - 0.5))
        return self._log_q(eps, h, -inv_logdet)

    def extra_repr(self):
        return f"shape={self.shape}"
