"""Planar flow (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows", eq. 10-12).

``f(z) = z + u_hat * tanh(w . z + b)`` on (B, D), with
``log|det df/dz| = log|1 + (1 - tanh^2(w . z + b)) w . u_hat|``.

Invertibility needs ``w . u_hat >= -1`` (appendix A.1): ``u`` is free and
``u_hat = u + (m(w . u) - w . u) w / |w|^2`` with ``m(a) = -1 + softplus(a)``, so
``w . u_hat = m(w . u) > -1`` always.

Direction. ``forward`` is the call: as a VAE posterior (generative direction, z0 -> zK) it is the
paper's map; as a density model on data it runs in the normalizing direction (data -> base). The
inverse has no closed form, so :meth:`Planar.inverse` raises :class:`NoAnalyticInverse`.
:meth:`Planar.numerical_inverse` solves it instead (no gradient): along ``w`` the map is the 1-D
equation ``w . y = a + m tanh(a + b)`` in ``a = w . z``, strictly increasing in ``a`` (slope
``1 + m (1 - tanh^2) > 0``) with the root within ``|m|`` of ``w . y``; bisection on that bracket
(in float64, to 1e-12) gives ``a``, then ``z = y - u_hat tanh(a + b)``.
"""
from __future__ import annotations

import math

import numpy as np

from ... import backend, creation
from ...autograd import no_grad
from .. import functional as F
from ..parameter import Parameter
from .base import Flow, NoAnalyticInverse

__all__ = ["Planar", "planar_step"]

_BISECTION_STEPS = 60   # halves a bracket of width 2|m| to 2|m| 2^-60: far below 1e-6


def _u_hat(u, w):
    wu = (w * u).sum(-1, keepdim=True)
    return u + (F.softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True)


def planar_step(z, u, w, b):
    """``(z + u_hat tanh(w.z + b), log|det|)`` for z of shape (B, L): the planar map with its
    parameters given, shared (``u, w`` (L,), ``b`` (1,)) or per example (``(B, L)``, ``(B, 1)``,
    as the VAE's amortised posterior flow reads them from its encoder). ``u_hat`` keeps
    ``w.u_hat > -1``, so the map is invertible; ``log|det| = log|1 + (1 - tanh^2) w.u_hat|``."""
    u_hat = _u_hat(u, w)
    t = ((w * z).sum(-1, keepdim=True) + b).tanh()              # (B, 1)
    logdet = (1 + (1 - t * t) * (w * u_hat).sum(-1, keepdim=True)).abs().log()
    return z + t * u_hat, logdet.reshape(-1)


class Planar(Flow):
    """One planar layer on (B, ``features``) (module docstring).

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> f = Planar(2)
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
            raise ValueError(f"Planar: features must be positive, got {features}")
        bound = 1.0 / math.sqrt(d)

        def uniform(*shape):
            return (creation.rand(*shape, dtype=dtype, device=device) * 2 - 1) * bound
        self.w = Parameter(uniform(d))
        self.u = Parameter(uniform(d))
        self.b = Parameter(uniform(1))

    def u_hat(self):
        """``u`` corrected so that ``w . u_hat = -1 + softplus(w . u) > -1``."""
        return _u_hat(self.u, self.w)

    def _check(self, x):
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"Planar({self.features}): expected input (B, {self.features}), got "
                             f"{tuple(x.shape)}")

    def forward(self, z, context=None):
        self._check(z)
        return planar_step(z, self.u, self.w, self.b)

    def inverse(self, y, context=None):
        raise NoAnalyticInverse(f"{type(self).__name__} has no analytic inverse; "
                                "numerical_inverse(y) solves it by bisection")

    def numerical_inverse(self, y, context=None):
        """``(z, logdet)`` with ``forward(z) = y`` (bisection, module docstring) and ``logdet``
        the inverse map's (minus the forward one at ``z``). Not differentiable: for sampling."""
        self._check(y)
        with no_grad():
            u_hat = self.u_hat()
            xp = backend.xp_of(y.data)
            w = self.w.data.astype(np.float64)
            uh = u_hat.data.astype(np.float64)
            b = float(self.b.data.reshape(()))
            m = float((w * uh).sum())
            target = y.data.astype(np.float64) @ w                 # w . y, (B,)
            lo, hi = target - abs(m), target + abs(m)
            for _ in range(_BISECTION_STEPS):                    # g(a) = a + m tanh(a + b)
                mid = 0.5 * (lo + hi)
                below = mid + m * xp.tanh(mid + b) < target
                lo = xp.where(below, mid, lo)
                hi = xp.where(below, hi, mid)
            a = 0.5 * (lo + hi)
            z = y.data.astype(np.float64) - xp.tanh(a + b)[:, None] * uh
            z = creation.tensor(z.astype(y.data.dtype), device=y.device)
            _, ld = self.forward(z)
        return z, -ld

    def extra_repr(self):
        return f"{self.features}"
