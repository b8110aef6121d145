"""causal_conv1d (family causal_conv): values and gradients vs a dense NumPy reference and torch,
causality as a property on every CPU implementation, gradcheck of the reference path, errors."""
import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.kernels import _tap_conv_cpu
from gmcore.testing import gradcheck

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
IMPL_NAMES = ["reference", "cpp", "numba"]
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def _use(kernels_env, name):
    if name == "cpp":
        try:
            _tap_conv_cpu.check_available()
        except (ImportError, RuntimeError) as exc:
            pytest.skip(f"cpp unavailable: {exc}")
    if name == "numba" and not HAVE_NUMBA:
        pytest.skip("numba not installed")
    kernels_env(f"causal_conv={name}")
    assert dispatch.choose("causal_conv", "tap_conv2d", "cpu")[0] == name


def dense_causal(x, w, b, d):
    """y[n, o, t] = b[o] + sum_{c, k} w[o, c, k] x[n, c, t - (K-1-k) d] (zero before 0)."""
    n, c, t = x.shape
    k = w.shape[2]
    y = np.zeros((n, w.shape[0], t))
    for j in range(k):
        s = (k - 1 - j) * d
        if s < t:
            y[:, :, s:] += np.einsum("nct,oc->not", x[:, :, :t - s], w[:, :, j])
    return y if b is None else y + b[None, :, None]


@pytest.mark.parametrize("name", IMPL_NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@FIXTURE_OK
@given(n=st.integers(1, 3), c=st.integers(1, 4), o=st.integers(1, 4), t=st.integers(1, 40),
       k=st.integers(1, 4), d=st.integers(1, 9), bias=st.booleans(), seed=st.integers(0, 99))
def test_causal_conv1d_vs_dense(name, dtype, kernels_env, n, c, o, t, k, d, bias, seed):
    _use(kernels_env, name)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, t)).astype(dtype)
    w = rng.standard_normal((o, c, k)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    xt, wt = gm.tensor(x, requires_grad=True), gm.tensor(w, requires_grad=True)
    bt = gm.tensor(b, requires_grad=True) if bias else None
    y = F.causal_conv1d(xt, wt, bt, dilation=d)
    assert y.dtype == xt.dtype and y.shape == (n, o, t)
    g = rng.standard_normal((n, o, t))
    (y * gm.tensor(g.astype(dtype))).sum().backward()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    np.testing.assert_allclose(y.detach().numpy(), dense_causal(x64, w64, b, d), **tol)
    # gradients of <y, g>: dense adjoints
    gx = np.zeros_like(x64)
    gw = np.zeros_like(w64)
    for j in range(k):
        s = (k - 1 - j) * d
        if s < t:
            gx[:, :, :t - s] += np.einsum("not,oc->nct", g[:, :, s:], w64[:, :, j])
            gw[:, :, j] = np.einsum("not,nct->oc", g[:, :, s:], x64[:, :, :t - s])
    np.testing.assert_allclose(xt.grad.numpy(), gx, **tol)
    np.testing.assert_allclose(wt.grad.numpy(), gw, **tol)
    if bias:
        np.testing.assert_allclose(bt.grad.numpy(), g.sum(axis=(0, 2)), **tol)


@pytest.mark.parametrize("name", IMPL_NAMES)
@FIXTURE_OK
@given(t=st.integers(1, 30), k=st.integers(1, 3), d=st.integers(1, 8), seed=st.integers(0, 99))
def test_causal_conv1d_causality(name, kernels_env, t, k, d, seed):
    """d y[t0] / d x is exactly 0 for every x[t > t0]; x[t0] itself is seen."""
    _use(kernels_env, name)
    rng = np.random.default_rng(seed)
    x = gm.tensor(rng.standard_normal((2, 3, t)), requires_grad=True)
    w = gm.tensor(rng.standard_normal((2, 3, k)))
    t0 = int(rng.integers(t))
    F.causal_conv1d(x, w, dilation=d)[1, 0, t0].backward()
    gx = x.grad.numpy()
    assert np.all(gx[0] == 0) and np.all(gx[1][:, t0 + 1:] == 0)
    assert np.all(gx[1][:, t0] != 0)
    seen = [t0 - j * d for j in range(k) if t0 - j * d >= 0]
    others = np.setdiff1d(np.arange(t), seen)
    assert np.all(gx[1][:, others] == 0)


@pytest.mark.parametrize("name", IMPL_NAMES)
def test_causal_conv1d_vs_torch_and_unbatched(name, kernels_env):
    torch = pytest.importorskip("torch")
    _use(kernels_env, name)
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 50)), rng.standard_normal((3, 4, 2)), rng.standard_normal(3)
    y = F.causal_conv1d(gm.tensor(x), gm.tensor(w), gm.tensor(b), dilation=4)
    tf = torch.nn.functional
    yr = tf.conv1d(tf.pad(torch.tensor(x), (4, 0)), torch.tensor(w), torch.tensor(b), dilation=4)
    assert y.shape == (3, 50)
    np.testing.assert_allclose(y.numpy(), yr.numpy(), rtol=1e-12, atol=1e-12)


def test_causal_conv1d_long_sequence_chunked(kernels_env, monkeypatch):
    """A long single sequence with chunks of one image: same as the reference path."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, 8, 3000)), rng.standard_normal((5, 8, 2))
    ref = dense_causal(x, w, None, 64)
    for name in ("cpp", "numba"):
        _use(kernels_env, name)
        monkeypatch.setattr(_tap_conv_cpu, "CHUNK_BYTES", 1)
        y = F.causal_conv1d(gm.tensor(x), gm.tensor(w), dilation=64)
        np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_causal_conv1d_reference_gradcheck_and_double_backward(kernels_env):
    kernels_env("causal_conv=reference")
    rng = np.random.default_rng(2)
    x = gm.tensor(rng.standard_normal((2, 2, 7)), requires_grad=True)
    w = gm.tensor(rng.standard_normal((3, 2, 3)), requires_grad=True)
    b = gm.tensor(rng.standard_normal(3), requires_grad=True)
    assert gradcheck(lambda x, w, b: F.causal_conv1d(x, w, b, dilation=2), (x, w, b))
    y = F.causal_conv1d(x, w, b, dilation=2)
    (gx,) = gm.autograd.grad((y * y).sum(), (x,), create_graph=True)
    gx.sum().backward()
    assert w.grad is not None


@pytest.mark.parametrize("name", ["cpp", "numba"])
def test_causal_conv1d_fused_matches_reference_and_is_once_differentiable(name, kernels_env):
    rng = np.random.default_rng(3)
    xa, wa, ba = rng.standard_normal((2, 3, 20)), rng.standard_normal((4, 3, 2)), \
        rng.standard_normal(4)
    grads = {}
    for impl in ("reference", name):
        _use(kernels_env, impl)
        ts = [gm.tensor(a, requires_grad=True) for a in (xa, wa, ba)]
        y = F.causal_conv1d(*ts, dilation=3)
        (y * y).sum().backward()
        grads[impl] = [t.grad.numpy() for t in ts]
    for a, r in zip(grads[name], grads["reference"]):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)
    x = gm.tensor(xa, requires_grad=True)
    y = F.causal_conv1d(x, gm.tensor(wa), dilation=3)
    (gx,) = gm.autograd.grad((y * y).sum(), (x,), create_graph=True)
    with pytest.raises(RuntimeError, match="once-differentiable"):
        gx.sum().backward()


@pytest.mark.parametrize("call, err, match", [
    (lambda: F.causal_conv1d(gm.ones(1, 2, 3, 4), gm.ones(1, 2, 2)), ValueError, "input"),
    (lambda: F.causal_conv1d(gm.ones(1, 2, 5), gm.ones(1, 2)), ValueError, "3D weight"),
    (lambda: F.causal_conv1d(gm.ones(1, 2, 5), gm.ones(1, 3, 2)), ValueError, "channels"),
    (lambda: F.causal_conv1d(gm.ones(1, 2, 5), gm.ones(1, 2, 2), dilation=0), ValueError,
     "dilation"),
    (lambda: F.causal_conv1d(gm.ones(1, 2, 5), gm.ones(1, 2, 2, dtype=gm.float64)), TypeError,
     "same dtype"),
    (lambda: F.causal_conv1d(gm.ones(1, 2, 5), gm.ones(1, 2, 2), gm.ones(1, 1)), ValueError,
     "bias"),
])
def test_causal_conv1d_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()
