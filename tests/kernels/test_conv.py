"""The ``conv`` family: compiled im2col/col2im + BLAS ("cols") and stride-2 phase planes over the
tap kernels ("phase"), against the float64 im2col reference; both gradients, both orders; torch.

The phase route normally runs only where masked_conv's direct AVX-512 kernels do; the tests
also force it onto the packed-GEMM tap path (``USE_PACKED``), which runs on any CPU, so the
decomposition is checked everywhere.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.functional import conv as C
from gmcore.nn.functional import _conv_kernels as K
from gmcore.testing import gradcheck, gradgradcheck

FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # the fixtures only set switches


@pytest.fixture
def use(kernels_env, monkeypatch):
    """``use("cols" | "phase" | "reference")``: pick the route the next convolutions take."""
    def pick(how):
        kernels_env("conv=reference" if how == "reference" else "conv=cpp")
        monkeypatch.setattr(C, "USE_PACKED", how == "phase")
        if how != "reference":
            try:
                dispatch.get("conv", "conv2d", "cpu")
            except dispatch.KernelUnavailable as exc:
                pytest.skip(str(exc))
    return pick


@st.composite
def convs(draw):
    """Odd sizes on purpose, padding 0/1, batch 0 (empty), 1 or 2."""
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 2))
    d = draw(st.sampled_from([1, 1, 2]))
    p = draw(st.integers(0, 1))
    n = draw(st.sampled_from([0, 1, 2]))
    c, o = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    eff = d * (k - 1) + 1
    h, w = draw(st.integers(max(1, eff - 2 * p), 9)), draw(st.integers(max(1, eff - 2 * p), 8))
    return n, c, h, w, o, k, s, p, d


def _check_maps(shape, dtype, seed):
    n, c, h, w, o, k, s, p, d = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c, k, k)).astype(dtype)
    geom = ((s, s), (p, p, p, p), (d, d), 1)
    x64, w64 = x.astype(np.float64), wt.astype(np.float64)
    y, cols = C.conv2d_raw(x, wt, geom, return_cols=True)
    ry = K.conv2d_raw(x64, w64, geom)
    gy = rng.standard_normal(ry.shape).astype(dtype)
    gx = C.conv_transpose_raw(gy, wt, geom, (h, w))
    gw = C.conv_weight_raw(x, gy, geom, wt.shape)
    gw_cached = C.conv_weight_raw(x, gy, geom, wt.shape, cols)
    rgx = K.conv_transpose_raw(gy.astype(np.float64), w64, geom, (h, w))
    rgw = K.conv_weight_raw(x64, gy.astype(np.float64), geom, wt.shape)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for got, ref in ((y, ry), (gx, rgx), (gw, rgw), (gw_cached, rgw)):
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, **tol)
    return C.route(x, geom, (k, k))


@pytest.mark.parametrize("how", ["cols", "phase"])
@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURE_OK)
@given(shape=convs(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1))
def test_maps_match_float64_reference(use, how, shape, dtype, seed):
    use(how)
    route = _check_maps(shape, dtype, seed)
    n, c, h, w, o, k, s, p, d = shape
    if how == "phase" and dtype == np.float32 and s == 2 and d == 1:
        assert route == "phase"
    elif route == "phase":
        pytest.fail(f"phase route taken for {shape} {dtype}")


def test_routes_are_what_the_docstring_says(use):
    x32, x64 = np.zeros((2, 3, 8, 8), np.float32), np.zeros((2, 3, 8, 8))
    s2 = ((2, 2), (1, 1, 1, 1), (1, 1), 1)
    use("reference")
    assert C.route(x32, s2, (4, 4)) is None
    use("cols")
    assert C.route(x64, s2, (4, 4)) == "cols"  # float64 never takes the phase route
    assert C.route(x32, ((2, 2), (1, 1, 1, 1), (1, 1), 3), (4, 4)) is None  # groups
    assert C.route(x32, ((1, 1), (0, 0, 0, 0), (1, 1), 1), (1, 1)) is None  # 1x1: no im2col
    from gmcore.kernels import _tap_conv_cpu
    direct = _tap_conv_cpu.direct_applies(np.float32, ((1, 1), (0, 0), (1, 1)))
    assert C.route(x32, s2, (4, 4)) == ("phase" if direct else "cols")
    assert C.route(x32, s2, (3, 3)) == "cols"  # odd kernels: zero taps, no phase route
    use("phase")
    assert C.route(x32, s2, (4, 4)) == "phase"


def test_space_to_depth_and_phase_weight_are_adjoint_pairs():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    xs = C.space_to_depth(x, (1, 0), 4, 3)
    g = rng.standard_normal(xs.shape)
    assert np.isclose((xs * g).sum(), (x * C.depth_to_space(g, (1, 0), (7, 6))).sum())
    assert xs[1, 4 * 2 + 2 * 1 + 0, 0, 1] == x[1, 2, 0, 2]  # row 2*0+1-1, col 2*1+0-0
    w = rng.standard_normal((4, 3, 3, 3))
    ws = C.phase_weight(w)
    gw = rng.standard_normal(ws.shape)
    assert ws.shape == (4, 12, 2, 2)
    assert np.isclose((ws * gw).sum(), (w * C.phase_weight_adjoint(gw, (3, 3))).sum())
    assert ws[2, 4 * 1 + 3, 1, 1] == 0.0  # (u, a) = (1, 1) is row 3: past a 3x3 kernel


@pytest.mark.parametrize("how", ["cols", "reference"])
@pytest.mark.parametrize("case", [
    dict(op="conv", k=4, stride=2, padding=1),
    dict(op="conv", k=3, stride=2, padding=1),
    dict(op="conv", k=3, stride=1, padding=1, dilation=2),
    dict(op="convT", k=4, stride=2, padding=1),
    dict(op="convT", k=3, stride=2, padding=1, output_padding=1),
])
def test_gradients_of_both_orders(use, how, case):
    use(how)
    case = dict(case)
    op, k = case.pop("op"), case.pop("k")
    rng = np.random.default_rng(4)
    x = gm.tensor(rng.standard_normal((2, 3, 5, 7)), requires_grad=True)
    shape = (4, 3, k, k) if op == "conv" else (3, 4, k, k)
    w = gm.tensor(rng.standard_normal(shape) * 0.3, requires_grad=True)
    b = gm.tensor(rng.standard_normal(4), requires_grad=True)
    fn = (lambda x, w, b: F.conv2d(x, w, b, **case)) if op == "conv" else \
        (lambda x, w, b: F.conv_transpose2d(x, w, b, **case))
    assert gradcheck(fn, (x, w, b))
    assert gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("op", ["conv", "convT"])
def test_float32_phase_route_first_and_second_order(use, op):
    """The DCGAN shapes in float32 on the phase route: values, gradients and a WGAN-GP style
    penalty gradient agree with the float64 reference route."""
    rng = np.random.default_rng(5)
    xa = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    wa = (rng.standard_normal((5, 4, 4, 4) if op == "conv" else (4, 5, 4, 4)) * 0.2).astype(np.float32)

    def run(how, dtype):
        use(how)
        x = gm.tensor(xa.astype(dtype), requires_grad=True)
        w = gm.tensor(wa.astype(dtype), requires_grad=True)
        f = F.conv2d if op == "conv" else F.conv_transpose2d
        y = f(x, w, stride=2, padding=1)
        (gx,) = gm.autograd.grad((y * y).sum(), x, create_graph=True)
        (gx * gx).sum().backward()  # second order: through the recorded backward
        return [t.numpy().astype(np.float64) for t in (y.detach(), gx.detach(), x.grad, w.grad)]

    for got, ref in zip(run("phase", np.float32), run("reference", np.float64)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()))


def test_transposed_backward_shares_columns_and_matches(use):
    """conv_transpose2d's plain backward computes gz's columns once for both gradients."""
    rng = np.random.default_rng(6)
    xa, wa = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((3, 2, 4, 4))
    grads = {}
    for how in ("cols", "reference"):
        use(how)
        x, w = gm.tensor(xa, requires_grad=True), gm.tensor(wa, requires_grad=True)
        F.conv_transpose2d(x, w, stride=2, padding=1).square().sum().backward()
        grads[how] = (x.grad.numpy(), w.grad.numpy())
    for a, b in zip(grads["cols"], grads["reference"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_compiled_kernels_check_their_arguments():
    _C = pytest.importorskip("gmcore._C")
    if not hasattr(_C, "conv_im2col_cpu"):
        pytest.skip("gmcore._C built without the conv kernels")
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(ValueError, match="cols must be"):
        _C.conv_im2col_cpu(x, np.zeros((3, 9), np.float32), 3, 3, (3, 3, 1, 1, 0, 0, 1, 1))
    with pytest.raises(ValueError, match="dtype"):
        _C.conv_im2col_cpu(x, np.zeros((18, 9)), 3, 3, (3, 3, 1, 1, 0, 0, 1, 1))
    with pytest.raises(ValueError, match="stride"):
        _C.conv_col2im_cpu(np.zeros((18, 9), np.float32), x, 3, 3, (3, 3, 0, 1, 0, 0, 1, 1))


@pytest.mark.parametrize("how", ["cols", "phase"])
@pytest.mark.parametrize("case", [
    dict(op="conv", shape=(3, 5, 11, 9), w=(6, 5, 4, 4), stride=2, padding=1),
    dict(op="conv", shape=(2, 4, 9, 9), w=(3, 4, 3, 3), stride=2, padding=1),
    dict(op="conv", shape=(1, 3, 8, 8), w=(1, 3, 4, 4), stride=1, padding=0),
    dict(op="convT", shape=(3, 5, 6, 7), w=(5, 4, 4, 4), stride=2, padding=1),
    dict(op="convT", shape=(2, 4, 5, 5), w=(4, 3, 3, 3), stride=2, padding=1, output_padding=1),
])
def test_torch_peer(use, how, case):
    torch = pytest.importorskip("torch")
    use(how)
    case = dict(case)
    op, shape, wshape = case.pop("op"), case.pop("shape"), case.pop("w")
    rng = np.random.default_rng(7)
    xa = rng.standard_normal(shape).astype(np.float32)
    wa = (rng.standard_normal(wshape) * 0.2).astype(np.float32)
    ba = rng.standard_normal(wshape[0] if op == "conv" else wshape[1]).astype(np.float32)
    ours, theirs = (F.conv2d, torch.nn.functional.conv2d) if op == "conv" else \
        (F.conv_transpose2d, torch.nn.functional.conv_transpose2d)
    xg, wg, bg = (gm.tensor(a, requires_grad=True) for a in (xa, wa, ba))
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (xa, wa, ba))
    y, ty = ours(xg, wg, bg, **case), theirs(xt, wt, bt, **case)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    for a, b in ((xg, xt), (wg, wt), (bg, bt)):
        ref = b.grad.numpy()
        np.testing.assert_allclose(a.grad.numpy(), ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()))
