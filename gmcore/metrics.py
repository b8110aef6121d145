"""Likelihood metrics: bits per dimension, the dequantization term, IWAE, a per-pixel baseline.

Bits per dimension of discrete data ``x`` with ``D`` values per example::

    bits/dim = NLL(x) / (D * ln 2)          NLL in nats per example

For a *continuous* density ``p`` fitted to dequantized data ``y = (x + u) * s``, with ``x`` an
integer level in ``{0, ..., K-1}``, ``u ~ U[0, 1)^D`` and ``s`` the scale that maps levels to the
model's range (``s = 1/K`` for data in ``[0, 1]``), Jensen's inequality gives a bound on the
discrete NLL::

    NLL(x) <= E_u[-log p(y)] - D * log(s)          (= E_u[-log p(y)] + D log K for s = 1/K)

:func:`dequantization_nats` returns that ``-D log s`` term; models with continuous densities
add it inside their ``nll`` so that every bits/dim reported by gmcore is about the same
discrete data and comparable across models.

Sample-quality distances on classifier features (digits-FID, KID, precision/recall) live in
:mod:`gmcore.feature_metrics`.
"""
from __future__ import annotations

import math

import numpy as np

from .tensor import Tensor

__all__ = ["bits_per_dim", "dequantization_nats", "log_mean_exp", "iwae_bound",
           "categorical_baseline_nll"]

LN2 = math.log(2.0)


def bits_per_dim(nll_nats, num_dims: int) -> float:
    """Mean NLL in nats per example -> bits per dimension: ``nll / (num_dims * ln 2)``.

    >>> round(bits_per_dim(64 * math.log(17), 64), 4)   # uniform over 17 levels
    4.0875
    """
    if num_dims <= 0:
        raise ValueError(f"num_dims must be positive, got {num_dims}")
    if isinstance(nll_nats, Tensor):
        nll_nats = nll_nats.detach().mean().item()
    return float(np.mean(nll_nats)) / (num_dims * LN2)


def dequantization_nats(num_dims: int, num_levels: int, data_range: float = 1.0) -> float:
    """``-D log s`` with ``s = data_range / num_levels``: the nats to add to a continuous density's
    NLL of uniformly dequantized data to bound the NLL of the discrete data (module docstring).

    >>> round(dequantization_nats(1, 256), 4) == round(math.log(256), 4)
    True
    """
    if num_levels < 2:
        raise ValueError(f"num_levels must be at least 2, got {num_levels}")
    return -num_dims * math.log(data_range / num_levels)


def log_mean_exp(x: Tensor, dim: int) -> Tensor:
    """``log(mean(exp(x), dim))`` computed stably (logsumexp minus log n)."""
    return x.logsumexp(dim) - math.log(x.shape[dim])


def iwae_bound(log_weights: Tensor) -> Tensor:
    """Importance-weighted bound on ``-log p(x)`` from ``log w_k = log p(x, z_k) - log q(z_k|x)``
    of shape (k, B): ``-log mean_k exp(log w_k)`` per example (Burda et al., 2016). It tightens
    towards the NLL as k grows; k = 1 is the negative ELBO."""
    if log_weights.ndim != 2:
        raise ValueError(f"log_weights must be (k, batch), got shape {tuple(log_weights.shape)}")
    return -log_mean_exp(log_weights, 0)


def categorical_baseline_nll(train_levels: np.ndarray, test_levels: np.ndarray, num_levels: int,
                             alpha: float = 1.0) -> float:
    """Mean test NLL (nats per example) of the per-pixel independent categorical model.

    Each dimension gets its own distribution over ``num_levels`` values, fitted on the training
    levels with add-``alpha`` (Laplace) smoothing: the reference a density model must beat.

    >>> tr = np.array([[0, 1], [0, 1], [1, 1]]); te = np.array([[0, 1]])
    >>> round(categorical_baseline_nll(tr, te, 2), 4)   # -log(3/5) - log(4/5)
    0.734
    """
    train = np.asarray(train_levels).reshape(len(train_levels), -1).astype(np.int64)
    test = np.asarray(test_levels).reshape(len(test_levels), -1).astype(np.int64)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train and test examples differ in size: {train.shape[1]} vs {test.shape[1]}")
    for name, a in (("train", train), ("test", test)):
        if a.size and (a.min() < 0 or a.max() >= num_levels):
            raise ValueError(f"{name} levels must lie in [0, {num_levels - 1}], got [{a.min()}, {a.max()}]")
    dims = train.shape[1]
    counts = np.full((dims, num_levels), alpha, dtype=np.float64)
    np.add.at(counts, (np.broadcast_to(np.arange(dims), train.shape), train), 1.0)
    logp = np.log(counts) - np.log(counts.sum(axis=1, keepdims=True))
    return float(-logp[np.arange(dims), test].sum(axis=1).mean())
