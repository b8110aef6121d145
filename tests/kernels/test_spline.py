"""spline kernels (cpp; the CUDA twin runs the same csrc/spline.h math) against the tensor-op
definition in float64: the map, its log-derivative and all four gradients, forward and inverse,
tails, edge values; the op's dispatch, double backward and argument checks."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gmcore as gm
from gmcore.functional import spline as S
from gmcore.testing import assert_close, gradcheck, gradgradcheck


def _have_cpp():
    try:
        from gmcore import _C
    except ImportError:
        return False
    return hasattr(_C, "spline_forward_cpu")


pytestmark = pytest.mark.skipif(not _have_cpp(), reason="_C lacks the spline kernels")

OPTS = dict(tail_bound=3.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3)


def _params(rng, shape, k, dtype, scale=1.0):
    x = rng.uniform(-4.0, 4.0, shape)          # some points in the identity tails
    w, h = (rng.standard_normal(shape + (k,)) * scale for _ in range(2))
    d = rng.standard_normal(shape + (k - 1,)) * scale
    return [a.astype(dtype) for a in (x, w, h, d)]


def _run(arrays, inverse, kernels_env, impl, grads=None):
    """(y, logdet, [gx, gW, gH, gD]) through the public op with GMCORE_KERNELS=spline=impl."""
    kernels_env(f"spline={impl}")
    ts = [gm.tensor(a, requires_grad=True) for a in arrays]
    y, ld = gm.nn.functional.rational_quadratic_spline(*ts, inverse=inverse, **OPTS)
    gy, gl = grads
    ((y * gm.tensor(gy)).sum() + (ld * gm.tensor(gl)).sum()).backward()
    return [y.detach().numpy(), ld.detach().numpy()] + [t.grad.numpy() for t in ts]


@settings(max_examples=12, deadline=None,  # kernels_env sets the variable on every call
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 9), m=st.integers(1, 7), k=st.integers(1, 12), inverse=st.booleans(),
       scale=st.sampled_from([0.1, 1.0, 3.0]), seed=st.integers(0, 2**31 - 1))
def test_cpp_matches_reference_float64(n, m, k, inverse, scale, seed, kernels_env):
    rng = np.random.default_rng(seed)
    arrays = _params(rng, (n, m), k, np.float64, scale)
    grads = (rng.standard_normal((n, m)), rng.standard_normal((n, m)))
    got = _run(arrays, inverse, kernels_env, "cpp", grads)
    want = _run(arrays, inverse, kernels_env, "reference", grads)
    for a, b, name in zip(got, want, ["y", "logdet", "gx", "gW", "gH", "gD"]):
        assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("inverse", [False, True])
def test_cpp_float32_close_to_float64(inverse, kernels_env):
    rng = np.random.default_rng(3)
    arrays = _params(rng, (64, 10), 8, np.float64)
    grads = (rng.standard_normal((64, 10)), rng.standard_normal((64, 10)))
    want = _run(arrays, inverse, kernels_env, "reference", grads)
    got = _run([a.astype(np.float32) for a in arrays], inverse, kernels_env, "cpp",
               [g.astype(np.float32) for g in grads])
    for a, b in zip(got, want):
        assert a.dtype == np.float32
        assert_close(a.astype(np.float64), b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))


def test_round_trip_and_tails(kernels_env):
    kernels_env("spline=cpp")
    rng = np.random.default_rng(0)
    x, w, h, d = (gm.tensor(a) for a in _params(rng, (200,), 8, np.float64, 2.0))
    x = gm.cat([x, gm.tensor([-3.0, 3.0, -7.5, 12.0], dtype=gm.float64)])
    w, h, d = (gm.cat([t, gm.zeros(4, t.shape[-1], dtype=gm.float64)]) for t in (w, h, d))
    y, ld = gm.nn.functional.rational_quadratic_spline(x, w, h, d, **OPTS)
    x2, ld2 = gm.nn.functional.rational_quadratic_spline(y, w, h, d, inverse=True, **OPTS)
    assert_close(x2.numpy(), x.numpy(), rtol=0, atol=1e-10)
    assert_close((ld + ld2).numpy(), np.zeros(204), rtol=0, atol=1e-10)
    outside = np.abs(x.numpy()) > 3.0
    assert np.array_equal(y.numpy()[outside], x.numpy()[outside])      # identity tails
    assert np.all(ld.numpy()[outside] == 0.0)
    assert y.numpy()[-4] == -3.0 and y.numpy()[-3] == 3.0               # the end knots are fixed


def test_zero_parameters_are_the_identity(kernels_env):
    kernels_env("spline=cpp")
    x = gm.linspace(-5, 5, 101, dtype=gm.float64)
    y, ld = gm.nn.functional.rational_quadratic_spline(
        x, gm.zeros(101, 6, dtype=gm.float64), gm.zeros(101, 6, dtype=gm.float64),
        gm.zeros(101, 5, dtype=gm.float64), **OPTS)
    assert_close(y.numpy(), x.numpy(), rtol=0, atol=1e-12)
    assert_close(ld.numpy(), np.zeros(101), rtol=0, atol=1e-12)


def test_nan_propagates(kernels_env):
    kernels_env("spline=cpp")
    x = gm.tensor([np.nan, 0.5])
    y, ld = gm.nn.functional.rational_quadratic_spline(x, gm.zeros(2, 4), gm.zeros(2, 4),
                                                       gm.zeros(2, 3), **OPTS)
    assert np.isnan(y.numpy()[0]) and np.isnan(ld.numpy()[0])
    assert np.isfinite(y.numpy()[1]) and np.isfinite(ld.numpy()[1])


def test_gradients_by_finite_differences(kernels_env):
    kernels_env("spline=cpp")
    rng = np.random.default_rng(1)
    arrays = _params(rng, (3, 2), 4, np.float64)
    arrays[0] = np.clip(arrays[0], -2.5, 2.5)
    ts = [gm.tensor(a, requires_grad=True) for a in arrays]
    for inverse in (False, True):
        assert gradcheck(lambda *t: gm.nn.functional.rational_quadratic_spline(
            *t, inverse=inverse, **OPTS), ts)


def test_double_backward_goes_through_the_tensor_ops(kernels_env):
    """A recorded backward (create_graph=True) is rebuilt from the tensor ops: second-order
    gradients match those of the reference path."""
    rng = np.random.default_rng(2)
    arrays = _params(rng, (2, 3), 3, np.float64)
    arrays[0] = np.clip(arrays[0], -2.5, 2.5)
    ts = [gm.tensor(a, requires_grad=True) for a in arrays]
    kernels_env("spline=cpp")
    assert gradgradcheck(lambda *t: gm.nn.functional.rational_quadratic_spline(*t, **OPTS), ts)

    def second(impl):
        kernels_env(f"spline={impl}")
        xs = [gm.tensor(a, requires_grad=True) for a in arrays]
        y, ld = gm.nn.functional.rational_quadratic_spline(*xs, **OPTS)
        gx, = gm.autograd.grad((y.square() + ld).sum(), xs[0], create_graph=True)
        return [g.numpy() for g in gm.autograd.grad(gx.square().sum(), xs)]
    for a, b in zip(second("cpp"), second("reference")):
        assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_dispatch_prefers_cpp_and_falls_back(kernels_env):
    kernels_env(None)
    assert gm.dispatch.choose("spline", "rq", "cpu")[0] == "cpp"
    # more bins than the kernel holds, mixed dtypes and empty inputs take the tensor ops
    x = gm.zeros(3, requires_grad=True)
    y, _ = gm.nn.functional.rational_quadratic_spline(x, gm.zeros(3, 65), gm.zeros(3, 65),
                                                      gm.zeros(3, 64))
    assert y.grad_fn._function is not S.RationalQuadraticSpline
    y, _ = gm.nn.functional.rational_quadratic_spline(x, gm.zeros(3, 5), gm.zeros(3, 5),
                                                      gm.zeros(3, 4))
    assert y.grad_fn._function is S.RationalQuadraticSpline
    y, _ = gm.nn.functional.rational_quadratic_spline(x, gm.zeros(3, 5, dtype=gm.float64),
                                                      gm.zeros(3, 5), gm.zeros(3, 4))
    assert y.grad_fn._function is not S.RationalQuadraticSpline
    y, ld = gm.nn.functional.rational_quadratic_spline(gm.zeros(0), gm.zeros(0, 5),
                                                       gm.zeros(0, 5), gm.zeros(0, 4))
    assert y.shape == (0,) and ld.shape == (0,)


def test_cpp_rejects_bad_arguments():
    from gmcore import _C
    x, w, d = np.zeros(3), np.zeros((3, 4)), np.zeros((3, 3))
    args = (False, 3.0, 1e-3, 1e-3, 1e-3)
    with pytest.raises(ValueError, match="derivatives"):
        _C.spline_forward_cpu(x, w, w, np.zeros((3, 4)), *args)
    with pytest.raises(ValueError, match="float32 or float64"):
        _C.spline_forward_cpu(x.astype(np.int64), w, w, d, *args)
    with pytest.raises(ValueError, match="differs"):
        _C.spline_forward_cpu(x, w.astype(np.float32), w, d, *args)
    with pytest.raises(ValueError, match="bins"):
        _C.spline_forward_cpu(x, np.zeros((3, 65)), np.zeros((3, 65)), np.zeros((3, 64)), *args)
    with pytest.raises(ValueError, match="tail_bound"):
        _C.spline_forward_cpu(x, w, w, d, False, 0.0, 1e-3, 1e-3, 1e-3)
    with pytest.raises(ValueError, match="upstream"):
        _C.spline_backward_cpu(x, w, w, d, np.zeros(2), np.zeros(3), *args)
