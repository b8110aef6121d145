"""pool kernels (cpp) against the float64 reference; the ops' gradients of both orders; torch.

The reference itself is checked against an independent per-window loop (``_loop_max`` /
``_loop_avg``) and against PyTorch where it is installed.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.nn.functional.pooling import pool_out_size
from gmcore.testing import gradcheck, gradgradcheck

IMPLS = ["cpp", "reference"]
# the impl fixture only sets GMCORE_KERNELS: sharing it across examples is what we want
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@pytest.fixture
def impl(request, kernels_env):
    kernels_env(f"pool={request.param}")
    try:
        dispatch.get("pool", "max_pool2d", "cpu")
    except dispatch.KernelUnavailable as exc:
        pytest.skip(str(exc))
    return request.param


def _loop_max(x, geom, out_hw):
    """One window at a time, the first real element first (PyTorch's CPU kernel)."""
    kh, kw, sh, sw, ph, pw, dh, dw = geom
    p, h, w = x.shape
    y = np.empty((p,) + out_hw, dtype=x.dtype)
    idx = np.empty((p,) + out_hw, dtype=np.int64)
    for q in range(p):
        for oy in range(out_hw[0]):
            for ox in range(out_hw[1]):
                best, arg = -np.inf, None
                for i in range(kh):
                    for j in range(kw):
                        iy, ix = oy * sh - ph + i * dh, ox * sw - pw + j * dw
                        if not (0 <= iy < h and 0 <= ix < w):
                            continue
                        v = x[q, iy, ix]
                        if arg is None or v > best or (math.isnan(v) and not math.isnan(best)):
                            best, arg = v, iy * w + ix
                if arg is None:  # no real element (dilation): -inf at the clamped first tap
                    y0, x0 = oy * sh - ph, ox * sw - pw
                    arg = min(max(y0, 0), h - 1) * w + min(max(x0, 0), w - 1)
                y[q, oy, ox], idx[q, oy, ox] = best, arg
    return y, idx


def _loop_avg(x, geom, out_hw, cip, divisor):
    kh, kw, sh, sw, ph, pw = geom[:6]
    p, h, w = x.shape
    y = np.empty((p,) + out_hw)
    for oy in range(out_hw[0]):
        for ox in range(out_hw[1]):
            y0, x0 = oy * sh - ph, ox * sw - pw
            y1, x1 = min(y0 + kh, h + ph), min(x0 + kw, w + pw)
            n = (y1 - y0) * (x1 - x0)
            ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
            if not cip:
                n = (yb - ya) * (xb - xa)
            y[:, oy, ox] = x[:, ya:yb, xa:xb].sum(axis=(1, 2)) / (divisor or n)
    return y


@st.composite
def geometries(draw, dilation=True):
    """Odd sizes on purpose; padding 0/1 (at most half the kernel); ceil_mode both ways."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, min(1, kh // 2))), draw(st.integers(0, min(1, kw // 2)))
    dh, dw = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 11))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 9))
    ceil = draw(st.booleans())
    out = tuple(pool_out_size(n, k, s, p_, d, ceil)
                for n, k, s, p_, d in ((h, kh, sh, ph, dh), (w, kw, sw, pw, dw)))
    return (kh, kw, sh, sw, ph, pw, dh, dw), (h, w), out, ceil


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)
@given(g=geometries(), planes=st.sampled_from([0, 1, 3]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_max_matches_loop(impl, g, planes, dtype, seed):
    geom, hw, out, _ = g
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((planes,) + hw).astype(dtype)
    x[rng.random(x.shape) < 0.2] = 0.5  # ties: the first maximum wins
    fwd = dispatch.get("pool", "max_pool2d", "cpu")
    y, idx = fwd(x, geom, out)
    ry, ridx = _loop_max(x, geom, out)
    assert y.dtype == dtype and idx.dtype == np.int64 and y.shape == (planes,) + out
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = dispatch.get("pool", "max_pool2d_backward", "cpu")(gy, idx, hw)
    ref = np.zeros((planes, hw[0] * hw[1]))
    for q in range(planes):
        np.add.at(ref[q], ridx[q].ravel(), gy[q].ravel().astype(np.float64))
    np.testing.assert_allclose(gx.reshape(planes, hw[0] * hw[1]), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)
@given(g=geometries(dilation=False), planes=st.sampled_from([0, 1, 2]),
       cip=st.booleans(), divisor=st.sampled_from([0, 0, 3]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_avg_matches_loop_and_adjoint(impl, g, planes, cip, divisor, dtype, seed):
    geom, hw, out, _ = g
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((planes,) + hw).astype(dtype)
    y = dispatch.get("pool", "avg_pool2d", "cpu")(x, geom, out, cip, divisor)
    assert y.dtype == dtype and y.shape == (planes,) + out
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(y, _loop_avg(x.astype(np.float64), geom, out, cip, divisor), rtol=tol, atol=tol)
    # the backward is the adjoint: <A x, g> = <x, A^T g>
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = dispatch.get("pool", "avg_pool2d_backward", "cpu")(gy, geom, hw, cip, divisor)
    assert gx.shape == x.shape and gx.dtype == dtype
    lhs = float((y.astype(np.float64) * gy).sum())
    rhs = float((x.astype(np.float64) * gx).sum())
    assert abs(lhs - rhs) <= 1e-5 * (1 + abs(lhs)) * (1 if dtype == np.float32 else 1e-7)


def test_cpp_equals_reference_bitwise_on_the_model_sizes(kernels_env):
    """The 2x2 fast loops (the model sizes), a ceil_mode overhang (no fast loop) and the general
    loop give the reference's bits."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 16, 17)).astype(np.float32)
    x[0, :2, :2] = np.nan
    x[1, 2:4, 2:4] = [[np.nan, 1.0], [np.nan, 2.0]]  # two NaNs: the first wins
    x[2] = 0.0  # all ties
    x[3, :4, :4] = -np.inf
    for geom, out in (((2, 2, 2, 2, 0, 0, 1, 1), (8, 8)), ((2, 2, 2, 2, 0, 0, 1, 1), (8, 9)),
                      ((3, 3, 2, 2, 1, 1, 1, 1), (8, 9))):
        kernels_env("pool=cpp")
        try:
            y, idx = dispatch.get("pool", "max_pool2d", "cpu")(x, geom, out)
            a = dispatch.get("pool", "avg_pool2d", "cpu")(x, geom, out, True, 0)
        except dispatch.KernelUnavailable as exc:
            pytest.skip(str(exc))
        kernels_env("pool=reference")
        ry, ridx = dispatch.get("pool", "max_pool2d", "cpu")(x, geom, out)
        ra = dispatch.get("pool", "avg_pool2d", "cpu")(x, geom, out, True, 0)
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(idx, ridx)
        np.testing.assert_allclose(a[2:], ra[2:], rtol=1e-6, atol=1e-6)
        assert np.isnan(y[0, 0, 0]) and idx[1, 1, 1] == 2 * 17 + 2  # the first NaN
        assert idx[3, 0, 0] == 0 and y[3, 0, 0] == -np.inf  # all -inf: the first real element


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@pytest.mark.parametrize("op,kw", [
    ("max", dict(kernel_size=2)),
    ("max", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg", dict(kernel_size=2)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True)),
])
def test_gradients_of_both_orders(impl, op, kw):
    rng = np.random.default_rng(1)
    # distinct values: finite differences stay inside one argmax region
    x = gm.tensor(rng.permutation(2 * 3 * 5 * 7).reshape(2, 3, 5, 7) / 10.0, dtype=gm.float64,
                  requires_grad=True)
    fn = (lambda t: F.max_pool2d(t, **kw)) if op == "max" else (lambda t: F.avg_pool2d(t, **kw))
    assert gradcheck(fn, (x,), eps=1e-4)
    assert gradgradcheck(fn, (x,), eps=1e-4)
    # the second derivative through the recorded backward (WGAN-GP's penalty shape)
    y = fn(x)
    (g,) = gm.autograd.grad(y.square().sum(), x, create_graph=True)
    (gg,) = gm.autograd.grad(g.square().sum(), x)
    assert gg.shape == x.shape and np.isfinite(gg.numpy()).all()


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
def test_empty_batch_and_float32_model_shape(impl):
    x = gm.zeros(0, 4, 9, 9, requires_grad=True)
    y = F.max_pool2d(x, 3, 2, 1)
    assert tuple(y.shape) == (0, 4, 5, 5)
    y.sum().backward()
    assert tuple(x.grad.shape) == (0, 4, 9, 9)
    x = gm.randn(3, 5, 9, 11, requires_grad=True)
    for y in (F.max_pool2d(x, 2), F.avg_pool2d(x, 2)):
        assert y.dtype == gm.float32 and tuple(y.shape) == (3, 5, 4, 5)
        y.sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


def test_errors_name_the_problem():
    x = gm.randn(1, 2, 5, 5)
    with pytest.raises(ValueError, match="divisor"):
        F.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(ValueError, match="divisor_override"):
        F.avg_pool2d(x, 2, divisor_override=-2)
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(RuntimeError, match="expected 3D .* or 4D"):
        F.max_pool2d(gm.randn(5, 5), 2)


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURE_OK)
@given(g=geometries(dilation=False), cip=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_torch_peer(impl, g, cip, seed):
    torch = pytest.importorskip("torch")
    geom, hw, out, ceil = g
    kh, kw, sh, sw, ph, pw = geom[:6]
    x = np.random.default_rng(seed).standard_normal((2, 3) + hw).astype(np.float32)
    args = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), ceil_mode=ceil)
    xg, xt = gm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, idx = F.max_pool2d(xg, return_indices=True, **args)
    ty, tidx = torch.nn.functional.max_pool2d(xt, return_indices=True, **args)
    np.testing.assert_array_equal(y.detach().numpy(), ty.detach().numpy())
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    a = F.avg_pool2d(xg, count_include_pad=cip, **args)
    ta = torch.nn.functional.avg_pool2d(xt, count_include_pad=cip, **args)
    np.testing.assert_allclose(a.detach().numpy(), ta.detach().numpy(), rtol=1e-5, atol=1e-6)
    (y.sum() + (a * a).sum()).backward()
    (ty.sum() + (ta * ta).sum()).backward()
    np.testing.assert_allclose(xg.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-5)
