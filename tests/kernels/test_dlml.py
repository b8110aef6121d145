"""dlml: the discretized logistic mixture likelihood, its kernels, the op, sampling, dispatch."""
import importlib.util
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.functional._dlml_reference import (dlml_forward_reference, layout,
                                               params_per_component, tail_threshold)
from gmcore.testing import gradcheck, gradgradcheck

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
HAVE_TRITON = importlib.util.find_spec("triton") is not None


def _cpp():
    _C = pytest.importorskip("gmcore._C", reason="gmcore._C not built")
    if not hasattr(_C, "dlml_forward_cpu"):
        pytest.skip("gmcore._C built without dlml")
    return _C.dlml_forward_cpu


def _numba():
    if not HAVE_NUMBA:
        pytest.skip("numba not installed")
    from gmcore.kernels.numba.dlml import dlml_forward
    return dlml_forward


def _triton():
    if not HAVE_TRITON:
        pytest.skip("triton not installed")
    from gmcore.kernels._launch import interpreting
    if not interpreting():
        pytest.skip("triton runs on NumPy arrays only in the interpreter")
    from gmcore.kernels.triton.dlml import dlml_forward
    return dlml_forward


IMPLS = {"cpp": _cpp, "numba": _numba, "triton": _triton}
# float32 kernels vs the float64 reference: absolute error, scaled by magnitudes below
TOL = {np.float32: 3e-5, np.float64: 1e-10}


def _grid(rng, shape, nb, edges=0.2):
    """Data on the bin grid, with a good share of both edge bins."""
    i = rng.integers(0, nb, size=shape)
    r = rng.random(shape)
    i = np.where(r < edges / 2, 0, np.where(r > 1 - edges / 2, nb - 1, i))
    return -1.0 + 2.0 * i / (nb - 1)


def _make(rng, B, C, K, N, nb, scale=1.0):
    x = _grid(rng, (B, C, N), nb)
    p = rng.standard_normal((B, K * params_per_component(C), N)) * scale
    return x, p


def _compare(impl, x, p, nb, dtype):
    n_ref, g_ref = dlml_forward_reference(x.astype(np.float64), p.astype(np.float64), nb, True)
    x_, p_ = x.astype(dtype), p.astype(dtype)
    nll, grad = impl(x_, p_, nb, True)
    nll_only, none = impl(x_, p_, nb, False)
    assert none is None and nll.dtype == dtype and grad.dtype == dtype
    assert nll.shape == n_ref.shape and grad.shape == p.shape
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(nll, nll_only)
    tol = TOL[dtype]
    # float32 rounding of inputs moves large terms: scale atol with the terms' magnitude
    np.testing.assert_allclose(nll, n_ref, rtol=tol, atol=tol * max(1.0, np.abs(n_ref).max()))
    np.testing.assert_allclose(grad, g_ref, rtol=tol, atol=tol * max(1.0, np.abs(g_ref).max()) * 10)


# ---- the reference is PixelCNN++ ----------------------------------------------------------------

def _pixelcnnpp_numpy(x, l, nb=256):
    """The original openai/pixel-cnn loss (float64, channels-last), per example NLL."""
    B, C, H, W = x.shape
    x = x.transpose(0, 2, 3, 1)
    l = l.transpose(0, 2, 3, 1)
    K = l.shape[-1] // 10
    logits = l[..., :K]
    r = l[..., K:].reshape(B, H, W, 3, 3 * K)
    means, ls, co = r[..., :K], np.maximum(r[..., K:2 * K], -7.0), np.tanh(r[..., 2 * K:])
    xx = x[..., None] + np.zeros(K)
    m2 = means[..., 1, :] + co[..., 0, :] * xx[..., 0, :]
    m3 = means[..., 2, :] + co[..., 1, :] * xx[..., 0, :] + co[..., 2, :] * xx[..., 1, :]
    means = np.stack([means[..., 0, :], m2, m3], axis=3)
    cen = xx - means
    inv = np.exp(-ls)
    plus, mn, mid = inv * (cen + 1 / 255), inv * (cen - 1 / 255), inv * cen
    sig = lambda z: 0.5 * (1 + np.tanh(z / 2))  # noqa: E731  (no overflow warnings)
    sp = lambda z: np.logaddexp(0, z)  # noqa: E731
    delta = sig(plus) - sig(mn)
    lp = np.where(xx < -0.999, plus - sp(plus), np.where(
        xx > 0.999, -sp(mn), np.where(delta > 1e-5, np.log(np.maximum(delta, 1e-12)),
                                      mid - ls - 2 * sp(mid) - np.log(127.5))))
    lp = lp.sum(3) + logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    return -np.logaddexp.reduce(lp, axis=-1).sum((1, 2))


def test_reference_reproduces_pixelcnnpp(kernels_env):
    kernels_env("dlml=reference")
    rng = np.random.default_rng(0)
    x = _grid(rng, (3, 3, 5, 4), 256)
    p = rng.standard_normal((3, 40, 5, 4)) * 1.5
    p[:, 4:] += np.where(rng.random((3, 36, 5, 4)) < 0.2, -4.0, 0.0)  # sharp scales: tails too
    got = F.discretized_logistic_mixture_nll(gm.tensor(x), gm.tensor(p)).numpy()
    np.testing.assert_allclose(got, _pixelcnnpp_numpy(x, p), rtol=1e-9)


def test_tail_threshold_scales_with_bins():
    assert tail_threshold(256) == pytest.approx(1e-5, rel=1e-15)
    assert tail_threshold(65536) == pytest.approx(1e-5 * 255 / 65535)
    # a typical 16-bit bin (probability ~1e-5 < PixelCNN++'s fixed 1e-5) is computed exactly
    x = np.array([[[0.1]]])
    p = np.array([[[0.0], [0.0], [math.log(0.4)]]])  # one component, mean 0, scale 0.4
    nll, _ = dlml_forward_reference(x, p, 65536, False)
    h = 1 / 65535
    cdf = lambda z: 1 / (1 + math.exp(-z / 0.4))  # noqa: E731
    assert nll[0, 0] == pytest.approx(-math.log(cdf(0.1 + h) - cdf(0.1 - h)), rel=1e-9)


# ---- kernels against the float64 reference ------------------------------------------------------

@pytest.mark.parametrize("name", ["cpp", "numba"])
@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), C=st.sampled_from([1, 3]), K=st.integers(1, 5), N=st.integers(1, 150),
       nb=st.sampled_from([2, 16, 256, 65536]), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.sampled_from([0.3, 1.0, 3.0]), seed=st.integers(0, 2**31 - 1))
def test_cpu_kernels_match_reference(name, B, C, K, N, nb, dtype, scale, seed):
    impl = IMPLS[name]()
    x, p = _make(np.random.default_rng(seed), B, C, K, N, nb, scale)
    _compare(impl, x, p, nb, dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # unselected lanes of tl.where
@settings(max_examples=4, deadline=None)
@given(C=st.sampled_from([1, 3]), K=st.integers(1, 3), N=st.integers(1, 40),
       nb=st.sampled_from([2, 256, 65536]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_triton_matches_reference(C, K, N, nb, dtype, seed):
    impl = _triton()
    x, p = _make(np.random.default_rng(seed), 2, C, K, N, nb)
    _compare(impl, x, p, nb, dtype)


def _extremes(C, nb):
    """Every parameter and data extreme the contract names, position by position."""
    rng = np.random.default_rng(7)
    K, N = 3, 52
    P = K * params_per_component(C)
    means, log_scales, coeffs = layout(C, K)
    ms = np.concatenate([np.arange(o, o + K) for o in means])
    ls = np.concatenate([np.arange(o, o + K) for o in log_scales])
    p = rng.standard_normal((1, P, N))
    x = _grid(rng, (1, C, N), nb, edges=0.6)
    p[0, :K, 0:8] = [[1e4], [-1e4], [0.0]]                      # logits +-1e4
    p[0, :K, 8:12] = 1e4
    p[0, :K, 12:16] = -1e4
    p[0, ls, 16:24] = -7.0                                       # log-scales at the clamp
    p[0, ls, 24:28] = -1e4                                       # far below it
    p[0, ls, 28:32] = 1e4                                        # scale overflows, inv = 0
    p[0, ms, 32:36] = rng.choice([-1e4, 1e4], size=(len(ms), 4))  # far-away means
    for o in coeffs:                                             # saturated coefficients
        p[0, o:o + K, 36:40] = rng.choice([-1e4, 1e4], size=(K, 4))
    p[0, K:, 40:44] = rng.choice([-1e4, 1e4], size=(P - K, 4))   # everything at once
    x[0, :, 44:48] = -1.0                                        # data at both edges
    x[0, :, 48:52] = 1.0
    p[0, ls, 44:52] = -7.0
    return x, p


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", ["reference", "cpp", "numba", "triton"])
@pytest.mark.parametrize("C, nb", [(3, 256), (1, 65536), (1, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extremes_finite(name, C, nb, dtype):
    impl = dlml_forward_reference if name == "reference" else IMPLS[name]()
    x, p = _extremes(C, nb)
    nll, grad = impl(x.astype(dtype), p.astype(dtype), nb, True)
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(grad))
    n_ref, g_ref = dlml_forward_reference(x, p, nb, True)
    # Values reach 1e7 nats here. In float32 a component score of that size is known to a few
    # nats, and so are the responsibilities: compare where the NLL is moderate (values up to
    # ~1e4 still exercise the +-1e4 logits and the clamp), everywhere in float64.
    ok = np.abs(n_ref[0]) < (1e3 if dtype == np.float32 else np.inf)
    tol = TOL[dtype]
    # logits of 1e4 are rounded to 1e-3 in float32: lse(logits) - lse(scores) inherits that
    np.testing.assert_allclose(nll[0, ok], n_ref[0, ok], rtol=tol * 10,
                               atol=tol * (100 if dtype == np.float32 else 1))
    np.testing.assert_allclose(grad[0][:, ok], g_ref[0][:, ok], rtol=tol * 10,
                               atol=tol * np.abs(g_ref[0][:, ok]).max())


@pytest.mark.parametrize("name", ["cpp", "numba"])
def test_cpu_kernels_parallel_path(name):
    """Sizes above the kernels' thresholds for running threads (OpenMP / numba prange)."""
    impl = IMPLS[name]()
    x, p = _make(np.random.default_rng(11), 2, 3, 4, 3001, 256)
    _compare(impl, x, p, 256, np.float32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", ["reference", "cpp", "numba", "triton"])
def test_nan_propagates(name):
    """A NaN parameter poisons its own position only; it never turns into a finite number."""
    impl = dlml_forward_reference if name == "reference" else IMPLS[name]()
    x, p = _make(np.random.default_rng(12), 1, 3, 2, 6, 256)
    p[0, 0, 1] = np.nan    # a logit
    p[0, 2, 3] = np.nan    # a mean
    p[0, 4, 4] = np.nan    # a log-scale
    nll, grad = impl(x.astype(np.float32), p.astype(np.float32), 256, True)
    assert np.isnan(nll[0, [1, 3, 4]]).all() and np.isfinite(nll[0, [0, 2, 5]]).all()
    assert np.isfinite(grad[0][:, [0, 2, 5]]).all()


# ---- the op ----------------------------------------------------------------------------------


def _cpu_impls():
    out = ["reference"]
    if HAVE_NUMBA:
        out.append("numba")
    if importlib.util.find_spec("gmcore._C") is not None:
        out.append("cpp")
    return out


@pytest.mark.parametrize("impl", _cpu_impls())
@pytest.mark.parametrize("shape, P, nb", [((2, 3, 3, 5), 20, 256), ((2, 1, 4, 3), 9, 256),
                                          ((3, 7), 6, 65536)])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_op_forward_backward(kernels_env, impl, shape, P, nb, reduction):
    kernels_env(f"dlml={impl}")
    rng = np.random.default_rng(3)
    C = shape[1] if len(shape) == 4 else 1
    x = _grid(rng, shape, nb)
    pshape = (shape[0], P) + shape[2:] if len(shape) == 4 else (shape[0], P, shape[1])
    p = rng.standard_normal(pshape)
    pt = gm.tensor(p, requires_grad=True)
    out = F.discretized_logistic_mixture_nll(gm.tensor(x), pt, num_bins=nb, reduction=reduction)
    x3 = x.reshape(shape[0], C, -1)
    n_ref, g_ref = dlml_forward_reference(x3, p.reshape(shape[0], P, -1), nb, True)
    per = n_ref.sum(1)
    want = {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    assert out.shape == np.shape(want)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-12)
    w = gm.tensor(rng.standard_normal(out.shape))
    (out * w).sum().backward()
    gw = w.numpy() if reduction == "none" else w.numpy() * (1 / shape[0] if reduction == "mean" else 1)
    g_want = g_ref * np.reshape(gw, (-1, 1, 1) if reduction == "none" else ())
    np.testing.assert_allclose(pt.grad.numpy(), g_want.reshape(pshape), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("impl", _cpu_impls())
def test_op_float32(kernels_env, impl):
    kernels_env(f"dlml={impl}")
    rng = np.random.default_rng(4)
    x, p = _grid(rng, (2, 3, 4, 4), 256), rng.standard_normal((2, 30, 4, 4))
    out = F.discretized_logistic_mixture_nll(gm.tensor(x, dtype=gm.float32), gm.tensor(p, dtype=gm.float32))
    assert out.dtype == gm.float32
    ref = F.discretized_logistic_mixture_nll(gm.tensor(x), gm.tensor(p)).numpy()
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5)


def test_reference_gradcheck_and_gradgradcheck(kernels_env):
    kernels_env("dlml=reference")
    rng = np.random.default_rng(5)
    x = gm.tensor(_grid(rng, (2, 3, 2, 2), 16))
    p = gm.tensor(rng.standard_normal((2, 20, 2, 2)), requires_grad=True)
    fn = lambda q: F.discretized_logistic_mixture_nll(x, q, num_bins=16)  # noqa: E731
    assert gradcheck(fn, [p])
    assert gradgradcheck(fn, [p])


@pytest.mark.parametrize("impl", [i for i in _cpu_impls() if i != "reference"])
def test_fused_is_once_differentiable(kernels_env, impl):
    kernels_env(f"dlml={impl}")
    rng = np.random.default_rng(6)
    p = gm.tensor(rng.standard_normal((1, 9, 5)), requires_grad=True)
    out = F.discretized_logistic_mixture_nll(gm.tensor(_grid(rng, (1, 5), 256)), p, reduction="sum")
    (g,) = gm.autograd.grad(out, [p], create_graph=True)
    with pytest.raises(RuntimeError, match="DiscretizedLogisticMixtureNLL"):
        g.sum().backward()


def test_x_gets_no_gradient(kernels_env):
    kernels_env(None)
    x = gm.tensor(np.full((1, 4), 1 / 255), requires_grad=True)
    p = gm.tensor(np.zeros((1, 6, 4)), requires_grad=True)
    F.discretized_logistic_mixture_nll(x, p, reduction="sum").backward()
    assert x.grad is None and p.grad is not None


@pytest.mark.parametrize("x_shape, p_shape, kw, match", [
    ((2, 2, 3, 3), (2, 12, 3, 3), {}, "1 or 3 channels"),
    ((2, 3, 3, 3), (2, 25, 3, 3), {}, "K\\*10"),
    ((2, 3, 3, 3), (2, 30, 3, 4), {}, "params must be"),
    ((2, 5), (2, 6, 4), {}, "params must be"),
    ((2, 5, 1), (2, 6, 5), {}, "x must be"),
    ((2, 5), (2, 6, 5), {"num_bins": 1}, "num_bins"),
    ((2, 5), (2, 6, 5), {"reduction": "avg"}, "reduction"),
])
def test_op_errors(x_shape, p_shape, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        F.discretized_logistic_mixture_nll(gm.zeros(*x_shape), gm.zeros(*p_shape), **kw)


# ---- data validation (issue 11, item 9) --------------------------------------------------------

@pytest.mark.parametrize("impl", _cpu_impls())
@pytest.mark.parametrize("bad, match", [
    (5.0, r"x must lie in \[-1, 1\].*got values in \[-1, 5\]"),
    (-1.5, r"x must lie in \[-1, 1\].*got values in \[-1.5, 1\]"),
    (1.0 + 1e-4, r"x must lie in \[-1, 1\]"),
    (np.nan, "x contains NaN"),
    (np.inf, r"got values in \[-1, inf\]"),
    (0.5 + 0.3 / 255, "off the grid|grid -1 \\+ 2i"),
])
@pytest.mark.parametrize("shape, P, nb", [((2, 3, 3, 5), 20, 256), ((3, 7), 6, 65536)])
def test_op_refuses_bad_data(kernels_env, impl, bad, match, shape, P, nb):
    """Data out of [-1, 1], NaN or off the bin grid raises in every implementation (before the
    fix x = 5 gave a finite NLL); validate=False skips the check."""
    kernels_env(f"dlml={impl}")
    rng = np.random.default_rng(13)
    x = _grid(rng, shape, nb)
    x.reshape(-1)[[0, -1]] = -1.0, 1.0
    x.reshape(-1)[5] = bad
    pshape = (shape[0], P) + shape[2:] if len(shape) == 4 else (shape[0], P, shape[1])
    p = gm.tensor(rng.standard_normal(pshape), requires_grad=True)
    with pytest.raises(ValueError, match=match) as info:
        F.discretized_logistic_mixture_nll(gm.tensor(x), p, num_bins=nb)
    assert "discretized_logistic_mixture_nll" in str(info.value)
    if np.isfinite(bad):  # the unchecked kernels take such data into a bin: finite, but wrong
        out = F.discretized_logistic_mixture_nll(gm.tensor(x), p, num_bins=nb, validate=False)
        assert np.all(np.isfinite(out.detach().numpy()))


@pytest.mark.parametrize("nb", [2, 17, 256, 65536])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_validation_accepts_grid_data_computed_any_way(nb, dtype):
    """Grid data as the models and loaders compute it, in float32 too, passes the check."""
    i = np.random.default_rng(14).integers(0, nb, size=(2, 3000))
    i[:, :2] = 0, nb - 1
    p = gm.zeros(2, 3, 3000, dtype=gm.float32 if dtype == np.float32 else gm.float64)
    for x in ((i / (nb - 1)).astype(dtype) * 2 - 1,                           # pixelcnn++, VAE
              i.astype(dtype) * dtype(2.0 / (nb - 1)) - dtype(1),             # wavenet
              (-1.0 + 2.0 * i / (nb - 1)).astype(dtype)):
        out = F.discretized_logistic_mixture_nll(gm.tensor(x.astype(dtype)), p, num_bins=nb)
        assert np.all(np.isfinite(out.numpy()))


def test_validation_catches_wrong_level_count():
    """x scaled by 1/256 instead of 1/255 is off the grid of 256 bins by up to half a bin."""
    x = gm.tensor((np.arange(256.0) / 256 * 2 - 1).reshape(1, 256), dtype=gm.float32)
    with pytest.raises(ValueError, match=r"x = 0 is 0.5 of a bin off.*num_bins=256|num_bins=256.*x = 0 is 0.5"):
        F.discretized_logistic_mixture_nll(x, gm.zeros(1, 3, 256))
    x17 = gm.tensor((np.arange(17.0) / 16 * 2 - 1).reshape(1, 17))  # 17-level digits at 256 bins
    with pytest.raises(ValueError, match="grid"):
        F.discretized_logistic_mixture_nll(x17, gm.zeros(1, 3, 17), num_bins=256)
    F.discretized_logistic_mixture_nll(x17, gm.zeros(1, 3, 17), num_bins=17)


def test_validation_float16_checks_the_range_only():
    """float16 cannot resolve a 256-level grid (a value is known to ~2 bins): range only."""
    x = gm.tensor(np.linspace(-1, 1, 50).reshape(1, 50)).half()
    F.discretized_logistic_mixture_nll(x, gm.zeros(1, 3, 50).half())
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        F.discretized_logistic_mixture_nll(x * 2.0, gm.zeros(1, 3, 50).half())


def test_validation_on_device(device):
    x = gm.tensor(np.full((2, 3, 2, 2), 5.0, np.float32), device=device)
    p = gm.zeros(2, 30, 2, 2, device=device)
    with pytest.raises(ValueError, match=r"got values in \[5, 5\]"):
        F.discretized_logistic_mixture_nll(x, p)
    ok = F.discretized_logistic_mixture_nll(x * 0.0 + 1 / 255, p)  # level 128 of 256
    assert np.isfinite(ok.cpu().numpy()).all()


def test_validation_leaves_sampling_alone():
    """Draws are on the grid, so they pass the check; sampling itself checks nothing."""
    p = gm.tensor(np.random.default_rng(15).standard_normal((2, 9, 40)) * 3)
    for nb in (256, 65536):
        x = F.sample_discretized_logistic_mixture(p, nb, generator=gm.Generator().manual_seed(0))
        F.discretized_logistic_mixture_nll(x, p, num_bins=nb)


# ---- dispatch --------------------------------------------------------------------------------

def test_dispatch_default_and_overrides(kernels_env):
    kernels_env(None)
    assert dispatch.choose("dlml", "forward", "cpu")[0] in ("cpp", "numba", "reference")
    for name in _cpu_impls():
        kernels_env(f"dlml={name}")
        assert dispatch.choose("dlml", "forward", "cpu")[0] == name
    kernels_env("reference")
    assert dispatch.choose("dlml", "forward", "cpu")[0] == "reference"
    kernels_env("dlml=triton")  # a CUDA implementation: the CPU choice is left alone
    assert dispatch.choose("dlml", "forward", "cpu")[0] != "triton"


# ---- sampling --------------------------------------------------------------------------------

def test_sample_shapes_grid_and_seed():
    rng = np.random.default_rng(8)
    p = gm.tensor(rng.standard_normal((2, 30, 3, 4)))
    with pytest.raises(ValueError, match="channels"):
        F.sample_discretized_logistic_mixture(p)  # 30 = 3 grey components or 3 RGB ones
    for C in (1, 3):
        a = F.sample_discretized_logistic_mixture(p, 256, generator=gm.Generator().manual_seed(1), channels=C)
        b = F.sample_discretized_logistic_mixture(p, 256, generator=gm.Generator().manual_seed(1), channels=C)
        assert a.shape == (2, C, 3, 4) and np.array_equal(a.numpy(), b.numpy())
        i = (a.numpy() + 1) * 127.5
        np.testing.assert_allclose(i, np.round(i), atol=1e-9)
    s = F.sample_discretized_logistic_mixture(gm.tensor(rng.standard_normal((2, 9, 5))), 65536)
    assert s.shape == (2, 5) and np.all(np.abs(s.numpy()) <= 1)


@pytest.mark.parametrize("C", [1, 3])
def test_sample_matches_likelihood(kernels_env, C):
    """Empirical frequencies of every outcome on a 4-level grid against exp(-nll)."""
    kernels_env("dlml=reference")
    nb, K, draws = 4, 2, 40000
    per = params_per_component(C)
    rng = np.random.default_rng(9)
    theta = rng.standard_normal((K * per, 1, 1)) * 0.7
    theta[:K] *= 2
    p = np.broadcast_to(theta, (draws, K * per, 1, 1)).copy()
    x = F.sample_discretized_logistic_mixture(gm.tensor(p), nb, gm.Generator().manual_seed(2), C).numpy()
    codes = np.round((x.reshape(draws, C) + 1) * (nb - 1) / 2).astype(int) @ (nb ** np.arange(C))
    freq = np.bincount(codes, minlength=nb ** C) / draws
    grid = np.stack(np.meshgrid(*[np.arange(nb)] * C, indexing="ij"), -1).reshape(-1, C)[:, ::-1]
    outcomes = -1 + 2 * grid / (nb - 1)  # row r has code r (channel 0 least significant)
    xt = gm.tensor(outcomes.reshape(-1, C, 1, 1))
    pt = gm.tensor(np.broadcast_to(theta, (len(outcomes), K * per, 1, 1)).copy())
    prob = np.exp(-F.discretized_logistic_mixture_nll(xt, pt, num_bins=nb).numpy())
    assert prob.sum() == pytest.approx(1.0, abs=2e-3)  # tail bins use the midpoint rule
    assert 0.5 * np.abs(freq - prob).sum() < 0.02  # total variation


# ---- the distribution ------------------------------------------------------------------------

def test_distribution_wraps_the_op():
    from gmcore.distributions import DiscretizedLogisticMixture
    rng = np.random.default_rng(10)
    p = gm.tensor(rng.standard_normal((2, 20, 3, 3)), requires_grad=True)
    d = DiscretizedLogisticMixture(p)
    assert d.batch_shape == (2,) and d.event_shape == (3, 3, 3) and d.channels == 3
    x = d.sample((4,), generator=gm.Generator().manual_seed(3))
    assert x.shape == (4, 2, 3, 3, 3)
    lp = d.log_prob(x)
    assert lp.shape == (4, 2)
    for s in range(4):
        want = -F.discretized_logistic_mixture_nll(x[s], p).detach().numpy()
        np.testing.assert_allclose(lp.detach().numpy()[s], want, rtol=1e-12)
    lp.sum().backward()
    assert p.grad is not None and np.all(np.isfinite(p.grad.numpy()))
    seq = DiscretizedLogisticMixture(gm.tensor(rng.standard_normal((3, 6, 7))), num_bins=65536)
    assert seq.event_shape == (7,) and seq.sample().shape == (3, 7)
    with pytest.raises(ValueError, match="channels"):
        DiscretizedLogisticMixture(gm.zeros(1, 30, 2, 2))


def test_distribution_validates_values():
    from gmcore.distributions import DiscretizedLogisticMixture
    p = gm.zeros(2, 9, 5)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        DiscretizedLogisticMixture(p).log_prob(gm.full((2, 5), 5.0))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):  # the sample-shape path too
        DiscretizedLogisticMixture(p).log_prob(gm.full((3, 2, 5), 5.0))
    lp = DiscretizedLogisticMixture(p, validate_args=False).log_prob(gm.full((2, 5), 5.0))
    assert lp.shape == (2,)

