"""kl_divergence: analytic forms against float64 sums/formulas and torch; the registry."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.distributions import (Bernoulli, Categorical, Distribution, Logistic, Normal,
                                  kl_divergence, register_kl)
from gmcore.testing import gradcheck


def _t(a, grad=False):
    return gm.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def test_normal_normal():
    m1, s1, m2, s2 = np.array([0.0, 1.0]), np.array([1.0, 0.5]), np.array([2.0, -1.0]), \
        np.array([3.0, 0.2])
    ref = np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
    got = kl_divergence(Normal(_t(m1), _t(s1)), Normal(_t(m2), _t(s2))).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    assert kl_divergence(Normal(_t(m1), _t(s1)), Normal(_t(m1), _t(s1))).numpy().tolist() == \
        [0.0, 0.0]
    mu, sd = _t([0.3, -0.2], grad=True), _t([0.7, 1.3], grad=True)
    assert gradcheck(lambda m, s: kl_divergence(Normal(m, s), Normal(0.0, 1.0)), (mu, sd))


def test_bernoulli_bernoulli():
    p, q = np.array([0.1, 0.5, 0.9, 0.0, 1.0, 0.3]), np.array([0.2, 0.5, 0.4, 0.3, 0.6, 0.0])
    got = kl_divergence(Bernoulli(probs=_t(p)), Bernoulli(probs=_t(q))).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.where(p > 0, p * np.log(p / q), 0) + \
            np.where(p < 1, (1 - p) * np.log((1 - p) / (1 - q)), 0)
    np.testing.assert_allclose(got[:5], ref[:5], rtol=1e-6)
    assert got[5] == np.inf
    lg = _t([-1e4, 0.0, 1e4])
    assert np.isfinite(kl_divergence(Bernoulli(logits=lg), Bernoulli(logits=lg)).numpy()).all()


def test_categorical_categorical():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(5), size=3), rng.dirichlet(np.ones(5), size=3)
    got = kl_divergence(Categorical(probs=_t(p)), Categorical(probs=_t(q))).numpy()
    np.testing.assert_allclose(got, (p * np.log(p / q)).sum(-1), rtol=1e-12)
    z = kl_divergence(Categorical(probs=_t([0.0, 1.0])), Categorical(probs=_t([0.5, 0.5])))
    assert z.item() == pytest.approx(np.log(2))
    inf = kl_divergence(Categorical(probs=_t([0.5, 0.5])), Categorical(probs=_t([0.0, 1.0])))
    assert inf.item() == np.inf
    big = _t([[1e4, -1e4, 0.0]])
    assert np.isfinite(kl_divergence(Categorical(logits=big),
                                     Categorical(logits=_t([[0.0, 0.0, 0.0]]))).numpy()).all()


def test_registry_and_missing_pair():
    with pytest.raises(NotImplementedError, match="Normal.*Logistic"):
        kl_divergence(Normal(0.0, 1.0), Logistic(0.0, 1.0))

    class Sub(Normal):
        pass

    assert kl_divergence(Sub(0.0, 1.0), Normal(1.0, 1.0)).item() == pytest.approx(0.5)

    class Point(Distribution):
        pass

    @register_kl(Point, Point)
    def _kl(p, q):
        return gm.zeros(())

    assert kl_divergence(Point(), Point()).item() == 0.0
    with pytest.raises(TypeError):
        register_kl("Normal", Normal)


def test_against_torch():
    torch = pytest.importorskip("torch")
    td = torch.distributions
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 4, 6))
    ours = kl_divergence(Categorical(logits=_t(a[0])), Categorical(logits=_t(b[0]))).numpy()
    theirs = td.kl_divergence(td.Categorical(logits=torch.tensor(a[0])),
                              td.Categorical(logits=torch.tensor(b[0]))).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    ours = kl_divergence(Bernoulli(logits=_t(a[1])), Bernoulli(logits=_t(b[1]))).numpy()
    theirs = td.kl_divergence(td.Bernoulli(logits=torch.tensor(a[1])),
                              td.Bernoulli(logits=torch.tensor(b[1]))).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    s1, s2 = np.exp(a[1]), np.exp(b[1])
    ours = kl_divergence(Normal(_t(a[0]), _t(s1)), Normal(_t(b[0]), _t(s2))).numpy()
    theirs = td.kl_divergence(td.Normal(torch.tensor(a[0]), torch.tensor(s1)),
                              td.Normal(torch.tensor(b[0]), torch.tensor(s2))).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
