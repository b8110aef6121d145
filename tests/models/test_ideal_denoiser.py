"""The ideal denoiser of a finite data set (gmcore.models.diffusion.ideal_denoiser): its posterior
against a direct NumPy computation of the Gaussian likelihoods, the point-mass case against the
closed-form eps, and SDEdit driven by it returning the data point it started from."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.models.diffusion import samplers
from gmcore.models.diffusion.gaussian_diffusion import GaussianDiffusion
from gmcore.models.diffusion.ideal_denoiser import EmpiricalDenoiser
from gmcore.schedules import NoiseSchedule


def _diffusion():
    return GaussianDiffusion(NoiseSchedule.cosine(50))


def test_posterior_is_the_softmax_of_the_gaussian_log_likelihoods():
    rng = np.random.default_rng(0)
    d = _diffusion()
    points = rng.uniform(-1, 1, (7, 1, 2, 3))
    x_t = rng.standard_normal((5, 1, 2, 3))
    t = np.array([0, 10, 25, 40, 49])
    w = EmpiricalDenoiser(d, gm.tensor(points)).posterior(gm.tensor(x_t), gm.tensor(t)).numpy()

    abar = np.asarray(d.schedule.alphas_cumprod)[t][:, None]
    sq = ((x_t.reshape(5, 1, -1) - np.sqrt(abar)[:, :, None] * points.reshape(1, 7, -1)) ** 2).sum(-1)
    logp = -sq / (2 * (1 - abar))
    expected = np.exp(logp - logp.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(w, expected, rtol=1e-9, atol=1e-12)

    x0 = EmpiricalDenoiser(d, gm.tensor(points)).x0(gm.tensor(x_t), gm.tensor(t)).numpy()
    np.testing.assert_allclose(x0.reshape(5, -1), expected @ points.reshape(7, -1), rtol=1e-9, atol=1e-12)


def test_one_point_gives_the_point_mass_eps():
    d = _diffusion()
    point = gm.tensor([[[[0.25, -0.5], [1.0, 0.0]]]])
    x_t, t = gm.randn(3, 1, 2, 2, dtype="float64"), gm.tensor([1, 20, 49])
    np.testing.assert_allclose(EmpiricalDenoiser(d, point)(x_t, t).numpy(),
                               d.eps_from_x0(x_t, t, point.expand(3, 1, 2, 2)).numpy(), rtol=1e-9, atol=1e-12)


def test_sdedit_with_the_ideal_denoiser_returns_the_point_it_started_from():
    d = _diffusion()
    points = gm.tensor(np.array([[-1, -1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1]], dtype=np.float64)
                       .reshape(3, 1, 2, 2))
    out = samplers.sdedit(d, EmpiricalDenoiser(d, points), points, 0.2, steps=10,
                          generator=gm.Generator().manual_seed(0))
    np.testing.assert_allclose(out.numpy(), points.numpy(), atol=1e-6)


def test_bad_shapes_are_named():
    d = _diffusion()
    with pytest.raises(ValueError, match=r"data must be \(N, \*shape\)"):
        EmpiricalDenoiser(d, gm.zeros(4))
    ideal = EmpiricalDenoiser(d, gm.zeros(2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"x_t must be \(B, 1, 2, 2\), got \(3, 1, 2, 3\)"):
        ideal(gm.zeros(3, 1, 2, 3), gm.tensor([0, 1, 2]))
