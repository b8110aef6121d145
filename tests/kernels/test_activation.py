"""activation kernels (cpp) against the float64 reference; the ops (gelu, silu, elu, leaky_relu,
softplus, mish, concat_elu): extremes, gradients, double backward, torch peer, dispatch."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.functional import _activation_kernels as A
from gmcore.testing import gradcheck, gradgradcheck

_C = pytest.importorskip("gmcore._C", reason="gmcore._C not built")

# (kernel op, a, b) and the public call with the same meaning
CASES = {
    "gelu": ("gelu", 0.0, 0.0, lambda t: F.gelu(t)),
    "gelu_tanh": ("gelu_tanh", 0.0, 0.0, lambda t: F.gelu(t, approximate="tanh")),
    "silu": ("silu", 0.0, 0.0, lambda t: F.silu(t)),
    "elu": ("elu", 1.0, 0.0, lambda t: F.elu(t)),
    "elu_a": ("elu", 0.7, 0.0, lambda t: F.elu(t, alpha=0.7)),
    "leaky_relu": ("leaky_relu", 0.2, 0.0, lambda t: F.leaky_relu(t, 0.2)),
    "softplus": ("softplus", 1.0, 20.0, lambda t: F.softplus(t)),
    "softplus_b": ("softplus", 2.0, 3.0, lambda t: F.softplus(t, beta=2.0, threshold=3.0)),
    "softplus_neg": ("softplus", -1.5, 20.0, lambda t: F.softplus(t, beta=-1.5)),
    "mish": ("mish", 0.0, 0.0, lambda t: F.mish(t)),
}
TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-13, atol=1e-13)}


def _textbook(op, x, a, b):
    """float64 definitions from math's scalar functions: independent of the reference's forms."""
    def one(v):
        if op == "gelu":
            return 0.5 * v * math.erfc(-v / math.sqrt(2))
        if op == "gelu_tanh":
            u = math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)  # 0.5 (1 + tanh u) without 1 - 1
            u = max(min(u, 300.0), -300.0)  # tanh is +-1 to double precision long before
            return v * math.exp(u) / (math.exp(u) + math.exp(-u))
        if op == "silu":
            return v / (1 + math.exp(-v)) if v > -700 else 0.0 * v
        if op == "elu":
            return v if v > 0 else a * math.expm1(v)
        if op == "leaky_relu":
            return v if v > 0 else a * v
        if op == "softplus":
            z = a * v
            return v if z > b else (max(z, 0) + math.log1p(math.exp(-abs(z)))) / a
        if op == "mish":
            return v * math.tanh(max(v, 0) + math.log1p(math.exp(-abs(v))))
    return np.array([one(float(v)) for v in x.reshape(-1)]).reshape(x.shape)


@pytest.mark.parametrize("case", list(CASES))
def test_reference_matches_textbook(case):
    op, a, b, _ = CASES[case]
    x = np.concatenate([np.linspace(-12, 12, 97), [0.0, -0.0, 1e-8, -1e-8, 30.0, -30.0]])
    np.testing.assert_allclose(A.forward_reference(op, x, a, b), _textbook(op, x, a, b),
                               rtol=1e-13, atol=1e-200)
    # the derivative against central differences of the textbook form
    h = 1e-6
    fd = (_textbook(op, x + h, a, b) - _textbook(op, x - h, a, b)) / (2 * h)
    ok = np.abs(x) > 1e-5  # not across the kinks of elu / leaky_relu
    if op == "softplus":
        ok &= np.abs(a * x - b) > 1e-3
    np.testing.assert_allclose(A.backward_reference(op, np.ones_like(x), x, a, b)[ok], fd[ok],
                               rtol=1e-7, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(list(CASES)), dtype=st.sampled_from([np.float32, np.float64]),
       shape=st.lists(st.integers(1, 41), min_size=1, max_size=3),
       scale=st.sampled_from([1e-3, 1.0, 4.0, 30.0, 1e4]), seed=st.integers(0, 2**31 - 1))
def test_cpp_matches_reference(case, dtype, shape, scale, seed):
    op, a, b, _ = CASES[case]
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y = _C.activation_forward_cpu(op, x, a, b)
    dx = _C.activation_backward_cpu(op, g, x, a, b)
    assert y.dtype == dtype and y.shape == x.shape and dx.dtype == dtype and dx.shape == x.shape
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    np.testing.assert_allclose(y, A.forward_reference(op, x64, a, b), **TOL[dtype])
    np.testing.assert_allclose(dx, A.backward_reference(op, g64, x64, a, b), **TOL[dtype])


def test_cpp_large_parallel():
    """Above the OpenMP threshold, with a length that is no multiple of the chunk."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(200_003) * 5).astype(np.float32)
    for op, a, b, _ in CASES.values():
        np.testing.assert_allclose(_C.activation_forward_cpu(op, x, a, b),
                                   A.forward_reference(op, x.astype(np.float64), a, b), **TOL[np.float32])
        np.testing.assert_allclose(_C.activation_backward_cpu(op, x, x, a, b),
                                   A.backward_reference(op, x.astype(np.float64), x.astype(np.float64), a, b),
                                   rtol=2e-6, atol=1e-5)


EXTREMES = [0.0, -0.0, 1e-30, -1e-30, 5.0, -5.0, 20.0, -20.0, 88.0, -88.0, 104.0, -104.0,
            1e4, -1e4, 1e30, -1e30]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_cpp_extremes(case, dtype):
    op, a, b, _ = CASES[case]
    x = np.array(EXTREMES, dtype=dtype)
    y = _C.activation_forward_cpu(op, x, a, b)
    dx = _C.activation_backward_cpu(op, np.ones_like(x), x, a, b)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx)), (y, dx)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, A.forward_reference(op, x64, a, b), rtol=2e-6, atol=1e-30)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(A.forward_reference(op, x, a, b)))  # elu(0) = +0
    np.testing.assert_allclose(dx, A.backward_reference(op, np.ones_like(x64), x64, a, b),
                               rtol=2e-6, atol=1e-30)
    # NaN propagates forward, and backward except through leaky_relu's constant slope (as torch:
    # x > 0 is False for NaN, so the gradient is g * slope); +-inf forward as the reference
    special = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    ys = _C.activation_forward_cpu(op, special, a, b)
    dnan = _C.activation_backward_cpu(op, np.ones(1, dtype), special[:1], a, b)[0]
    assert np.isnan(ys[0]) and (np.isnan(dnan) if op != "leaky_relu" else dnan == dtype(a))
    np.testing.assert_array_equal(ys[1:], A.forward_reference(op, special[1:], a, b))


@pytest.mark.parametrize("case", ["gelu", "silu", "elu", "leaky_relu", "softplus", "mish"])
def test_cpp_empty_and_scalar(case):
    op, a, b, _ = CASES[case]
    for x in (np.zeros((0, 3), np.float32), np.zeros(0), np.array(1.5), np.array(-0.5, np.float32)):
        y = _C.activation_forward_cpu(op, x, a, b)
        assert y.shape == x.shape and y.dtype == x.dtype
        np.testing.assert_allclose(y, A.forward_reference(op, x, a, b), rtol=1e-6)


def test_cpp_rejects_bad_arrays():
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.activation_forward_cpu("gelu", np.zeros((4, 6))[:, ::2])
    with pytest.raises(ValueError, match="float32 or float64"):
        _C.activation_forward_cpu("gelu", np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        _C.activation_forward_cpu("swish", np.zeros(3))
    with pytest.raises(ValueError, match="dtype differs"):
        _C.activation_backward_cpu("gelu", np.zeros(3, np.float32), np.zeros(3))
    with pytest.raises(ValueError, match="twice the channels"):
        _C.concat_elu_backward_cpu(np.zeros((2, 3)), np.zeros((2, 3)))


# ---- concat_elu ---------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]),
       shape=st.lists(st.integers(1, 13), min_size=2, max_size=4), seed=st.integers(0, 2**31 - 1),
       alpha=st.sampled_from([1.0, 0.5]))
def test_cpp_concat_elu(dtype, shape, seed, alpha):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    y = _C.concat_elu_forward_cpu(x, alpha)
    assert y.shape == (shape[0], 2 * shape[1], *shape[2:])
    g = rng.standard_normal(y.shape).astype(dtype)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, A.concat_elu_forward_reference(x64, alpha), **TOL[dtype])
    np.testing.assert_allclose(_C.concat_elu_backward_cpu(g, x, alpha),
                               A.concat_elu_backward_reference(g.astype(np.float64), x64, alpha), **TOL[dtype])


def test_concat_elu_large_and_empty():
    x = np.random.default_rng(2).standard_normal((3, 5, 97, 61)).astype(np.float32)  # > threshold
    np.testing.assert_allclose(_C.concat_elu_forward_cpu(x), A.concat_elu_forward_reference(x.astype(np.float64)),
                               **TOL[np.float32])
    assert _C.concat_elu_forward_cpu(np.zeros((0, 4, 2))).shape == (0, 8, 2)
    assert F.concat_elu(gm.zeros(2, 0, 3)).shape == (2, 0, 3)


@pytest.mark.parametrize("impl", ["cpp", "reference"])
def test_concat_elu_op_grads(kernels_env, impl):
    kernels_env(f"activation={impl}")
    x = gm.tensor(np.random.default_rng(3).standard_normal((2, 3, 5)), requires_grad=True)
    assert gradcheck(lambda t: F.concat_elu(t), (x,))
    assert gradgradcheck(lambda t: F.concat_elu(t, alpha=0.5), (x,))


def test_concat_elu_bad_input():
    with pytest.raises(ValueError, match="at least 2 dims"):
        F.concat_elu(gm.ones(3))


# ---- the ops --------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["cpp", "reference"])
@pytest.mark.parametrize("case", list(CASES))
def test_op_gradcheck_and_gradgradcheck(kernels_env, impl, case):
    kernels_env(f"activation={impl}")
    fn = CASES[case][3]
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 7)) * 3
    a[0, :3] = [25.0, -25.0, 1.3]  # beyond softplus's threshold, both signs
    x = gm.tensor(a, requires_grad=True)
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


@pytest.mark.parametrize("case", list(CASES))
def test_op_impls_agree(kernels_env, case):
    """The op through cpp and through reference (float32, non-contiguous input, backward)."""
    fn = CASES[case][3]
    a = (np.random.default_rng(5).standard_normal((9, 41, 3)) * 4).astype(np.float32).transpose(2, 0, 1)
    w = np.random.default_rng(6).standard_normal(a.shape).astype(np.float32)
    out = {}
    for impl in ("cpp", "reference"):
        kernels_env(f"activation={impl}")
        x = gm.tensor(a, requires_grad=True)
        y = fn(x)
        (y * gm.tensor(w)).sum().backward()
        assert y.dtype == gm.float32 and x.grad.dtype == gm.float32
        out[impl] = y.detach().numpy(), x.grad.numpy()
    for u, v in zip(out["cpp"], out["reference"]):
        np.testing.assert_allclose(u, v, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("case", ["gelu", "softplus_b", "mish"])
def test_op_sum_backward_broadcast_grad(kernels_env, case):
    """y.sum() sends a stride-0 gradient: the kernel broadcasts its one value (no copy)."""
    fn = CASES[case][3]
    a = np.random.default_rng(9).standard_normal((7, 300)).astype(np.float32) * 3
    grads = {}
    for impl in ("cpp", "reference"):
        kernels_env(f"activation={impl}")
        x = gm.tensor(a, requires_grad=True)
        (fn(x).sum() * 2.5).backward()
        grads[impl] = x.grad.numpy()
    np.testing.assert_allclose(grads["cpp"], grads["reference"], rtol=2e-6, atol=2e-6)
    op, ka, kb, _ = CASES[case]
    one = _C.activation_backward_cpu(op, np.array([2.5], np.float32), a, ka, kb)
    np.testing.assert_array_equal(one, _C.activation_backward_cpu(op, np.full_like(a, 2.5), a, ka, kb))


def test_op_integer_and_half_inputs():
    assert F.gelu(gm.tensor([1, -2])).dtype == gm.get_default_dtype()
    y = F.silu(gm.tensor(np.array([1.0, -2.0], np.float16)))  # no kernel: the reference runs
    np.testing.assert_allclose(y.numpy().astype(np.float64), [0.7311, -0.2384], rtol=2e-3)


def test_op_double_backward_through_cpp_forward(kernels_env):
    """create_graph=True builds the backward from tensor ops even when cpp ran the forward."""
    kernels_env("activation=cpp")
    x = gm.tensor([0.3, -1.2, 2.0], dtype=gm.float64, requires_grad=True)
    (g,) = gm.autograd.grad(F.silu(x).sum(), [x], create_graph=True)
    (h,) = gm.autograd.grad(g.sum(), [x])
    s = 1 / (1 + np.exp(-x.detach().numpy()))
    v = x.detach().numpy()
    np.testing.assert_allclose(h.numpy(), s * (1 - s) * (2 + v * (1 - 2 * s)), rtol=1e-12)


# ---- torch as a peer --------------------------------------------------------------------------

def _torch_fn(case):
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    return {"gelu": TF.gelu, "gelu_tanh": lambda t: TF.gelu(t, approximate="tanh"), "silu": TF.silu,
            "elu": TF.elu, "elu_a": lambda t: TF.elu(t, alpha=0.7),
            "leaky_relu": lambda t: TF.leaky_relu(t, 0.2), "softplus": TF.softplus,
            "softplus_b": lambda t: TF.softplus(t, beta=2.0, threshold=3.0),
            "softplus_neg": lambda t: TF.softplus(t, beta=-1.5), "mish": TF.mish}[case]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_torch_peer(case, dtype):
    torch = pytest.importorskip("torch")
    tfn = _torch_fn(case)
    rng = np.random.default_rng(7)
    a = np.concatenate([rng.standard_normal(300) * 4, [0.0, 1e-30, -1e-30, 15.0, -15.0, 50.0, -50.0]])
    a = a.astype(dtype)
    w = rng.standard_normal(a.shape).astype(dtype)
    x = gm.tensor(a, requires_grad=True)
    y = CASES[case][3](x)
    (y * gm.tensor(w)).sum().backward()
    tx = torch.tensor(a, requires_grad=True)
    ty = tfn(tx)
    (ty * torch.tensor(w)).sum().backward()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    if case == "gelu_tanh" and dtype == np.float32:
        tol["atol"] = 4e-6  # torch's float32 1 + tanh(u) cancels for x < -3 (we use sigmoid(2u))
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), **tol)
    # special values, forward: NaN where torch has NaN, the same infinities
    s = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    got, want = CASES[case][3](gm.tensor(s)).numpy(), tfn(torch.tensor(s)).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_torch_peer_concat_elu():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(8).standard_normal((2, 3, 4, 5)).astype(np.float32)
    x = gm.tensor(a, requires_grad=True)
    y = F.concat_elu(x)
    y.pow(2).sum().backward()
    tx = torch.tensor(a, requires_grad=True)
    ty = torch.nn.functional.elu(torch.cat([tx, -tx], 1))
    ty.pow(2).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


# ---- dispatch -----------------------------------------------------------------------------------

def test_dispatch_prefers_cpp_on_cpu(kernels_env):
    kernels_env(None)
    for op in ("forward", "backward", "concat_elu_forward", "concat_elu_backward"):
        assert dispatch.choose("activation", op, "cpu")[0] == "cpp"


@pytest.mark.parametrize("value, name", [("reference", "reference"), ("activation=reference", "reference"),
                                         ("activation=cpp", "cpp")])
def test_dispatch_override(kernels_env, value, name):
    kernels_env(value)
    assert dispatch.choose("activation", "forward", "cpu")[0] == name
    assert dispatch.choose("activation", "backward", "cpu")[0] == name


def test_dispatch_override_error(kernels_env):
    kernels_env("activation=triton")
    with pytest.raises(ValueError, match="no implementation 'triton'"):
        dispatch.get("activation", "forward", "cpu")
