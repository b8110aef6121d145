"""Denoising score matching and the Langevin samplers (gmcore.score.dsm, gmcore.score.langevin):
the loss against a hand computation on a fixed draw, its minimiser on a 1-D Gaussian (the noised
Gaussian's score), Langevin's stationary law on a Gaussian target, and one annealed step (and the
denoising step) against the formula on a fixed noise draw."""
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore.score.dsm import dsm_loss
from gmcore.score.langevin import annealed_langevin, geometric_sigmas, langevin


def _np(t):
    return t.detach().cpu().numpy().astype(np.float64)


# ---- dsm_loss ------------------------------------------------------------------------------------

def _score_net(w):
    """A small nonlinear noise-conditional 'network' with parameters w (2,)."""
    return lambda xt, sigma: gm.tanh(xt * w[0]) * w[1] / sigma.reshape(-1, 1, 1)


@pytest.mark.parametrize("weighting", ["sigma2", "none"])
def test_dsm_loss_equals_hand_computation_on_a_fixed_draw(device, weighting):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2, 3))
    z = rng.normal(size=(5, 2, 3))
    levels = np.array([2.0, 0.7, 0.1])
    idx = np.array([0, 2, 1, 1, 0])
    w = np.array([0.8, -1.3])
    loss = dsm_loss(_score_net(gm.tensor(w, device=device)), gm.tensor(x, device=device), levels,
                    indices=gm.tensor(idx, device=device), noise=gm.tensor(z, device=device),
                    weighting=weighting)
    sig = levels[idx].reshape(-1, 1, 1)
    xt = x + sig * z
    s = np.tanh(xt * w[0]) * w[1] / sig
    target = -(xt - x) / sig ** 2
    lam = sig[:, 0, 0] ** 2 if weighting == "sigma2" else 1.0
    want = np.mean(0.5 * lam * ((s - target) ** 2).sum((1, 2)))   # sum over dims, mean over batch
    np.testing.assert_allclose(float(loss), want, rtol=1e-10)


def test_dsm_loss_generator_draws_the_level_then_the_noise():
    """With a generator the loss draws indices (randint) then z (randn), reproducibly."""
    x = gm.tensor(np.random.default_rng(1).normal(size=(6, 4)))
    levels = [1.0, 0.3, 0.05]
    net = lambda xt, sigma: -xt / (1.0 + sigma.reshape(-1, 1) ** 2)  # noqa: E731
    got = dsm_loss(net, x, levels, generator=gm.Generator().manual_seed(3), reduction="none")
    g = gm.Generator().manual_seed(3)
    idx = gm.randint(0, 3, (6,), generator=g)
    z = gm.randn(6, 4, generator=g, dtype=x.dtype)
    want = dsm_loss(net, x, levels, indices=idx, noise=z, reduction="none")
    assert got.shape == (6,)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_dsm_weightings_differ_by_sigma_squared_and_a_number_is_one_level():
    x, z = gm.randn(7, 3, dtype="float64"), gm.randn(7, 3, dtype="float64")
    net = lambda xt, sigma: xt.sin() - sigma.reshape(-1, 1)  # noqa: E731
    a = dsm_loss(net, x, 0.4, noise=z, weighting="sigma2")
    b = dsm_loss(net, x, 0.4, noise=z, weighting="none")
    np.testing.assert_allclose(float(a), 0.4 ** 2 * float(b), rtol=1e-12)


def test_dsm_minimiser_on_a_1d_gaussian_is_the_noised_gaussians_score():
    """Data N(mu, s0^2); a linear score a_j x + b_j per noise level j. The DSM loss is quadratic in
    (a, b): its gradient at 0 and its (constant) Hessian, both through the engine's autograd, give
    the empirical minimiser exactly; it must be the noised score -(x - mu) / (s0^2 + sigma_j^2),
    i.e. a_j = -1 / (s0^2 + sigma_j^2), b_j = mu / (s0^2 + sigma_j^2), for each level. Tolerance:
    1% relative (the 2 x 100k-sample fit is off by about 0.15%; a wrong target, e.g. a missing
    1/sigma, is off by far more)."""
    mu, s0 = 1.5, 0.5
    levels = np.array([2.0, 0.3])
    n = 200_000
    rng = np.random.default_rng(0)
    x = gm.tensor(rng.normal(mu, s0, size=(n, 1)))
    z = gm.tensor(rng.normal(size=(n, 1)))
    idx = gm.tensor(np.arange(n) % 2)
    onehot = gm.tensor(np.eye(2)[np.arange(n) % 2])      # (n, 2): which level each row has

    def grad_at(theta):
        p = gm.tensor(theta, requires_grad=True)           # [a_0, a_1, b_0, b_1]

        def net(xt, sigma):
            a = (onehot * p[:2].reshape(1, 2)).sum(1, keepdim=True)
            b = (onehot * p[2:].reshape(1, 2)).sum(1, keepdim=True)
            return a * xt + b
        loss = dsm_loss(net, x, levels, indices=idx, noise=z)
        return _np(gm.autograd.grad(loss, p)[0])

    g0 = grad_at(np.zeros(4))
    H = np.stack([grad_at(e) - g0 for e in np.eye(4)], 1)
    theta = -np.linalg.solve(H, g0)
    var = s0 ** 2 + levels ** 2
    np.testing.assert_allclose(theta[:2], -1.0 / var, rtol=0.01)
    np.testing.assert_allclose(theta[2:], mu / var, rtol=0.01)


def test_dsm_loss_gradient_reaches_the_network():
    w = gm.tensor([0.5, 2.0], dtype="float64", requires_grad=True)
    loss = dsm_loss(lambda xt, s: gm.tanh(xt * w[0]) * w[1], gm.randn(4, 3, dtype="float64"), [1.0, 0.1],
                    generator=gm.Generator().manual_seed(0))
    loss.backward()
    assert w.grad is not None and np.all(np.abs(w.grad.numpy()) > 0)


def test_dsm_loss_refuses_bad_arguments():
    x = gm.randn(3, 2)
    net = lambda xt, s: xt  # noqa: E731
    with pytest.raises(ValueError, match="finite and > 0"):
        dsm_loss(net, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="1-D"):
        dsm_loss(net, x, [[1.0]])
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(net, x, 1.0, weighting="sigma")
    with pytest.raises(ValueError, match=r"indices must be in \[0, 1\]"):
        dsm_loss(net, x, [1.0, 0.5], indices=[0, 1, 2])
    with pytest.raises(ValueError, match="shaped like x"):
        dsm_loss(lambda xt, s: xt[:, :1], x, 1.0)
    with pytest.raises(TypeError, match="Tensor"):
        dsm_loss(net, np.zeros((3, 2)), 1.0)
    with pytest.raises(ValueError, match="reduction"):
        dsm_loss(net, x, 1.0, reduction="sum")


# ---- samplers --------------------------------------------------------------------------------------

def test_geometric_sigmas():
    s = geometric_sigmas(50.0, 0.01, 232)
    assert s.shape == (232,) and s[0] == 50.0 and s[-1] == 0.01
    ratios = s[:-1] / s[1:]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        geometric_sigmas(0.1, 1.0, 5)
    with pytest.raises(ValueError, match="n must be"):
        geometric_sigmas(1.0, 0.1, 0)


def test_langevin_samples_a_gaussian_with_the_right_mean_and_variance(device):
    """Target N(mu, diag(v)), score -(x - mu) / v. Unadjusted Langevin with step a has, on a
    Gaussian, the stationary variance v / (1 - a / (4 v)) exactly (an AR(1) recursion), and the
    exact mean. 4000 chains, 400 steps (the start's influence decays to < 1e-4); tolerance: 5
    standard errors (mean: 5 sqrt(var / N); variance: 5 var sqrt(2 / N))."""
    mu = np.array([1.0, -2.0])
    v = np.array([0.25, 1.0])
    a, N = 0.05, 4000
    mu_t, v_t = gm.tensor(mu, device=device), gm.tensor(v, device=device)
    x0 = gm.zeros(N, 2, dtype="float64", device=device)
    seen = []
    x = langevin(lambda x: -(x - mu_t) / v_t, x0, a, 400, generator=gm.Generator(device).manual_seed(0),
                 callback=lambda i, x: seen.append(i))
    assert seen == list(range(1, 401))
    xs = _np(x)
    stat_var = v / (1 - a / (4 * v))
    assert np.all(np.abs(xs.mean(0) - mu) < 5 * np.sqrt(stat_var / N))
    assert np.all(np.abs(xs.var(0) - stat_var) < 5 * stat_var * np.sqrt(2 / N))
    assert not x.requires_grad


def test_one_annealed_step_and_the_denoising_step_equal_the_formula(device):
    """Two levels, one step each, then the denoising step, against Song & Ermon's formulas with the
    same noise draws (the sampler draws one randn per step from the generator)."""
    sigmas = [0.8, 0.2]
    eps = 1e-3
    calls = []

    def score(x, sigma):
        calls.append(_np(sigma))
        return -gm.tanh(x) / sigma.reshape(-1, 1) ** 2

    x0 = gm.tensor(np.random.default_rng(2).normal(size=(3, 4)), device=device)
    g = gm.Generator(device).manual_seed(5)
    out, chain = annealed_langevin(score, x0, sigmas, eps=eps, steps_per_sigma=1, denoise=True,
                                   generator=g, return_chain=True)
    g = gm.Generator(device).manual_seed(5)
    z1 = _np(gm.randn(3, 4, generator=g, dtype="float64", device=device))
    z2 = _np(gm.randn(3, 4, generator=g, dtype="float64", device=device))
    x = _np(x0)
    for sigma, z in zip(sigmas, (z1, z2)):
        alpha = eps * sigma ** 2 / sigmas[-1] ** 2
        x = x + alpha / 2 * (-np.tanh(x) / sigma ** 2) + math.sqrt(alpha) * z
    np.testing.assert_allclose(_np(chain[2]), x, rtol=1e-12, atol=1e-12)
    x = x + sigmas[-1] ** 2 * (-np.tanh(x) / sigmas[-1] ** 2)      # x + sigma_L^2 s(x, sigma_L)
    np.testing.assert_allclose(_np(out), x, rtol=1e-12, atol=1e-12)
    assert len(chain) == 3 and chain[0] is not x0
    assert [c.tolist() for c in calls] == [[0.8] * 3, [0.2] * 3, [0.2] * 3]


def test_annealed_langevin_without_denoise_and_its_progress():
    seen = []
    x0 = gm.zeros(2, 3)
    g = gm.Generator().manual_seed(0)
    a = annealed_langevin(lambda x, s: -x, x0, [1.0, 0.5, 0.25], eps=1e-2, steps_per_sigma=4, denoise=False,
                          generator=g, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 12) for i in range(1, 13)]
    b = annealed_langevin(lambda x, s: -x, x0, [1.0, 0.5, 0.25], eps=1e-2, steps_per_sigma=4, denoise=True,
                          generator=gm.Generator().manual_seed(0))
    np.testing.assert_allclose(b.numpy(), (a - a * 0.25 ** 2).numpy(), rtol=1e-6)


def test_samplers_refuse_bad_arguments():
    x0 = gm.zeros(2, 2)
    with pytest.raises(ValueError, match="step_size"):
        langevin(lambda x: x, x0, 0.0, 3)
    with pytest.raises(ValueError, match="n_steps"):
        langevin(lambda x: x, x0, 0.1, -1)
    with pytest.raises(ValueError, match="sigmas"):
        annealed_langevin(lambda x, s: x, x0, [1.0, -1.0])
    with pytest.raises(ValueError, match="steps_per_sigma"):
        annealed_langevin(lambda x, s: x, x0, [1.0], steps_per_sigma=0)
    with pytest.raises(ValueError, match="shaped like x"):
        annealed_langevin(lambda x, s: s, x0, [1.0], steps_per_sigma=1)
