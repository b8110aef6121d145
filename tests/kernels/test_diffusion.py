"""The diffusion family: every implementation against the float64 reference, the public ops,
gradients (reference autodiff vs finite differences; fused backward vs reference), the
once-differentiable error, t = 0 / eta = 0 / t_prev = -1 semantics, dispatch overrides, and the
reference's formulas against a plain torch transcription of improved DDPM (peer)."""
import importlib
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
import gmcore.functional as F
from gmcore import dispatch
from gmcore.functional._diffusion_reference import REFERENCE_IMPL
from gmcore.schedules import NoiseSchedule
from gmcore.testing import gradcheck

OPS = ("q_sample", "predict_x0", "ddpm_step", "ddim_step", "eps_loss_fwd", "eps_loss_bwd",
       "hybrid_fwd", "hybrid_bwd")


def _cpp_impl():
    _C = pytest.importorskip("gmcore._C", reason="gmcore._C not built")
    if not hasattr(_C, "diffusion_q_sample_cpu"):
        pytest.skip("gmcore._C built without the diffusion family")

    class Impl:
        pass

    impl = Impl()
    for op in OPS:
        setattr(impl, op, getattr(_C, f"diffusion_{op}_cpu"))
    return impl


def _numba_impl():
    pytest.importorskip("numba")
    return importlib.import_module("gmcore.kernels.numba.diffusion")


def _triton_impl():
    pytest.importorskip("triton")
    from gmcore.kernels._launch import interpreting
    if not interpreting():
        pytest.skip("triton runs on NumPy arrays only in the interpreter (TRITON_INTERPRET=1)")
    return importlib.import_module("gmcore.kernels.triton.diffusion")


IMPLS = {"cpp": _cpp_impl, "numba": _numba_impl, "triton": _triton_impl,
         "reference": lambda: REFERENCE_IMPL}
SCHEDULES = {"linear": lambda T: NoiseSchedule.linear(T, 1e-3, 0.1), "cosine": NoiseSchedule.cosine,
             "sigmoid": NoiseSchedule.sigmoid}
# float32 kernels gather float32 coefficients: tolerances relative to (1 + |reference|)
TOL = {np.float64: 1e-11, np.float32: 2e-5}


def _close(got, ref, dtype, what, scale=1.0):
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape} vs {ref.shape}"
    assert np.all(np.isfinite(got)) or not np.all(np.isfinite(ref)), f"{what}: non-finite values"
    err = np.abs(got.astype(np.float64) - ref) / (scale + np.abs(ref))
    assert err.max(initial=0) <= TOL[dtype], f"{what}: worst relative error {err.max():.3g}"


def _case(B, N, T, kind, seed, dtype, edges=True):
    rng = np.random.default_rng(seed)
    s = SCHEDULES[kind](T)
    x0 = rng.uniform(-1, 1, (B, N))
    if edges and N >= 4:  # the decoder's edge bins and data on bin centres
        x0[:, :4] = [-1.0, 1.0, 0.0, 2 / 255 - 1]
    noise = rng.standard_normal((B, N))
    t = rng.integers(0, T, B)
    t[0] = 0  # the t = 0 branches every time
    if B > 1:
        t[1] = T - 1
    tp = np.array([rng.integers(-1, ti + 1) for ti in t])
    mo = rng.standard_normal((B, 2 * N))
    mo[:, N:] = rng.uniform(-1.2, 1.2, (B, N))  # v, a little outside [-1, 1] too
    w = rng.uniform(0.5, 2.0, T)
    g = rng.standard_normal(B)
    arrs = dict(x0=x0, noise=noise, mo=mo, w=w, g=g)
    cast = {k: np.ascontiguousarray(v.astype(dtype)) for k, v in arrs.items()}
    xt64 = REFERENCE_IMPL.q_sample(x0, noise, t, s.table())
    cast["xt"] = xt64.astype(dtype)
    # the float64 oracle sees exactly the values the kernel sees
    ref = {k: v.astype(np.float64) for k, v in cast.items()}
    return s, t.astype(np.int64), tp.astype(np.int64), cast, ref


def _check_impl_against_reference(impl, B, N, T, kind, seed, dtype, eta, clip, vb_weight):
    s, t, tp, a, r = _case(B, N, T, kind, seed, dtype)
    tab, tab64 = s.table(dtype), s.table()
    R = REFERENCE_IMPL
    n = N
    eps, eps64 = np.ascontiguousarray(a["mo"][:, :n]), np.ascontiguousarray(r["mo"][:, :n])
    _close(impl.q_sample(a["x0"], a["noise"], t, tab), R.q_sample(r["x0"], r["noise"], t, tab64), dtype, "q_sample")
    # x0 predictions grow like 1/sqrt(abar) at large t: compare relative to that scale
    sc = float(s.sqrt_recip_alphas_cumprod[t].max())
    _close(impl.predict_x0(a["xt"], eps, t, tab, clip), R.predict_x0(r["xt"], eps64, t, tab64, clip), dtype,
           "predict_x0", scale=sc)
    for code in (0, 1, 2):
        mo, mo64 = (a["mo"], r["mo"]) if code == 2 else (eps, eps64)
        _close(impl.ddpm_step(a["xt"], mo, a["noise"], t, tab, code, clip),
               R.ddpm_step(r["xt"], mo64, r["noise"], t, tab64, code, clip), dtype, f"ddpm_step[{code}]", scale=sc)
    _close(impl.ddim_step(a["xt"], eps, a["noise"], t, tp, tab, eta, clip),
           R.ddim_step(r["xt"], eps64, r["noise"], t, tp, tab64, eta, clip), dtype, "ddim_step", scale=sc)
    _close(impl.eps_loss_fwd(eps, a["noise"], t, a["w"]), R.eps_loss_fwd(eps64, r["noise"], t, r["w"]), dtype,
           "eps_loss_fwd")
    _close(impl.eps_loss_bwd(eps, a["noise"], t, a["w"], a["g"]), R.eps_loss_bwd(eps64, r["noise"], t, r["w"], r["g"]),
           dtype, "eps_loss_bwd")
    args = (a["mo"], a["x0"], a["xt"], a["noise"], t, tab, a["w"], vb_weight)
    args64 = (r["mo"], r["x0"], r["xt"], r["noise"], t, tab64, r["w"], vb_weight)
    _close(impl.hybrid_fwd(*args), R.hybrid_fwd(*args64), dtype, "hybrid_fwd")
    _close(impl.hybrid_bwd(*args, a["g"]), R.hybrid_bwd(*args64, r["g"]), dtype, "hybrid_bwd",
           scale=float(np.abs(R.hybrid_bwd(*args64, r["g"])).max()))


@pytest.mark.parametrize("name", ["cpp", "numba", "triton", "reference"])
@settings(deadline=None)
@given(B=st.integers(1, 5), N=st.integers(1, 70), T=st.integers(2, 60), kind=st.sampled_from(sorted(SCHEDULES)),
       seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       eta=st.sampled_from([0.0, 0.5, 1.0]), clip=st.booleans(), vb_weight=st.sampled_from([1.0, 0.25]))
def test_implementation_matches_reference(name, B, N, T, kind, seed, dtype, eta, clip, vb_weight):
    _check_impl_against_reference(IMPLS[name](), B, N, T, kind, seed, dtype, eta, clip, vb_weight)


@pytest.mark.parametrize("name", ["cpp", "numba", "triton"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_odd_sizes_and_multichunk(name, dtype):
    # N above the CPU chunk (4096) and the Triton block (1024); B odd
    _check_impl_against_reference(IMPLS[name](), 3, 4097 + 341, 1000, "linear", 7, dtype, 1.0, True, 1.0)


@pytest.mark.parametrize("name", ["cpp", "numba", "triton", "reference"])
def test_adversarial_values_stay_finite(name):
    impl = IMPLS[name]()
    s = NoiseSchedule.cosine(100)  # last beta is 0.999: 1/sqrt(abar) is huge there
    B, N = 4, 9
    tab = s.table(np.float32)
    t = np.array([0, 0, 99, 1], np.int64)
    x0 = np.tile(np.array([-1, 1, -0.999, 0.999, 0, 1, -1, 0.5, -0.5], np.float32), (B, 1))
    xt = np.full((B, N), 30.0, np.float32)
    mo = np.concatenate([np.full((B, N), 1e3, np.float32), np.tile(np.float32([-1, 1, 3, -3, 0, 1, -1, 2, -2]), (B, 1))], 1)
    noise = np.full((B, N), np.nan, np.float32)  # never read at t = 0
    out = impl.ddpm_step(xt, mo, noise, t, tab, 2, True)
    assert np.all(np.isfinite(out[:2])) and np.all(np.isnan(out[2:]))
    w = np.ones(100, np.float32)
    noise = np.zeros((B, N), np.float32)
    for f in (impl.hybrid_fwd(mo, x0, xt, noise, t, tab, w, 1.0),
              impl.hybrid_bwd(mo, x0, xt, noise, t, tab, w, 1.0, np.ones(B, np.float32))):
        assert np.all(np.isfinite(f)), f
    # eta = 0 (and the final step) never read the noise
    nan = np.full((B, N), np.nan, np.float32)
    eps = np.ascontiguousarray(mo[:, :N])
    assert np.all(np.isfinite(impl.ddim_step(xt, eps, nan, t, np.array([-1, -1, 50, 0]), tab, 0.0, True)))
    assert np.all(np.isfinite(impl.ddim_step(xt, eps, nan, t, np.full(B, -1), tab, 1.0, True)))


# ---- the public ops ------------------------------------------------------------------------


def _cpu_impl_names():
    names = ["reference"]
    for n in ("cpp", "numba"):
        try:
            IMPLS[n]()
            names.append(n)
        except pytest.skip.Exception:
            pass
    return names


@pytest.mark.parametrize("value, expect", [("reference", "reference"), ("diffusion=numba", "numba"),
                                           ("diffusion=cpp", "cpp"), ("diffusion=reference", "reference"),
                                           ("diffusion=triton", None)])
def test_dispatch_override(kernels_env, value, expect):
    available = _cpu_impl_names()
    if expect is not None and expect not in available:
        pytest.skip(f"{expect} unavailable")
    kernels_env(value)
    # diffusion=triton names a CUDA implementation: the CPU choice stays the default
    want = expect or next(n for n in ("cpp", "numba", "reference") if n in available)
    for op in OPS:
        assert dispatch.choose("diffusion", op, "cpu")[0] == want


def test_dispatch_registration_order(kernels_env):
    kernels_env(None)
    assert dispatch.implementations("diffusion", "cpu") == ["cpp", "numba", "reference"]
    assert dispatch.implementations("diffusion", "cuda") == ["triton", "cuda", "reference"]


def test_dispatch_cuda_without_gpu(kernels_env):
    from gmcore import backend
    if backend.cuda_is_available():
        pytest.skip("a GPU is visible")
    kernels_env("diffusion=cuda")
    with pytest.raises(dispatch.KernelUnavailable, match="diffusion=cuda"):
        dispatch.get("diffusion", "q_sample", "cuda")


def _data(B=3, C=2, H=3, W=2, T=50, seed=0, dtype=gm.float64):
    g = gm.Generator().manual_seed(seed)
    s = NoiseSchedule.cosine(T)
    x0 = gm.rand(B, C, H, W, generator=g, dtype=dtype) * 2 - 1
    noise = gm.randn(B, C, H, W, generator=g, dtype=dtype)
    t = gm.tensor(np.array([0, T - 1, 7][:B]))
    return s, x0, noise, t


@pytest.mark.parametrize("impl", ["reference", "numba", "cpp"])
def test_public_ops_agree_across_implementations(kernels_env, impl):
    if impl not in _cpu_impl_names():
        pytest.skip(f"{impl} unavailable")
    s, x0, noise, t = _data()
    results = {}
    for which in ("reference", impl):
        kernels_env(f"diffusion={which}")
        xt = F.q_sample(x0, t, noise, s)
        mo = gm.cat([noise * 0.9, gm.tanh(noise)], 1)
        results[which] = [xt, F.predict_x0(xt, noise, t, s),
                          F.ddpm_step(xt, noise, t, noise, s, var_type="fixed_large"),
                          F.ddpm_step(xt, mo, t, noise, s, var_type="learned_range", clip_x0=False),
                          F.ddim_step(xt, noise, t, gm.tensor(np.array([-1, 30, 3])), 0.5, noise, s),
                          F.eps_mse_loss(mo[:, :2], noise, t, reduction="none"),
                          F.hybrid_loss(mo, x0, xt, noise, t, s, weights=np.linspace(1, 2, 50), vb_weight=0.05)]
    for a, b in zip(results["reference"], results[impl]):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-10, atol=1e-10)


def test_q_sample_gradcheck_and_double_backward(kernels_env):
    from gmcore.testing import gradgradcheck
    s, x0, noise, t = _data(B=2, C=1, H=2, W=2)
    for which in _cpu_impl_names():  # the fused forward's backward is tensor ops: differentiable
        kernels_env(f"diffusion={which}")
        a = x0.detach().requires_grad_(True)
        b = noise.detach().requires_grad_(True)
        assert gradcheck(lambda u, v: F.q_sample(u, t, v, s) ** 2, (a, b))
        assert gradgradcheck(lambda u, v: F.q_sample(u, t, v, s) ** 2, (a, b))


def test_reference_loss_gradcheck(kernels_env):
    kernels_env("diffusion=reference")
    s, x0, noise, t = _data(B=3, C=1, H=2, W=2, T=20)
    xt = F.q_sample(x0, t, noise, s)
    # vb has a stop-gradient on the mean: finite differences match autodiff w.r.t. v, and
    # w.r.t. eps once vb is weighted out
    eps = noise * 0.5
    v = (gm.zeros_like(noise) + 0.3).requires_grad_(True)
    assert gradcheck(lambda u: F.hybrid_loss(gm.cat([eps, u], 1), x0, xt, noise, t, s, reduction="none"), (v,))
    e = eps.detach().requires_grad_(True)
    assert gradcheck(lambda u: F.hybrid_loss(gm.cat([u, v.detach()], 1), x0, xt, noise, t, s, vb_weight=0.0,
                                             reduction="none"), (e,))
    mo = gm.cat([eps, v.detach()], 1)
    p = noise.detach().requires_grad_(True)
    w = np.linspace(0.5, 2.0, 20)
    assert gradcheck(lambda q: F.eps_mse_loss(q, noise * 0.3, t, weights=w, reduction="none"), (p,))
    # sampling steps support grad through the reference (guidance-style)
    xg = xt.detach().requires_grad_(True)
    assert gradcheck(lambda x: F.ddpm_step(x, mo.detach(), t, noise, s, var_type="learned_range",
                                           clip_x0=False), (xg,))
    assert gradcheck(lambda x: F.ddim_step(x, noise, t, -1, 0.0, None, s, clip_x0=False), (xg,))


def test_hybrid_vb_has_stop_gradient_on_the_mean(kernels_env):
    kernels_env("diffusion=reference")
    s, x0, noise, t = _data(B=3, C=1, H=2, W=2, T=20)
    xt = F.q_sample(x0, t, noise, s)
    mo = gm.cat([noise * 0.5, gm.zeros_like(noise)], 1).requires_grad_(True)
    F.hybrid_loss(mo, x0, xt, noise, t, s, vb_weight=123.0).backward()
    g_hybrid = mo.grad[:, :1].numpy().copy()
    e = mo.detach()[:, :1].requires_grad_(True)
    F.eps_mse_loss(e, noise, t).backward()
    np.testing.assert_allclose(g_hybrid, e.grad.numpy(), rtol=1e-12)  # eps learns from mse only


@pytest.mark.parametrize("impl", ["numba", "cpp"])
@pytest.mark.parametrize("dtype", [gm.float64, gm.float32])
def test_fused_backward_matches_reference(kernels_env, impl, dtype):
    if impl not in _cpu_impl_names():
        pytest.skip(f"{impl} unavailable")
    s, x0, noise, t = _data(B=3, C=2, H=5, W=3, T=60, dtype=dtype)
    xt = F.q_sample(x0, t, noise, s)
    w = np.linspace(0.5, 2.0, 60)
    base = gm.cat([noise * 0.7 + 0.1, gm.tanh(xt)], 1)
    grads = {}
    for which in ("reference", impl):
        kernels_env(f"diffusion={which}")
        mo = base.detach().requires_grad_(True)
        nz = noise.detach().requires_grad_(True)
        (F.hybrid_loss(mo, x0, xt, noise, t, s, weights=w, vb_weight=0.3)
         + 2 * F.eps_mse_loss(mo[:, 2:], nz, t, weights=w, reduction="sum")).backward()
        grads[which] = (mo.grad.numpy(), nz.grad.numpy())
    tol = 1e-10 if dtype == gm.float64 else 2e-5
    for a, b in zip(grads["reference"], grads[impl]):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol * np.abs(a).max())


@pytest.mark.parametrize("impl", ["numba", "cpp"])
def test_fused_loss_is_once_differentiable(kernels_env, impl):
    if impl not in _cpu_impl_names():
        pytest.skip(f"{impl} unavailable")
    kernels_env(f"diffusion={impl}")
    s, x0, noise, t = _data()
    p = (noise * 0.5).requires_grad_(True)
    (g,) = gm.autograd.grad(F.eps_mse_loss(p, noise, t), p, create_graph=True)
    with pytest.raises(RuntimeError, match="EpsMSELossBackward is once-differentiable"):
        g.sum().backward()
    mo = gm.cat([noise, noise * 0], 1).requires_grad_(True)
    xt = F.q_sample(x0, t, noise, s)
    (g,) = gm.autograd.grad(F.hybrid_loss(mo, x0, xt, noise, t, s), mo, create_graph=True)
    with pytest.raises(RuntimeError, match="HybridLossBackward is once-differentiable"):
        g.sum().backward()


def test_reference_double_backward(kernels_env):
    kernels_env("diffusion=reference")
    s, x0, noise, t = _data(B=2, C=1, H=2, W=1, T=10)
    p = (noise * 0.5).requires_grad_(True)
    (g,) = gm.autograd.grad(F.eps_mse_loss(p, noise, t), p, create_graph=True)
    (h,) = gm.autograd.grad(g.sum(), p)
    # loss = mean (p - n)^2 over B * N = 4 elements: d/dp sum(grad) = 2 / 4 everywhere
    np.testing.assert_allclose(h.numpy(), np.full(p.shape, 0.5))


@pytest.mark.parametrize("impl", ["reference", "numba", "cpp"])
def test_sampling_semantics(kernels_env, impl):
    if impl not in _cpu_impl_names():
        pytest.skip(f"{impl} unavailable")
    kernels_env(f"diffusion={impl}")
    s, x0, noise, t = _data(dtype=gm.float32)
    xt = F.q_sample(x0, t, noise, s)
    nan = gm.full(tuple(xt.shape), float("nan"))
    zero = gm.zeros(3, dtype=gm.int64)
    for vt in ("fixed_small", "fixed_large"):  # t = 0: the mean, the noise unread, no NaN
        y = F.ddpm_step(xt, noise, zero, nan, s, var_type=vt)
        assert bool(y.isfinite().all())
        np.testing.assert_allclose(y.numpy(), F.ddpm_step(xt, noise, zero, noise, s, var_type=vt).numpy())
    # eta = 0 is deterministic; t_prev = -1 returns the x0 prediction
    a = F.ddim_step(xt, noise, t, gm.tensor(np.array([-1, 3, 2])), 0.0, None, s)
    b = F.ddim_step(xt, noise, t, gm.tensor(np.array([-1, 3, 2])), 0.0, nan, s)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    last = F.ddim_step(xt, noise, t, -1, 1.0, nan, s, clip_x0=True)
    np.testing.assert_allclose(last.numpy(), F.predict_x0(xt, noise, t, s).numpy(), rtol=1e-6, atol=1e-6)
    assert not a.requires_grad
    # generator-drawn noise is reproducible
    y1 = F.ddpm_step(xt, noise, t, None, s, generator=gm.Generator().manual_seed(3))
    y2 = F.ddpm_step(xt, noise, t, None, s, generator=gm.Generator().manual_seed(3))
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())


def test_ddpm_reverse_of_forward_at_exact_eps():
    # with the true eps and t = 1 -> 0 the fixed_small mean is exactly the posterior mean
    s, x0, noise, _ = _data(T=30)
    t = gm.tensor(np.array([1, 1, 1]))
    xt = F.q_sample(x0, t, noise, s)
    mean = F.ddpm_step(xt, noise, t, gm.zeros_like(noise), s, clip_x0=False)
    expect = s.posterior_mean_coef1[1] * x0.numpy() + s.posterior_mean_coef2[1] * xt.numpy()
    np.testing.assert_allclose(mean.numpy(), expect, rtol=1e-10, atol=1e-12)


def test_float16_runs_the_reference():
    s, x0, noise, t = _data(dtype=gm.float16)
    y = F.q_sample(x0, t, noise, s)
    assert y.dtype == gm.float16 and bool(y.isfinite().all())


@pytest.mark.parametrize("call, err, match", [
    (lambda s, x, n, t: F.q_sample(x, gm.tensor(np.array([0, 50, 1])), n, s), ValueError, r"t must lie in \[0, 49\]"),
    (lambda s, x, n, t: F.q_sample(x, gm.tensor(np.array([0, 1])), n, s), ValueError, r"shape \(3,\)"),
    (lambda s, x, n, t: F.q_sample(x, gm.tensor([0.0, 1.0, 2.0]), n, s), TypeError, "integers"),
    (lambda s, x, n, t: F.q_sample(x, t, n[:, :1], s), ValueError, "noise must have shape"),
    (lambda s, x, n, t: F.q_sample(x, t, n.float(), s), TypeError, "dtype"),
    (lambda s, x, n, t: F.q_sample(x, t, n, "linear"), TypeError, "NoiseSchedule"),
    (lambda s, x, n, t: F.ddpm_step(x, n, t, n, s, var_type="learned"), ValueError, "var_type"),
    (lambda s, x, n, t: F.ddpm_step(x, n, t, n, s, var_type="learned_range"), ValueError, "2C channels"),
    (lambda s, x, n, t: F.ddim_step(x, n, t, gm.tensor(np.array([1, 2, 8])), 0.0, n, s), ValueError,
     "t_prev must not exceed t"),
    (lambda s, x, n, t: F.ddim_step(x, n, t, -2, 0.0, n, s), ValueError, r"\[-1, 49\]"),
    (lambda s, x, n, t: F.ddim_step(x, n, t, -1, -0.5, n, s), ValueError, "eta"),
    (lambda s, x, n, t: F.hybrid_loss(n, x, x, n, t, s), ValueError, "2C channels"),
    (lambda s, x, n, t: F.hybrid_loss(gm.cat([n, n], 1), x, x, n, t, s, weights=np.ones(3)), ValueError,
     "one value per timestep"),
    (lambda s, x, n, t: F.eps_mse_loss(n, n, t, reduction="avg"), ValueError, "reduction"),
])
def test_bad_arguments(call, err, match):
    s, x0, noise, t = _data()
    with pytest.raises(err, match=match):
        call(s, x0, noise, t)


# ---- the reference against a plain torch transcription of improved DDPM (peer) ------------------

def _torch_improved_ddpm_vb(torch, s, x0, xt, eps, v, t):
    """improved-diffusion's _vb_terms_bpd (learned_range, eps prediction), transcribed plainly."""
    def ext(arr):
        return torch.tensor(arr)[t].reshape(-1, *([1] * (x0.ndim - 1)))

    pred_x0 = ext(s.sqrt_recip_alphas_cumprod) * xt - ext(s.sqrt_recipm1_alphas_cumprod) * eps
    mean_p = ext(s.posterior_mean_coef1) * pred_x0 + ext(s.posterior_mean_coef2) * xt
    mean_q = ext(s.posterior_mean_coef1) * x0 + ext(s.posterior_mean_coef2) * xt
    min_log, max_log = ext(s.posterior_log_variance_clipped), ext(np.log(s.betas))
    frac = (v + 1) / 2
    logvar_p = frac * max_log + (1 - frac) * min_log
    kl = 0.5 * (-1.0 + logvar_p - min_log + torch.exp(min_log - logvar_p)
                + (mean_q - mean_p) ** 2 * torch.exp(-logvar_p))
    kl = kl.mean(dim=list(range(1, x0.ndim))) / math.log(2.0)

    def cdf(z):
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))

    log_scales = 0.5 * logvar_p
    centered = x0 - mean_p
    inv = torch.exp(-log_scales)
    cdf_plus, cdf_min = cdf(inv * (centered + 1 / 255)), cdf(inv * (centered - 1 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_1m_cdf_min = torch.log((1 - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(x0 < -0.999, log_cdf_plus, torch.where(
        x0 > 0.999, log_1m_cdf_min, torch.log((cdf_plus - cdf_min).clamp(min=1e-12))))
    nll = -log_probs.mean(dim=list(range(1, x0.ndim))) / math.log(2.0)
    return torch.where(t == 0, nll, kl)


def test_hybrid_matches_torch_improved_ddpm_transcription(kernels_env):
    torch = pytest.importorskip("torch")
    s, x0, noise, t = _data(B=3, C=2, H=4, W=4, T=50)
    xt = F.q_sample(x0, t, noise, s)
    rng = np.random.default_rng(1)
    eps = noise.numpy() + 0.1 * rng.standard_normal(noise.shape)
    v = rng.uniform(-1, 1, noise.shape)
    tt = torch.tensor(t.numpy())
    vb = _torch_improved_ddpm_vb(torch, s, torch.tensor(x0.numpy()), torch.tensor(xt.numpy()),
                                 torch.tensor(eps), torch.tensor(v, requires_grad=True), tt)
    mse = ((torch.tensor(eps) - torch.tensor(noise.numpy())) ** 2).mean(dim=(1, 2, 3))
    expect = (mse + vb).detach().numpy()
    for which in _cpu_impl_names():
        kernels_env(f"diffusion={which}")
        mo = gm.tensor(np.concatenate([eps, v], 1))
        got = F.hybrid_loss(mo, x0, xt, noise, t, s, reduction="none")
        np.testing.assert_allclose(got.numpy(), expect, rtol=1e-9, err_msg=which)
