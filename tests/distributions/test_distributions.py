"""Distributions: float64 formulas, torch.distributions where installed, gradients, sampling."""
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore.distributions import Bernoulli, Categorical, Logistic, Normal
from gmcore.testing import gradcheck

F64 = gm.float64


def _t(a, grad=False):
    return gm.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


# ---- formulas in float64 ------------------------------------------------------------------------

def test_normal_formulas():
    rng = np.random.default_rng(0)
    loc, scale, x = rng.normal(size=(3, 4)), rng.uniform(0.5, 2, size=(4,)), rng.normal(size=(3, 4))
    d = Normal(_t(loc), _t(scale))
    assert d.batch_shape == (3, 4)
    ref = -((x - loc) ** 2) / (2 * scale ** 2) - np.log(scale) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(d.log_prob(_t(x)).numpy(), ref, rtol=1e-13)
    np.testing.assert_allclose(d.entropy().numpy(), np.broadcast_to(
        0.5 * np.log(2 * np.pi * math.e * scale ** 2), (3, 4)), rtol=1e-13)
    np.testing.assert_allclose(d.variance.numpy(), np.broadcast_to(scale ** 2, (3, 4)))
    assert d.stddev is d.scale and d.mean is d.loc
    cdf = d.cdf(_t(loc)).numpy()
    np.testing.assert_allclose(cdf, 0.5, rtol=1e-14)


def test_logistic_formulas():
    rng = np.random.default_rng(1)
    loc, scale = rng.normal(size=5), rng.uniform(0.3, 2, size=5)
    x = np.array([-800.0, -3.0, 0.1, 2.0, 900.0])
    d = Logistic(_t(loc), _t(scale))
    z = (x - loc) / scale
    # log of exp(-z) / (s (1 + exp(-z))^2), written stably for both tails
    ref = -np.abs(z) - 2 * np.log1p(np.exp(-np.abs(z))) - np.log(scale)
    lp = d.log_prob(_t(x)).numpy()
    assert np.isfinite(lp).all()
    np.testing.assert_allclose(lp, ref, rtol=1e-13)
    np.testing.assert_allclose(d.cdf(_t(x)).numpy(), _sigmoid(z), rtol=1e-13)
    p = np.array([1e-9, 0.2, 0.5, 0.7, 1 - 1e-9])
    np.testing.assert_allclose(d.icdf(_t(p)).numpy(), loc + scale * np.log(p / (1 - p)),
                               rtol=1e-9)
    np.testing.assert_allclose(d.cdf(d.icdf(_t(p))).numpy(), p, rtol=1e-9)
    np.testing.assert_allclose(d.entropy().numpy(), np.log(scale) + 2, rtol=1e-14)
    np.testing.assert_allclose(d.variance.numpy(), scale ** 2 * np.pi ** 2 / 3, rtol=1e-14)


def test_bernoulli_formulas_and_extremes():
    logits = np.array([-1e4, -30.0, -1.5, 0.0, 2.0, 40.0, 1e4])
    d = Bernoulli(logits=_t(logits))
    p = _sigmoid(logits)
    for v in (0.0, 1.0):
        lp = d.log_prob(_t(np.full(7, v))).numpy()
        assert np.isfinite(lp).all()
        ref = -np.logaddexp(0, -logits) if v else -np.logaddexp(0, logits)
        np.testing.assert_allclose(lp, ref, rtol=1e-13)
    ent = d.entropy().numpy()
    assert np.isfinite(ent).all()
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_ent = np.nan_to_num(-(p * np.log(p) + (1 - p) * np.log1p(-p)))
    np.testing.assert_allclose(ent, ref_ent, rtol=1e-10, atol=1e-15)
    dp = Bernoulli(probs=_t([0.2, 0.5, 0.9]))
    np.testing.assert_allclose(dp.logits.numpy(), np.log([0.25, 1.0, 9.0]), rtol=1e-13)
    np.testing.assert_allclose(dp.variance.numpy(), [0.16, 0.25, 0.09], rtol=1e-13)
    mode = dp.mode.numpy()
    assert mode[0] == 0 and np.isnan(mode[1]) and mode[2] == 1


def test_categorical_formulas_and_extremes():
    logits = np.array([[0.0, 1e4, -1e4, 3.0], [1.0, 2.0, 3.0, 4.0]])
    d = Categorical(logits=_t(logits))
    assert d.batch_shape == (2,) and d.event_shape == ()
    lse = np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    logp = logits - lse
    v = np.array([[0, 1], [2, 3], [1, 0]])  # shape (3, 2): a sample dim in front
    lp = d.log_prob(gm.tensor(v)).numpy()
    assert np.isfinite(lp).all() and lp.shape == (3, 2)
    np.testing.assert_allclose(lp, logp[np.arange(2), v], rtol=1e-13)
    ent = d.entropy().numpy()
    p = np.exp(logp)
    assert np.isfinite(ent).all()
    np.testing.assert_allclose(ent, -(p * logp).sum(-1), rtol=1e-12, atol=1e-300)
    dp = Categorical(probs=_t([2.0, 1.0, 1.0]))  # unnormalised on purpose
    np.testing.assert_allclose(dp.probs.numpy(), [0.5, 0.25, 0.25])
    assert dp.mode.item() == 0
    assert np.isnan(dp.mean.numpy()).all()
    zero = Categorical(probs=_t([0.0, 1.0]))
    assert zero.entropy().item() == pytest.approx(0.0, abs=1e-15)  # clamped probs, as torch


# ---- gradients ----------------------------------------------------------------------------------

def test_rsample_and_log_prob_gradients():
    g = gm.Generator().manual_seed(3)
    loc, scale = _t([0.3, -1.0, 2.0], grad=True), _t([0.5, 1.5, 0.8], grad=True)

    def normal_rsample(m, s):
        return Normal(m, s).rsample((4,), generator=gm.Generator().manual_seed(3))

    def logistic_rsample(m, s):
        return Logistic(m, s).rsample((4,), generator=gm.Generator().manual_seed(3))

    x = gm.randn(3, generator=g, dtype=F64)
    assert gradcheck(normal_rsample, (loc, scale))
    assert gradcheck(logistic_rsample, (loc, scale))
    assert gradcheck(lambda m, s: Normal(m, s).log_prob(x), (loc, scale))
    assert gradcheck(lambda m, s: Logistic(m, s).log_prob(x), (loc, scale))
    assert gradcheck(lambda m, s: Normal(m, s).entropy(), (loc, scale))
    lg = _t([[0.2, -1.0, 0.5], [1.0, 0.0, -2.0]], grad=True)
    assert gradcheck(lambda t: Bernoulli(logits=t).log_prob(_t([[1, 0, 1], [0, 0, 1]])), (lg,))
    assert gradcheck(lambda t: Bernoulli(logits=t).entropy(), (lg,))
    assert gradcheck(lambda t: Categorical(logits=t).log_prob(gm.tensor([2, 0])), (lg,))
    assert gradcheck(lambda t: Categorical(logits=t).entropy(), (lg,))
    pr = _t([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]], grad=True)
    assert gradcheck(lambda t: Categorical(probs=t).log_prob(gm.tensor([1, 2])), (pr,))


# ---- sampling -----------------------------------------------------------------------------------

def test_sample_shapes_moments_and_seeds():
    n = 20000
    d = Normal(_t([1.0, -2.0]), _t([0.5, 3.0]))
    s = d.sample((n,), generator=gm.Generator().manual_seed(0))
    assert s.shape == (n, 2) and not s.requires_grad
    a = s.numpy()
    # 5 standard errors: a wrong loc/scale (e.g. scale^2 for scale) fails these
    assert np.all(np.abs(a.mean(0) - [1.0, -2.0]) < 5 * np.array([0.5, 3.0]) / math.sqrt(n))
    assert np.all(np.abs(a.std(0) / [0.5, 3.0] - 1) < 0.03)
    again = d.sample((n,), generator=gm.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, again.numpy())

    lo = Logistic(_t(1.0), _t(2.0)).sample((n,), generator=gm.Generator().manual_seed(1)).numpy()
    assert abs(lo.mean() - 1.0) < 5 * 2 * math.pi / math.sqrt(3 * n)
    assert abs(lo.var() / (4 * math.pi ** 2 / 3) - 1) < 0.06
    assert np.isfinite(lo).all()

    b = Bernoulli(probs=_t([0.1, 0.7])).sample((n, 1), generator=gm.Generator().manual_seed(2))
    assert b.shape == (n, 1, 2) and set(np.unique(b.numpy())) <= {0.0, 1.0}
    assert np.all(np.abs(b.numpy().mean((0, 1)) - [0.1, 0.7]) < 0.015)

    p = np.array([[0.1, 0.2, 0.7], [0.5, 0.0, 0.5]])
    c = Categorical(probs=_t(p)).sample((n,), generator=gm.Generator().manual_seed(3))
    assert c.shape == (n, 2) and c.dtype == gm.int64
    freq = np.stack([np.bincount(c.numpy()[:, i], minlength=3) / n for i in range(2)])
    assert np.all(np.abs(freq - p) < 0.015) and freq[1, 1] == 0


def test_sample_uses_default_generator():
    gm.manual_seed(5)
    a = Normal(0.0, 1.0).sample((3,))
    gm.manual_seed(5)
    b = Normal(0.0, 1.0).sample((3,))
    assert a.tolist() == b.tolist() and a.dtype == gm.float32


# ---- validation ---------------------------------------------------------------------------------

def test_validation_errors():
    with pytest.raises(ValueError, match="scale"):
        Normal(0.0, _t([1.0, -1.0]))
    with pytest.raises(ValueError, match="probs"):
        Bernoulli(probs=_t([1.5]))
    with pytest.raises(ValueError, match="not both"):
        Bernoulli(probs=_t([0.5]), logits=_t([0.0]))
    with pytest.raises(ValueError, match="not both"):
        Categorical()
    with pytest.raises(ValueError, match="non-negative"):
        Categorical(probs=_t([0.5, -0.1]))
    with pytest.raises(ValueError, match="support"):
        Bernoulli(probs=_t([0.5])).log_prob(_t([0.5]))
    with pytest.raises(ValueError, match="support"):
        Categorical(logits=_t([0.0, 1.0])).log_prob(gm.tensor([2]))
    with pytest.raises(ValueError, match="broadcastable"):
        Normal(_t([0.0, 1.0]), 1.0).log_prob(_t([0.0, 1.0, 2.0]))
    with pytest.raises(NotImplementedError, match="rsample"):
        Bernoulli(probs=_t([0.5])).rsample()
    # validation off: no check, the math runs
    Normal(0.0, _t([-1.0]), validate_args=False).log_prob(_t([0.0]))


# ---- torch peer ---------------------------------------------------------------------------------

def test_against_torch_distributions():
    torch = pytest.importorskip("torch")
    td = torch.distributions
    rng = np.random.default_rng(7)
    loc, scale, x = rng.normal(size=6), rng.uniform(0.2, 3, size=6), rng.normal(size=(2, 6))
    a, b = Normal(_t(loc), _t(scale)), td.Normal(torch.tensor(loc), torch.tensor(scale))
    np.testing.assert_allclose(a.log_prob(_t(x)).numpy(), b.log_prob(torch.tensor(x)).numpy(),
                               rtol=1e-13)
    np.testing.assert_allclose(a.cdf(_t(x)).numpy(), b.cdf(torch.tensor(x)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(a.entropy().numpy(), b.entropy().numpy(), rtol=1e-13)
    logits = rng.normal(size=(4, 5)) * 3
    v = rng.integers(0, 5, size=(3, 4))
    a, b = Categorical(logits=_t(logits)), td.Categorical(logits=torch.tensor(logits))
    np.testing.assert_allclose(a.log_prob(gm.tensor(v)).numpy(),
                               b.log_prob(torch.tensor(v)).numpy(), rtol=1e-13)
    np.testing.assert_allclose(a.entropy().numpy(), b.entropy().numpy(), rtol=1e-13)
    probs = rng.uniform(0.01, 1, size=(4, 5))
    a, b = Categorical(probs=_t(probs)), td.Categorical(probs=torch.tensor(probs))
    np.testing.assert_allclose(a.logits.numpy(), b.logits.numpy(), rtol=1e-13)
    lb = rng.normal(size=(3, 4)) * 5
    vb = rng.integers(0, 2, size=(3, 4)).astype(np.float64)
    a, b = Bernoulli(logits=_t(lb)), td.Bernoulli(logits=torch.tensor(lb))
    # atol: torch's x*t - softplus form cancels in the tails; ours is the more accurate one
    np.testing.assert_allclose(a.log_prob(_t(vb)).numpy(), b.log_prob(torch.tensor(vb)).numpy(),
                               rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(a.entropy().numpy(), b.entropy().numpy(), rtol=1e-12, atol=1e-14)
    pb = rng.uniform(0, 1, size=5)
    a, b = Bernoulli(probs=_t(pb)), td.Bernoulli(probs=torch.tensor(pb))
    np.testing.assert_allclose(a.logits.numpy(), b.logits.numpy(), rtol=1e-13)
