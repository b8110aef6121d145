"""logsumexp kernels (cpp, cuda) against the float64 reference; the op; dispatch overrides."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gmcore import dispatch
from gmcore.functional.logsumexp import logsumexp, logsumexp_rows_reference

_C = pytest.importorskip("gmcore._C", reason="gmcore._C not built")

TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-13, atol=1e-13)}
INF = np.inf


def _ref64(x2d):
    return logsumexp_rows_reference(x2d.astype(np.float64))


def _scaled_tol(dtype, ref):
    # absolute error grows with |lse| (one rounding of m + log(s)): scale atol by magnitude
    t = TOL[dtype]
    return dict(rtol=t["rtol"], atol=t["atol"] * max(1.0, float(np.nanmax(np.abs(ref[np.isfinite(ref)]), initial=1.0))))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(0, 37), cols=st.integers(1, 341), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4, 1e30]), shift=st.sampled_from([0.0, -500.0, 1e3]),
       seed=st.integers(0, 2**31 - 1))
def test_cpp_matches_reference(rows, cols, dtype, scale, shift, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * scale + shift).astype(dtype)
    got = _C.logsumexp_rows_cpu(x)
    ref = _ref64(x)
    assert got.dtype == dtype and got.shape == (rows,)
    np.testing.assert_allclose(got, ref, **_scaled_tol(dtype, ref))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpp_special_values(dtype):
    x = np.array([
        [-INF, -INF, -INF],   # all -inf -> -inf
        [-INF, 2.0, -INF],    # -inf terms add nothing
        [INF, 1.0, -INF],     # +inf -> +inf
        [INF, INF, 0.0],      # +inf twice -> +inf
        [np.nan, INF, 1.0],   # NaN wins
        [1.0, np.nan, -INF],
        [1e4, 1e4, 1e4],      # no overflow
        [-1e4, -1e4, -1e4],   # no underflow
    ], dtype=dtype)
    got = _C.logsumexp_rows_cpu(x)
    ref = logsumexp_rows_reference(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert got[0] == -INF and got[1] == 2.0 and got[2] == INF and got[3] == INF
    assert np.isnan(got[4]) and np.isnan(got[5])
    np.testing.assert_allclose(got[6:], [1e4 + np.log(3), -1e4 + np.log(3)], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpp_softmax(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((9, 341)) * 20).astype(dtype)
    got = _C.softmax_rows_cpu(x)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(1, keepdims=True), rtol=TOL[dtype]["rtol"] * 50, atol=1e-12)


def test_cpp_rejects_bad_arrays():
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.logsumexp_rows_cpu(np.zeros((4, 6))[:, ::2])
    with pytest.raises(ValueError, match="float32 or float64"):
        _C.logsumexp_rows_cpu(np.zeros((4, 6), dtype=np.int32))
    with pytest.raises(ValueError, match="2-D"):
        _C.softmax_rows_cpu(np.zeros(6))


def test_cpp_large_parallel():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4097, 65)).astype(np.float32)  # above the OpenMP threshold
    np.testing.assert_allclose(_C.logsumexp_rows_cpu(x), _ref64(x), rtol=2e-6, atol=2e-6)


# ---- dispatch -----------------------------------------------------------------------------


def test_dispatch_prefers_cpp_on_cpu(kernels_env):
    kernels_env(None)
    assert dispatch.choose("logsumexp", "forward", "cpu")[0] == "cpp"


@pytest.mark.parametrize("value, name", [("reference", "reference"), ("logsumexp=reference", "reference"),
                                         ("logsumexp=cpp", "cpp"), ("logsumexp=cuda", "cpp")])
def test_dispatch_override(kernels_env, value, name):
    kernels_env(value)  # logsumexp=cuda is a CUDA implementation: it leaves the CPU choice alone
    assert dispatch.choose("logsumexp", "forward", "cpu")[0] == name


@pytest.mark.parametrize("value, match", [("logsumexp=fastest", "no implementation 'fastest'"),
                                          ("logsumxp=cpp", "unknown kernel family 'logsumxp'")])
def test_dispatch_override_errors(kernels_env, value, match):
    kernels_env(value)
    with pytest.raises(ValueError, match=match):
        dispatch.get("logsumexp", "forward", "cpu")


def test_dispatch_cuda_without_gpu(kernels_env):
    from gmcore import backend
    if backend.cuda_is_available():
        pytest.skip("a GPU is visible")
    kernels_env("logsumexp=cuda")
    with pytest.raises(dispatch.KernelUnavailable, match="logsumexp=cuda"):
        dispatch.get("logsumexp", "forward", "cuda")


# ---- the differentiable op ------------------------------------------------------------------

def _np_lse(a, dim, keepdim=False):
    a = a.astype(np.float64)
    m = np.max(a, axis=dim, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    r = np.log(np.sum(np.exp(a - m), axis=dim, keepdims=True)) + m
    return r if keepdim else np.squeeze(r, axis=dim)


@pytest.mark.parametrize("impl", ["cpp", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim, keepdim", [(-1, False), (0, True), (1, False), ((0, 2), False), ((2, 1), True)])
def test_op_forward(kernels_env, impl, dtype, dim, keepdim):
    import gmcore as gm
    kernels_env(f"logsumexp={impl}")
    a = (np.random.default_rng(2).standard_normal((9, 41, 34)) * 10).astype(dtype)
    y = logsumexp(gm.tensor(a), dim, keepdim=keepdim)
    ref = _np_lse(a, dim if isinstance(dim, int) else tuple(dim), keepdim)
    assert y.shape == ref.shape and y.dtype == gm.tensor(a).dtype
    np.testing.assert_allclose(y.numpy(), ref, rtol=TOL[dtype]["rtol"] * 10, atol=TOL[dtype]["atol"] * 100)


def test_op_all_neg_inf_and_empty():
    import gmcore as gm
    y = logsumexp(gm.tensor(np.full((3, 4), -np.inf)), 1)
    assert np.all(y.numpy() == -np.inf)
    y = logsumexp(gm.tensor(np.zeros((3, 0))), 1)
    assert y.shape == (3,) and np.all(y.numpy() == -np.inf)


def _fd_check(f, a, eps=1e-6, rtol=1e-6, atol=1e-7):
    """Analytic gradient of sum(w * f(x)) against central differences along random directions."""
    import gmcore as gm
    rng = np.random.default_rng(3)
    x = gm.tensor(a, requires_grad=True)
    out = f(x)
    w = rng.standard_normal(out.shape)
    (out * gm.tensor(w)).sum().backward()
    g = x.grad.numpy()
    for _ in range(3):
        v = rng.standard_normal(a.shape)
        fp = (f(gm.tensor(a + eps * v)).detach().numpy() * w).sum()
        fm = (f(gm.tensor(a - eps * v)).detach().numpy() * w).sum()
        np.testing.assert_allclose((fp - fm) / (2 * eps), (g * v).sum(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("impl", ["cpp", "reference"])
@pytest.mark.parametrize("dim, keepdim", [(1, False), ((0, 2), True), (-1, True)])
def test_op_backward(kernels_env, impl, dim, keepdim):
    kernels_env(f"logsumexp={impl}")
    a = np.random.default_rng(4).standard_normal((3, 5, 7))
    _fd_check(lambda t: logsumexp(t, dim, keepdim=keepdim), a)


@pytest.mark.parametrize("impl", ["cpp", "reference"])
def test_op_double_backward(kernels_env, impl):
    import gmcore as gm
    kernels_env(f"logsumexp={impl}")
    a = np.random.default_rng(5).standard_normal((4, 6))

    def grad_of(t):  # d/dx sum(lse(x) * w): the softmax, weighted
        t = t if t.requires_grad else t.detach().requires_grad_()
        y = logsumexp(t, 1)
        (g,) = gm.autograd.grad((y * gm.tensor(np.arange(4.0) + 1)).sum(), [t], create_graph=True)
        return g

    _fd_check(grad_of, a, rtol=1e-5, atol=1e-6)
