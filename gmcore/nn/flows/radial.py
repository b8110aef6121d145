"""Radial flow (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows", eq. 14).

``f(z) = z + beta h(alpha, r) (z - z0)`` on (B, D) with ``r = |z - z0|``, ``h = 1 / (alpha + r)``,
and ``log|det df/dz| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h' r)``, where
``h' = -h^2`` makes the last factor ``1 + beta alpha h^2``.

Invertibility needs ``beta >= -alpha`` (appendix A.2): ``alpha = softplus(a)`` and
``beta = -alpha + softplus(b)`` with ``a``, ``b`` free, so ``alpha > 0`` and ``beta > -alpha``.

Direction. ``forward`` is the call: as a VAE posterior (generative direction, z0 -> zK) it is the
paper's map; as a density model on data it runs in the normalizing direction (data -> base).
:meth:`Radial.inverse` raises :class:`NoAnalyticInverse` (the flow API's convention for planar and
radial). :meth:`Radial.numerical_inverse` inverts it for sampling: the map moves a point along
its ray from ``z0``, so ``y - z0 = (1 + beta / (alpha + r)) (z - z0)`` and the radius solves the
1-D increasing equation ``r + beta r / (alpha + r) = |y - z0|``; multiplied out it is the
quadratic ``r^2 + (alpha + beta - |y - z0|) r - alpha |y - z0| = 0``, whose non-negative root
is taken in closed form (the cancellation-free form of the quadratic formula, float64): exact
where bisection would be approximate.
"""
from __future__ import annotations

import numpy as np

from ... import backend, creation
from ...autograd import no_grad
from .. import functional as F
from ..parameter import Parameter
from .base import Flow, NoAnalyticInverse

__all__ = ["Radial", "radial_step"]


def radial_step(z, z0, alpha, beta):
    """``(z + beta h(r) (z - z0), log|det|)``, ``h = 1 / (alpha + r)``, ``r = |z - z0|``, for z of
    shape (B, L) with the parameters given, shared (``z0`` (L,), ``alpha, beta`` (1,)) or per
    example (``(B, L)``, ``(B, 1)``: the VAE's amortised posterior flow). ``alpha > 0`` and
    ``beta > -alpha`` keep it invertible; ``log|det| = (L - 1) log(1 + beta h) +
    log(1 + beta alpha h^2)``."""
    diff = z - z0
    r = (diff * diff).sum(-1, keepdim=True).sqrt()               # (B, 1)
    h = 1 / (alpha + r)
    bh = beta * h
    logdet = (z.shape[-1] - 1) * (1 + bh).log() + (1 + beta * alpha * h * h).log()
    return z + bh * diff, logdet.reshape(-1)


class Radial(Flow):
    """One radial layer on (B, ``features``) (module docstring).

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> f = Radial(2)
    >>> z = gm.randn(5, 2)
    >>> y, ld = f(z)
    >>> z2, ld2 = f.numerical_inverse(y)
    >>> bool((z2 - z).abs().max() < 1e-5), bool((ld + ld2).abs().max() < 1e-5)
    (True, True)
    """

    def __init__(self, features, device=None, dtype=None):
        super().__init__()
        self.features = d = int(features)
        if d < 1:
            raise ValueError(f"Radial: features must be positive, got {features}")
        self.z0 = Parameter(creation.randn(d, dtype=dtype, device=device))
        # alpha starts at softplus(0.5) ~ 0.97; beta = softplus(b) - alpha with b ~ N(0, 1):
        # layers start as a random mix of contractions (beta < 0) and expansions
        self.a = Parameter(creation.full((1,), 0.5, dtype=dtype, device=device))
        self.b = Parameter(creation.randn(1, dtype=dtype, device=device))

    def alpha_beta(self):
        """``(alpha, beta)`` with ``alpha > 0`` and ``beta > -alpha`` (shape (1,) each)."""
        alpha = F.softplus(self.a)
        return alpha, F.softplus(self.b) - alpha

    def _check(self, x):
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"Radial({self.features}): expected input (B, {self.features}), got "
                             f"{tuple(x.shape)}")

    def forward(self, z, context=None):
        self._check(z)
        alpha, beta = self.alpha_beta()
        return radial_step(z, self.z0, alpha, beta)

    def inverse(self, y, context=None):
        raise NoAnalyticInverse(f"{type(self).__name__} has no analytic inverse; "
                                "numerical_inverse(y) solves its radial equation")

    def numerical_inverse(self, y, context=None):
        """``(z, logdet)`` with ``forward(z) = y`` (the radius equation, module docstring) and
        ``logdet`` the inverse map's. Not differentiable: for sampling."""
        self._check(y)
        with no_grad():
            alpha, beta = (float(v.data.reshape(())) for v in self.alpha_beta())
            xp = backend.xp_of(y.data)
            d = y.data.astype(np.float64) - self.z0.data.astype(np.float64)
            ry = xp.sqrt((d * d).sum(1))
            # r^2 + p r - q = 0 with q >= 0: the root >= 0, without cancellation for either sign of p
            p, q = alpha + beta - ry, alpha * ry
            s = xp.sqrt(p * p + 4 * q)
            pos = p > 0
            r = backend.where(pos, 2 * q / xp.where(pos, p + s, 1.0), 0.5 * (s - p))
            z = self.z0.data.astype(np.float64) + d / (1 + beta / (alpha + r))[:, None]
            z = creation.tensor(z.astype(y.data.dtype), device=y.device)
            _, ld = self.forward(z)
        return z, -ld

    def extra_repr(self):
        return f"{self.features}"
