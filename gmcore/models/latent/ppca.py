"""Probabilistic PCA (Tipping & Bishop, 1999): the linear-Gaussian latent-variable model

    z ~ N(0, I_q),   y = W z + mu + sigma * eps,   so   p(y) = N(mu, C),  C = W W^T + sigma^2 I_D,

fitted two ways that must agree: the closed-form maximum-likelihood solution (eigenvectors of
the data covariance, sigma^2 = mean of the discarded eigenvalues, W = U_q (L_q - sigma^2 I)^1/2)
and gradient ascent on the same log-likelihood.

Data: the continuous density models uniformly dequantized pixels y = (level + u) / K. Because
log N(y; mu, C) is quadratic in y, its expectation over u needs only the first two moments of
y: mean (level + 1/2) / K and covariance Cov(level) / K^2 + I / (12 K^2). The loss, the test NLL
and the closed form all use that exact expectation (no sampling noise), so the gradient fit
converges to the closed form. The NLL adds the dequantization term D log K.

log|C| and C^-1 use the q x q matrix M = W^T W + sigma^2 I (Woodbury), so a step costs
O(B D q + q^3), not O(D^3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ... import creation as gc
from ... import functional as gf
from ... import metrics
from ...autograd import no_grad
from ...nn import Parameter
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register


@dataclass
class PPCAConfig:
    latent_dim: int = field(default=8, metadata={"help": "q, the number of principal directions", "min": 1})
    fit: str = field(default="closed_form", metadata={
        "help": "closed_form: the ML solution from the training set (no optimizer steps); "
                "gradient: the same likelihood by gradient ascent", "choices": ["closed_form", "gradient"]})


@register("ppca", family="latent", dataset="digits",
          description="probabilistic PCA: closed-form maximum likelihood or gradient ascent")
class PPCA(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm, numpy as np
    >>> from gmcore.models.base import DataInfo
    >>> m = PPCA(PPCA.Config(latent_dim=2), DataInfo((1, 2, 2), 17))
    >>> levels = np.random.default_rng(0).integers(0, 17, (50, 1, 2, 2))
    >>> m.fit_closed_form(levels)
    >>> m.nll((gm.tensor(levels[:3] / 16.0, dtype=gm.float32),)).shape
    gmcore.Size([3])
    """

    Config = PPCAConfig
    nll_kind = "dequantization bound"

    def __init__(self, config: PPCAConfig, data: DataInfo):
        super().__init__(config, data)
        d, q = data.dims, config.latent_dim
        if q >= d:
            raise ValueError(f"latent_dim must be smaller than the data dimension {d}, got {q}")
        if data.num_levels < 2:
            raise ValueError("PPCA models dequantized discrete data: the data set needs num_levels")
        self.mu = Parameter(gc.full((d,), 0.5))
        self.weight = Parameter(gc.randn(d, q) * 0.1)
        self.log_var = Parameter(gc.full((), math.log(0.05)))
        self.trainable = config.fit == "gradient"

    # ---- closed form ---------------------------------------------------------------------
    def prepare(self, train_set) -> None:
        """Called by the trainer before the first step: the closed-form fit, when asked for."""
        if self.config.fit == "closed_form":
            self.fit_closed_form(train_set.arrays[0])

    def dequantized_moments(self, levels) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance (float64) of y = (level + u) / K over data and dequantization."""
        k = self.data.num_levels
        x = np.asarray(levels, dtype=np.float64).reshape(len(levels), -1)
        mean = (x.mean(0) + 0.5) / k
        cov = np.cov(x, rowvar=False, bias=True) / k**2 + np.eye(x.shape[1]) / (12.0 * k**2)
        return mean, cov

    def fit_closed_form(self, levels) -> None:
        """Set mu, W, sigma^2 to the maximum-likelihood solution for integer ``levels`` (N, ...)."""
        mean, cov = self.dequantized_moments(levels)
        evals, evecs = np.linalg.eigh(cov)
        evals, evecs = evals[::-1], evecs[:, ::-1]
        q = self.config.latent_dim
        sigma2 = float(evals[q:].mean())
        w = evecs[:, :q] * np.sqrt(np.maximum(evals[:q] - sigma2, 0.0))
        dt = self.mu.data.dtype
        with no_grad():
            self.mu.data[...] = mean.astype(dt)
            self.weight.data[...] = w.astype(dt)
            self.log_var.data[...] = np.log(sigma2)

    # ---- likelihood ----------------------------------------------------------------------
    def _expected_nll(self, x: Tensor) -> Tensor:
        """E_u[-log p(y)] + D log K per example, for pixels x = level / (K - 1) in [0, 1]."""
        k, d, q = self.data.num_levels, self.data.dims, self.config.latent_dim
        ybar = (x.reshape(x.shape[0], -1) * (k - 1) + 0.5) / k
        r = ybar - self.mu                                                 # (B, D)
        var = self.log_var.exp()
        w = self.weight
        m = w.t() @ w + var * gc.eye(q, dtype=w.dtype, device=w.device)   # (q, q)
        m_inv = gf.inverse(m)
        _, logdet_m = gf.slogdet(m)
        logdet_c = (d - q) * self.log_var + logdet_m
        rw = r @ w                                                         # (B, q)
        quad = ((r * r).sum(1) - ((rw @ m_inv) * rw).sum(1)) / var        # r^T C^-1 r
        # E_u of the quadratic form adds tr(C^-1) / (12 K^2); tr(C^-1) = (D - tr(M^-1 W^T W)) / var
        tr_cinv = (d - (m_inv * (w.t() @ w)).sum()) / var
        nll = 0.5 * (d * math.log(2 * math.pi) + logdet_c + quad + tr_cinv / (12.0 * k * k))
        return nll + metrics.dequantization_nats(d, k)

    def loss(self, batch):
        nll = self._expected_nll(batch[0]).mean()
        return nll / self.data.dims, {"nll": nll.item()}

    def nll(self, batch, generator=None) -> Tensor:
        return self._expected_nll(batch[0])

    def sample(self, n, generator=None) -> Tensor:
        w = self.weight
        z = gc.randn(n, self.config.latent_dim, generator=generator, device=w.device, dtype=w.dtype)
        eps = gc.randn(n, self.data.dims, generator=generator, device=w.device, dtype=w.dtype)
        y = z @ w.t() + self.mu + (0.5 * self.log_var).exp() * eps
        return y.clamp(0.0, 1.0).reshape(n, *self.data.shape)
