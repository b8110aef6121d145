"""The diffusion process math and samplers (gmcore/models/diffusion/gaussian_diffusion.py and
samplers.py) with analytic model functions: single steps against their closed forms, the
prediction targets' conversions, oracle samplers for a point-mass data distribution, the
variational bound's pieces, DDIM inversion, the importance sampler's state and the spacings."""
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore.models.diffusion import samplers as S
from gmcore.models.diffusion.gaussian_diffusion import (
    GaussianDiffusion, LossSecondMomentResampler, UniformSampler,
    discretized_gaussian_log_likelihood)
from gmcore.schedules import NoiseSchedule

SHAPE = (3, 2, 3, 3)
F64 = gm.float64


def _sched(T=40):
    return NoiseSchedule.linear(T, 1e-3, 0.3)  # short, and abar_T small


def _x0(seed=0, shape=SHAPE):
    g = np.random.default_rng(seed)
    return gm.tensor(g.uniform(-0.9, 0.9, size=shape), dtype=F64)


def _np(x):
    return np.asarray(x.detach().numpy(), dtype=np.float64)


def _bshape(v):
    return np.asarray(v, dtype=np.float64).reshape(-1, 1, 1, 1)


def _oracle(d, target, learned=False):
    """The exact model of the point mass at ``target``: eps, x0 or v computed from x_t."""
    def fn(x, t):
        eps = d.eps_from_x0(x, t, target)
        pred = {"eps": eps, "x0": target + 0.0 * x, "v": d.v_from(target, eps, t)}[d.predict]
        return gm.cat([pred, gm.zeros(*x.shape, dtype=x.dtype)], 1) if learned else pred
    return fn


def _smooth(x, t):
    """A smooth, x- and t-dependent stand-in network."""
    tt = t.to(x.dtype).reshape(-1, 1, 1, 1)
    return 0.3 * (x * 0.7 + 0.01 * tt).tanh() + 0.05


# ---- spacings and respacing ------------------------------------------------------------------

@pytest.mark.parametrize("T,steps", [(1000, 50), (1000, 3), (1000, 7), (10, 10), (10, 1),
                                     (97, 13), (100, 99)])
def test_spacings_match_their_definitions(T, steps):
    lead = S.spaced_timesteps(T, steps, "leading")
    trail = S.spaced_timesteps(T, steps, "trailing")
    lin = S.spaced_timesteps(T, steps, "linspace")
    assert lead.tolist() == (np.arange(0, steps) * (T // steps)).tolist()
    want = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
    assert trail.tolist() == sorted(want.tolist())
    assert lin.tolist() == np.round(np.linspace(0, T - 1, steps)).astype(np.int64).tolist()
    for ts in (lead, trail, lin):
        assert len(ts) == steps and len(set(ts.tolist())) == steps
        assert ts.dtype == np.int64 and 0 <= ts[0] and ts[-1] <= T - 1
    # the ends: leading starts at 0 and never reaches T - 1 (unless steps == T), trailing always
    # starts from T - 1 (pure noise), linspace has both ends
    assert lead[0] == 0 and trail[-1] == T - 1 and lin[-1] == (T - 1 if steps > 1 else 0)
    assert lin[0] == 0 and trail[0] == round(T / steps) - 1
    assert lead[-1] == (steps - 1) * (T // steps)


def test_spacings_known_values_and_errors():
    assert S.spaced_timesteps(1000, 10, "leading").tolist() == list(range(0, 1000, 100))
    assert S.spaced_timesteps(1000, 10, "trailing").tolist() == list(range(99, 1000, 100))
    assert S.spaced_timesteps(1000, 3, "trailing").tolist() == [332, 666, 999]
    assert S.spaced_timesteps(10, 10, "trailing").tolist() == list(range(10))
    with pytest.raises(ValueError, match="steps"):
        S.spaced_timesteps(10, 11)
    with pytest.raises(ValueError, match="steps"):
        S.spaced_timesteps(10, 0)
    with pytest.raises(ValueError, match="spacing"):
        S.spaced_timesteps(10, 5, "uniform")


def test_respace_keeps_alpha_bars():
    s = _sched(50)
    ts = S.spaced_timesteps(50, 7, "linspace")
    r = S.respace(s, ts)
    np.testing.assert_allclose(r.alphas_cumprod, s.alphas_cumprod[ts], rtol=1e-12)
    assert r.betas[0] == pytest.approx(1 - s.alphas_cumprod[ts[0]], rel=1e-12)
    with pytest.raises(ValueError, match="increasing"):
        S.respace(s, [3, 2])


# ---- conversions and losses ----------------------------------------------------------------------

def test_target_conversions_are_exact():
    d = GaussianDiffusion(_sched())
    x0, eps = _x0(0), _x0(1) * 2
    t = gm.tensor([0, 17, 39])
    x_t = d.q_sample(x0, t, eps)
    v = d.v_from(x0, eps, t)
    a = _bshape(d.schedule.sqrt_alphas_cumprod[[0, 17, 39]])
    s = _bshape(d.schedule.sqrt_one_minus_alphas_cumprod[[0, 17, 39]])
    np.testing.assert_allclose(_np(v), a * _np(eps) - s * _np(x0), atol=1e-14)
    for got, want in [(d.eps_from_x0(x_t, t, x0), eps), (d.x0_from_eps(x_t, t, eps), x0),
                      (d.eps_from_v(x_t, t, v), eps), (d.x0_from_v(x_t, t, v), x0)]:
        np.testing.assert_allclose(_np(got), _np(want), atol=1e-11)
    for predict, pred in [("eps", eps), ("x0", x0), ("v", v)]:
        e, x = GaussianDiffusion(_sched(), predict=predict).eps_and_x0(pred, x_t, t)
        np.testing.assert_allclose(_np(e), _np(eps), atol=1e-11)
        np.testing.assert_allclose(_np(x), _np(x0), atol=1e-11)


@pytest.mark.parametrize("predict", ["eps", "x0", "v"])
def test_l_simple_targets(predict):
    d = GaussianDiffusion(_sched(), predict=predict)
    x0, noise = _x0(2), _x0(3)
    t = gm.tensor([1, 20, 39])
    out = _x0(4).requires_grad_()
    loss, logs = d.training_losses(lambda x, tt: out, x0, t, noise=noise)
    target = {"eps": noise, "x0": x0, "v": d.v_from(x0, noise, t)}[predict]
    want = ((_np(out) - _np(target)) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(_np(loss), want, rtol=1e-12)
    np.testing.assert_allclose(_np(logs["mse"]), want, rtol=1e-12)
    loss.sum().backward()
    np.testing.assert_allclose(_np(out.grad), 2 * (_np(out) - _np(target)) / 18, rtol=1e-10)


def test_model_sees_q_sample_and_timesteps():
    d = GaussianDiffusion(_sched())
    x0, noise, t = _x0(5), _x0(6), gm.tensor([3, 0, 39])
    seen = {}

    def fn(x, tt):
        seen["x"], seen["t"] = x, tt
        return x * 0
    d.training_losses(fn, x0, t, noise=noise)
    np.testing.assert_allclose(_np(seen["x"]), _np(d.q_sample(x0, t, noise)))
    assert seen["t"].tolist() == [3, 0, 39] and seen["t"].dtype == gm.int64


def test_hybrid_loss_eps_matches_tensor_math_and_stops_mean_gradient():
    # eps: the fused hybrid kernel; v: the tensor-math path of the same objective. For t > 0
    # both are KL terms with the same closed form, so the eps path's vb (read from the kernel)
    # must equal the tensor math.
    T = 40
    x0, noise = _x0(7), _x0(8)
    t = gm.tensor([5, 20, 39])
    g = np.random.default_rng(9)
    raw = gm.tensor(g.normal(size=(3, 4, 3, 3)) * 0.5, dtype=F64)
    d_eps = GaussianDiffusion(_sched(T), learn_sigma=True)
    loss_e, logs_e = d_eps.training_losses(lambda x, tt: raw, x0, t, noise=noise)
    x_t = d_eps.q_sample(x0, t, noise)
    _, x0_pred = d_eps.eps_and_x0(raw[:, :2], x_t, t)
    vb = d_eps._vb_nats(x0, x_t, t, x0_pred, raw[:, 2:], 256) / (18 * math.log(2))
    np.testing.assert_allclose(_np(logs_e["vb"]), _np(vb), rtol=1e-6)
    mse = ((_np(raw[:, :2]) - _np(noise)) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(_np(loss_e), mse + 0.001 * T * _np(vb), rtol=1e-8)

    # v prediction with a learned variance: the vb term moves only the variance channels
    d_v = GaussianDiffusion(_sched(T), predict="v", learn_sigma=True)
    out = raw.detach().requires_grad_()
    t = gm.tensor([0, 20, 39])  # the decoder term at t = 0 too
    loss_v, logs_v = d_v.training_losses(lambda x, tt: out, x0, t, noise=noise)
    assert sorted(logs_v) == ["mse", "vb"] and float(logs_v["vb"].min()) > 0
    loss_v.sum().backward()
    target = _np(d_v.v_from(x0, noise, t))
    np.testing.assert_allclose(_np(out.grad)[:, :2], 2 * (_np(raw)[:, :2] - target) / 18,
                               rtol=1e-10)
    assert np.abs(_np(out.grad)[:, 2:]).max() > 0


def test_output_shape_is_checked():
    d = GaussianDiffusion(_sched(), learn_sigma=True)
    with pytest.raises(ValueError, match="learn_sigma"):
        d.training_losses(lambda x, t: x, _x0(0), gm.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="predict"):
        GaussianDiffusion(_sched(), predict="score")
    with pytest.raises(ValueError, match=r"\[0, 39\]"):
        GaussianDiffusion(_sched()).training_losses(lambda x, t: x, _x0(0), gm.tensor([0, 1, 40]))


# ---- single sampler steps against their closed forms ------------------------------------------------

def _first_step(sampler, d, fn, x_T, seed=11, **kw):
    _, chain = sampler(d, fn, x_T=x_T, return_chain=True, clip_x0=False,
                       generator=gm.Generator().manual_seed(seed), **kw)
    return _np(chain[1]), chain


@pytest.mark.parametrize("var", ["fixed_small", "fixed_large", "learned"])
def test_ddpm_step_closed_form(var):
    T = 40
    s = _sched(T)
    d = GaussianDiffusion(s, learn_sigma=var == "learned",
                          fixed_var="fixed_large" if var == "fixed_large" else "fixed_small")
    x = _x0(12) * 2
    eps = _x0(13)
    v = _x0(14)
    out = gm.cat([eps, v], 1) if var == "learned" else eps
    got, _ = _first_step(S.ddpm, d, lambda xx, t: out, x)
    z = _np(gm.randn(*SHAPE, dtype=F64, generator=gm.Generator().manual_seed(11)))
    k = T - 1
    x0 = (_np(x) - math.sqrt(1 - s.alphas_cumprod[k]) * _np(eps)) / math.sqrt(s.alphas_cumprod[k])
    mean = s.posterior_mean_coef1[k] * x0 + s.posterior_mean_coef2[k] * _np(x)
    # the closed forms: mean = (x_t - beta / sqrt(1 - abar) eps) / sqrt(alpha) (Ho et al. eq. 11)
    np.testing.assert_allclose(mean, (_np(x) - s.betas[k] / math.sqrt(1 - s.alphas_cumprod[k])
                                      * _np(eps)) / math.sqrt(s.alphas[k]), atol=1e-12)
    post_var = s.betas[k] * (1 - s.alphas_cumprod[k - 1]) / (1 - s.alphas_cumprod[k])
    if var == "fixed_small":
        logvar = math.log(post_var)
    elif var == "fixed_large":
        logvar = math.log(s.betas[k])
    else:
        frac = (_np(v) + 1) / 2
        logvar = frac * math.log(s.betas[k]) + (1 - frac) * math.log(post_var)
    np.testing.assert_allclose(got, mean + np.exp(0.5 * logvar) * z, atol=1e-10)


def test_ddpm_respaced_uses_new_betas_and_original_timesteps():
    T = 40
    s = _sched(T)
    d = GaussianDiffusion(s)
    seen = []
    eps = _x0(15)

    def fn(x, t):
        seen.append(t.tolist()[0])
        return eps
    x = _x0(16)
    got, chain = _first_step(S.ddpm, d, fn, x, steps=5, spacing="linspace")
    ts = S.spaced_timesteps(T, 5, "linspace")
    assert seen == ts[::-1].tolist() and len(chain) == 6
    r = S.respace(s, ts)
    z = _np(gm.randn(*SHAPE, dtype=F64, generator=gm.Generator().manual_seed(11)))
    a, a_prev = s.alphas_cumprod[ts[-1]], s.alphas_cumprod[ts[-2]]
    beta = 1 - a / a_prev
    mean = (_np(x) - beta / math.sqrt(1 - a) * _np(eps)) / math.sqrt(1 - beta)
    var = beta * (1 - a_prev) / (1 - a)
    assert r.posterior_variance[-1] == pytest.approx(var, rel=1e-12)
    np.testing.assert_allclose(got, mean + math.sqrt(var) * z, atol=1e-10)


@pytest.mark.parametrize("eta", [0.0, 1.0, 0.5])
def test_ddim_step_closed_form(eta):
    T = 40
    s = _sched(T)
    d = GaussianDiffusion(s)
    x, eps = _x0(17) * 2, _x0(18)
    got, _ = _first_step(S.ddim, d, lambda xx, t: eps, x, steps=4, eta=eta)
    t, tp = 39, 29  # trailing: [9, 19, 29, 39]
    a, ap = s.alphas_cumprod[t], s.alphas_cumprod[tp]
    x0 = (_np(x) - math.sqrt(1 - a) * _np(eps)) / math.sqrt(a)
    sigma = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
    want = math.sqrt(ap) * x0 + math.sqrt(1 - ap - sigma ** 2) * _np(eps)
    if eta > 0:
        want = want + sigma * _np(gm.randn(*SHAPE, dtype=F64,
                                           generator=gm.Generator().manual_seed(11)))
    if eta == 1.0:  # eta = 1: the DDPM posterior standard deviation between the two steps
        assert sigma ** 2 == pytest.approx((1 - ap) / (1 - a) * (1 - a / ap))
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_pndm_prk_and_plms_steps_follow_their_formulas():
    T = 60
    s = _sched(T)
    d = GaussianDiffusion(s)
    # eps depends on t only (not on x), so each step's combination of eps values is visible
    base = _x0(19)

    def f(t):
        return np.sin(np.asarray(t, dtype=np.float64) / 7.0) + 0.3

    def fn(x, t):
        return base * gm.tensor(_bshape(f(t.numpy())), dtype=F64)
    x = _x0(20)
    steps = 6
    _, chain = S.pndm(d, fn, x_T=x, steps=steps, spacing="trailing", clip_x0=False,
                      return_chain=True)
    ts = S.spaced_timesteps(T, steps, "trailing")[::-1].tolist() + [-1]

    def phi(xx, e, t, tn):
        a = s.alphas_cumprod[t]
        an = s.alphas_cumprod[tn] if tn >= 0 else 1.0
        return math.sqrt(an) * (xx - math.sqrt(1 - a) * e) / math.sqrt(a) + math.sqrt(1 - an) * e

    b = _np(base)
    for k in range(steps):
        t, tn = ts[k], ts[k + 1]
        if k < 3:  # pseudo Runge-Kutta: (e1 + 2 e2 + 2 e3 + e4) / 6, e2 = e3 at the midpoint
            m = (t + tn) // 2
            e = (f(t) + 4 * f(m) + f(max(tn, 0))) / 6 * b
        else:  # PLMS over the previous steps' e_t
            e = (55 * f(t) - 59 * f(ts[k - 1]) + 37 * f(ts[k - 2]) - 9 * f(ts[k - 3])) / 24 * b
        np.testing.assert_allclose(_np(chain[k + 1]), phi(_np(chain[k]), e, t, tn), atol=1e-10)


# ---- oracle: a point-mass data distribution is recovered by every sampler ---------------------------

@pytest.mark.parametrize("predict", ["eps", "x0", "v"])
@pytest.mark.parametrize("learned", [False, True])
def test_oracle_samplers_return_the_point(predict, learned):
    d = GaussianDiffusion(_sched(40), predict=predict, learn_sigma=learned)
    target = _x0(21)
    fn = _oracle(d, target, learned)
    g = gm.Generator().manual_seed(0)
    runs = [S.ddpm(d, fn, SHAPE, generator=g, dtype=F64),
            S.ddpm(d, fn, SHAPE, steps=8, generator=g, dtype=F64),
            S.ddim(d, fn, SHAPE, steps=8, eta=0.0, generator=g, dtype=F64),
            S.ddim(d, fn, SHAPE, steps=8, eta=1.0, spacing="leading", generator=g, dtype=F64),
            S.pndm(d, fn, SHAPE, steps=8, generator=g, dtype=F64),
            d.sample(fn, SHAPE, "pndm", steps=3, spacing="linspace", generator=g, dtype=F64)]
    for x in runs:
        np.testing.assert_allclose(_np(x), _np(target), atol=1e-9)


def test_oracle_float32_and_progress_and_chain():
    d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-4, 0.1))
    target = _x0(22).to(gm.float32)
    calls = []
    x, chain = S.ddim(d, _oracle(d, target), SHAPE, steps=10, return_chain=True,
                      progress=lambda i, n: calls.append((i, n)),
                      generator=gm.Generator().manual_seed(1))
    assert x.dtype == gm.float32 and len(chain) == 11 and chain[-1] is x
    assert calls == [(i, 10) for i in range(1, 11)]
    np.testing.assert_allclose(_np(x), _np(target), atol=1e-5)


def test_samplers_are_reproducible_with_a_generator():
    d = GaussianDiffusion(_sched(20))
    a = S.ddpm(d, _smooth, SHAPE, generator=gm.Generator().manual_seed(5))
    b = S.ddpm(d, _smooth, SHAPE, generator=gm.Generator().manual_seed(5))
    c = S.ddpm(d, _smooth, SHAPE, generator=gm.Generator().manual_seed(6))
    assert bool((a == b).all()) and not bool((a == c).all())


# ---- classifier guidance ---------------------------------------------------------------------------

def test_classifier_guidance_shifts_eps_and_mean():
    d = GaussianDiffusion(_sched(40))
    grad = _x0(23)
    scale = 2.5
    cond_fn = lambda x, t: grad  # noqa: E731  (a constant grad log p(y | x_t))
    x = _x0(24)
    guided = S.ddim(d, _smooth, x_T=x, steps=1, cond_fn=cond_fn, guidance_scale=scale)
    a_t = math.sqrt(1 - d.schedule.alphas_cumprod[39])
    by_hand = S.ddim(d, lambda xx, t: _smooth(xx, t) - a_t * scale * grad, x_T=x, steps=1)
    np.testing.assert_allclose(_np(guided), _np(by_hand), atol=1e-12)

    # ddpm: mean + scale * sigma_t^2 * grad at the first step (t = T - 1, fixed small)
    _, chain_g = S.ddpm(d, _smooth, x_T=x, cond_fn=cond_fn, guidance_scale=scale,
                        return_chain=True, generator=gm.Generator().manual_seed(3))
    _, chain_u = S.ddpm(d, _smooth, x_T=x, return_chain=True,
                        generator=gm.Generator().manual_seed(3))
    var = d.schedule.posterior_variance[39]
    np.testing.assert_allclose(_np(chain_g[1]) - _np(chain_u[1]), var * scale * _np(grad),
                               atol=1e-12)


def test_cond_fn_can_differentiate_inside_the_no_grad_loop():
    d = GaussianDiffusion(_sched(40))
    target = _x0(34)
    calls = []

    def cond_fn(x, t):  # log p(y | x) = -|x - target|^2 / 2: the gradient is target - x
        calls.append(t.tolist())
        x = x.requires_grad_()
        logp = -((x - target) ** 2).sum() / 2
        return gm.autograd.grad(logp, x)[0]
    x = _x0(35)
    for sampler in (S.ddim, S.pndm, S.ddpm):
        out = sampler(d, lambda xx, t: xx * 0, x_T=x, steps=5, cond_fn=cond_fn,
                      guidance_scale=1.0, generator=gm.Generator().manual_seed(0))
        assert out.shape == SHAPE and not out.requires_grad
    # the classifier sees the original timesteps, also in the respaced ddpm (trailing spacing)
    assert calls[-5:] == [[t] * 3 for t in (39, 31, 23, 15, 7)]


# ---- the variational bound ---------------------------------------------------------------------------

def test_discretized_gaussian_sums_to_one_over_the_levels():
    for levels in (2, 17, 256):
        grid = np.linspace(-1, 1, levels).reshape(levels, 1)
        mean = gm.tensor(np.array([[-0.93, 0.1, 0.55]]), dtype=F64).expand(levels, 3)
        log_scale = gm.tensor(np.array([[-3.0, -1.0, 0.5]]), dtype=F64).expand(levels, 3)
        lp = discretized_gaussian_log_likelihood(gm.tensor(grid, dtype=F64).expand(levels, 3),
                                                 mean, log_scale, levels)
        np.testing.assert_allclose(np.exp(_np(lp)).sum(0), 1.0, atol=1e-9)
    with pytest.raises(ValueError, match="num_levels"):
        discretized_gaussian_log_likelihood(mean, mean, log_scale, 1)


def test_prior_kl_formula():
    d = GaussianDiffusion(_sched(40))
    x0 = _x0(25)
    a = d.schedule.alphas_cumprod[-1]
    want = 0.5 * (a * _np(x0) ** 2 + (1 - a) - np.log(1 - a) - 1).reshape(3, -1).sum(1)
    np.testing.assert_allclose(_np(d.prior_kl(x0)), want, rtol=1e-12)


def test_oracle_bound_is_the_prior_term():
    levels = 17
    d = GaussianDiffusion(_sched(30))
    g = np.random.default_rng(26)
    x0 = gm.tensor(g.integers(0, levels, size=SHAPE) / (levels - 1) * 2 - 1, dtype=F64)
    r = d.nll_bound(_oracle(d, x0), x0, levels, return_terms=True,
                    generator=gm.Generator().manual_seed(0))
    assert r["kl"].shape == (3, 29) and r["timesteps"].tolist() == list(range(1, 30))
    assert float(r["kl"].abs().max()) < 1e-9
    # the decoder at the exact mean x0 with the clipped variance beta~_1: the mass of the bin
    # (+-1/16 around it; one-sided at the edge levels)
    z = (1.0 / (levels - 1)) / math.sqrt(d.schedule.posterior_variance[1])
    inner, edge = math.erf(z / math.sqrt(2)), 0.5 * (1 + math.erf(z / math.sqrt(2)))
    at_edge = np.abs(_np(x0)) == 1
    want = -np.where(at_edge, math.log(edge), math.log(inner)).reshape(3, -1).sum(1)
    np.testing.assert_allclose(_np(r["decoder"]), want, rtol=1e-9)
    np.testing.assert_allclose(_np(r["total"]), _np(r["prior"] + r["decoder"]), atol=1e-9)


def test_bound_pieces_add_up_and_subsample_rescales():
    levels = 5
    d = GaussianDiffusion(_sched(30), learn_sigma=True)
    g = np.random.default_rng(27)
    x0 = gm.tensor(g.integers(0, levels, size=SHAPE) / (levels - 1) * 2 - 1, dtype=F64)

    def fn(x, t):
        return gm.cat([_smooth(x, t), 0.2 * _smooth(x, t).tanh()], 1)
    r = d.nll_bound(fn, x0, levels, return_terms=True, generator=gm.Generator().manual_seed(1))
    np.testing.assert_allclose(_np(r["total"]), _np(r["prior"] + r["decoder"] + r["kl"].sum(1)),
                               rtol=1e-12)
    assert float(r["kl"].min()) >= 0 and float(r["decoder"].min()) > 0
    total = d.nll_bound(fn, x0, levels, generator=gm.Generator().manual_seed(1))
    np.testing.assert_allclose(_np(total), _np(r["total"]), rtol=1e-12)  # same draws
    # an int k: one timestep drawn in each block 1..4, 5..8, ..., 29 (the last block holds one)
    sub = d.nll_bound(fn, x0, levels, timesteps=4, return_terms=True,
                      generator=gm.Generator().manual_seed(2))
    ts = sub["timesteps"]
    assert len(ts) == 8 and all(1 + 4 * j <= t < min(5 + 4 * j, 30) for j, t in enumerate(ts))
    assert sub["weights"].tolist() == [4, 4, 4, 4, 4, 4, 4, 1] and ts[-1] == 29
    np.testing.assert_allclose(_np(sub["total"]), _np(sub["prior"] + sub["decoder"]
                                                      + (sub["kl"] * gm.tensor(sub["weights"])).sum(1)),
                               rtol=1e-12)
    # unbiased: over many draws its mean is the full bound's (a fixed stride would not be)
    short = GaussianDiffusion(_sched(12), learn_sigma=True)
    est = np.array([_np(short.nll_bound(fn, x0, levels, timesteps=4, generator=gm.Generator().manual_seed(i)))
                    for i in range(60)])
    exact = np.array([_np(short.nll_bound(fn, x0, levels, generator=gm.Generator().manual_seed(i)))
                      for i in range(15)])
    err = np.sqrt(est.var(0) / len(est) + exact.var(0) / len(exact))
    assert np.all(np.abs(est.mean(0) - exact.mean(0)) < 4 * err + 1e-9)
    seq = d.nll_bound(fn, x0, levels, timesteps=[3, 9], return_terms=True)
    assert seq["timesteps"].tolist() == [3, 9] and seq["weights"].tolist() == [14.5, 14.5]


def test_vlb_kl_term_matches_closed_form():
    d = GaussianDiffusion(_sched(30))
    x0, noise = _x0(28), _x0(29)
    t = gm.tensor([4, 4, 4])
    got = d.vlb_terms(_smooth, x0, t, noise=noise, clip_x0=False)
    s = d.schedule
    x_t = _np(d.q_sample(x0, t, noise))
    eps = _np(_smooth(gm.tensor(x_t), t))
    x0p = (x_t - math.sqrt(1 - s.alphas_cumprod[4]) * eps) / math.sqrt(s.alphas_cumprod[4])
    mq = s.posterior_mean_coef1[4] * _np(x0) + s.posterior_mean_coef2[4] * x_t
    mp = s.posterior_mean_coef1[4] * x0p + s.posterior_mean_coef2[4] * x_t
    var = s.posterior_variance[4]  # fixed small: the KL is the means' distance only
    want = ((mq - mp) ** 2 / (2 * var)).reshape(3, -1).sum(1)
    np.testing.assert_allclose(_np(got), want, rtol=1e-9)


def test_vlb_terms_of_a_mixed_batch_pick_kl_or_decoder_per_example():
    d = GaussianDiffusion(_sched(30), learn_sigma=True)
    x0 = gm.tensor(np.round((_np(_x0(36)) + 1) * 8) / 8 - 1, dtype=F64)  # on 17 levels
    noise = _x0(37)

    def fn(x, t):
        return gm.cat([_smooth(x, t), 0.3 * _smooth(x, t)], 1)
    mixed = d.vlb_terms(fn, x0, gm.tensor([0, 7, 0]), 17, noise=noise)
    first = d.vlb_terms(fn, x0, 0, 17, noise=noise)
    later = d.vlb_terms(fn, x0, 7, 17, noise=noise)
    np.testing.assert_allclose(_np(mixed), [_np(first)[0], _np(later)[1], _np(first)[2]],
                               rtol=1e-12)
    assert not np.allclose(_np(first), _np(later))


# ---- DDIM inversion ------------------------------------------------------------------------------

def test_ddim_inversion_round_trips():
    d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-4, 0.1))
    target = _x0(30)
    fn = _oracle(d, target)
    xT = S.ddim_invert(d, fn, target, steps=20)
    np.testing.assert_allclose(_np(S.ddim(d, fn, x_T=xT, steps=20)), _np(target), atol=1e-10)
    x0 = _x0(31)
    errs = []
    for steps in (25, 100):
        xT = S.ddim_invert(d, _smooth, x0, steps=steps)
        back = S.ddim(d, _smooth, x_T=xT, steps=steps, clip_x0=False)
        errs.append(float((back - x0).abs().max()))
    assert errs[1] < 0.02 and errs[1] < errs[0] / 3  # first order in the step size
    xT, chain = S.ddim_invert(d, _smooth, x0, steps=25, iterations=4, return_chain=True)
    assert len(chain) == 26
    back = S.ddim(d, _smooth, x_T=xT, steps=25, clip_x0=False)
    np.testing.assert_allclose(_np(back), _np(x0), atol=1e-7)


def test_sdedit_keeps_timesteps_below_strength():
    d = GaussianDiffusion(_sched(40))
    seen = []

    def fn(x, t):
        seen.append(int(t.tolist()[0]))
        return _smooth(x, t)
    out = S.sdedit(d, fn, _x0(32), 0.5, steps=8, generator=gm.Generator().manual_seed(0))
    assert out.shape == SHAPE and seen == [19, 14, 9, 4]
    with pytest.raises(ValueError, match="strength"):
        S.sdedit(d, fn, _x0(32), 1.5)


# ---- timestep samplers ---------------------------------------------------------------------------

def test_uniform_sampler():
    t, w = UniformSampler(10).sample(1000, generator=gm.Generator().manual_seed(0))
    counts = np.bincount(t.numpy(), minlength=10)
    assert counts.min() > 60 and t.numpy().max() == 9 and bool((w == 1).all())


def test_importance_sampler_weights_and_state_round_trip():
    T = 6
    s = LossSecondMomentResampler(T, history=3)
    g = gm.Generator().manual_seed(0)
    assert np.all(s.weights() == 1)  # uniform until every t has its history
    for _ in range(3):
        s.update(gm.tensor(list(range(T))), gm.tensor([1.0, 1.0, 2.0, 2.0, 4.0, 8.0]))
    assert s.warmed_up()
    p = s.weights() / s.weights().sum()
    rms = np.array([1, 1, 2, 2, 4, 8.0])
    np.testing.assert_allclose(p, rms / rms.sum() * 0.999 + 0.001 / T, rtol=1e-12)
    s.update(gm.tensor([5]), gm.tensor([2.0]))  # oldest loss of t = 5 dropped
    assert s.state_dict()["losses"][5].tolist() == [8.0, 8.0, 2.0]
    t, w = s.sample(16, generator=g)
    pw = s.weights() / s.weights().sum()
    np.testing.assert_allclose(w.numpy(), 1 / (T * pw[t.numpy()]), rtol=1e-6)

    clone = LossSecondMomentResampler(T, history=3)
    clone.load_state_dict(s.state_dict())
    g1, g2 = gm.Generator().manual_seed(7), gm.Generator().manual_seed(7)
    a, b = s.sample(32, generator=g1), clone.sample(32, generator=g2)
    assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
    with pytest.raises(ValueError, match="expected"):
        LossSecondMomentResampler(T + 1, history=3).load_state_dict(s.state_dict())


def test_bound_of_the_exact_model_of_a_discrete_mixture_is_near_its_entropy():
    # Data: K equally likely points on the 17-level grid. The exact eps of that distribution is
    # known (the posterior over the points given x_t), so the bound must average to at least
    # -log p(x0) = log K (each point has probability 1/K), and lie close above it.
    rng = np.random.default_rng(33)
    K, D, levels = 4, 6, 17
    pts = rng.integers(0, levels, size=(K, D)) / (levels - 1) * 2 - 1
    mu = gm.tensor(pts.reshape(1, K, 1, D), dtype=F64)
    d = GaussianDiffusion(NoiseSchedule.cosine(200))

    def exact_eps(x, t):
        a = gm.tensor(_bshape(d.schedule.sqrt_alphas_cumprod[t.numpy()]), dtype=F64)
        s = gm.tensor(_bshape(d.schedule.sqrt_one_minus_alphas_cumprod[t.numpy()]), dtype=F64)
        logw = -((x - a * mu) ** 2).sum((2, 3)) / (2 * s.reshape(-1, 1) ** 2)  # (B, K)
        x0 = (logw.softmax(1).reshape(-1, K, 1, 1) * mu).sum(1, keepdim=True)
        return (x - a * x0) / s

    x0 = gm.tensor(np.tile(pts, (32, 1)).reshape(32 * K, 1, 1, D), dtype=F64)
    bound = d.nll_bound(exact_eps, x0, levels, generator=gm.Generator().manual_seed(0)).numpy()
    mean, se = bound.mean(), bound.std() / math.sqrt(bound.size)
    assert mean > math.log(K) - 3 * se
    assert mean < math.log(K) + 0.3
    x = S.ddpm(d, exact_eps, (8, 1, 1, D), steps=50, generator=gm.Generator().manual_seed(1),
               dtype=F64).numpy().reshape(8, D)
    assert np.abs(x[:, None, :] - pts[None]).max(2).min(1).max() < 1e-6  # every sample a point
