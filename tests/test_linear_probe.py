"""The linear probe (gmcore.linear_probe): the fit is the L2-regularised multinomial logistic
regression's minimiser (against torch's L-BFGS on the same objective), deterministic, blind to
per-feature scale, and bad input is named."""
import numpy as np
import pytest

from gmcore.linear_probe import LinearProbe, linear_probe_accuracy


def _problem(n=60, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.normal(size=(n, d)) + 1.5 * np.eye(k, d)[y] * rng.uniform(0.5, 2.0, size=(1, d))
    return x * rng.uniform(0.1, 10.0, size=d) + rng.normal(size=d), y


def test_fit_is_the_regularised_minimiser_as_torch_finds_it():
    torch = pytest.importorskip("torch")
    x, y = _problem()
    l2 = 0.05
    probe = LinearProbe.fit(x, y, l2=l2, tol=1e-9)
    assert probe.grad_norm < 1e-9
    xs = torch.tensor((x - x.mean(0)) / x.std(0))
    w = torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, torch.tensor(y)) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    np.testing.assert_allclose(probe.weight, w.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(probe.bias, b.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(probe.logits(x), (xs @ w + b).detach().numpy(), atol=1e-5)


def test_deterministic_and_blind_to_each_features_scale():
    x, y = _problem(seed=1)
    a, b = LinearProbe.fit(x, y), LinearProbe.fit(x, y)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    scaled = x * np.array([1e3, 1e-3, 2.0, 5.0, 1.0]) - 7.0    # standardised away
    np.testing.assert_array_equal(LinearProbe.fit(scaled, y).predict(scaled), a.predict(x))


def test_separable_classes_and_a_constant_feature():
    x, y = _problem(n=90, seed=2)
    x = np.concatenate([x * 0 + np.eye(3, 5)[y] * 5 + 0.01 * x, np.ones((90, 1))], 1)   # last column constant
    assert linear_probe_accuracy(x[:60], y[:60], x[60:], y[60:]) == 1.0
    assert LinearProbe.fit(x, y, num_classes=4).weight.shape == (6, 4)   # a class never seen: still fits


@pytest.mark.parametrize("call, match", [
    (lambda x, y: LinearProbe.fit(x, y[:-1]), r"labels must be \(60,\)"),
    (lambda x, y: LinearProbe.fit(x, y.astype(float)), "integer class labels"),
    (lambda x, y: LinearProbe.fit(x, y, l2=0.0), "l2 must be positive"),
    (lambda x, y: LinearProbe.fit(x * np.nan, y), "non-finite"),
    (lambda x, y: LinearProbe.fit(x[:, 0], y), r"must be \(N, ...\)"),
    (lambda x, y: LinearProbe.fit(x, y, num_classes=2), "every label"),
    (lambda x, y: LinearProbe.fit(x, y).predict(x[:, :3]), "fitted on 5 features, got 3"),
])
def test_bad_input_is_named(call, match):
    x, y = _problem()
    with pytest.raises(ValueError, match=match):
        call(x, y)
