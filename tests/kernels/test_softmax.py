"""softmax family kernels (cpp, triton via the interpreter, reference) against a float64 NumPy
oracle; the ops softmax / log_softmax / cross_entropy over any dim, their fused and recorded
backwards (gradcheck / gradgradcheck), extremes, dispatch, and torch as a peer."""
import importlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
S = importlib.import_module("gmcore.functional.softmax")  # (the name softmax is the function)
from gmcore.testing import gradcheck, gradgradcheck

from helpers import HAVE_TORCH

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-12)}
IMPLS = ["cpp", "triton", "reference"]


def _impl(name):
    if name == "reference":
        return {op: S._REFERENCE[op] for op in S._REFERENCE}
    if name == "cpp":
        _C = pytest.importorskip("gmcore._C", reason="gmcore._C not built")
        if not hasattr(_C, "softmax_forward_cpu"):
            pytest.skip("gmcore._C predates the softmax family")
        return {op: getattr(_C, S._CPP[op]) for op in S._CPP}
    pytest.importorskip("triton")
    from gmcore.kernels._launch import interpreting
    if not interpreting():
        pytest.skip("triton runs on NumPy arrays only in the interpreter (TRITON_INTERPRET=1)")
    mod = importlib.import_module("gmcore.kernels.triton.softmax")
    return {op: getattr(mod, op) for op in S._REFERENCE}


# ---- the float64 oracle (written independently of the implementations) -----------------------

def _lse64(x3):
    m = x3.max(axis=1, keepdims=True)
    return (np.log(np.exp(x3 - m).sum(axis=1, keepdims=True)) + m)[:, 0]


def _softmax64(x3, log):
    x3 = x3.astype(np.float64)
    lp = x3 - _lse64(x3)[:, None]
    return lp if log else np.exp(lp)


def _ce64(x3, t, w, ignore, eps):
    """torch's definition: (1-eps) * (-w_t logp_t) + eps/C * (-sum_c w_c logp_c), 0 if ignored."""
    x3 = x3.astype(np.float64)
    C = x3.shape[1]
    lp = x3 - _lse64(x3)[:, None]
    w = np.ones(C) if w is None else w.astype(np.float64)
    valid = t != ignore
    ts = np.where(valid, t, 0)
    nll = -w[ts] * np.take_along_axis(lp, ts[:, None], 1)[:, 0]
    smooth = -(lp * w[None, :, None]).sum(1)
    return np.where(valid, (1 - eps) * nll + eps / C * smooth, 0.0), np.where(valid, w[ts], 0.0)


def _ce_grad64(x3, t, w, ignore, eps, gl):
    """d sum(gl * loss) / dx by the closed form (p - onehot) and (W p - w)."""
    x3 = x3.astype(np.float64)
    C = x3.shape[1]
    p = _softmax64(x3, False)
    w = np.ones(C) if w is None else w.astype(np.float64)
    valid = t != ignore
    ts = np.where(valid, t, 0)
    onehot = np.arange(C)[None, :, None] == ts[:, None]
    d = (1 - eps) * w[ts][:, None] * (p - onehot) + eps / C * (w.sum() * p - w[None, :, None])
    return np.where(valid[:, None], gl[:, None] * d, 0.0)


shapes3 = st.tuples(st.integers(0, 5), st.integers(1, 37), st.integers(1, 9))


@pytest.mark.parametrize("name", IMPLS)
@settings(max_examples=8, deadline=None)
@given(shape=shapes3, log=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.sampled_from([1.0, 30.0, 1e4]), seed=st.integers(0, 2**31 - 1))
def test_softmax_matches_oracle(name, shape, log, dtype, scale, seed):
    impl = _impl(name)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y = impl["forward"](x, log)
    ref = _softmax64(x, log)
    assert y.dtype == dtype and y.shape == shape
    tol = dict(TOL[dtype])
    if log:  # absolute error scales with the logits' magnitude
        tol["atol"] *= max(1.0, float(np.abs(ref).max(initial=1.0)))
    np.testing.assert_allclose(y, ref, **tol)
    dx = impl["backward"](y, g, log)
    # the backward is a function of (y, g): judge it on the y it was given (at logits of 1e4 a
    # float32 log-softmax is itself off by ulp(1e4) ~ 1e-3, which exp would carry into dx)
    y64 = y.astype(np.float64)
    g64 = g.astype(np.float64)
    dref = g64 - np.exp(y64) * g64.sum(1, keepdims=True) if log else \
        y64 * (g64 - (g64 * y64).sum(1, keepdims=True))
    np.testing.assert_allclose(dx, dref, rtol=TOL[dtype]["rtol"] * 10,
                               atol=TOL[dtype]["atol"] * 10 * max(1.0, np.abs(g64).sum(1).max(initial=1)))


@pytest.mark.parametrize("name", IMPLS)
@settings(max_examples=8, deadline=None)
@given(shape=shapes3, weighted=st.booleans(), eps=st.sampled_from([0.0, 0.1, 1.0]),
       dtype=st.sampled_from([np.float32, np.float64]), scale=st.sampled_from([1.0, 1e4]),
       seed=st.integers(0, 2**31 - 1))
def test_cross_entropy_matches_oracle(name, shape, weighted, eps, dtype, scale, seed):
    impl = _impl(name)
    rng = np.random.default_rng(seed)
    outer, C, inner = shape
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    t = rng.integers(0, C, size=(outer, inner))
    t[rng.random((outer, inner)) < 0.25] = -100  # some ignored positions
    w = rng.uniform(0.1, 2.0, C).astype(dtype) if weighted else None
    wsum = float(C) if w is None else float(w.sum())
    loss, wt, lse = impl["ce_forward"](x, t, w, -100, eps, wsum)
    ref, wref = _ce64(x, t, w, -100, eps)
    big = max(1.0, float(np.abs(x).max(initial=1.0)))
    atol = TOL[dtype]["atol"] * 10 * big * (wsum if eps else 2.0)
    assert loss.dtype == dtype and loss.shape == (outer, inner)
    np.testing.assert_allclose(loss, ref, rtol=TOL[dtype]["rtol"] * 10, atol=atol)
    np.testing.assert_allclose(wt, wref, rtol=TOL[dtype]["rtol"])
    np.testing.assert_allclose(lse, _lse64(x.astype(np.float64)), rtol=TOL[dtype]["rtol"],
                               atol=TOL[dtype]["atol"] * big)
    gl = rng.standard_normal((outer, inner)).astype(dtype)
    dx = impl["ce_backward"](x, t, w, lse, gl, -100, eps, wsum)
    gref = _ce_grad64(x, t, w, -100, eps, gl.astype(np.float64))
    np.testing.assert_allclose(dx, gref, rtol=TOL[dtype]["rtol"] * 10,
                               atol=TOL[dtype]["atol"] * 10 * max(1.0, wsum))
    assert np.all(dx[np.broadcast_to((t == -100)[:, None], dx.shape)] == 0)  # exact zeros


@pytest.mark.parametrize("name", IMPLS)
@pytest.mark.parametrize("inner", [1, 3])
def test_special_values_follow_torch(name, inner):
    """-inf entries give exact 0 (softmax) / -inf (log); an all -inf slice gives NaN as torch;
    logits of 1e4 stay finite."""
    impl = _impl(name)
    inf = np.inf
    rows = np.array([[-inf, 0.0, 1.0, -inf], [1e4, 1e4 - 1, -1e4, 0.0], [-inf] * 4,
                     [3.0, 3.0, 3.0, 3.0]])
    x = np.ascontiguousarray(np.repeat(rows[:, :, None], inner, axis=2))
    for log in (False, True):
        y = impl["forward"](x, log)
        with np.errstate(invalid="ignore"):
            ref = S.softmax_forward_reference(x, log)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
        assert np.isnan(y[2]).all()
        # x - lse rounds at the scale of the 1e4 logits: atol 1e4 * 2^-52 ~ 2e-12
        np.testing.assert_allclose(y[[0, 1, 3]], ref[[0, 1, 3]], rtol=1e-12, atol=1e-11)
    assert (impl["forward"](x, False)[0, [0, 3]] == 0).all()
    t = np.array([[1] * inner, [2] * inner, [-100] * inner, [0] * inner])
    loss, wt, lse = impl["ce_forward"](x, t, None, -100, 0.0, 4.0)
    assert np.isfinite(loss).all() and loss[2].tolist() == [0.0] * inner
    np.testing.assert_allclose(loss[1], 2e4 + np.log1p(np.exp(-1)), rtol=1e-12)
    dx = impl["ce_backward"](x, t, None, lse, np.ones_like(lse), -100, 0.0, 4.0)
    assert np.isfinite(dx).all() and (dx[2] == 0).all()


@pytest.mark.parametrize("name", IMPLS)
@pytest.mark.parametrize("shape", [(2, 1100, 1), (2, 40, 70)])
def test_multi_chunk_shapes(name, shape):
    """More classes than one Triton block (1024) and more positions than one tile (64)."""
    impl = _impl(name)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    t = rng.integers(0, shape[1], (shape[0], shape[2]))
    w = rng.uniform(0.5, 2.0, shape[1])
    np.testing.assert_allclose(impl["forward"](x, False), _softmax64(x, False), rtol=1e-11)
    loss, wt, lse = impl["ce_forward"](x, t, w, -100, 0.1, float(w.sum()))
    np.testing.assert_allclose(loss, _ce64(x, t, w, -100, 0.1)[0], rtol=1e-11)
    gl = rng.standard_normal(lse.shape)
    np.testing.assert_allclose(impl["ce_backward"](x, t, w, lse, gl, -100, 0.1, float(w.sum())),
                               _ce_grad64(x, t, w, -100, 0.1, gl), rtol=1e-10, atol=1e-13)


def test_cpp_rejects_bad_arguments():
    _C = pytest.importorskip("gmcore._C")
    if not hasattr(_C, "softmax_forward_cpu"):
        pytest.skip("gmcore._C predates the softmax family")
    x = np.zeros((2, 3, 1))
    with pytest.raises(ValueError, match="3-D"):
        _C.softmax_forward_cpu(np.zeros((2, 3)), False)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.softmax_forward_cpu(np.zeros((2, 6, 1))[:, ::2], False)
    with pytest.raises(IndexError, match="out of bounds"):
        _C.cross_entropy_forward_cpu(x, np.array([0, 3]), None, -100, 0.0, 3.0)
    with pytest.raises(ValueError, match="int64"):
        _C.cross_entropy_forward_cpu(x, np.array([0, 1], dtype=np.int32), None, -100, 0.0, 3.0)
    with pytest.raises(ValueError, match="weight"):
        _C.cross_entropy_forward_cpu(x, np.array([0, 1]), np.ones(2), -100, 0.0, 3.0)


def test_cpp_large_parallel_rows_and_tiles():
    """Above the OpenMP threshold, both the row and the tile layouts agree with the oracle."""
    _impl("cpp")
    rng = np.random.default_rng(3)
    for shape in [(700, 101, 1), (3, 130, 211)]:
        x = rng.standard_normal(shape).astype(np.float32)
        y = gm._C.softmax_forward_cpu(x, True)
        np.testing.assert_allclose(y, _softmax64(x, True), rtol=2e-5, atol=2e-5)


# ---- the ops -----------------------------------------------------------------------------------

@pytest.fixture(params=["default", "reference"])
def kernels(request, kernels_env):
    kernels_env(None if request.param == "default" else "softmax=reference")
    return request.param


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("log", [False, True])
def test_op_any_dim_forward_and_gradients(kernels, dim, log):
    rng = np.random.default_rng(dim + 7)
    x64 = rng.standard_normal((3, 5, 4))
    fn = F.log_softmax if log else F.softmax
    x = gm.tensor(x64, requires_grad=True)
    y = fn(x, dim)
    xm = np.moveaxis(x64, dim, -1)
    lp = xm - _lse64(xm.reshape(-1, xm.shape[-1], 1)).reshape(xm.shape[:-1])[..., None]
    ref = np.moveaxis(lp if log else np.exp(lp), -1, dim)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    y32 = fn(gm.tensor(x64, dtype=gm.float32), dim)
    assert y32.dtype == gm.float32
    np.testing.assert_allclose(y32.detach().numpy(), ref, rtol=2e-5, atol=2e-6)
    assert gradcheck(lambda a: fn(a, dim), (x,))
    assert gradgradcheck(lambda a: fn(a, dim), (gm.tensor(x64[:2, :3, :2], requires_grad=True),))


def test_op_zero_dim_and_empty():
    s = gm.tensor(2.0, requires_grad=True)
    F.softmax(s, 0).backward()
    assert s.grad.item() == 0.0 and F.log_softmax(s, -1).item() == 0.0
    e = gm.tensor(np.zeros((0, 4)), requires_grad=True)
    F.log_softmax(e, 1).sum().backward()
    assert e.grad.shape == (0, 4)


def _ce_args(rng, N, C, extra=(), ignore_frac=0.3):
    x = rng.standard_normal((N, C) + extra)
    t = rng.integers(0, C, size=(N,) + extra)
    t[rng.random(t.shape) < ignore_frac] = -100
    return x, t


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("extra,weighted", [((), True), ((3,), False)])
def test_cross_entropy_op(kernels, reduction, eps, extra, weighted):
    rng = np.random.default_rng(len(extra) * 10 + int(weighted))
    x64, t = _ce_args(rng, 4, 5, extra)
    w64 = rng.uniform(0.5, 2.0, 5) if weighted else None
    weight = None if w64 is None else gm.tensor(w64)
    x = gm.tensor(x64, requires_grad=True)
    out = F.cross_entropy(x, gm.tensor(t), weight=weight, reduction=reduction, label_smoothing=eps)
    x3 = x64.reshape(4, 5, -1)
    per, wt = _ce64(x3, t.reshape(4, -1), w64, -100, eps)
    ref = {"none": per.reshape(t.shape), "sum": per.sum(), "mean": per.sum() / wt.sum()}[reduction]
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    out32 = F.cross_entropy(gm.tensor(x64, dtype=gm.float32), gm.tensor(t), reduction=reduction,
                            weight=None if w64 is None else gm.tensor(w64, dtype=gm.float32),
                            label_smoothing=eps)
    np.testing.assert_allclose(out32.detach().numpy(), ref, rtol=1e-5, atol=1e-5)

    def f(a):
        return F.cross_entropy(a, gm.tensor(t), weight=weight, reduction=reduction,
                               label_smoothing=eps)
    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,))


def test_cross_entropy_1d_input_and_ignore_index():
    x = gm.tensor([0.5, -1.0, 2.0], dtype=gm.float64, requires_grad=True)
    assert gradcheck(lambda a: F.cross_entropy(a, gm.tensor(2), label_smoothing=0.1), (x,))
    y = gm.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    t = gm.tensor([1, 7, 2])
    assert gradcheck(lambda a: F.cross_entropy(a, t, ignore_index=7), (y,))


def test_cross_entropy_all_ignored_and_empty(kernels):
    x = gm.tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
    t = gm.tensor([-100, -100, -100])
    mean = F.cross_entropy(x, t)
    assert np.isnan(mean.item())  # 0 / 0, as torch
    s = F.cross_entropy(x, t, reduction="sum", label_smoothing=0.3)
    assert s.item() == 0.0
    s.backward()
    assert (x.grad.detach().numpy() == 0).all()
    e = gm.tensor(np.zeros((0, 4)), requires_grad=True)
    assert np.isnan(F.cross_entropy(e, gm.tensor(np.zeros(0, dtype=np.int64))).item())
    F.cross_entropy(e, gm.tensor(np.zeros(0, dtype=np.int64)), reduction="sum").backward()
    assert e.grad.shape == (0, 4)


def test_cross_entropy_large_logits_finite_gradients(kernels):
    x64 = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4 - 3]])
    x = gm.tensor(x64, dtype=gm.float32, requires_grad=True)
    loss = F.cross_entropy(x, gm.tensor([1, 2]), label_smoothing=0.1)
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(x.grad.detach().numpy()).all()
    np.testing.assert_allclose(loss.item(), _ce64(x64[:, :, None], np.array([[1], [2]]), None,
                                                  -100, 0.1)[0].mean(), rtol=1e-6)


def test_fused_backward_equals_recorded_backward(kernels):
    """The fused (unrecorded) and tensor-op (recorded) backwards give the same gradient."""
    rng = np.random.default_rng(5)
    x64, t = _ce_args(rng, 6, 7, (2,))
    w = gm.tensor(rng.uniform(0.5, 2, 7))
    for fn in (lambda a: F.cross_entropy(a, gm.tensor(t), weight=w, label_smoothing=0.1),
               lambda a: (F.log_softmax(a, 1) * gm.tensor(x64)).sum(),
               lambda a: (F.softmax(a, 2) * gm.tensor(x64)).sum()):
        x = gm.tensor(x64, requires_grad=True)
        g1, = gm.autograd.grad(fn(x), [x])
        g2, = gm.autograd.grad(fn(x), [x], create_graph=True)
        np.testing.assert_allclose(g1.detach().numpy(), g2.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_dispatch_registration_and_override(kernels_env):
    assert dispatch.implementations("softmax", "cpu") == ["cpp", "reference"]
    assert dispatch.implementations("softmax", "cuda") == ["triton", "cuda", "reference"]
    kernels_env("softmax=reference")
    assert dispatch.choose("softmax", "forward", "cpu")[0] == "reference"
    assert dispatch.choose("softmax", "ce_backward", "cpu")[0] == "reference"


def test_float16_runs_the_reference():
    x = gm.tensor(np.array([[0.0, 1.0, 2.0]]), dtype=gm.float16)
    np.testing.assert_allclose(F.softmax(x, 1).detach().numpy().astype(np.float64),
                               _softmax64(np.array([[[0.0], [1.0], [2.0]]]), False)[:, :, 0],
                               rtol=2e-3)


# ---- torch as a peer ---------------------------------------------------------------------------

@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.15])
def test_cross_entropy_matches_torch(reduction, eps):
    import torch
    rng = np.random.default_rng(11)
    x64, t = _ce_args(rng, 5, 6, (2,))
    w = rng.uniform(0.5, 2.0, 6)
    for weight in (None, w):
        xg = gm.tensor(x64, requires_grad=True)
        xt = torch.tensor(x64, requires_grad=True)
        out = F.cross_entropy(xg, gm.tensor(t), weight=None if weight is None else gm.tensor(weight),
                              reduction=reduction, label_smoothing=eps)
        ref = torch.nn.functional.cross_entropy(
            xt, torch.tensor(t), weight=None if weight is None else torch.tensor(weight),
            reduction=reduction, label_smoothing=eps)
        np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-12)
        out.sum().backward()
        ref.sum().backward()
        np.testing.assert_allclose(xg.grad.detach().numpy(), xt.grad.detach().numpy(), rtol=1e-11, atol=1e-12)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_softmax_matches_torch_with_inf():
    import torch
    x = np.array([[-np.inf, 1.0, 2.0], [-np.inf, -np.inf, -np.inf], [1e4, 0.0, -1e4]],
                 dtype=np.float32)
    for fn, tfn in ((F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)):
        got = fn(gm.tensor(x), 1).detach().numpy()
        ref = tfn(torch.tensor(x), 1).detach().numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-30)
