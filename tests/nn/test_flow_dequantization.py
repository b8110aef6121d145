"""Variational dequantization (Flow++): q(u | x) is a normalised density on the unit cube, its
sampler and its ``log_prob`` agree, its log-density is the change of variables of the sampler,
and it starts as uniform noise."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.nn.flows import VariationalDequantizer
from flow_checks import jacobian_logdets, perturb


def _randomized(shape, scale=0.3, seed=0, **kw):
    """A dequantizer whose couplings are not the identity (their last layers start at zero)."""
    gm.manual_seed(seed)
    return perturb(VariationalDequantizer(shape, **kw), scale, seed)


def _images(n, shape, levels=17, seed=0):
    rng = np.random.default_rng(seed)
    return gm.tensor(rng.integers(0, levels, size=(n, *shape)) / (levels - 1), dtype=gm.float32)


def test_starts_as_uniform_noise():
    deq = VariationalDequantizer((1, 4, 4), hidden=8, couplings=3)
    x = _images(5, (1, 4, 4))
    with gm.no_grad():
        u, log_q = deq(x, generator=gm.Generator().manual_seed(7))
    v = gm.rand(5, 1, 4, 4, generator=gm.Generator().manual_seed(7))
    # identity couplings: u is the uniform draw itself (up to the 1e-6 edge guard), log q = 0
    np.testing.assert_allclose(u.numpy(), v.numpy(), atol=3e-6)
    np.testing.assert_allclose(log_q.numpy(), 0.0, atol=1e-4)


def test_sampler_and_log_prob_agree_and_u_is_inside_the_cube():
    deq = _randomized((2, 3, 4), hidden=6, couplings=3)
    x = _images(6, (2, 3, 4))
    with gm.no_grad():
        u, log_q = deq(x, generator=gm.Generator().manual_seed(1))
        log_q_given = deq.log_prob(u, x)
    assert u.shape == x.shape and log_q.shape == (6,)
    assert float(u.min()) > 0 and float(u.max()) < 1
    assert float(log_q.abs().max()) > 0.5             # a real departure from uniform
    np.testing.assert_allclose(log_q_given.numpy(), log_q.numpy(), atol=2e-3)


def test_log_q_is_the_change_of_variables_of_the_sampler():
    """log q(u) = -log|det du/dv| for u = sampler(v), v the uniform draw: checked against the
    autodiff Jacobian of v -> u in float64."""
    deq = _randomized((1, 2, 2), hidden=5, couplings=2).double()
    x = _images(3, (1, 2, 2)).double()
    v = gm.rand(3, 1, 2, 2, generator=gm.Generator().manual_seed(2), dtype=gm.float64)

    class Sampler(gm.nn.Module):      # the map v -> u for fixed images, in flow form
        def forward(self, v, context=None):
            eps = v.log() - (1 - v).log()
            h, _ = deq.flow(eps, deq.features(context - 0.5))
            return h.sigmoid(), None

    expected = -jacobian_logdets(Sampler(), v, x)
    with gm.no_grad():
        u, _ = Sampler()(v, x)
        got = deq.log_prob(u, x)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-8, rtol=1e-7)


def test_q_integrates_to_one_over_the_unit_square():
    """Midpoint rule in logit coordinates (u = sigmoid(h), du = sigmoid'(h) dh), which resolves
    the mass q puts near the cube's faces."""
    deq = _randomized((1, 1, 2), scale=0.3, hidden=6, couplings=4).double()
    n, half = 400, 20.0
    g = -half + (np.arange(n) + 0.5) * (2 * half / n)
    hh = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 1, 1, 2)
    uu = 1 / (1 + np.exp(-hh))
    log_du = np.log(uu * (1 - uu)).reshape(len(uu), -1).sum(1)
    for level in ([0, 16], [9, 3]):
        x = gm.tensor(np.broadcast_to(np.array(level, float) / 16, uu.shape).copy())
        with gm.no_grad():
            log_q = deq.log_prob(gm.tensor(uu), x).numpy()
        assert np.exp(log_q).max() > 1.5                  # not the uniform density
        mass = np.exp(log_q + log_du).sum() * (2 * half / n) ** 2
        assert mass == pytest.approx(1.0, abs=1e-3)


def test_bad_shapes_are_named():
    deq = VariationalDequantizer((1, 4, 4), hidden=4, couplings=1)
    with pytest.raises(ValueError, match=r"got images of shape \(2, 1, 4, 5\)"):
        deq(gm.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="noise of shape"):
        deq.log_prob(gm.full((2, 1, 4, 4), 0.5), gm.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"shape must be \(C, H, W\)"):
        VariationalDequantizer((16,))
