"""The norm family (layer_norm, group_norm, batch_norm): every implementation against the float64
reference on odd shapes and extremes (constant rows, 1e4 offsets, empty batches, no affine), the
public ops against torch (running statistics included), gradients (fused backward vs finite
differences) and double backward (the tensor-op backward recorded under create_graph=True),
dispatch overrides."""
import importlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.functional import _norm as N
from gmcore.testing import gradcheck, gradgradcheck

OPS = N.OPS
# kernels normalise in float64 and round once: a few ulp of the result's magnitude
TOL = {np.float32: 2e-6, np.float64: 1e-12}


def _cpp_impl():
    _C = pytest.importorskip("gmcore._C", reason="gmcore._C not built")
    if not hasattr(_C, "norm_row_forward_cpu"):
        pytest.skip("gmcore._C built without the norm family")
    return {op: getattr(_C, f"norm_{op}_cpu") for op in OPS}


def _triton_impl():
    pytest.importorskip("triton")
    from gmcore.kernels._launch import interpreting
    if not interpreting():
        pytest.skip("triton runs on NumPy arrays only in the interpreter (TRITON_INTERPRET=1)")
    mod = importlib.import_module("gmcore.kernels.triton.norm")
    return {op: getattr(mod, op) for op in OPS}


IMPLS = {"cpp": _cpp_impl, "triton": _triton_impl,
         "reference": lambda: {op: getattr(N, f"{op}_reference") for op in OPS}}


def _cond(x, rstd, dtype):
    """float64 results inherit the input's rounding amplified by |x| / std (a 1e4 offset on
    noise of 1e-2 leaves ~10 digits); float32 results are rounded far above that."""
    if dtype != np.float64 or x.size == 0:
        return 1.0
    return max(1.0, float(np.abs(x).max()) * float(np.nanmax(np.r_[rstd, 0.0])))


def _dx_cond(x, dy, w, rstd, dtype):
    """dx = rstd (w dy - mean(w dy) - xh mean(w dy xh)): its terms are of size rstd |w dy| before
    they cancel, and the float32 kernels combine them in float32 (the vectorised S == 1 path), so
    a float32 dx is good to a few ulp of that size (rows of two close values: rstd in the
    hundreds, dx of order 1). float64 keeps :func:`_cond`."""
    if dtype == np.float64 or x.size == 0:
        return _cond(x, rstd, dtype)
    wdy = np.abs(dy.astype(np.float64)).max() * (1.0 if w is None else max(1.0, float(np.abs(w).max())))
    return max(1.0, float(np.nanmax(np.r_[rstd, 0.0])) * wdy)


def _close(got, ref, dtype, what, cond=1.0):
    if ref is None:
        assert got is None, f"{what}: expected None"
        return
    assert got.shape == ref.shape, f"{what}: shape {got.shape} vs {ref.shape}"
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=what)
    ok = ~np.isnan(ref)
    assert np.all(np.isfinite(got[ok])), f"{what}: non-finite values"
    scale = 1.0 + np.abs(ref[ok]).max(initial=0.0)
    err = np.abs(got[ok] - ref[ok]).max(initial=0.0) / scale
    assert err <= TOL[dtype] * cond, f"{what}: worst error {err:.3g} (relative to {scale:.3g})"


def _data(rng, shape, kind, dtype):
    if kind == "normal":
        x = rng.standard_normal(shape) * 2.0 + 0.5
    elif kind == "offset":  # 1e4 + small noise: E[x^2] - E[x]^2 would lose every digit
        x = 1e4 + rng.standard_normal(shape) * 1e-2
    else:  # constant: variance exactly 0, rstd = 1/sqrt(eps)
        x = np.full(shape, 3.25)
    return x.astype(dtype)


def _params(rng, n, dtype, affine):
    if not affine:
        return None, None
    return (rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype))


def _ref64(op, *args):
    """The reference on float64 copies of every floating array."""
    conv = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
            for a in args]
    return getattr(N, f"{op}_reference")(*conv)


# ---- kernels against the float64 reference ----------------------------------------------------

@pytest.mark.parametrize("impl", list(IMPLS))
@settings(max_examples=12, deadline=None)
@given(nb=st.integers(0, 3), G=st.integers(1, 3), K=st.integers(1, 7), S=st.sampled_from([1, 3, 9, 41]),
       kind=st.sampled_from(["normal", "offset", "constant"]), affine=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1))
def test_rows_match_reference(impl, nb, G, K, S, kind, affine, dtype, seed):
    f = IMPLS[impl]()
    rng = np.random.default_rng(seed)
    R, M = nb * G, K * S
    x = _data(rng, (R, M), kind, dtype)
    dy = rng.standard_normal((R, M)).astype(dtype)
    w, b = _params(rng, G * K, dtype, affine)
    y, mean, rstd = f["row_forward"](x, w, b, G, K, S, 1e-5)
    ry, rmean, rrstd = _ref64("row_forward", x, w, b, G, K, S, 1e-5)
    assert y.dtype == dtype and mean.dtype == np.float64 and rstd.dtype == np.float64
    cond = _cond(x, rrstd, dtype)
    _close(y, ry, dtype, "y", cond)
    _close(mean, rmean, dtype, "mean")
    _close(rstd / rrstd if R else rstd, np.ones(R) if R else rrstd, dtype, "rstd (ratio)")
    dx, dw, db = f["row_backward"](x, dy, w, rmean, rrstd, G, K, S, affine, affine)
    rdx, rdw, rdb = _ref64("row_backward", x, dy, w, rmean, rrstd, G, K, S, affine, affine)
    # dx carries rstd (1/sqrt(eps) ~ 316 for constant rows): compare relative to its scale
    _close(dx, rdx, dtype, "dx", _dx_cond(x, dy, w, rrstd, dtype))
    _close(dw, rdw, dtype, "dweight", cond)
    _close(db, rdb, dtype, "dbias")


def test_rows_of_two_close_values_keep_dx_to_a_few_ulp_of_its_terms():
    """The case hypothesis found (seed 78462203): a group of two values 6e-3 apart (rstd 56),
    where dx (order 1) is what is left of terms of order 100; every implementation stays within
    a few float32 ulp of those terms."""
    rng = np.random.default_rng(78462203)
    x = (rng.standard_normal((6, 2)) * 2.0 + 0.5).astype(np.float32)
    dy = rng.standard_normal((6, 2)).astype(np.float32)
    _, rmean, rrstd = _ref64("row_forward", x, None, None, 3, 2, 1, 1e-5)
    rdx = _ref64("row_backward", x, dy, None, rmean, rrstd, 3, 2, 1, False, False)[0]
    assert rrstd.max() > 50 and np.abs(rdx).max() > 1          # the ill-conditioned row is there
    for impl in ("cpp", "reference"):
        try:
            f = IMPLS[impl]()
        except pytest.skip.Exception:
            continue
        dx = f["row_backward"](x, dy, None, rmean, rrstd, 3, 2, 1, False, False)[0]
        terms = rrstd[:, None] * np.abs(dy).max(axis=1, keepdims=True)
        assert (np.abs(dx - rdx) <= 4 * np.finfo(np.float32).eps * terms + 1e-12).all(), impl


@pytest.mark.parametrize("impl", list(IMPLS))
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 5), C=st.integers(1, 5), S=st.sampled_from([1, 2, 7, 33]),
       kind=st.sampled_from(["normal", "offset", "constant"]), affine=st.booleans(),
       train=st.booleans(), need_dx=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_channels_match_reference(impl, n, C, S, kind, affine, train, need_dx, dtype, seed):
    f = IMPLS[impl]()
    rng = np.random.default_rng(seed)
    x = _data(rng, (n, C, S), kind, dtype)
    dy = rng.standard_normal((n, C, S)).astype(dtype)
    w, b = _params(rng, C, dtype, affine)
    rm = x.astype(np.float64).mean(axis=(0, 2)) + rng.standard_normal(C)  # eval: given stats
    rr = rng.uniform(0.5, 2.0, C)
    y, mean, var, rstd = f["chan_forward"](x, w, b, rm, rr, 1e-5, train)
    ry, rmean, rvar, rrstd = _ref64("chan_forward", x, w, b, rm, rr, 1e-5, train)
    cond = _cond(x, rrstd, dtype)
    _close(y, ry, dtype, "y", cond)
    _close(mean, rmean, dtype, "mean")
    if train:
        _close(var, rvar, dtype, "var", cond)
    dx, dw, db = f["chan_backward"](x, dy, w, rmean, rrstd, train, need_dx, affine, affine)
    rdx, rdw, rdb = _ref64("chan_backward", x, dy, w, rmean, rrstd, train, need_dx, affine, affine)
    _close(dx, rdx, dtype, "dx")
    _close(dw, rdw, dtype, "dweight")
    _close(db, rdb, dtype, "dbias")


@pytest.mark.parametrize("impl", list(IMPLS))
def test_large_parallel_layouts(impl):
    """Above the OpenMP threshold (cpp): layer norm with per-thread dweight partials, batch norm
    on (N, C) columns and on (N, C, S) channels."""
    if impl == "triton":
        pytest.skip("the interpreter costs ~0.5 ms per program: small shapes only")
    f = IMPLS[impl]()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((301, 257)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w, b = _params(rng, 257, np.float32, True)
    y, m, r = f["row_forward"](x, w, b, 1, 257, 1, 1e-5)
    _close(y, _ref64("row_forward", x, w, b, 1, 257, 1, 1e-5)[0], np.float32, "y")
    got = f["row_backward"](x, dy, w, m, r, 1, 257, 1, True, True)
    ref = _ref64("row_backward", x, dy, w, m, r, 1, 257, 1, True, True)
    for g, rf, what in zip(got, ref, ("dx", "dw", "db")):
        _close(g, rf, np.float32, what)
    for shape in ((301, 257, 1), (37, 19, 61)):
        x3 = x.reshape(-1)[:np.prod(shape)].reshape(shape)
        dy3 = dy.reshape(-1)[:np.prod(shape)].reshape(shape)
        w3, b3 = w[:shape[1]].copy(), b[:shape[1]].copy()
        y, m, v, r = f["chan_forward"](x3, w3, b3, None, None, 1e-5, True)
        ref = _ref64("chan_forward", x3, w3, b3, None, None, 1e-5, True)
        _close(y, ref[0], np.float32, "y")
        got = f["chan_backward"](x3, dy3, w3, m, r, True, True, True, True)
        ref = _ref64("chan_backward", x3, dy3, w3, m, r, True, True, True, True)
        for g, rf, what in zip(got, ref, ("dx", "dw", "db")):
            _close(g, rf, np.float32, what)


def test_cpp_rejects_bad_arrays():
    f = _cpp_impl()
    x = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        f["row_forward"](np.zeros((4, 12), np.float32)[:, ::2], None, None, 1, 6, 1, 1e-5)
    with pytest.raises(ValueError, match="dtype differs"):
        f["row_forward"](x, np.ones(6), None, 1, 6, 1, 1e-5)
    with pytest.raises(ValueError, match=r"weight must have shape \(6,\)"):
        f["row_forward"](x, np.ones(5, np.float32), None, 1, 6, 1, 1e-5)
    with pytest.raises(ValueError, match="does not match"):
        f["row_forward"](x, None, None, 3, 2, 3, 1e-5)  # 4 rows are not whole groups of 3
    with pytest.raises(ValueError, match="float64"):
        f["chan_backward"](x.reshape(2, 2, 6), x.reshape(2, 2, 6), None, np.zeros(2, np.float32),
                           np.ones(2), True, True, False, False)


# ---- the public ops ------------------------------------------------------------------------

def _torch():
    return pytest.importorskip("torch", reason="torch (the test peer) not installed")


def _run(fn, arrays, grad_out):
    """(output, grads) of gmcore ``fn`` on tensors made from ``arrays`` (None passes)."""
    ts = [None if a is None else gm.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    (y * gm.tensor(grad_out)).sum().backward()
    return y.detach().numpy(), [None if t is None else t.grad.numpy() for t in ts]


def _run_torch(fn, arrays, grad_out):
    torch = _torch()
    ts = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    (y * torch.tensor(grad_out)).sum().backward()
    return y.detach().numpy(), [None if t is None else t.grad.numpy() for t in ts]


def _compare(got, ref, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-11
    (y, gs), (ty, tgs) = got, ref
    np.testing.assert_allclose(y, ty, rtol=tol, atol=tol)
    for g, tg in zip(gs, tgs):
        if tg is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, tg, rtol=tol, atol=tol * (1 + np.abs(tg).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_and_group_norm_match_torch(dtype, affine):
    torch = _torch()
    TF = torch.nn.functional
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4, 7)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    w, b = _params(rng, 28, dtype, affine)
    w = None if w is None else w.reshape(4, 7)
    b = None if b is None else b.reshape(4, 7)
    _compare(_run(lambda x, w, b: F.layer_norm(x, (4, 7), w, b), (x, w, b), g),
             _run_torch(lambda x, w, b: TF.layer_norm(x, (4, 7), w, b), (x, w, b), g), dtype)
    x = rng.standard_normal((3, 6, 5, 3)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    w, b = _params(rng, 6, dtype, affine)
    _compare(_run(lambda x, w, b: F.group_norm(x, 3, w, b), (x, w, b), g),
             _run_torch(lambda x, w, b: TF.group_norm(x, 3, w, b), (x, w, b), g), dtype)
    x = rng.standard_normal((2, 6, 5)).astype(dtype)
    gx = rng.standard_normal(x.shape).astype(dtype)
    _compare(_run(lambda x, w, b: F.instance_norm(x, weight=w, bias=b), (x, w, b), gx),
             _run_torch(lambda x, w, b: TF.instance_norm(x, weight=w, bias=b), (x, w, b), gx), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9, 4), (5, 4, 3, 7)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch_with_running_stats(dtype, shape, training):
    torch = _torch()
    TF = torch.nn.functional
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    w, b = _params(rng, 4, dtype, True)
    rm0, rv0 = rng.standard_normal(4).astype(dtype), rng.uniform(0.5, 2, 4).astype(dtype)
    rm, rv = gm.tensor(rm0), gm.tensor(rv0)
    trm, trv = torch.tensor(rm0), torch.tensor(rv0)
    got = _run(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training, 0.3), (x, w, b), g)
    ref = _run_torch(lambda x, w, b: TF.batch_norm(x, trm, trv, w, b, training, 0.3), (x, w, b), g)
    _compare(got, ref, dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=tol, atol=tol)  # unbiased variance


def test_batch_norm_module_cumulative_average_matches_torch():
    """momentum=None: the module averages every batch seen (its factor is 1 / batches)."""
    torch = _torch()
    rng = np.random.default_rng(2)
    bn, tbn = gm.nn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None)
    for _ in range(3):
        x = (rng.standard_normal((4, 3, 5, 5)) * 2 + 1).astype(np.float32)
        bn(gm.tensor(x))
        tbn(torch.tensor(x))
    np.testing.assert_allclose(bn.running_mean.numpy(), tbn.running_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), tbn.running_var.numpy(), rtol=1e-6)


def test_huge_offset_is_normalised_exactly():
    """1e4 + noise of 1e-2 in float32: the normalised values keep the noise's digits."""
    rng = np.random.default_rng(4)
    x = (1e4 + rng.standard_normal((4, 6, 3)) * 1e-2).astype(np.float32)
    x64 = x.astype(np.float64)
    for y, axes in ((F.layer_norm(gm.tensor(x), (3,)), (2,)),
                    (F.group_norm(gm.tensor(x), 2), None),
                    (F.batch_norm(gm.tensor(x), None, None, training=True), (0, 2))):
        if axes is None:
            xr = x64.reshape(4, 2, -1)
            ref = ((xr - xr.mean(2, keepdims=True))
                   / np.sqrt(xr.var(2, keepdims=True) + 1e-5)).reshape(x.shape)
        else:
            ref = (x64 - x64.mean(axes, keepdims=True)) / np.sqrt(x64.var(axes, keepdims=True) + 1e-5)
        np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_constant_input_and_empty_batch():
    x = gm.full((3, 4, 5), 7.0, requires_grad=True)
    for y in (F.layer_norm(x, (5,)), F.group_norm(x, 2), F.batch_norm(x, None, None, training=True)):
        assert np.all(y.detach().numpy() == 0.0)
        x.grad = None
        y.sum().backward()
        assert np.all(np.isfinite(x.grad.numpy()))
    w, b = gm.ones(4, requires_grad=True), gm.zeros(4, requires_grad=True)
    e = gm.zeros(0, 4, 3, requires_grad=True)
    for y in (F.layer_norm(e, (3,)), F.group_norm(e, 2, w, b),
              F.batch_norm(e, gm.zeros(4), gm.ones(4), w, b, training=False)):
        assert tuple(y.shape) == (0, 4, 3)
        w.grad = b.grad = None
        y.sum().backward()
        assert tuple(e.grad.shape) == (0, 4, 3)
        if w.grad is not None:
            assert np.all(w.grad.numpy() == 0) and np.all(b.grad.numpy() == 0)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(e, None, None, training=True)


def test_one_element_statistics():
    """A layer norm over one element, a group of one: x - mean is 0, so y = bias and dx = 0
    exactly (rstd = 1/sqrt(eps) must not amplify a rounding residual)."""
    rng = np.random.default_rng(10)
    for dtype in (np.float32, np.float64):
        x = gm.tensor(rng.standard_normal((5, 3, 1)).astype(dtype), requires_grad=True)
        w = gm.tensor(rng.standard_normal(3).astype(dtype), requires_grad=True)
        b = gm.tensor(rng.standard_normal(3).astype(dtype), requires_grad=True)
        g = gm.tensor(rng.standard_normal((5, 3, 1)).astype(dtype))
        for y in (F.layer_norm(x, (1,), w[:1], b[:1]), F.group_norm(x, 3, w, b)):
            x.grad = None
            (y * g).sum().backward()
            assert np.all(x.grad.numpy() == 0)
        np.testing.assert_array_equal(F.group_norm(x, 3, w, b).detach().numpy(),
                                      np.broadcast_to(b.detach().numpy()[None, :, None], (5, 3, 1)))


def test_non_contiguous_input():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 4, 5))
    xt = gm.tensor(a).permute(2, 1, 0)  # (5, 4, 6), strided
    xc = gm.tensor(np.ascontiguousarray(a.transpose(2, 1, 0)))
    for f in (lambda t: F.layer_norm(t, (6,)), lambda t: F.group_norm(t, 2),
              lambda t: F.batch_norm(t, None, None, training=True)):
        np.testing.assert_array_equal(f(xt).numpy(), f(xc).numpy())


# ---- gradients -----------------------------------------------------------------------------

def _leaf(rng, *shape):
    return gm.tensor(rng.standard_normal(shape) + 0.3, dtype=gm.float64, requires_grad=True)


def _cases(rng):
    x, w, b = _leaf(rng, 2, 4, 3), _leaf(rng, 4), _leaf(rng, 4)
    wl, bl = _leaf(rng, 3), _leaf(rng, 3)
    rm, rv = gm.tensor(rng.standard_normal(4)), gm.tensor(rng.uniform(0.5, 2, 4))
    return {
        "layer_norm": ((x, wl, bl), lambda x, w, b: F.layer_norm(x, (3,), w, b)),
        "layer_norm no affine": ((x,), lambda x: F.layer_norm(x, (3,))),
        "group_norm": ((x, w, b), lambda x, w, b: F.group_norm(x, 2, w, b)),
        "group_norm no bias": ((x, w), lambda x, w: F.group_norm(x, 2, w)),
        "batch_norm train": ((x, w, b), lambda x, w, b: F.batch_norm(x, None, None, w, b, True)),
        "batch_norm train 2d": ((x[:, :, 0], w, b),
                                lambda x, w, b: F.batch_norm(x, None, None, w, b, True)),
        "batch_norm eval": ((x, w, b), lambda x, w, b: F.batch_norm(x, rm, rv, w, b, False)),
    }


@pytest.mark.parametrize("name", list(_cases(np.random.default_rng(0))))
def test_gradcheck_fused_backward(name):
    inputs, fn = _cases(np.random.default_rng(6))[name]
    if name == "batch_norm train 2d":
        inputs = (inputs[0].detach().requires_grad_(),) + inputs[1:]
    assert gradcheck(fn, inputs)


@pytest.mark.parametrize("name", list(_cases(np.random.default_rng(0))))
def test_gradgradcheck_recorded_backward(name):
    inputs, fn = _cases(np.random.default_rng(7))[name]
    if name == "batch_norm train 2d":
        inputs = (inputs[0].detach().requires_grad_(),) + inputs[1:]
    assert gradgradcheck(fn, inputs)


def test_fused_and_recorded_backward_agree():
    """The fused kernel (create_graph=False) and the tensor-op backward give the same grads."""
    rng = np.random.default_rng(8)
    for inputs, fn in _cases(rng).values():
        inputs = tuple(t.detach().requires_grad_() for t in inputs)
        out = fn(*inputs)
        v = gm.tensor(rng.standard_normal(tuple(out.shape)))
        fused = gm.autograd.grad((out * v).sum(), inputs, retain_graph=True)
        recorded = gm.autograd.grad((out * v).sum(), inputs, create_graph=True)
        for a, r in zip(fused, recorded):
            np.testing.assert_allclose(a.numpy(), r.detach().numpy(), rtol=1e-10, atol=1e-12)


# ---- dispatch -------------------------------------------------------------------------------

def test_dispatch_default_and_override(kernels_env):
    names = dispatch.implementations("norm", "cpu")
    assert names[-1] == "reference"
    rng = np.random.default_rng(9)
    x = gm.tensor(rng.standard_normal((3, 4, 5)).astype(np.float32))
    kernels_env(None)
    default = [F.layer_norm(x, (5,)).numpy(), F.group_norm(x, 2).numpy()]
    if "cpp" in names and dispatch.available("norm")[0].available:
        assert dispatch.choose("norm", "row_forward", "cpu")[0] == "cpp"
    kernels_env("norm=reference")
    assert all(dispatch.choose("norm", op, "cpu")[0] == "reference" for op in OPS)
    ref = [F.layer_norm(x, (5,)).numpy(), F.group_norm(x, 2).numpy()]
    for d, r in zip(default, ref):
        np.testing.assert_allclose(d, r, rtol=2e-6, atol=2e-6)
    kernels_env("norm=nope")
    with pytest.raises(ValueError, match="no implementation 'nope'"):
        F.layer_norm(x, (5,))


def test_other_dtypes_and_mixed_params_use_the_composite():
    x = gm.randn(2, 4, 3)
    w64 = gm.ones(4, dtype=gm.float64)
    y = F.group_norm(x, 2, w64)  # a float64 weight on float32 data: promoted, as before
    assert y.dtype == gm.float64
