"""gmcore.schedules: the noise schedules and every derived coefficient, against float64 math."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from gmcore.schedules import ROWS, NoiseSchedule


def _improved_ddpm_betas(alpha_bar, T, max_beta):
    """improved-diffusion's betas_for_alpha_bar, written plainly (a loop, as the paper code)."""
    return np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)])


def test_linear_matches_ddpm():
    s = NoiseSchedule.linear(1000)
    np.testing.assert_array_equal(s.betas, np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(s.alphas_cumprod, np.cumprod(1 - s.betas), rtol=1e-13)
    np.testing.assert_allclose(s.one_minus_alphas_cumprod, 1 - np.cumprod(1 - s.betas), rtol=1e-12)
    assert s.betas.dtype == np.float64 and len(s) == 1000 and "linear" in repr(s)


def test_cosine_matches_nichol_dhariwal():
    T, s_, mb = 500, 0.008, 0.999
    s = NoiseSchedule.cosine(T, s=s_, max_beta=mb)
    ref = _improved_ddpm_betas(lambda u: math.cos((u + s_) / (1 + s_) * math.pi / 2) ** 2, T, mb)
    np.testing.assert_allclose(s.betas, ref, rtol=1e-12, atol=1e-15)
    assert s.betas.max() == mb


def test_sigmoid_follows_chen_2023():
    T, start, end, tau = 300, -3.0, 3.0, 0.7
    s = NoiseSchedule.sigmoid(T, start=start, end=end, tau=tau)

    def v(z):
        return 1 / (1 + math.exp(-z / tau))

    def ab(u):
        return (v(end) - v(start + u * (end - start))) / (v(end) - v(start))

    np.testing.assert_allclose(s.betas, _improved_ddpm_betas(ab, T, 0.999), rtol=1e-10, atol=1e-15)
    unclipped = s.betas < 0.999
    np.testing.assert_allclose(s.alphas_cumprod[unclipped], [ab((i + 1) / T) for i in np.flatnonzero(unclipped)],
                               rtol=1e-9)


@pytest.mark.parametrize("make", [lambda: NoiseSchedule.linear(50, 1e-3, 0.2), lambda: NoiseSchedule.cosine(50),
                                  lambda: NoiseSchedule.sigmoid(50)])
def test_derived_coefficients(make):
    s = make()
    b = s.betas
    acp = np.cumprod(1 - b)
    acp_prev = np.append(1.0, acp[:-1])
    np.testing.assert_allclose(s.alphas_cumprod_prev, acp_prev, rtol=1e-12)
    np.testing.assert_allclose(s.alphas_cumprod_next, np.append(acp[1:], 0.0), rtol=1e-12)
    np.testing.assert_allclose(s.sqrt_alphas_cumprod, np.sqrt(acp), rtol=1e-12)
    np.testing.assert_allclose(s.sqrt_one_minus_alphas_cumprod, np.sqrt(1 - acp), rtol=1e-12)
    np.testing.assert_allclose(s.log_one_minus_alphas_cumprod, np.log(1 - acp), rtol=1e-12)
    np.testing.assert_allclose(s.sqrt_recip_alphas_cumprod, 1 / np.sqrt(acp), rtol=1e-12)
    np.testing.assert_allclose(s.sqrt_recipm1_alphas_cumprod, np.sqrt(1 / acp - 1), rtol=1e-10)
    pv = b * (1 - acp_prev) / (1 - acp)
    np.testing.assert_allclose(s.posterior_variance, pv, rtol=1e-10, atol=1e-300)
    assert s.posterior_variance[0] == 0.0  # exactly: no noise is added at the last step
    np.testing.assert_allclose(s.posterior_log_variance_clipped, np.log(np.append(pv[1], pv[1:])), rtol=1e-10)
    assert np.all(np.isfinite(s.posterior_log_variance_clipped))
    np.testing.assert_allclose(s.posterior_mean_coef1, b * np.sqrt(acp_prev) / (1 - acp), rtol=1e-10)
    np.testing.assert_allclose(s.posterior_mean_coef2, (1 - acp_prev) * np.sqrt(1 - b) / (1 - acp), rtol=1e-10)
    np.testing.assert_allclose(s.fixed_large_log_variance, np.log(np.append(pv[1], b[1:])), rtol=1e-10)


def test_posterior_is_the_gaussian_bayes_posterior():
    """q(x_{t-1} | x_t, x0) from the product of q(x_{t-1} | x0) and q(x_t | x_{t-1}), in float64."""
    s = NoiseSchedule.cosine(40)
    x0, xt = 0.3, -1.2
    for t in (1, 7, 39):
        a_prev, beta = s.alphas_cumprod[t - 1], s.betas[t]
        # prior N(sqrt(a_prev) x0, 1 - a_prev); likelihood of x_t: N(sqrt(1 - beta) x_{t-1}, beta)
        prec = 1 / (1 - a_prev) + (1 - beta) / beta
        mean = (math.sqrt(a_prev) * x0 / (1 - a_prev) + math.sqrt(1 - beta) * xt / beta) / prec
        assert s.posterior_variance[t] == pytest.approx(1 / prec, rel=1e-10)
        got = s.posterior_mean_coef1[t] * x0 + s.posterior_mean_coef2[t] * xt
        assert got == pytest.approx(mean, rel=1e-10)


def test_precision_near_alpha_bar_one():
    # the first steps: 1 - abar ~ 1e-6 keeps full relative precision (expm1 form)
    s = NoiseSchedule.linear(1000, 1e-6, 1e-3)
    exact = -np.expm1(np.cumsum(np.log1p(-s.betas)))
    np.testing.assert_allclose(s.one_minus_alphas_cumprod, exact, rtol=1e-14)
    assert s.one_minus_alphas_cumprod[0] == pytest.approx(1e-6, rel=1e-12)


def test_table_layout_dtype_and_cache():
    s = NoiseSchedule.cosine(20)
    tab64 = s.table()
    assert tab64.shape == (len(ROWS), 20) and tab64.flags.c_contiguous
    for i, name in enumerate(ROWS):
        np.testing.assert_array_equal(tab64[i], getattr(s, name))
    tab32 = s.table(np.float32)
    assert tab32.dtype == np.float32
    np.testing.assert_array_equal(tab32, tab64.astype(np.float32))
    assert s.table(np.float32) is tab32  # cached


@pytest.mark.parametrize("call, match", [
    (lambda: NoiseSchedule.linear(1), "T must be an int >= 2"),
    (lambda: NoiseSchedule.linear(10.0), "T must be an int"),
    (lambda: NoiseSchedule.linear(10, 0.1, 0.01), "beta_start <= beta_end"),
    (lambda: NoiseSchedule.cosine(10, s=-1), "s >= 0"),
    (lambda: NoiseSchedule.sigmoid(10, start=3, end=-3), "start < end"),
    (lambda: NoiseSchedule.sigmoid(10, tau=0), "tau > 0"),
    (lambda: NoiseSchedule([0.1, 0.0, 0.2]), r"betas must be finite and lie in \(0, 1\]"),
    (lambda: NoiseSchedule([0.1, np.nan]), "betas must be finite"),
    (lambda: NoiseSchedule([0.1]), "at least 2 timesteps"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@given(T=st.integers(2, 400), kind=st.sampled_from(["linear", "cosine", "sigmoid"]),
       p=st.floats(0.0, 1.0))
def test_every_schedule_is_finite_and_decreasing(T, kind, p):
    if kind == "linear":
        s = NoiseSchedule.linear(T, 1e-5 + p * 1e-3, 0.02 + p * 0.5)
    elif kind == "cosine":
        s = NoiseSchedule.cosine(T, s=0.001 + p * 0.02, max_beta=0.5 + p * 0.499)
    else:
        s = NoiseSchedule.sigmoid(T, start=-3 - 3 * p, end=3 + p, tau=0.3 + p)
    for name in ROWS:
        assert np.all(np.isfinite(getattr(s, name))), name
    assert np.all(np.diff(s.alphas_cumprod) < 0)
    assert np.all((s.betas > 0) & (s.betas <= 1))
    assert np.all(s.posterior_variance[1:] > 0)
