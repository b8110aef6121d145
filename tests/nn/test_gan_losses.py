"""GAN losses and penalties (gmcore.nn.gan) against their formulas, hand-derived values and torch."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.nn import gan


def _logits(seed, n=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n) * 3, rng.normal(size=n) * 3


def _softplus(v):
    return np.logaddexp(0.0, v)


@pytest.mark.parametrize("seed", [0, 1])
def test_losses_follow_their_formulas(seed):
    r, f = _logits(seed)
    R, Fk = gm.tensor(r), gm.tensor(f)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    expect_d = {
        "minimax": np.mean(-np.log(sig(r))) + np.mean(-np.log(1 - sig(f))),
        "nonsaturating": np.mean(-np.log(sig(r))) + np.mean(-np.log(1 - sig(f))),
        "wasserstein": f.mean() - r.mean(),
        "least_squares": 0.5 * np.mean((r - 1) ** 2) + 0.5 * np.mean(f ** 2),
        "hinge": np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f)),
    }
    expect_g = {"minimax": np.mean(np.log(1 - sig(f))), "nonsaturating": np.mean(-np.log(sig(f))),
                "wasserstein": -f.mean(), "least_squares": 0.5 * np.mean((f - 1) ** 2), "hinge": -f.mean()}
    for kind in gan.KINDS:
        assert gan.discriminator_loss(R, Fk, kind).item() == pytest.approx(expect_d[kind], rel=1e-12)
        assert gan.generator_loss(Fk, kind).item() == pytest.approx(expect_g[kind], rel=1e-12)


def test_probabilistic_losses_stay_finite_where_the_sigmoid_saturates():
    real, fake = gm.tensor([-800.0, 50.0]), gm.tensor([900.0, -40.0])
    for kind in ("minimax", "nonsaturating"):
        d = gan.discriminator_loss(real, fake, kind).item()
        assert d == pytest.approx((800 + _softplus(-50)) / 2 + (900 + _softplus(-40)) / 2)
    assert gan.generator_loss(fake, "nonsaturating").item() == pytest.approx((_softplus(-900) + 40) / 2)


def test_one_sided_label_smoothing():
    r, f = _logits(3)
    d = gan.discriminator_loss(gm.tensor(r), gm.tensor(f), "nonsaturating", real_label=0.9).item()
    bce_real = np.mean(0.9 * _softplus(-r) + 0.1 * _softplus(r))
    assert d == pytest.approx(bce_real + np.mean(_softplus(f)), rel=1e-12)
    with pytest.raises(ValueError, match="not to 'hinge'"):
        gan.discriminator_loss(gm.tensor(r), gm.tensor(f), "hinge", real_label=0.9)
    with pytest.raises(ValueError, match="unknown GAN loss 'bce'"):
        gan.generator_loss(gm.tensor(f), "bce")


def test_gradient_penalty_of_a_linear_critic_and_its_gradient():
    # critic(x) = w . x has gradient w everywhere: the penalty is (|w| - 1)^2 whatever the
    # interpolation, and its gradient in w is 2 (|w| - 1) w / |w| (through the double backward)
    critic = gm.nn.Linear(4, 1, bias=False).double()
    w = np.array([[0.5, -2.0, 1.0, 3.0]])
    critic.weight.data[...] = w
    gp = gan.gradient_penalty(critic, gm.randn(5, 4, dtype=gm.float64), gm.randn(5, 4, dtype=gm.float64))
    norm = np.linalg.norm(w)
    assert gp.item() == pytest.approx((norm - 1) ** 2, rel=1e-9)
    gp.backward()
    np.testing.assert_allclose(critic.weight.grad.numpy(), 2 * (norm - 1) * w / norm, rtol=1e-9)


def test_gradient_penalty_interpolates_per_example():
    # critic(x) = |x|^2 / 2 per example: its gradient is x_hat itself, so the penalty shows
    # the interpolation points; eps must be one number per example, the same for every pixel
    seen = {}

    def critic(x):
        seen["x_hat"] = x.detach().numpy().copy()
        return 0.5 * (x ** 2).reshape(x.shape[0], -1).sum(1)

    real, fake = gm.randn(6, 2, 3, 3, dtype=gm.float64), gm.randn(6, 2, 3, 3, dtype=gm.float64)
    gp = gan.gradient_penalty(critic, real, fake, generator=gm.Generator().manual_seed(5))
    ratio = (seen["x_hat"] - fake.numpy()) / (real.numpy() - fake.numpy())
    eps = ratio.reshape(6, -1)
    np.testing.assert_allclose(eps, eps[:, :1].repeat(eps.shape[1], 1), rtol=1e-9)
    assert ((eps > 0) & (eps < 1)).all() and len(np.unique(eps[:, 0].round(9))) == 6
    norms = np.linalg.norm(seen["x_hat"].reshape(6, -1), axis=1)
    assert gp.item() == pytest.approx(np.mean((norms - 1) ** 2), rel=1e-9)
    with pytest.raises(ValueError, match="one shape"):
        gan.gradient_penalty(critic, real, fake[:3])


def test_r1_penalty_and_weight_clipping():
    x = gm.randn(5, 3, dtype=gm.float64)
    r1 = gan.r1_penalty(lambda v: 0.5 * (v ** 2).sum(1), x)       # gradient x: 0.5 mean |x|^2
    assert r1.item() == pytest.approx(0.5 * np.mean((x.numpy() ** 2).sum(1)), rel=1e-12)
    net = gm.nn.Linear(3, 2)
    net.weight.data[...] = [[0.5, -0.02, 0.0], [-1.0, 0.01, 2.0]]
    gan.clip_weights_(net, 0.01)
    np.testing.assert_array_equal(net.weight.detach().numpy(),
                                  np.float32([[0.01, -0.01, 0.0], [-0.01, 0.01, 0.01]]))
    assert np.abs(net.bias.detach().numpy()).max() <= 0.01
    with pytest.raises(ValueError, match="clip must be positive"):
        gan.clip_weights_(net, 0.0)


def test_gradient_penalty_matches_torch_on_an_mlp_critic():
    torch = pytest.importorskip("torch")
    gm.manual_seed(0)
    critic = gm.nn.Sequential(gm.nn.Linear(3, 8), gm.nn.Tanh(), gm.nn.Linear(8, 1)).double()
    tcritic = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    with torch.no_grad():
        for p, q in zip(critic.parameters(), tcritic.parameters()):
            q.copy_(torch.from_numpy(p.detach().numpy()))
    real, fake = gm.randn(4, 3, dtype=gm.float64), gm.randn(4, 3, dtype=gm.float64)
    gp = gan.gradient_penalty(critic, real, fake, generator=gm.Generator().manual_seed(1))
    gp.backward()
    eps = gm.rand(4, 1, generator=gm.Generator().manual_seed(1), dtype=gm.float64).numpy()
    x_hat = torch.from_numpy(eps * real.numpy() + (1 - eps) * fake.numpy()).requires_grad_(True)
    (g,) = torch.autograd.grad(tcritic(x_hat).sum(), x_hat, create_graph=True)
    tgp = ((((g ** 2).sum(1) + 1e-12).sqrt() - 1) ** 2).mean()
    tgp.backward()
    assert gp.item() == pytest.approx(tgp.item(), rel=1e-12)
    grads = [(p.grad, q.grad) for p, q in zip(critic.parameters(), tcritic.parameters())]
    # the last bias moves no input gradient: neither library gives it one
    assert [g is None for g, _ in grads] == [h is None for _, h in grads] == [False, False, False, True]
    for g, h in grads[:3]:
        np.testing.assert_allclose(g.numpy(), h.numpy(), rtol=1e-10, atol=1e-14)


# ---- Improved techniques (Salimans et al. 2016) -----------------------------------------------

def test_feature_matching_loss_is_the_squared_distance_of_the_means():
    real, fake = gm.randn(6, 4, dtype=gm.float64), gm.randn(5, 4, dtype=gm.float64, requires_grad=True)
    loss = gan.feature_matching_loss(real, fake)
    expect = ((real.numpy().mean(0) - fake.detach().numpy().mean(0)) ** 2).sum()
    assert loss.item() == pytest.approx(expect, rel=1e-12)
    loss.backward()      # d/dfake_i = -2 (mean_r - mean_f) / n_fake, the data side gets none
    np.testing.assert_allclose(fake.grad.numpy(),
                               np.tile(-2 * (real.numpy().mean(0) - fake.detach().numpy().mean(0)) / 5, (5, 1)),
                               rtol=1e-10)


def test_minibatch_discrimination_counts_close_neighbours():
    layer = gan.MinibatchDiscrimination(3, kernels=2, kernel_dim=2).double()
    f = gm.randn(4, 3, dtype=gm.float64)
    out = layer(f).detach().numpy()
    m = (f.numpy() @ layer.T.detach().numpy()).reshape(4, 2, 2)
    o = np.exp(-np.abs(m[:, None] - m[None]).sum(3)).sum(1) - 1.0
    np.testing.assert_allclose(out, np.concatenate([f.numpy(), o], 1), rtol=1e-12)
    same = layer(gm.ones(5, 3, dtype=gm.float64)).detach().numpy()[:, 3:]
    np.testing.assert_allclose(same, 4.0)        # a collapsed batch: every other example is "close"


def test_historical_average_penalty_and_update():
    net = gm.nn.Linear(2, 1).double()
    hist = gan.HistoricalAverage(net)
    seen = [np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])]
    for v in (1.0, -2.0):
        for p in net.parameters():
            p.data[...] = v
        hist.update(net)
        seen.append(np.concatenate([p.detach().numpy().ravel() for p in net.parameters()]))
    mean = np.mean(seen, 0)
    now = seen[-1]
    assert hist.penalty(net).item() == pytest.approx(((now - mean) ** 2).sum(), rel=1e-12)
    assert float(hist.count.data) == 3.0
    assert "count" in dict(hist.named_buffers())      # the average is checkpointed state


def test_virtual_batch_norm_uses_the_reference_batch_and_the_example_alone():
    vbn = gan.VirtualBatchNorm2d(2, reference_size=3).double()
    x = gm.randn(7, 2, 2, 2, dtype=gm.float64)
    out = vbn(x).detach().numpy()
    a = x.numpy()
    ref = a[:3]
    for i in range(7):
        vals = np.concatenate([ref.transpose(1, 0, 2, 3).reshape(2, -1), a[i].reshape(2, -1)], 1)
        mean, var = vals.mean(1), vals.var(1)
        np.testing.assert_allclose(out[i], (a[i] - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5),
                                   rtol=1e-10)
    # an example's output does not depend on the other examples of its batch
    other = gm.tensor(np.concatenate([a[:4], np.random.default_rng(0).normal(size=(5, 2, 2, 2))]))
    np.testing.assert_allclose(vbn(other).detach().numpy()[3], out[3], rtol=1e-12)
    with pytest.raises(ValueError, match="reference rows first"):
        vbn(x[:3])
