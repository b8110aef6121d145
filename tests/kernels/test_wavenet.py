"""WaveNet gate kernels (reference, numba, cpp, triton via the interpreter) against float64
math; the fused residual block against its tensor-op reference (forward and every gradient),
against torch, gradcheck of the reference path, once-differentiable, dispatch overrides, the
one-step form and argument checks."""
import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.functional import wavenet as W
from gmcore.testing import gradcheck, gradgradcheck

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
HAVE_TRITON = importlib.util.find_spec("triton") is not None
FAMILY = "causal_conv"


def _have_cpp():
    try:
        from gmcore import _C
    except ImportError:
        return False
    return hasattr(_C, "wavenet_gate_forward_cpu")


def _impl(name):
    if name == "reference":
        return W.gate_forward_reference, W.gate_backward_reference
    if name == "numba":
        from gmcore.kernels.numba import wavenet as k
        return k.gate_forward, k.gate_backward
    if name == "cpp":
        from gmcore import _C
        return _C.wavenet_gate_forward_cpu, _C.wavenet_gate_backward_cpu
    from gmcore.kernels.triton import wavenet as k  # the interpreter (conftest sets it)

    def quiet(fn):  # the interpreter evaluates both sides of tl.where: harmless warnings
        def run(*args):
            with np.errstate(all="ignore"):
                return fn(*args)
        return run
    return quiet(k.gate_forward), quiet(k.gate_backward)


IMPLS = ["reference",
         pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")),
         pytest.param("cpp", marks=pytest.mark.skipif(not _have_cpp(), reason="_C lacks wavenet")),
         pytest.param("triton", marks=pytest.mark.skipif(not HAVE_TRITON, reason="no triton"))]
CPU_OP_IMPLS = ["reference",
                pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")),
                pytest.param("cpp", marks=pytest.mark.skipif(not _have_cpp(), reason="no wavenet _C"))]


def _f64_gate(z, b, c, ga):
    """float64 truth: (a, ts, dz)."""
    z = z.astype(np.float64) + b.astype(np.float64)[:, None]
    if c is not None:
        z = z + c
    G = z.shape[1] // 2
    t = np.tanh(z[:, :G])
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(-np.abs(z[:, G:]))
        s = np.where(z[:, G:] >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    gs = ga.astype(np.float64) * s
    return t * s, np.concatenate([t, s], 1), np.concatenate([gs * (1 - t * t), gs * t * (1 - s)], 1)


def _check_gate(name, z, b, c, ga):
    fwd, bwd = _impl(name)
    a, ts = fwd(z, b, c)
    assert a.dtype == z.dtype and ts.dtype == z.dtype
    assert a.shape == (z.shape[0], z.shape[1] // 2, z.shape[2]) and ts.shape == z.shape
    dz = bwd(ts, ga)
    assert dz.dtype == z.dtype and dz.shape == z.shape
    a0, ts0, _ = _f64_gate(z, b, c, ga)
    # the backward is checked on the kernel's own ts (its inputs), the forward against truth
    t, s = ts.astype(np.float64)[:, :ts.shape[1] // 2], ts.astype(np.float64)[:, ts.shape[1] // 2:]
    gs = ga.astype(np.float64) * s
    dz0 = np.concatenate([gs * (1 - t * t), gs * t * (1 - s)], 1)
    if z.dtype == np.float64:
        kw = dict(rtol=1e-13, atol=1e-15)
    else:  # inputs summed in float32 first (z + bias + cond): an input rounding of the pre-activation
        kw = dict(rtol=2e-6, atol=3e-7 * (1 + (0 if c is None else np.abs(c).max())))
    np.testing.assert_allclose(a, a0, **kw)
    np.testing.assert_allclose(ts, ts0, **kw)
    np.testing.assert_allclose(dz, dz0, rtol=kw["rtol"] * 3, atol=kw["atol"] * (1 + np.abs(ga).max()))


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 3), g=st.integers(1, 5), length=st.integers(1, 40),
       dtype=st.sampled_from([np.float32, np.float64]), cond=st.booleans(),
       scale=st.sampled_from([0.01, 1.0, 6.0]), seed=st.integers(0, 2**31 - 1))
def test_gate_matches_float64(impl, n, g, length, dtype, cond, scale, seed):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, 2 * g, length)) * scale).astype(dtype)
    b = rng.standard_normal(2 * g).astype(dtype)
    c = rng.standard_normal(z.shape).astype(dtype) if cond else None
    ga = rng.standard_normal((n, g, length)).astype(dtype)
    _check_gate(impl, z, b, c, ga)


@pytest.mark.parametrize("impl", [p for p in IMPLS if p != "reference"])
def test_gate_long_rows(impl):
    # rows past the SIMD width and the parallel threshold, odd lengths
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((2, 6, 5001)) * 3).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    _check_gate(impl, z, b, None, rng.standard_normal((2, 3, 5001)).astype(np.float32))


EXTREMES = np.array([-1e4, -100.0, -88.0, -30.0, -9.0, -0.7, -0.625, -0.3, -1e-3, -1e-8, -0.0, 0.0,
                     1e-8, 1e-3, 0.3, 0.6249, 0.625, 0.7, 9.0, 30.0, 88.0, 100.0, 1e4,
                     np.inf, -np.inf, np.nan])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gate_extremes(impl, dtype):
    """Every pairing of extreme filter/gate pre-activations: finite where the math is, inf
    saturates (tanh -> +-1, sigmoid -> 0/1), NaN propagates, tiny values keep their relative
    accuracy (no cancellation near 0)."""
    m = EXTREMES.size
    z1, z2 = np.meshgrid(EXTREMES, EXTREMES, indexing="ij")
    z = np.stack([z1.reshape(-1), z2.reshape(-1)])[None].astype(dtype)           # (1, 2, m*m)
    b = np.zeros(2, dtype)
    ga = np.full((1, 1, m * m), 0.75, dtype)
    fwd, bwd = _impl(impl)
    a, ts = fwd(z, b, None)
    dz = bwd(ts, ga)
    with np.errstate(all="ignore"):
        a0, ts0, _ = _f64_gate(z, b, None, ga)
        t64, s64 = ts.astype(np.float64)[:, :1], ts.astype(np.float64)[:, 1:]
        gs = 0.75 * s64   # the backward from the kernel's own (rounded) saved values
        dz0 = np.concatenate([gs * (1 - t64 * t64), gs * t64 * (1 - s64)], 1)
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    for got, want, atol in ((a, a0, 4 * tiny / eps), (ts, ts0, 4 * tiny / eps), (dz, dz0, 4 * eps)):
        # dz: 1 - t^2 and 1 - s cancel near saturation; an absolute error of a few eps * |ga|
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol, equal_nan=True)
        assert np.array_equal(np.isnan(got), np.isnan(want))
    t = ts[0, 0]
    assert t[np.isposinf(z[0, 0])].tolist() == [1.0] * m and t[np.isneginf(z[0, 0])].tolist() == [-1.0] * m


@pytest.mark.parametrize("impl", IMPLS)
def test_gate_empty(impl):
    fwd, bwd = _impl(impl)
    for shape in [(0, 4, 3), (2, 4, 0)]:
        z = np.zeros(shape, np.float32)
        a, ts = fwd(z, np.zeros(4, np.float32), None)
        assert a.shape == (shape[0], 2, shape[2]) and ts.shape == shape
        assert bwd(ts, a).shape == shape


@pytest.mark.skipif(not _have_cpp(), reason="_C lacks wavenet")
def test_cpp_rejects_bad_arrays():
    from gmcore import _C
    z = np.zeros((2, 4, 5), np.float32)
    b = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.wavenet_gate_forward_cpu(np.zeros((2, 4, 10), np.float32)[:, :, ::2], b, None)
    with pytest.raises(ValueError, match="dtype"):
        _C.wavenet_gate_forward_cpu(z, b.astype(np.float64), None)
    with pytest.raises(ValueError, match="even"):
        _C.wavenet_gate_forward_cpu(np.zeros((2, 3, 5), np.float32), np.zeros(3, np.float32), None)
    with pytest.raises(ValueError, match="bias must have"):
        _C.wavenet_gate_forward_cpu(z, np.zeros(6, np.float32), None)
    with pytest.raises(ValueError, match="cond must"):
        _C.wavenet_gate_forward_cpu(z, b, np.zeros((2, 4, 6), np.float32))
    with pytest.raises(ValueError, match="ga must be"):
        _C.wavenet_gate_backward_cpu(z, np.zeros((2, 4, 5), np.float32))


# ---- the fused block --------------------------------------------------------------------------

def _block_inputs(rng, N, C, T, G, S, K, dtype, cond, biases=True, w3=False):
    def t(*shape, scale=1.0):
        return gm.tensor((rng.standard_normal(shape) * scale).astype(dtype), requires_grad=True)
    x = t(N, C, T)
    w = t(2 * G, C, K, scale=0.7)
    wr = t(C, G, 1) if w3 else t(C, G)
    ws = t(S, G, 1) if w3 else t(S, G)
    b, br, bs = (t(2 * G), t(C), t(S)) if biases else (None, None, None)
    c = None if cond is None else t(N, 2 * G, T if cond == "full" else 1)
    return [x, w, b, wr, br, ws, bs], c


def _run_block(args, cond, dilation, rng):
    res, skip = F.wavenet_residual_block(*args, dilation=dilation, cond=cond)
    gr = gm.tensor(rng.standard_normal(res.shape).astype(res.data.dtype))
    gs = gm.tensor(rng.standard_normal(skip.shape).astype(res.data.dtype))
    inputs = [a for a in args + [cond] if a is not None]
    grads = gm.autograd.grad([res, skip], inputs, grad_outputs=[gr, gs])
    return [res, skip] + list(grads)


BLOCK_CASES = [  # (N, C, T, G, S, K, dilation, cond, biases, weights as 1x1-conv (..., 1))
    (2, 3, 17, 4, 5, 2, 1, None, True, False),
    (1, 4, 23, 3, 2, 2, 4, "full", True, True),
    (3, 2, 9, 2, 3, 3, 2, "bcast", False, False),
    (2, 3, 11, 5, 4, 2, 16, "full", True, False),     # the dilation reaches past the clip
    (2, 5, 8, 3, 3, 1, 1, None, True, True),           # K = 1: a 1x1 gated block
    (1, 1, 1, 1, 1, 4, 3, "full", False, True),        # a single time step
]


@pytest.mark.parametrize("impl", CPU_OP_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", BLOCK_CASES)
def test_block_matches_reference(kernels_env, impl, dtype, case):
    N, C, T, G, S, K, d, cond, biases, w3 = case
    rng = np.random.default_rng(hash(case) % 2**32)
    args, c = _block_inputs(rng, N, C, T, G, S, K, dtype, cond, biases, w3)
    kernels_env(f"{FAMILY}=reference")
    want = _run_block(args, c, d, np.random.default_rng(7))
    assert want[0].grad_fn is None or "WaveNetResidualBlock" not in want[0].grad_fn.name()
    kernels_env(f"{FAMILY}={impl}")
    got = _run_block(args, c, d, np.random.default_rng(7))
    if impl != "reference":
        assert type(got[0].grad_fn).__name__ == "FunctionCtx"
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    names = ["residual", "skip", "d_input", "d_conv_weight", "d_conv_bias", "d_res_weight",
             "d_res_bias", "d_skip_weight", "d_skip_bias", "d_cond"]
    if not biases:
        names = [n for n in names if not n.endswith("bias")]
    for name, u, v in zip(names, got, want):
        assert u.shape == v.shape and u.dtype == v.dtype, name
        scale = 1.0 + float(np.abs(v.data).max())
        np.testing.assert_allclose(u.data, v.data, rtol=tol["rtol"], atol=tol["atol"] * scale,
                                   err_msg=name)


def test_block_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    N, C, T, G, S, K, d = 2, 4, 19, 3, 5, 2, 3
    args, c = _block_inputs(rng, N, C, T, G, S, K, np.float64, "full")
    res, skip = F.wavenet_residual_block(*args, dilation=d, cond=c)
    (res.sum() + (skip * skip).sum()).backward()
    tt = [torch.tensor(a.data, requires_grad=True) for a in args + [c]]
    x, w, b, wr, br, ws, bs, ct = tt
    z = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (d * (K - 1), 0)), w, b, dilation=d) + ct
    a = torch.tanh(z[:, :G]) * torch.sigmoid(z[:, G:])
    r = x + torch.nn.functional.conv1d(a, wr[:, :, None], br)
    s = torch.nn.functional.conv1d(a, ws[:, :, None], bs)
    (r.sum() + (s * s).sum()).backward()
    np.testing.assert_allclose(res.data, r.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(skip.data, s.detach().numpy(), rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(args + [c], tt):
        np.testing.assert_allclose(mine.grad.data, theirs.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_reference_gradcheck(kernels_env):
    kernels_env(f"{FAMILY}=reference")
    rng = np.random.default_rng(5)
    args, c = _block_inputs(rng, 2, 2, 6, 2, 3, 2, np.float64, "full")

    def f(x, w, b, wr, br, ws, bs, cond):
        res, skip = F.wavenet_residual_block(x, w, b, wr, br, ws, bs, dilation=2, cond=cond)
        return res.sum(1) + (skip * skip).sum(1)

    assert gradcheck(f, tuple(args + [c]))
    assert gradgradcheck(f, tuple(args + [c]))


def test_fused_is_once_differentiable(kernels_env):
    kernels_env(None)
    if dispatch.choose(FAMILY, "wavenet_gate_forward", "cpu")[0] == "reference":
        pytest.skip("no compiled gate kernel: the default path is the reference")
    rng = np.random.default_rng(2)
    args, _ = _block_inputs(rng, 1, 2, 5, 2, 2, 2, np.float64, None)
    res, skip = F.wavenet_residual_block(*args, dilation=1)
    (gx,) = gm.autograd.grad((res * res).sum() + skip.sum(), [args[0]], create_graph=True)
    with pytest.raises(RuntimeError, match="WaveNetResidualBlockBackward is once-differentiable"):
        gx.sum().backward()


@pytest.mark.parametrize("value, name", [
    ("reference", "reference"), (f"{FAMILY}=reference", "reference"),
    pytest.param(f"{FAMILY}=numba", "numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba")),
    pytest.param(f"{FAMILY}=cpp", "cpp", marks=pytest.mark.skipif(not _have_cpp(), reason="no cpp"))])
def test_dispatch_override(kernels_env, value, name):
    kernels_env(value)
    for op in ("wavenet_gate_forward", "wavenet_gate_backward"):
        assert dispatch.choose(FAMILY, op, "cpu")[0] == name


def test_dispatch_default_and_listing(kernels_env):
    kernels_env(None)
    want = "cpp" if _have_cpp() else "numba" if HAVE_NUMBA else "reference"
    assert dispatch.choose(FAMILY, "wavenet_gate_forward", "cpu")[0] == want
    assert dispatch.implementations(FAMILY, "cpu")[:3] == ["cpp", "numba", "reference"]
    assert dispatch.implementations(FAMILY, "cuda") == ["triton", "cuda", "reference"]


def test_float16_runs_reference():
    x = gm.randn(1, 2, 6).half()
    w, wr, ws = gm.randn(4, 2, 2).half(), gm.randn(2, 2).half(), gm.randn(3, 2).half()
    res, skip = F.wavenet_residual_block(x, w, None, wr, None, ws, None)
    assert res.dtype == gm.float16 and skip.shape == (1, 3, 6)


# ---- one step ---------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", CPU_OP_IMPLS)
@pytest.mark.parametrize("K, d", [(2, 1), (2, 5), (3, 2), (1, 1)])
def test_block_step_matches_block(kernels_env, impl, K, d):
    kernels_env(f"{FAMILY}={impl}")
    rng = np.random.default_rng(K * 10 + d)
    N, C, T, G, S = 2, 3, 13, 4, 2
    args, c = _block_inputs(rng, N, C, T, G, S, K, np.float64, "full")
    with gm.no_grad():
        res, skip = F.wavenet_residual_block(*args, dilation=d, cond=c)
    x = args[0].data
    for t in range(T):
        past = np.zeros((N, C, K - 1))
        for k in range(K - 1):
            tt = t - d * (K - 1 - k)
            if tt >= 0:
                past[:, :, k] = x[:, :, tt]
        r_t, s_t = F.wavenet_block_step(gm.tensor(x[:, :, t]), gm.tensor(past), *args[1:],
                                        cond_t=gm.tensor(c.data[:, :, t]))
        assert not r_t.requires_grad
        np.testing.assert_allclose(r_t.data, res.data[:, :, t], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s_t.data, skip.data[:, :, t], rtol=1e-12, atol=1e-12)


# ---- argument checks --------------------------------------------------------------------------

def _ok():
    return [gm.randn(2, 3, 7), gm.randn(8, 3, 2), gm.randn(8), gm.randn(3, 4), gm.randn(3),
            gm.randn(5, 4), gm.randn(5)]


@pytest.mark.parametrize("i, bad, match", [
    (0, gm.randn(3, 7), "input must be"),
    (0, gm.randn(2, 4, 7), "C = 3"),
    (1, gm.randn(7, 3, 2), "even"),
    (1, gm.randn(8, 3), "conv_weight must be"),
    (2, gm.randn(6), "conv_bias must be"),
    (3, gm.randn(3, 5), "res_weight must be"),
    (3, gm.randn(3, 4, 2), "res_weight must be"),
    (4, gm.randn(2), "res_bias must be"),
    (5, gm.randn(5, 3), "skip_weight must be"),
    (6, gm.randn(4), "skip_bias must be"),
    (1, gm.randn(8, 3, 2, dtype=gm.float64), "dtype"),
    (0, gm.zeros(2, 3, 7, dtype=gm.int64), "floating point"),
    (3, None, "res_weight is required"),
])
def test_block_rejects_bad_arguments(i, bad, match):
    args = _ok()
    args[i] = bad
    with pytest.raises((ValueError, TypeError), match=match):
        F.wavenet_residual_block(*args)


def test_block_rejects_bad_dilation_and_cond():
    with pytest.raises(ValueError, match="dilation"):
        F.wavenet_residual_block(*_ok(), dilation=0)
    with pytest.raises(ValueError, match="cond must be"):
        F.wavenet_residual_block(*_ok(), cond=gm.randn(2, 8, 6))
    with pytest.raises(TypeError, match="Tensor"):
        F.wavenet_residual_block(np.zeros((2, 3, 7)), *_ok()[1:])


def test_block_step_rejects_bad_arguments():
    a = _ok()
    with pytest.raises(ValueError, match="x_past must be"):
        F.wavenet_block_step(gm.randn(2, 3), gm.randn(2, 3, 2), *a[1:])
    with pytest.raises(ValueError, match="x_t must be"):
        F.wavenet_block_step(gm.randn(2, 3, 1), gm.randn(2, 3, 1), *a[1:])
    with pytest.raises(ValueError, match="cond_t must be"):
        F.wavenet_block_step(gm.randn(2, 3), gm.randn(2, 3, 1), *a[1:], cond_t=gm.randn(2, 8, 1))
