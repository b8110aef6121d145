"""MADE with a mixture of Gaussians per dimension (MADE MoG), the base density of MAF-MoG
(Papamakarios, Pavlakou & Murray, 2017, section 3.4).

``p(u) = prod_d sum_k pi_dk N(u_d; mu_dk, sigma_dk^2)`` where ``(pi, mu, sigma)`` of dimension
``d`` come from a :class:`MADENet` of the dimensions before ``d`` in ``ordering``. On top of a
stack of MAF layers it replaces the standard-normal base: each MAF layer maps the first variable
of its ordering by an affine map of a Gaussian only, so in few dimensions (the 2-D toys) an
affine MAF bends a unimodal base into separated modes badly, while a K-component mixture per
conditional has them at once. Density in one pass; sampling in D passes (one per dimension).
"""
from __future__ import annotations

import math

import numpy as np

from ... import creation
from ...autograd import no_grad
from .. import functional as F
from ..module import Module
from .autoregressive import MADENet

__all__ = ["MADEMoG"]


class MADEMoG(Module):
    """An autoregressive density over (B, D) with a ``components``-component Gaussian mixture
    for each conditional ``p(u_d | u_<d)``; a base density for :class:`FlowDensity`
    (``log_prob(u) -> (B,)``, ``sample(n, generator=, temperature=, ...)``).

    ``hidden`` units in each of ``layers`` hidden layers of the MADE. The output layer starts at
    zero but for its biases: equal weights, unit standard deviations and means spread evenly
    over [-2, 2], so the components start apart (identical ones would get identical gradients
    and never separate). ``sample(temperature=T)`` scales every component's standard deviation
    by T (T = 0: the component means).

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> base = MADEMoG(2, components=3, hidden=8)
    >>> u = gm.randn(4, 2)
    >>> base.log_prob(u).shape, base.sample(5, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([4]), gmcore.Size([5, 2]))
    """

    def __init__(self, features, components=10, hidden=64, layers=2, ordering=None, seed=0):
        super().__init__()
        k = int(components)
        if k < 1:
            raise ValueError(f"MADEMoG: components must be >= 1, got {components}")
        self.features, self.components = int(features), k
        self.net = MADENet(features, hidden, 3 * k, layers, ordering=ordering, seed=seed,
                           zero_init=True)
        # output unit p * D + d is parameter p of dimension d; p = (logit_k, mean_k, log_std_k)
        means = np.linspace(-2.0, 2.0, k) if k > 1 else np.zeros(1)
        bias = np.zeros((3 * k, self.features), dtype=np.float32)
        bias[k:2 * k] = means[:, None]
        with no_grad():
            self.net.out.bias.copy_(creation.tensor(bias.reshape(-1)))

    def _params(self, u):
        p = self.net(u)                                   # (B, D, 3K)
        k = self.components
        log_w = F.log_softmax(p[..., :k], dim=-1)
        return log_w, p[..., k:2 * k], p[..., 2 * k:]      # log weights, means, log stds

    def log_prob(self, u, context=None):
        if u.ndim != 2 or u.shape[1] != self.features:
            raise ValueError(f"MADEMoG({self.features}): expected values of shape "
                             f"(B, {self.features}), got {tuple(u.shape)}")
        log_w, mean, log_std = self._params(u)
        t = (u.unsqueeze(-1) - mean) * (-log_std).exp()
        comp = log_w - 0.5 * t * t - log_std - 0.5 * math.log(2 * math.pi)
        return comp.logsumexp(-1).sum(1)

    def sample(self, n, generator=None, temperature=1.0, device=None, dtype=None):
        p = next(iter(self.parameters()))
        n, d = int(n), self.features
        u = creation.zeros(n, d, device=p.device, dtype=p.dtype)
        with no_grad():
            for i in self.net.order:                      # dimension i is exact after its pass
                log_w, mean, log_std = self._params(u)
                r = creation.rand(n, 1, generator=generator, device=p.device, dtype=p.dtype)
                cdf = log_w[:, i].exp().cumsum(-1)
                k = (cdf < r).sum(-1, keepdim=True).clamp(0, self.components - 1)
                eps = creation.randn(n, 1, generator=generator, device=p.device, dtype=p.dtype)
                m = mean[:, i].gather(1, k)
                s = log_std[:, i].gather(1, k).exp()
                col = (m + temperature * s * eps)[:, 0]
                onehot = creation.zeros(d, device=p.device, dtype=p.dtype)
                onehot[int(i)] = 1.0
                u = u + col.unsqueeze(1) * onehot
        return u

    def extra_repr(self):
        return f"features={self.features}, components={self.components}"
