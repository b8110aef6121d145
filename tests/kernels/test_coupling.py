"""coupling kernels (numba, cpp, triton via the interpreter) against the float64 reference; the op
(forward/inverse, log-det against the full autodiff Jacobian, gradients, once-differentiable,
dispatch overrides)."""
import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
from gmcore import dispatch
from gmcore.functional import coupling as C
from gmcore.testing import assert_close, gradcheck

FNS = ["exp", "sigmoid", "tanh"]
HAVE_NUMBA = importlib.util.find_spec("numba") is not None
HAVE_TRITON = importlib.util.find_spec("triton") is not None


def _have_cpp():
    try:
        from gmcore import _C
    except ImportError:
        return False
    return hasattr(_C, "coupling_forward_cpu")


def _impl(name):
    if name == "reference":
        return C.affine_coupling_forward_reference, C.affine_coupling_backward_reference
    if name == "numba":
        from gmcore.kernels.numba import coupling as k
        return k.coupling_forward, k.coupling_backward
    if name == "cpp":
        from gmcore import _C
        return _C.coupling_forward_cpu, _C.coupling_backward_cpu
    from gmcore.kernels.triton import coupling as k  # runs in the interpreter (conftest)
    return _quiet(k.coupling_forward), _quiet(k.coupling_backward)


def _quiet(fn):
    # the interpreter evaluates both sides of tl.where in NumPy: silence its harmless warnings
    def run(*args):
        with np.errstate(all="ignore"):
            return fn(*args)
    return run


IMPLS = ["reference",
         pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")),
         pytest.param("cpp", marks=pytest.mark.skipif(not _have_cpp(), reason="_C lacks coupling")),
         pytest.param("triton", marks=pytest.mark.skipif(not HAVE_TRITON, reason="no triton"))]
CPU_OP_IMPLS = [p for p in IMPLS if (p if isinstance(p, str) else p.values[0]) != "triton"]

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _inputs(rng, shape, dtype, scale):
    x, r, b, g = (rng.standard_normal(shape) * s for s in (2.0, scale, 1.0, 1.0))
    return [a.astype(dtype) for a in (x, r, b, g)] + [rng.standard_normal(shape[0]).astype(dtype)]


def _check_impl(name, x, r, b, g, gl, fn, inverse):
    fwd, bwd = _impl(name)
    f64 = [a.astype(np.float64) for a in (x, r, b, g, gl)]
    y, ld = fwd(x, r, b, fn, inverse)
    y0, ld0 = C.affine_coupling_forward_reference(f64[0], f64[1], f64[2], fn, inverse)
    tol = TOL[x.dtype.type]
    assert y.dtype == x.dtype and ld.dtype == x.dtype and y.shape == x.shape
    assert ld.shape == (x.shape[0],)
    np.testing.assert_allclose(y, y0, **tol)
    # a log-det sums N terms: its error grows with N and the terms' size
    n = max(1, x.shape[1])
    np.testing.assert_allclose(ld, ld0, rtol=tol["rtol"] * 10,
                               atol=tol["atol"] * n * (1 + np.abs(f64[1]).max()))
    a = y if inverse else x  # the backward's factor: op input (forward) / op output (inverse)
    got = bwd(np.ascontiguousarray(a), r, g, gl, fn, inverse)
    ref = C.affine_coupling_backward_reference(a.astype(np.float64), f64[1], f64[3], f64[4], fn,
                                               inverse)
    assert (got[2] is None) == (ref[2] is None) == (not inverse)  # forward: d_shift = g
    for nm, u, v in zip(("d_in", "d_r", "d_shift"), got, ref):
        if v is None:
            continue
        assert u.dtype == x.dtype and u.shape == x.shape, nm
        np.testing.assert_allclose(u, v, err_msg=nm, rtol=tol["rtol"] * 5,
                                   atol=tol["atol"] * (1 + np.abs(v).max()))


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=12, deadline=None)
@given(rows=st.integers(1, 4), n=st.integers(1, 300), dtype=st.sampled_from([np.float32, np.float64]),
       fn=st.integers(0, 2), inverse=st.booleans(), scale=st.sampled_from([0.01, 1.0, 4.0]),
       seed=st.integers(0, 2**31 - 1))
def test_kernel_matches_reference(impl, rows, n, dtype, fn, inverse, scale, seed):
    rng = np.random.default_rng(seed)
    _check_impl(impl, *_inputs(rng, (rows, n), dtype, scale), fn, inverse)


@pytest.mark.parametrize("impl", [p for p in IMPLS if p != "reference"])
@pytest.mark.parametrize("fn", [0, 1, 2])
def test_kernel_long_rows(impl, fn):
    # several chunks per row (CPU: 4096-element tasks), odd lengths, above the parallel threshold
    rng = np.random.default_rng(fn)
    _check_impl(impl, *_inputs(rng, (4, 9001), np.float32, 1.0), fn, fn == 1)


EXTREMES = np.array([-1e4, -150.0, -80.0, -30.0, -1e-8, -0.0, 0.0, 1e-8, 1e-3, 0.4, 5.0, 30.0,
                     80.0, 150.0, 1e4, np.inf, -np.inf, np.nan])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", [0, 1, 2])
@pytest.mark.parametrize("inverse", [False, True])
def test_kernel_extremes(impl, dtype, fn, inverse):
    """inf/NaN/overflow behaviour equals the reference run in the same dtype, elementwise."""
    m = EXTREMES.size
    r = EXTREMES.astype(dtype).reshape(m, 1)
    x = np.full((m, 1), 1.5, dtype)
    b = np.full((m, 1), -0.25, dtype)
    g = np.full((m, 1), 0.5, dtype)
    gl = np.full(m, 2.0, dtype)
    fwd, bwd = _impl(impl)
    with np.errstate(all="ignore"):
        ref_y, ref_ld = C.affine_coupling_forward_reference(x, r, b, fn, inverse)
        y, ld = fwd(x, r, b, fn, inverse)
        a = ref_y if inverse else x
        ref_g = C.affine_coupling_backward_reference(a, r, g, gl, fn, inverse)
        got_g = bwd(np.ascontiguousarray(a), r, g, gl, fn, inverse)
    kw = dict(rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-30, equal_nan=True)
    np.testing.assert_allclose(y, ref_y, **kw)
    np.testing.assert_allclose(ld, ref_ld, **kw)
    for nm, u, v in zip(("d_in", "d_r", "d_shift"), got_g, ref_g):
        if v is None:
            assert u is None, nm
            continue
        np.testing.assert_allclose(u, v, err_msg=nm, **kw)


@pytest.mark.parametrize("impl", IMPLS)
def test_kernel_empty(impl):
    fwd, bwd = _impl(impl)
    for shape in [(0, 5), (3, 0)]:
        x = np.zeros(shape, np.float32)
        y, ld = fwd(x, x, x, 0, False)
        assert y.shape == shape and ld.shape == (shape[0],) and np.all(ld == 0)
        outs = bwd(x, x, x, np.zeros(shape[0], np.float32), 1, True)
        assert all(o.shape == shape for o in outs)
        outs = bwd(x, x, x, np.zeros(shape[0], np.float32), 2, False)
        assert outs[0].shape == outs[1].shape == shape and outs[2] is None


@pytest.mark.skipif(not _have_cpp(), reason="_C lacks coupling")
def test_cpp_rejects_bad_arrays():
    from gmcore import _C
    a = np.zeros((2, 6), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.coupling_forward_cpu(np.zeros((2, 12), np.float32)[:, ::2], a, a, 0, False)
    with pytest.raises(ValueError, match="dtype"):
        _C.coupling_forward_cpu(a, a.astype(np.float64), a, 0, False)
    with pytest.raises(ValueError, match="shape"):
        _C.coupling_forward_cpu(a, np.zeros((2, 5), np.float32), a, 0, False)
    with pytest.raises(ValueError, match="fn must be"):
        _C.coupling_forward_cpu(a, a, a, 7, False)
    with pytest.raises(ValueError, match="g_logdet"):
        _C.coupling_backward_cpu(a, a, a, np.zeros(3, np.float32), 0, False)


# ---- dispatch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value, name", [("reference", "reference"),
                                         ("coupling=reference", "reference"),
                                         pytest.param("coupling=numba", "numba", marks=pytest.mark.skipif(
                                             not HAVE_NUMBA, reason="numba missing")),
                                         pytest.param("coupling=cpp", "cpp", marks=pytest.mark.skipif(
                                             not _have_cpp(), reason="no cpp"))])
def test_dispatch_override(kernels_env, value, name):
    kernels_env(value)
    assert dispatch.choose("coupling", "affine", "cpu")[0] == name


def test_dispatch_default_is_compiled(kernels_env):
    kernels_env(None)
    name = dispatch.choose("coupling", "affine", "cpu")[0]
    assert name == ("cpp" if _have_cpp() else "numba" if HAVE_NUMBA else "reference")


def test_dispatch_bad_name(kernels_env):
    kernels_env("coupling=fastest")
    with pytest.raises(ValueError, match="no implementation 'fastest'"):
        dispatch.get("coupling", "affine", "cpu")


# ---- the op -------------------------------------------------------------------------------------

def _impl_name(p):
    return p if isinstance(p, str) else p.values[0]


def _t(a, **kw):
    return gm.tensor(a, **kw)


@pytest.mark.parametrize("impl", CPU_OP_IMPLS)
@pytest.mark.parametrize("scale_fn", FNS)
@pytest.mark.parametrize("inverse", [False, True])
def test_op_forward_and_grads_match_reference(kernels_env, impl, scale_fn, inverse):
    rng = np.random.default_rng(7)
    shape = (3, 2, 5, 7)
    x, r, b = (rng.standard_normal(shape) for _ in range(3))
    wy, wl = rng.standard_normal(shape), rng.standard_normal(3)

    def run(name):
        kernels_env(f"coupling={name}")
        ts = [_t(a, requires_grad=True) for a in (x, r, b)]
        y, ld = gm.affine_coupling(*ts, scale_fn=scale_fn, inverse=inverse)
        ((y * _t(wy)).sum() + (ld * _t(wl)).sum()).backward()
        return y.detach().numpy(), ld.detach().numpy(), [t.grad.numpy() for t in ts]

    y, ld, grads = run(impl)
    y0, ld0, grads0 = run("reference")
    assert_close(y, y0, rtol=1e-12, atol=1e-12)
    assert_close(ld, ld0, rtol=1e-12, atol=1e-11)
    for g, g0 in zip(grads, grads0):
        assert_close(g, g0, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("scale_fn", FNS)
@pytest.mark.parametrize("inverse", [False, True])
def test_reference_gradcheck_and_double_backward(kernels_env, scale_fn, inverse):
    from gmcore.testing import gradgradcheck
    kernels_env("coupling=reference")
    rng = np.random.default_rng(3)
    ts = [_t(rng.standard_normal((2, 3)), dtype=gm.float64, requires_grad=True) for _ in range(3)]

    def f(x, r, b):
        return gm.affine_coupling(x, r, b, scale_fn=scale_fn, inverse=inverse)

    assert gradcheck(f, ts)
    assert gradgradcheck(f, ts)


@pytest.mark.parametrize("impl", [p for p in CPU_OP_IMPLS if _impl_name(p) != "reference"])
def test_fused_gradcheck_and_once_differentiable(kernels_env, impl):
    kernels_env(f"coupling={_impl_name(impl)}")
    rng = np.random.default_rng(4)
    ts = [_t(rng.standard_normal((2, 3, 2)), requires_grad=True) for _ in range(3)]
    for inverse in (False, True):
        assert gradcheck(lambda x, r, b: gm.affine_coupling(x, r, b, "sigmoid", inverse), ts)
    y, ld = gm.affine_coupling(*ts, scale_fn="tanh")
    (gx,) = gm.autograd.grad((y * y).sum() + ld.sum(), [ts[1]], create_graph=True)
    with pytest.raises(RuntimeError, match="once-differentiable"):
        gx.sum().backward()


def _layer(scale_fn, inverse):
    """A whole coupling layer on (B, 4): x_a = x[:, :2] conditions x_b = x[:, 2:]."""
    w = gm.tensor(np.random.default_rng(11).standard_normal((2, 4)) * 0.7)

    def f(x):
        xa, xb = x[:, :2], x[:, 2:]
        h = (xa @ w).tanh() * 2.0
        yb, ld = gm.affine_coupling(xb, h[:, :2], h[:, 2:], scale_fn=scale_fn, inverse=inverse)
        return gm.cat([xa, yb], 1), ld
    return f


def _jacobian_logdet(f, x):
    """Per-example log|det J| of f: (B, D) -> (B, D), the Jacobian built row by row by autodiff."""
    x = gm.tensor(x, requires_grad=True)
    y, _ = f(x)
    bsz, d = x.shape
    jac = np.zeros((bsz, d, d))
    for i in range(d):
        (gi,) = gm.autograd.grad(y[:, i].sum(), [x], retain_graph=True)
        jac[:, i, :] = gi.numpy()
    return np.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("impl", CPU_OP_IMPLS)
@pytest.mark.parametrize("scale_fn", FNS)
@pytest.mark.parametrize("inverse", [False, True])
def test_logdet_equals_full_jacobian(kernels_env, impl, scale_fn, inverse):
    kernels_env(f"coupling={_impl_name(impl)}")
    x = np.random.default_rng(5).standard_normal((3, 4)) * 1.5
    f = _layer(scale_fn, inverse)
    _, ld = f(gm.tensor(x))
    np.testing.assert_allclose(ld.numpy(), _jacobian_logdet(f, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", CPU_OP_IMPLS)
@pytest.mark.parametrize("scale_fn", FNS)
@pytest.mark.parametrize("dtype", [gm.float32, gm.float64])
def test_inverse_of_forward_is_identity(kernels_env, impl, scale_fn, dtype):
    kernels_env(f"coupling={_impl_name(impl)}")
    rng = np.random.default_rng(6)
    x, r, b = (gm.tensor(rng.standard_normal((4, 3, 5)) * 2, dtype=dtype) for _ in range(3))
    y, ld = gm.affine_coupling(x, r, b, scale_fn=scale_fn)
    x2, ld2 = gm.affine_coupling(y, r, b, scale_fn=scale_fn, inverse=True)
    tol = 1e-12 if dtype == gm.float64 else 1e-5
    assert_close(x2, x, rtol=tol, atol=tol)
    assert_close(ld + ld2, gm.zeros(4, dtype=dtype), atol=tol * 30)
    assert y.dtype == dtype and ld.dtype == dtype


def test_scale_definitions():
    """The documented s: exp(r), sigmoid(r + 2), exp(tanh r); logdet = sum log s per example."""
    r = np.array([[-1.0, 0.0, 0.5, 3.0]])
    x, b = np.ones_like(r), np.zeros_like(r)
    expected = {"exp": np.exp(r), "sigmoid": 1 / (1 + np.exp(-(r + 2))), "tanh": np.exp(np.tanh(r))}
    for name, s in expected.items():
        y, ld = gm.affine_coupling(_t(x), _t(r), _t(b), scale_fn=name)
        np.testing.assert_allclose(y.numpy(), s, rtol=1e-6)
        np.testing.assert_allclose(ld.numpy(), np.log(s).sum(1), rtol=1e-6)


def test_additive_and_scale_only():
    rng = np.random.default_rng(8)
    x, b, r = (_t(rng.standard_normal((2, 3)), requires_grad=True) for _ in range(3))
    y, ld = gm.affine_coupling(x, None, b)
    assert_close(y, x + b)
    assert ld.shape == (2,) and not ld.numpy().any() and not ld.requires_grad
    x2, _ = gm.additive_coupling(y, b, inverse=True)
    assert_close(x2, x)
    y.sum().backward()
    assert_close(b.grad, gm.ones(2, 3, dtype=gm.float64))
    y, ld = gm.affine_coupling(x, r, None)  # scale only: shift = 0
    assert_close(y, x * r.exp())
    assert_close(ld, r.sum(1))


def test_one_dim_and_mixed_dtypes():
    x = gm.tensor([1.0, 2.0], dtype=gm.float32)
    y, ld = gm.affine_coupling(x, gm.tensor([0.0, 1.0], dtype=gm.float64), None)
    assert y.dtype == gm.float64 and ld.shape == (2,)
    np.testing.assert_allclose(ld.numpy(), [0.0, 1.0])


def test_errors():
    x = gm.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        gm.affine_coupling(x, gm.zeros(2, 4), x)
    with pytest.raises(ValueError, match="scale_fn"):
        gm.affine_coupling(x, x, x, scale_fn="softplus")
    with pytest.raises(TypeError, match="log_scale_raw"):
        gm.affine_coupling(x, np.zeros((2, 3)), x)
    with pytest.raises(ValueError, match="batch dim"):
        gm.affine_coupling(gm.tensor(1.0), gm.tensor(1.0), None)
    with pytest.raises(TypeError, match="floating"):
        gm.affine_coupling(gm.zeros(2, 3, dtype=gm.int64), x, x)


def test_reachable_from_nn_functional():
    import gmcore.nn.functional as F
    assert F.affine_coupling is gm.affine_coupling


@pytest.mark.parametrize("scale_fn", FNS)
def test_cuda_matches_cpu(device, scale_fn):
    if device == "cpu":
        pytest.skip("CUDA-only comparison")
    rng = np.random.default_rng(9)
    arrs = [rng.standard_normal((5, 3, 17, 9)).astype(np.float32) for _ in range(3)]
    outs = {}
    for dev in ("cpu", device):
        ts = [gm.tensor(a, device=dev, requires_grad=True) for a in arrs]
        y, ld = gm.affine_coupling(*ts, scale_fn=scale_fn)
        (y.sum() + ld.sum() * 0.5).backward()
        outs[dev] = [y.numpy(), ld.numpy()] + [t.grad.numpy() for t in ts]
    for u, v in zip(outs["cpu"], outs[device]):
        np.testing.assert_allclose(v, u, rtol=1e-4, atol=1e-4)
