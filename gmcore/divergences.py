"""Divergences and distances between distributions and between samples (``gm.divergences``).

Between distributions:

* :func:`kl_divergence` -- ``KL(p || q)`` in closed form, from :mod:`gmcore.distributions`'s
  registry of analytic forms (Normal, Bernoulli, Categorical, ...);
* :func:`kl_monte_carlo` -- ``E_p[log p(x) - log q(x)]`` from ``n`` samples of ``p``, for pairs
  with no closed form, with its standard error;
* :func:`js_divergence` -- Jensen-Shannon, ``(KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``:
  exact for discrete distributions with a finite support (summed over it), and
  :func:`js_monte_carlo` for the rest. In nats; ``0 <= JS <= log 2``.

Between samples (arrays or tensors of shape (n,) or (n, d)):

* :func:`wasserstein_1d` -- the exact 1-Wasserstein distance between two empirical
  distributions on the line (any sizes): the area between their CDFs;
* :func:`sliced_wasserstein` -- the mean of :func:`wasserstein_1d` over random unit directions
  (Rabin et al. 2011; Deshpande et al. 2018), for samples in d dimensions;
* :func:`wasserstein_critic` -- the Kantorovich-Rubinstein dual estimate
  ``sup_{|f|_L <= 1} E_x f - E_y f`` with an MLP critic trained under WGAN-GP's gradient
  penalty (Gulrajani et al. 2017): what a WGAN's critic measures. The penalty makes the critic
  only softly 1-Lipschitz, so the estimate is approximate (it can lie on either side of W1).

>>> import gmcore as gm
>>> from gmcore.distributions import Normal
>>> float(kl_divergence(Normal(0.0, 1.0), Normal(1.0, 1.0)))
0.5
>>> wasserstein_1d([0.0, 1.0], [2.0, 3.0])
2.0
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .distributions import kl_divergence

__all__ = ["Estimate", "kl_divergence", "kl_monte_carlo", "js_divergence", "js_monte_carlo",
           "wasserstein_1d", "sliced_wasserstein", "wasserstein_critic"]


class Estimate(NamedTuple):
    """A Monte Carlo estimate (batched like the distributions) and its standard error."""
    value: object
    stderr: object


def _mc_mean(values) -> Estimate:
    """Mean over the leading (sample) dimension and its standard error."""
    n = values.shape[0]
    mean = values.mean(0)
    std = ((values - mean) ** 2).sum(0).div(max(n - 1, 1)).sqrt()
    return Estimate(mean, std / math.sqrt(n))


def _check_n(n, name) -> int:
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"{name}: n must be an integer >= 2 (samples for the estimate), got {n!r}")
    return int(n)


def kl_monte_carlo(p, q, n: int = 1000, generator=None) -> Estimate:
    """``KL(p || q)`` estimated from ``n`` samples of ``p``: the mean of ``log p(x) - log q(x)``,
    with its standard error (unbiased; for pairs with a closed form prefer :func:`kl_divergence`).

    >>> import gmcore as gm
    >>> from gmcore.distributions import Normal
    >>> est = kl_monte_carlo(Normal(0.0, 1.0), Normal(1.0, 1.0), n=20000,
    ...                      generator=gm.Generator().manual_seed(0))
    >>> abs(float(est.value) - 0.5) < 4 * float(est.stderr)
    True
    """
    n = _check_n(n, "kl_monte_carlo")
    x = p.sample((n,), generator=generator)
    return _mc_mean(p.log_prob(x) - q.log_prob(x))


def _log_mixture(lp, lq):
    """log((p + q) / 2) from log p and log q, without overflow."""
    from . import functional as gf
    return gf.stack([lp, lq], 0).logsumexp(0) - math.log(2.0)


def js_divergence(p, q):
    """Jensen-Shannon divergence in nats, exact, for discrete distributions with a finite support
    (``enumerate_support``: Categorical, Bernoulli), batched. For continuous ones use
    :func:`js_monte_carlo`.

    >>> from gmcore.distributions import Categorical
    >>> round(float(js_divergence(Categorical(probs=[1.0, 0.0]), Categorical(probs=[0.0, 1.0]))), 4)   # log 2
    0.6931
    """
    if not (hasattr(p, "enumerate_support") and hasattr(q, "enumerate_support")):
        raise NotImplementedError(f"js_divergence is exact for finite discrete supports only; for "
                                  f"{type(p).__name__} and {type(q).__name__} use js_monte_carlo(p, q, n)")
    support = p.enumerate_support()
    q_support = q.enumerate_support()
    if tuple(support.shape) != tuple(q_support.shape) or not bool((support == q_support).all()):
        raise ValueError(f"js_divergence: p and q have different supports ({type(p).__name__} "
                         f"{tuple(support.shape)} against {type(q).__name__} {tuple(q_support.shape)})")
    lp, lq = p.log_prob(support), q.log_prob(support)
    lm = _log_mixture(lp, lq)
    # 0 log 0 = 0: a class p (or q) never takes adds nothing to its term
    term_p = (lp.exp() * (lp - lm)).nan_to_num(0.0)
    term_q = (lq.exp() * (lq - lm)).nan_to_num(0.0)
    return 0.5 * (term_p.sum(0) + term_q.sum(0))


def js_monte_carlo(p, q, n: int = 1000, generator=None) -> Estimate:
    """Jensen-Shannon divergence in nats from ``n`` samples of each of ``p`` and ``q``:
    ``(E_p[log p - log m] + E_q[log q - log m]) / 2`` with ``m = (p + q) / 2``, and its standard
    error (the two halves' errors combined).

    >>> import gmcore as gm
    >>> from gmcore.distributions import Normal
    >>> est = js_monte_carlo(Normal(0.0, 1.0), Normal(0.0, 1.0), n=100)
    >>> float(est.value)
    0.0
    """
    n = _check_n(n, "js_monte_carlo")
    x, y = p.sample((n,), generator=generator), q.sample((n,), generator=generator)
    a = _mc_mean(p.log_prob(x) - _log_mixture(p.log_prob(x), q.log_prob(x)))
    b = _mc_mean(q.log_prob(y) - _log_mixture(p.log_prob(y), q.log_prob(y)))
    return Estimate(0.5 * (a.value + b.value), 0.5 * (a.stderr ** 2 + b.stderr ** 2).sqrt())


def _points(x, name: str, dims: int | None = None) -> np.ndarray:
    from .tensor import Tensor
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if dims == 1 and x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != (dims or x.ndim) or x.ndim not in (1, 2) or x.shape[0] == 0:
        want = "(n,)" if dims == 1 else "(n,) or (n, d)"
        raise ValueError(f"{name}: expected a non-empty array of shape {want}, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: the samples hold NaN or inf")
    return x


def _w1_sorted(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """W1 between empirical distributions, each row of ``xs`` (k, n) against the same row of
    ``ys`` (k, m), both sorted along the last axis: the integral of |F_x - F_y|."""
    both = np.sort(np.concatenate([xs, ys], axis=1), axis=1)
    widths = np.diff(both, axis=1)
    cut = both[:, :-1]
    fx = np.stack([np.searchsorted(r, c, side="right") for r, c in zip(xs, cut)]) / xs.shape[1]
    fy = np.stack([np.searchsorted(r, c, side="right") for r, c in zip(ys, cut)]) / ys.shape[1]
    return (np.abs(fx - fy) * widths).sum(axis=1)


def wasserstein_1d(x, y) -> float:
    """The exact 1-Wasserstein distance between the empirical distributions of 1-D samples
    ``x`` (n,) and ``y`` (m,): ``integral |F_x(t) - F_y(t)| dt`` (equal to the mean
    ``|x_(i) - y_(i)|`` of the sorted samples when n = m).

    >>> wasserstein_1d([0.0, 1.0, 2.0], [0.5])   # (0.5 + 0.5 + 1.5) / 3
    0.8333333333333334
    """
    x, y = _points(x, "wasserstein_1d: x", 1), _points(y, "wasserstein_1d: y", 1)
    return float(_w1_sorted(np.sort(x)[None], np.sort(y)[None])[0])


def sliced_wasserstein(x, y, n_projections: int = 128, generator=None) -> float:
    """The sliced 1-Wasserstein distance between samples ``x`` (n, d) and ``y`` (m, d): the mean,
    over ``n_projections`` directions drawn uniformly on the sphere, of :func:`wasserstein_1d`
    between the projected samples. For d = 1 it is :func:`wasserstein_1d`.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(500, 2))
    >>> round(sliced_wasserstein(x, x), 12)
    0.0
    """
    from .random import default_generator
    x, y = _points(x, "sliced_wasserstein: x"), _points(y, "sliced_wasserstein: y")
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced_wasserstein: x and y have {x.shape[1]} and {y.shape[1]} dimensions")
    if x.shape[1] == 1:
        return wasserstein_1d(x[:, 0], y[:, 0])
    if n_projections < 1:
        raise ValueError(f"sliced_wasserstein: n_projections must be >= 1, got {n_projections}")
    gen = generator if generator is not None else default_generator
    theta = np.asarray(gen.normal((n_projections, x.shape[1]), 0.0, 1.0, "float64"))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    return float(_w1_sorted(np.sort(theta @ x.T, axis=1), np.sort(theta @ y.T, axis=1)).mean())


def wasserstein_critic(x, y, hidden: int = 64, steps: int = 300, lr: float = 3e-3, batch_size: int = 256,
                       gp_weight: float = 10.0, generator=None) -> float:
    """The dual (Kantorovich-Rubinstein) estimate of W1 between samples ``x`` (n, d) and ``y``
    (m, d): an MLP critic ``f`` (two hidden layers of ``hidden`` units) is trained for ``steps``
    Adam steps to maximise ``|E_x f - E_y f| - gp_weight * (||grad f|| - 1)^2`` on minibatches
    (the gradient penalty of WGAN-GP, :func:`gmcore.nn.gan.gradient_penalty`), and
    ``|E_x f - E_y f|`` over all the samples is returned. The absolute value changes nothing in
    the supremum (``-f`` is 1-Lipschitz when ``f`` is) but lets a critic that starts with the
    wrong sign flip it: maximising the plain gap, in 1-D, it would have to pass through zero
    slope, where the two-sided penalty is highest, and half of the starts got stuck at ``-W1``.
    Approximate: the penalty keeps ``f`` only near 1-Lipschitz, and a finite critic and budget
    may fall short of the supremum.

    >>> import numpy as np, gmcore as gm
    >>> rng = np.random.default_rng(0)
    >>> w = wasserstein_critic(rng.normal(size=(512, 1)), rng.normal(size=(512, 1)) + 2.0, steps=150,
    ...                        lr=3e-3, generator=gm.Generator().manual_seed(0))
    >>> 1.6 < w < 2.4
    True
    """
    from . import creation, nn, optim
    from .autograd import no_grad
    from .nn.gan import gradient_penalty
    from .random import Generator, default_generator

    x, y = _points(x, "wasserstein_critic: x"), _points(y, "wasserstein_critic: y")
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"wasserstein_critic: x and y have {x.shape[1]} and {y.shape[1]} dimensions")
    gen = generator if generator is not None else Generator().manual_seed(int(default_generator.integers(0, 2**31, (), "int64")))
    d = x.shape[1]
    critic = nn.Sequential(nn.Linear(d, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                           nn.Linear(hidden, 1))
    opt = optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    xt, yt = creation.tensor(x, dtype="float32"), creation.tensor(y, dtype="float32")
    b = min(batch_size, len(x), len(y))
    for _ in range(steps):
        ix = np.asarray(gen.integers(0, len(x), (b,), "int64"))
        iy = np.asarray(gen.integers(0, len(y), (b,), "int64"))
        real, fake = xt[ix], yt[iy]
        gap = critic(real).mean() - critic(fake).mean()
        loss = -gap.abs() + gp_weight * gradient_penalty(critic, real, fake, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with no_grad():
        return abs(float(critic(xt).mean().item() - critic(yt).mean().item()))
