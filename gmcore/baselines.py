"""Reference densities a trained model is compared with: a Gaussian mixture fitted by EM.

``gmcore train`` on continuous 2-D data writes the test NLL of a 10-component full-covariance
Gaussian mixture fitted to the training split (``baseline_gmm10_nll_nats`` in metrics.json): a
flow that cannot beat it has learned little. NumPy only, deterministic for a seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["GaussianMixture", "fit_gmm", "gmm_baseline_nll"]


@dataclass
class GaussianMixture:
    """Weights (K,), means (K, D), covariances (K, D, D) of a full-covariance mixture."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    def component_log_probs(self, x: np.ndarray) -> np.ndarray:
        """``log w_k + log N(x_n; mu_k, S_k)``, shape (N, K)."""
        x = np.asarray(x, dtype=np.float64)
        d = x.shape[1]
        out = np.empty((x.shape[0], len(self.weights)))
        for k, (mu, cov) in enumerate(zip(self.means, self.covs)):
            chol = np.linalg.cholesky(cov)
            sol = np.linalg.solve(chol, (x - mu).T)            # L^{-1} (x - mu)
            logdet = 2.0 * np.log(np.diag(chol)).sum()
            out[:, k] = (math.log(self.weights[k]) - 0.5 * (sol * sol).sum(0)
                         - 0.5 * (d * math.log(2 * math.pi) + logdet))
        return out

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """``log p(x_n)`` (N,)."""
        lp = self.component_log_probs(x)
        top = lp.max(1, keepdims=True)
        return (top + np.log(np.exp(lp - top).sum(1, keepdims=True)))[:, 0]


def _kmeans_pp(x, k, rng):
    """k-means++ seeding: each next centre drawn with probability proportional to the squared
    distance to the nearest centre chosen so far."""
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1.0 / len(x))
        centres.append(x[rng.choice(len(x), p=p)])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    return np.array(centres)


def fit_gmm(x, k: int = 10, iters: int = 300, tol: float = 1e-7, reg: float = 1e-6,
            seed: int = 0) -> GaussianMixture:
    """Maximum-likelihood K-component mixture by EM, started from k-means++ and 10 Lloyd
    iterations. ``reg`` (times the data's mean variance) is added to every covariance's diagonal
    so that no component collapses onto a point. Stops when the mean log-likelihood improves by
    less than ``tol`` nats.

    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(-5, 1, (200, 2)), rng.normal(5, 1, (200, 2))])
    >>> g = fit_gmm(x, k=2)
    >>> np.round(np.sort(g.means[:, 0])).tolist(), np.round(g.weights, 1).tolist()
    ([-5.0, 5.0], [0.5, 0.5])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"fit_gmm: x must be a finite (N, D) array, got shape {x.shape}")
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"fit_gmm: need 1 <= k <= N points, got k={k} and N={n}")
    rng = np.random.default_rng(seed)
    floor = reg * max(float(x.var(0).mean()), 1e-12) * np.eye(d)
    centres = _kmeans_pp(x, k, rng)
    for _ in range(10):
        assign = ((x[:, None, :] - centres[None]) ** 2).sum(2).argmin(1)
        centres = np.array([x[assign == j].mean(0) if (assign == j).any() else centres[j]
                            for j in range(k)])
    resp = np.zeros((n, k))
    resp[np.arange(n), assign] = 1.0
    prev = -np.inf
    for _ in range(iters):
        # M step: weighted moments of the responsibilities
        nk = resp.sum(0) + 1e-12
        means = (resp.T @ x) / nk[:, None]
        covs = np.stack([((resp[:, j, None] * (x - means[j])).T @ (x - means[j])) / nk[j] + floor
                         for j in range(k)])
        gmm = GaussianMixture(nk / nk.sum(), means, covs)
        # E step: posterior responsibilities, and the log-likelihood being maximised
        lp = gmm.component_log_probs(x)
        top = lp.max(1, keepdims=True)
        norm = top + np.log(np.exp(lp - top).sum(1, keepdims=True))
        resp = np.exp(lp - norm)
        ll = float(norm.mean())
        if ll - prev < tol:
            break
        prev = ll
    return gmm


def gmm_baseline_nll(train, test, k: int = 10, seed: int = 0) -> float:
    """Mean test NLL in nats per example of a ``k``-component mixture fitted by EM on ``train``."""
    return float(-fit_gmm(train, k=k, seed=seed).log_prob(test).mean())
