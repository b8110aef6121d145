"""gm.divergences against closed forms and independent computations."""
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore import divergences as dv
from gmcore.distributions import Bernoulli, Categorical, Normal


def _gen(seed=0):
    return gm.Generator().manual_seed(seed)


def test_kl_closed_form_and_monte_carlo_agree():
    p = Normal(gm.tensor([0.0, 1.0], dtype=gm.float64), gm.tensor([1.0, 0.5], dtype=gm.float64))
    q = Normal(gm.tensor([1.0, -1.0], dtype=gm.float64), gm.tensor([2.0, 1.5], dtype=gm.float64))
    exact = dv.kl_divergence(p, q).numpy()
    mp, sp, mq, sq = 0.0, 1.0, 1.0, 2.0
    assert exact[0] == pytest.approx(math.log(sq / sp) + (sp ** 2 + (mp - mq) ** 2) / (2 * sq ** 2) - 0.5)
    est = dv.kl_monte_carlo(p, q, n=20000, generator=_gen())
    assert est.value.shape == (2,) and (est.stderr.numpy() > 0).all()
    assert (np.abs(est.value.numpy() - exact) < 4 * est.stderr.numpy()).all()
    assert (est.stderr.numpy() < 0.05).all()   # and it is informative


def _js_numpy(p, q):
    m = (p + q) / 2
    kl = lambda a, b: sum(ai * math.log(ai / bi) for ai, bi in zip(a, b) if ai > 0)   # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def test_js_exact_on_discrete_distributions():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
    js = float(dv.js_divergence(Categorical(probs=gm.tensor(p)), Categorical(probs=gm.tensor(q))))
    assert js == pytest.approx(_js_numpy(p, q), rel=1e-9)
    assert js == pytest.approx(float(dv.js_divergence(Categorical(probs=gm.tensor(q)),
                                                      Categorical(probs=gm.tensor(p)))))   # symmetric
    disjoint = dv.js_divergence(Categorical(probs=gm.tensor([0.5, 0.5, 0.0, 0.0], dtype=gm.float64)),
                                Categorical(probs=gm.tensor([0.0, 0.0, 0.3, 0.7], dtype=gm.float64)))
    assert float(disjoint) == pytest.approx(math.log(2), rel=1e-9)   # the upper bound, zeros and all
    b = dv.js_divergence(Bernoulli(probs=gm.tensor([0.2, 0.9], dtype=gm.float64)), Bernoulli(probs=gm.tensor([0.6, 0.9], dtype=gm.float64)))
    assert b.numpy() == pytest.approx([_js_numpy(np.array([0.8, 0.2]), np.array([0.4, 0.6])), 0.0], abs=1e-12)


def test_js_monte_carlo_matches_numerical_integration():
    p, q = Normal(0.0, 1.0), Normal(1.5, 0.7)
    t = np.linspace(-12, 12, 200001)
    dens = lambda mu, s: np.exp(-0.5 * ((t - mu) / s) ** 2) / (s * math.sqrt(2 * math.pi))   # noqa: E731
    fp, fq = dens(0.0, 1.0), dens(1.5, 0.7)
    fm = (fp + fq) / 2
    integrand = 0.5 * (fp * np.log(fp / fm) + fq * np.log(fq / fm))
    exact = float(np.sum(np.nan_to_num(integrand)) * (t[1] - t[0]))
    est = dv.js_monte_carlo(p, q, n=20000, generator=_gen(1))
    assert abs(float(est.value) - exact) < 4 * float(est.stderr) and float(est.stderr) < 0.01
    assert 0 < exact < math.log(2)


def test_js_refuses_what_it_cannot_do_exactly():
    with pytest.raises(NotImplementedError, match="use js_monte_carlo"):
        dv.js_divergence(Normal(0.0, 1.0), Normal(1.0, 1.0))
    with pytest.raises(ValueError, match="different supports"):
        dv.js_divergence(Categorical(probs=gm.tensor([0.5, 0.5])), Categorical(probs=gm.tensor([0.2, 0.3, 0.5])))
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        dv.kl_monte_carlo(Normal(0.0, 1.0), Normal(1.0, 1.0), n=1)


def _w1_quantiles(x, y):
    """W1 as the integral over u of |F_x^-1(u) - F_y^-1(u)|: piecewise constant between the
    breakpoints k/n and l/m, so exact as a sum (an independent formula)."""
    x, y = np.sort(x), np.sort(y)
    cuts = np.union1d(np.arange(len(x) + 1) / len(x), np.arange(len(y) + 1) / len(y))
    mid = (cuts[:-1] + cuts[1:]) / 2
    qx = x[np.minimum((mid * len(x)).astype(int), len(x) - 1)]
    qy = y[np.minimum((mid * len(y)).astype(int), len(y) - 1)]
    return float(np.sum(np.abs(qx - qy) * np.diff(cuts)))


def test_wasserstein_1d_is_exact():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=37), rng.gamma(2.0, size=23)
    assert dv.wasserstein_1d(x, y) == pytest.approx(_w1_quantiles(x, y), rel=1e-12)
    z = rng.normal(size=50)
    assert dv.wasserstein_1d(z, z + 0.75) == pytest.approx(0.75)           # a shift moves every point
    assert dv.wasserstein_1d(z, rng.permutation(z)) == 0.0
    assert dv.wasserstein_1d(gm.tensor(x), y[:, None]) == pytest.approx(dv.wasserstein_1d(x, y))


def test_sliced_wasserstein_of_a_shift_and_in_one_dimension():
    rng = np.random.default_rng(1)
    x, d = rng.normal(size=(300, 2)), np.array([3.0, 4.0])
    # every projection moves the points by |theta . d|; over the circle E|cos| = 2 / pi
    sw = dv.sliced_wasserstein(x, x + d, n_projections=4000, generator=_gen(2))
    assert sw == pytest.approx(5.0 * 2 / math.pi, rel=0.03)
    one = rng.normal(size=(40, 1))
    assert dv.sliced_wasserstein(one, one * 2) == pytest.approx(dv.wasserstein_1d(one[:, 0], 2 * one[:, 0]))
    with pytest.raises(ValueError, match="2 and 3 dimensions"):
        dv.sliced_wasserstein(x, rng.normal(size=(5, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        dv.sliced_wasserstein(x, np.full((5, 2), np.nan))


def test_wasserstein_critic_estimates_a_known_distance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(512, 2))
    y = rng.normal(size=(512, 2)) + np.array([2.0, 0.0])   # W1 of the populations: 2
    gm.manual_seed(0)
    w = dv.wasserstein_critic(x, y, steps=200, generator=_gen(3))
    assert 1.6 < w < 2.5
    same = dv.wasserstein_critic(x, rng.normal(size=(512, 2)), steps=100, generator=_gen(4))
    assert same < 0.4
