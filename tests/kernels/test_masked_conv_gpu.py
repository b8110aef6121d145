"""GPU implementations of the tap convolution (``masked_conv`` / ``causal_conv`` families).

* Triton (``kernels/triton/masked_conv.py``): through the CPU interpreter here (NumPy arrays);
  on a GPU machine the same tests run the compiled kernels on CuPy arrays.
* CUDA (``gmcore.kernels._masked_conv_cuda`` over ``csrc/masked_conv.cu``): needs a GPU;
  skipped without one. Its host-side checks (shared with Triton) and the bindings' size checks run
  everywhere, and the kernels themselves run under a host emulation (threads + barriers, bottom
  of this file) so their index math and shared-memory phases are tested without a GPU.

Everything is compared with a dense float64 NumPy reference written here: pad, gather each tap
with an explicit loop, einsum.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gmcore as gm
from gmcore.kernels import _masked_conv_cuda as mcc

# ---- the float64 reference ------------------------------------------------------------------------


def out_size(size, k, s, pad_lead, pad_trail, d):
    return (size + pad_lead + pad_trail - d * (k - 1) - 1) // s + 1


def _frame(h, w, geom, out_hw, kernel_hw):
    """Height/width of a zero frame holding the padded input and every position a tap reaches."""
    (sh, sw), (pt, pl), (dh, dw) = geom
    (ho, wo), (kh, kw) = out_hw, kernel_hw
    return max(pt + h, (ho - 1) * sh + (kh - 1) * dh + 1), max(pl + w, (wo - 1) * sw + (kw - 1) * dw + 1)


def _tap_view(frame, ky, kx, geom, out_hw):
    """frame[..., oy*sh + ky*dh, ox*sw + kx*dw] for every output position (a strided view)."""
    (sh, sw), _, (dh, dw) = geom
    ho, wo = out_hw
    r, c = ky * dh, kx * dw
    return frame[:, :, r:r + (ho - 1) * sh + 1:sh, c:c + (wo - 1) * sw + 1:sw]


def ref_forward(x, w, bias, taps, geom, out_hw):
    n, c, h, wd = x.shape
    o = w.shape[0]
    ho, wo = out_hw
    y = np.zeros((n, o, ho, wo))
    if ho == 0 or wo == 0:
        return y
    (_, _), (pt, pl), _ = geom
    fh, fw = _frame(h, wd, geom, out_hw, w.shape[2:])
    frame = np.zeros((n, c, fh, fw))
    frame[:, :, pt:pt + h, pl:pl + wd] = x
    for ky, kx in taps:
        y += np.einsum("oc,nchw->nohw", w[:, :, ky, kx].astype(np.float64),
                       _tap_view(frame, ky, kx, geom, out_hw))
    if bias is not None:
        y += np.asarray(bias, np.float64)[None, :, None, None]
    return y


def ref_input_grad(gy, w, taps, geom, in_hw):
    n, o, ho, wo = gy.shape
    c = w.shape[1]
    h, wd = in_hw
    (_, _), (pt, pl), _ = geom
    fh, fw = _frame(h, wd, geom, (ho, wo), w.shape[2:])
    frame = np.zeros((n, c, fh, fw))
    if ho and wo:
        for ky, kx in taps:  # one tap's positions are distinct: += on the view is exact
            _tap_view(frame, ky, kx, geom, (ho, wo))[...] += np.einsum(
                "oc,nohw->nchw", w[:, :, ky, kx].astype(np.float64), gy)
    return frame[:, :, pt:pt + h, pl:pl + wd].copy()


def ref_weight_grad(x, gy, taps, geom, kernel_hw):
    n, c, h, wd = x.shape
    o, ho, wo = gy.shape[1:]
    gw = np.zeros((o, c) + tuple(kernel_hw))
    if ho == 0 or wo == 0:
        return gw
    (_, _), (pt, pl), _ = geom
    fh, fw = _frame(h, wd, geom, (ho, wo), kernel_hw)
    frame = np.zeros((n, c, fh, fw))
    frame[:, :, pt:pt + h, pl:pl + wd] = x
    for ky, kx in taps:
        gw[:, :, ky, kx] = np.einsum("nohw,nchw->oc", gy, _tap_view(frame, ky, kx, geom, (ho, wo)))
    return gw


def test_reference_is_conv2d_and_adjoint():
    """The test's reference against an independent direct sum, and its adjoint identities."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((4, 3, 3, 2))
    taps = np.array([[0, 1], [1, 0], [2, 1]])
    geom = ((2, 1), (1, 2), (1, 2))
    ho, wo = out_size(5, 3, 2, 1, 0, 1), out_size(6, 2, 1, 2, 1, 2)
    y = ref_forward(x, w, None, taps, geom, (ho, wo))
    direct = np.zeros_like(y)
    for oy in range(ho):
        for ox in range(wo):
            for ky, kx in taps:
                iy, ix = oy * 2 - 1 + ky, ox - 2 + kx * 2
                if 0 <= iy < 5 and 0 <= ix < 6:
                    direct[:, :, oy, ox] += x[:, :, iy, ix] @ w[:, :, ky, kx].T
    np.testing.assert_allclose(y, direct, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    lhs = (gy * y).sum()
    np.testing.assert_allclose((ref_input_grad(gy, w, taps, geom, (5, 6)) * x).sum(), lhs, rtol=1e-12)
    np.testing.assert_allclose((ref_weight_grad(x, gy, taps, geom, (3, 2)) * w).sum(), lhs, rtol=1e-12)


# ---- cases ------------------------------------------------------------------------------------------


def pixelcnn_taps(k, mask_type):
    """Rows above the centre, and the centre row left of the centre (B: the centre too)."""
    c = k // 2
    return np.array([(i, j) for i in range(k) for j in range(k)
                     if i < c or (i == c and (j < c or (j == c and mask_type == "B")))], np.int64)


def all_taps(kh, kw):
    return np.array([(i, j) for i in range(kh) for j in range(kw)], np.int64)


def _random_taps(rng, kh, kw):
    every = all_taps(kh, kw)
    keep = rng.random(len(every)) < 0.5
    keep[rng.integers(len(every))] = True
    return every[keep]


# (name, N, C, H, W, O, (KH, KW), taps(rng), stride, (pt, pb, pl, pr), dilation)
CASES = [
    ("maskA3", 2, 3, 5, 6, 4, (3, 3), lambda r: pixelcnn_taps(3, "A"), (1, 1), (1, 1, 1, 1), (1, 1)),
    ("maskB5", 1, 5, 7, 5, 3, (5, 5), lambda r: pixelcnn_taps(5, "B"), (1, 1), (2, 2, 2, 2), (1, 1)),
    ("random_stride2", 2, 4, 9, 7, 5, (3, 3), lambda r: _random_taps(r, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ("dilation2", 1, 3, 8, 9, 2, (3, 3), lambda r: _random_taps(r, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    ("asym_pad", 2, 2, 6, 5, 3, (2, 3), lambda r: all_taps(2, 3), (1, 1), (1, 0, 2, 0), (1, 1)),  # down-shift
    ("down_right", 1, 3, 5, 5, 2, (2, 2), lambda r: all_taps(2, 2), (1, 1), (1, 0, 1, 0), (1, 1)),
    ("causal1d", 3, 4, 1, 11, 5, (1, 3), lambda r: all_taps(1, 3), (1, 1), (0, 0, 4, 0), (1, 2)),
    ("odd_mixed", 1, 17, 7, 3, 19, (3, 2), lambda r: _random_taps(r, 3, 2), (2, 3), (0, 2, 1, 0), (2, 1)),
    ("trail_only_pad", 1, 2, 3, 4, 1, (3, 3), lambda r: pixelcnn_taps(3, "B"), (3, 2), (0, 4, 0, 3), (1, 1)),
]


def make_case(case, dtype, seed=0):
    name, n, c, h, w, o, (kh, kw), taps_fn, stride, (pt, pb, pl, pr), dil = case
    rng = np.random.default_rng(seed)
    taps = np.ascontiguousarray(taps_fn(rng), dtype=np.int64)
    geom = (stride, (pt, pl), dil)
    out_hw = (out_size(h, kh, stride[0], pt, pb, dil[0]), out_size(w, kw, stride[1], pl, pr, dil[1]))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c, kh, kw)).astype(dtype)
    wt_dirty = wt.copy()
    inactive = np.ones((kh, kw), bool)
    inactive[taps[:, 0], taps[:, 1]] = False
    wt_dirty[:, :, inactive] = np.nan  # inactive taps are never read: NaN there must not leak
    bias = rng.standard_normal(o).astype(dtype)
    gy = rng.standard_normal((n, o) + out_hw).astype(dtype)
    return dict(x=x, w=wt, w_dirty=wt_dirty, bias=bias, gy=gy, taps=taps, geom=geom, out_hw=out_hw,
                in_hw=(h, w), kernel_hw=(kh, kw))


def _tol(dtype):
    return dict(rtol=1e-11, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def check_impl(fwd, dgrad, wgrad, k, dtype, to_dev, to_host):
    d = {name: to_dev(v) if isinstance(v, np.ndarray) and v.dtype != np.int64 else v for name, v in k.items()}
    y = to_host(fwd(d["x"], d["w_dirty"], d["bias"], k["taps"], k["geom"], k["out_hw"]))
    assert y.dtype == dtype and y.shape == (k["x"].shape[0], k["w"].shape[0]) + k["out_hw"]
    np.testing.assert_allclose(y, ref_forward(k["x"], k["w"], k["bias"], k["taps"], k["geom"], k["out_hw"]),
                               **_tol(dtype))
    y0 = to_host(fwd(d["x"], d["w"], None, k["taps"], k["geom"], k["out_hw"]))
    np.testing.assert_allclose(y0, ref_forward(k["x"], k["w"], None, k["taps"], k["geom"], k["out_hw"]),
                               **_tol(dtype))
    gx = to_host(dgrad(d["gy"], d["w_dirty"], k["taps"], k["geom"], k["in_hw"]))
    assert gx.dtype == dtype and gx.shape == k["x"].shape
    np.testing.assert_allclose(gx, ref_input_grad(k["gy"], k["w"], k["taps"], k["geom"], k["in_hw"]),
                               **_tol(dtype))
    gw = to_host(wgrad(d["x"], d["gy"], k["taps"], k["geom"], k["kernel_hw"]))
    assert gw.dtype == dtype and gw.shape == k["w"].shape
    ref = ref_weight_grad(k["x"], k["gy"], k["taps"], k["geom"], k["kernel_hw"])
    np.testing.assert_allclose(gw, ref, **_tol(dtype))
    assert (gw[ref == 0] == 0).all()  # exactly zero at inactive taps


# ---- Triton (interpreter here, compiled kernels on a GPU machine) ----------------------------------


@pytest.fixture(scope="module")
def tri():
    pytest.importorskip("triton", reason="triton not installed")
    from gmcore.kernels import _launch
    from gmcore.kernels.triton import masked_conv

    if _launch.interpreting():
        return masked_conv, np.asarray, np.asarray
    cp = pytest.importorskip("cupy")
    return masked_conv, cp.asarray, cp.asnumpy


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_triton_matches_reference(tri, case, dtype):
    mod, to_dev, to_host = tri
    check_impl(mod.tap_conv2d_forward, mod.tap_conv2d_input_grad, mod.tap_conv2d_weight_grad,
               make_case(case, dtype), dtype, to_dev, to_host)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[7]], ids=lambda c: c[0])
def test_triton_small_tiles_and_splits(tri, case):
    """16-wide tiles: many programs, partial tiles on every side; weight_grad cut into splits."""
    mod, to_dev, to_host = tri
    blocks = dict(block_m=16, block_o=16, block_c=16)
    fwd = lambda *a: mod.tap_conv2d_forward(*a, **blocks)  # noqa: E731
    dgrad = lambda *a: mod.tap_conv2d_input_grad(*a, **blocks)  # noqa: E731
    wgrad = lambda *a: mod.tap_conv2d_weight_grad(*a, splits=3, **blocks)  # noqa: E731
    check_impl(fwd, dgrad, wgrad, make_case(case, np.float64, seed=1), np.float64, to_dev, to_host)


@given(data=st.data())
def test_triton_hypothesis(tri, data):
    mod, to_dev, to_host = tri
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    sh, sw, dh, dw = (data.draw(st.integers(1, 2)) for _ in range(4))
    pads = tuple(data.draw(st.integers(0, 2)) for _ in range(4))
    h, w = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    if min(out_size(h, kh, sh, pads[0], pads[1], dh), out_size(w, kw, sw, pads[2], pads[3], dw)) < 1:
        h, w = h + dh * (kh - 1), w + dw * (kw - 1)
    n, c, o = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    seed = data.draw(st.integers(0, 2**16))
    case = ("hyp", n, c, h, w, o, (kh, kw), lambda r: _random_taps(r, kh, kw), (sh, sw), pads, (dh, dw))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    check_impl(mod.tap_conv2d_forward, mod.tap_conv2d_input_grad, mod.tap_conv2d_weight_grad,
               make_case(case, dtype, seed), dtype, to_dev, to_host)


def test_triton_empty_and_edge_sizes(tri):
    mod, to_dev, to_host = tri
    taps = pixelcnn_taps(3, "B")
    geom = ((1, 1), (1, 1), (1, 1))
    x = to_dev(np.ones((0, 2, 4, 4)))
    w = to_dev(np.ones((3, 2, 3, 3)))
    assert to_host(mod.tap_conv2d_forward(x, w, None, taps, geom, (4, 4))).shape == (0, 3, 4, 4)
    assert to_host(mod.tap_conv2d_input_grad(to_dev(np.ones((0, 3, 4, 4))), w, taps, geom, (4, 4))).shape \
        == (0, 2, 4, 4)
    gw = to_host(mod.tap_conv2d_weight_grad(x, to_dev(np.ones((0, 3, 4, 4))), taps, geom, (3, 3)))
    assert gw.shape == (3, 2, 3, 3) and not gw.any()
    # C = 0: the forward is the bias alone
    y = to_host(mod.tap_conv2d_forward(to_dev(np.ones((1, 0, 2, 2))), to_dev(np.ones((2, 0, 3, 3))),
                                       to_dev(np.array([1.5, -2.0])), taps, geom, (2, 2)))
    np.testing.assert_array_equal(y, np.broadcast_to(np.array([1.5, -2.0])[None, :, None, None], (1, 2, 2, 2)))


def test_triton_read_only_inputs(tri):
    """Cached tap lists and masks are read-only NumPy arrays; the interpreter must not write back."""
    mod, to_dev, to_host = tri
    k = make_case(CASES[0], np.float64)
    if to_dev is np.asarray:
        for v in k.values():
            if isinstance(v, np.ndarray):
                v.setflags(write=False)
    check_impl(mod.tap_conv2d_forward, mod.tap_conv2d_input_grad, mod.tap_conv2d_weight_grad, k, np.float64,
               to_dev, to_host)


def test_triton_all_taps_is_conv2d(tri):
    """The forward with ``all_taps`` is a plain conv2d (the route for F.conv2d on CUDA)."""
    torch = pytest.importorskip("torch")
    mod, to_dev, to_host = tri
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((5, 3, 3, 2)), rng.standard_normal(5)
    np.testing.assert_array_equal(mod.all_taps(3, 2), all_taps(3, 2))
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                     stride=(2, 1), padding=(1, 2), dilation=(1, 2)).numpy()
    y = to_host(mod.tap_conv2d_forward(to_dev(x), to_dev(w), to_dev(b), mod.all_taps(3, 2),
                                       ((2, 1), (1, 2), (1, 2)), ref.shape[2:]))
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_triton_tf32_flag_is_float32_only(tri):
    mod, _, _ = tri
    assert mod._tf32(True, np.dtype(np.float32)) and not mod._tf32(True, np.dtype(np.float64))
    assert mod._tf32(None, np.dtype(np.float32)) == mod.ALLOW_TF32


def test_triton_docstring_examples(tri):
    """The launchers' examples (tests/test_doctests.py skips gmcore.kernels); NumPy: interpreter only."""
    import doctest

    mod, to_dev, _ = tri
    if to_dev is not np.asarray:
        pytest.skip("the examples use NumPy arrays (interpreter)")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_triton_kernels_listed_for_sm90(tri):
    mod, _, _ = tri
    listed = {k for k, _, _ in mod.SM90_KERNELS}
    assert {mod._fwd_kernel, mod._dgrad_kernel, mod._wgrad_kernel} <= listed


# ---- host-side checks (shared by the Triton and CUDA implementations; no GPU needed) ------------


def _args():
    return np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)), np.zeros(3), pixelcnn_taps(3, "A")


G1 = ((1, 1), (1, 1), (1, 1))


@pytest.mark.parametrize("mutate, match", [
    (lambda a: dict(a, x=a["x"].astype(np.float32)), "one dtype"),
    (lambda a: dict(a, x=a["x"].astype(np.int64)), "float32 or float64"),
    (lambda a: dict(a, x=a["x"][0]), "4-D"),
    (lambda a: dict(a, w=np.zeros((3, 4, 3, 3))), "input channels"),
    (lambda a: dict(a, bias=np.zeros(2)), "bias"),
    (lambda a: dict(a, taps=np.array([[0, 3]])), "outside the 3x3 kernel"),
    (lambda a: dict(a, taps=np.array([[-1, 0]])), "outside"),
    (lambda a: dict(a, taps=np.array([[0, 0], [0, 0]])), "unique"),
    (lambda a: dict(a, taps=np.zeros((0, 2), np.int64)), "T >= 1"),
    (lambda a: dict(a, taps=np.zeros((2, 2), np.float64)), "integer"),
    (lambda a: dict(a, geom=((0, 1), (1, 1), (1, 1))), "stride and dilation"),
    (lambda a: dict(a, geom=((1, 1), (-1, 1), (1, 1))), "padding"),
    (lambda a: dict(a, geom=((1, 1), (1, 1))), "geom"),
    (lambda a: dict(a, out_hw=(5,)), "out_hw"),
])
def test_check_forward_rejects(mutate, match):
    x, w, b, taps = _args()
    a = mutate(dict(x=x, w=w, bias=b, taps=taps, geom=G1, out_hw=(5, 5)))
    with pytest.raises(ValueError, match=match):
        mcc.check_forward(a["x"], a["w"], a["bias"], a["taps"], a["geom"], a["out_hw"])


def test_check_grads_reject():
    x, w, _, taps = _args()
    gy = np.zeros((1, 3, 5, 5))
    assert mcc.check_input_grad(gy, w, taps, G1, (5, 5))[0] == (1, 2, 5, 5, 3, 3, 3, 5, 5, len(taps))
    with pytest.raises(ValueError, match="output channels"):
        mcc.check_input_grad(np.zeros((1, 4, 5, 5)), w, taps, G1, (5, 5))
    with pytest.raises(ValueError, match="in_hw"):
        mcc.check_input_grad(gy, w, taps, G1, (-1, 5))
    assert mcc.check_weight_grad(x, gy, taps, G1, (3, 3))[1] == (1, 1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="batch"):
        mcc.check_weight_grad(x, np.zeros((2, 3, 5, 5)), taps, G1, (3, 3))
    with pytest.raises(ValueError, match="outside the 2x2 kernel"):
        mcc.check_weight_grad(x, gy, taps, G1, (2, 2))


def test_cuda_impl_refuses_numpy_arrays():
    """The checks run first (ValueError), then host arrays are refused with a clear TypeError."""
    x, w, b, taps = _args()
    with pytest.raises(TypeError, match="CuPy arrays"):
        mcc.tap_conv2d_forward(x, w, b, taps, G1, (5, 5))
    with pytest.raises(TypeError, match="CuPy arrays"):
        mcc.tap_conv2d_input_grad(np.zeros((1, 3, 5, 5)), w, taps, G1, (5, 5))
    with pytest.raises(TypeError, match="CuPy arrays"):
        mcc.tap_conv2d_weight_grad(x, np.zeros((1, 3, 5, 5)), taps, G1, (3, 3))
    with pytest.raises(ValueError, match="input channels"):
        mcc.tap_conv2d_forward(x, np.zeros((3, 1, 3, 3)), b, taps, G1, (5, 5))


@given(m=st.integers(0, 10**7), tiles=st.integers(1, 5000), block=st.sampled_from([16, 64, 128]))
def test_weight_grad_splits(m, tiles, block):
    s = mcc.weight_grad_splits(m, tiles, block)
    assert 1 <= s <= 65535
    steps = -(-m // block)
    assert s == 1 or steps // s >= 4  # every chunk at least 4 steps long
    assert s == 1 or s * tiles <= 4 * 132 + tiles  # no more programs than needed to fill the GPU


def _C_with_cuda():
    _C = pytest.importorskip("gmcore._C")
    if not getattr(_C, "has_cuda", False):
        pytest.skip("gmcore._C built without CUDA")
    return _C


def test_cuda_binding_registered_when_built_with_cuda():
    _C = _C_with_cuda()
    for op in ("forward", "input_grad", "weight_grad"):
        assert hasattr(_C, f"masked_conv_{op}_cuda"), "rebuild gmcore._C (pip install -e .)"


# n c h w o kh kw ho wo t | sh sw pt pl dh dw
_DIMS = [1, 2, 5, 5, 3, 3, 3, 5, 5, 4]
_GEOM = [1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("dims, geom, dtype, match", [
    (_DIMS, _GEOM, "float16", "dtype must be"),
    (_DIMS[:9] + [0], _GEOM, "float32", "at least one tap"),
    ([1, -2] + _DIMS[2:], _GEOM, "float32", "sizes must be >= 0"),
    (_DIMS[:5] + [0] + _DIMS[6:], _GEOM, "float64", "kernel size"),
    (_DIMS, [0, 1, 1, 1, 1, 1], "float32", "stride and dilation"),
    (_DIMS, [1, 1, -1, 1, 1, 1], "float32", "padding"),
])
def test_cuda_bindings_check_before_launch(dims, geom, dtype, match):
    """The entry points validate sizes before any CUDA call (so this runs without a GPU)."""
    _C = _C_with_cuda()
    if not hasattr(_C, "masked_conv_forward_cuda"):
        pytest.skip("gmcore._C lacks the masked_conv CUDA kernels")
    with pytest.raises(ValueError, match=match):
        _C.masked_conv_forward_cuda(0, 0, 0, 0, 0, 0, *dims, *geom, dtype, 0)
    with pytest.raises(ValueError, match=match):
        _C.masked_conv_input_grad_cuda(0, 0, 0, 0, 0, *dims, *geom, dtype, 0)
    with pytest.raises(ValueError, match=match):
        _C.masked_conv_weight_grad_cuda(0, 0, 0, 0, 1, 0, *dims, *geom, dtype, 0)


def test_cuda_binding_rejects_bad_splits():
    _C = _C_with_cuda()
    if not hasattr(_C, "masked_conv_weight_grad_cuda"):
        pytest.skip("gmcore._C lacks the masked_conv CUDA kernels")
    for splits in (0, 65536):
        with pytest.raises(ValueError, match="splits"):
            _C.masked_conv_weight_grad_cuda(0, 0, 0, 0, splits, 0, *_DIMS, *_GEOM, "float32", 0)


# ---- CUDA (needs a GPU) -------------------------------------------------------------------------


def _cuda_or_skip():
    if not gm.cuda.is_available():
        pytest.skip("no CUDA device (cupy + GPU) available")
    from gmcore import dispatch

    try:
        dispatch.require_C(cuda=True)
    except (ImportError, RuntimeError) as exc:
        pytest.skip(str(exc))
    import cupy as cp

    return cp


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cuda_matches_reference(case, dtype):
    cp = _cuda_or_skip()
    check_impl(mcc.tap_conv2d_forward, mcc.tap_conv2d_input_grad, mcc.tap_conv2d_weight_grad,
               make_case(case, dtype), dtype, cp.asarray, cp.asnumpy)


@pytest.mark.cuda
def test_cuda_weight_grad_splits_deterministic():
    cp = _cuda_or_skip()
    k = make_case(("big", 4, 70, 13, 21, 67, (3, 3), lambda r: pixelcnn_taps(3, "B"), (1, 1), (1, 1, 1, 1),
                   (1, 1)), np.float32)
    x, gy = cp.asarray(k["x"]), cp.asarray(k["gy"])
    ref = ref_weight_grad(k["x"], k["gy"], k["taps"], k["geom"], k["kernel_hw"])
    runs = [cp.asnumpy(mcc.tap_conv2d_weight_grad(x, gy, k["taps"], k["geom"], (3, 3), splits=s))
            for s in (1, 5, 5, 64)]
    for r in runs:
        np.testing.assert_allclose(r, ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(runs[1], runs[2])  # same splits: bitwise identical


@pytest.mark.cuda
def test_cuda_large_tiles_and_device_taps():
    """Sizes past one 64 x 64 tile on every axis; taps given as a device array."""
    cp = _cuda_or_skip()
    k = make_case(("big", 3, 80, 19, 23, 70, (5, 5), lambda r: pixelcnn_taps(5, "A"), (1, 1), (2, 2, 2, 2),
                   (1, 1)), np.float64)
    dev_taps = cp.asarray(k["taps"])
    y = mcc.tap_conv2d_forward(cp.asarray(k["x"]), cp.asarray(k["w"]), None, dev_taps, k["geom"], k["out_hw"])
    np.testing.assert_allclose(cp.asnumpy(y), ref_forward(k["x"], k["w"], None, k["taps"], k["geom"],
                                                          k["out_hw"]), rtol=1e-11, atol=1e-11)


# ---- the CUDA kernels under host emulation (no GPU needed) -----------------------------------------
#
# csrc/masked_conv.cu compiled as host C++: each block's 256 threads are std::threads,
# __syncthreads a std::barrier, __shared__ a static (blocks run one after another), and the
# <<<grid, threads, 0, stream>>> launches are rewritten into calls of an emulated launcher. The
# kernels' index math, tiling, shared-memory phases and chunked reduction then run for real on
# the CPU (a missing __syncthreads shows up as a wrong result or, under -fsanitize=thread, a race).

_EMU_HEADER = r"""
#pragma once
#include <barrier>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
inline thread_local dim3 threadIdx;
inline dim3 blockIdx, gridDim, blockDim;
inline std::barrier<>* g_bar = nullptr;
inline void __syncthreads() { g_bar->arrive_and_wait(); }
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
typedef void* cudaStream_t;
inline int cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { if (n) std::memset(p, v, n); return 0; }
namespace gmcore {
inline void cuda_check(int, const char*) {}
inline void cuda_check_launch(const char*) {}
inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }
inline unsigned int blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 8) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<unsigned int>(b < cap ? b : cap);
}
}  // namespace gmcore
inline void emu_launch(dim3 grid, unsigned threads, const std::function<void()>& body) {
  gridDim = grid;
  blockDim = dim3(threads);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = dim3(x, y, z);
        std::barrier<> bar(threads);
        g_bar = &bar;
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < threads; ++t) ts.emplace_back([t, &body] { threadIdx = dim3(t); body(); });
        for (auto& th : ts) th.join();
      }
}
"""

_EMU_API = r"""
extern "C" {
#define EMU(T, S)                                                                                   \
  void fwd_##S(const T* x, const T* w, const T* b, const int64_t* taps, T* wp, T* y, const int64_t* d, \
               const int64_t* g) {                                                                  \
    gmcore::masked_conv_forward_cuda<T>(x, w, b, taps, wp, y, dims(d), geom(g), 0);                 \
  }                                                                                                 \
  void dgrad_##S(const T* gy, const T* w, const int64_t* taps, T* wp, T* gx, const int64_t* d,       \
                 const int64_t* g) {                                                                \
    gmcore::masked_conv_input_grad_cuda<T>(gy, w, taps, wp, gx, dims(d), geom(g), 0);               \
  }                                                                                                 \
  void wgrad_##S(const T* x, const T* gy, const int64_t* taps, T* part, int64_t splits, T* gw,        \
                 const int64_t* d, const int64_t* g) {                                              \
    gmcore::masked_conv_weight_grad_cuda<T>(x, gy, taps, part, splits, gw, dims(d), geom(g), 0);    \
  }
static gmcore::TapConvDims dims(const int64_t* d) {
  return {d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9]};
}
static gmcore::tapconv::Geometry geom(const int64_t* g) { return {g[0], g[1], g[2], g[3], g[4], g[5]}; }
EMU(float, f32)
EMU(double, f64)
}
"""


def _emu_source():
    import pathlib
    import re

    src = (pathlib.Path(__file__).resolve().parents[2] / "csrc" / "masked_conv.cu").read_text()
    src = src.replace("#include <cuda_runtime.h>", '#include "emu_cuda.h"').replace('#include "cuda_util.h"', "")
    launch = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;]*>)?)<<<(.*?),\s*(\w+),\s*0,\s*(\w+)>>>\((.*?)\);", re.S)
    src, n = launch.subn(lambda m: f"emu_launch({m.group(2)}, {m.group(3)}, [&] {{ {m.group(1)}({m.group(5)}); }});",
                         src)
    assert n >= 3, "no kernel launches found in csrc/masked_conv.cu"
    return src + _EMU_API


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    import ctypes
    import pathlib
    import shutil
    import subprocess

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    d = tmp_path_factory.mktemp("masked_conv_emu")
    (d / "emu_cuda.h").write_text(_EMU_HEADER)
    (d / "probe.cpp").write_text('#include "emu_cuda.h"\nint main() {}\n')
    probe = subprocess.run([cxx, "-std=c++20", "-pthread", "-I", str(d), str(d / "probe.cpp"), "-o",
                            str(d / "probe")], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the C++ compiler lacks C++20 <barrier>: {probe.stderr[-300:]}")
    (d / "emu.cpp").write_text(_emu_source())
    csrc = pathlib.Path(__file__).resolve().parents[2] / "csrc"
    cmd = [cxx, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-Wno-unknown-pragmas", "-I", str(d),
           "-I", str(csrc), str(d / "emu.cpp"), "-o", str(d / "libemu.so")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"csrc/masked_conv.cu does not build under host emulation:\n{r.stderr[-3000:]}"
    lib = ctypes.CDLL(str(d / "libemu.so"))
    ptr = ctypes.c_void_p

    def p(a):
        return None if a is None else ptr(a.ctypes.data)

    def i64(v):
        return np.ascontiguousarray(np.array(v, dtype=np.int64))

    def sfx(dt):
        return "f32" if dt == np.float32 else "f64"

    # outputs and scratch start as NaN: any element a kernel fails to write shows up
    def fwd(x, w, bias, taps, geom, out_hw):
        dims, g = mcc.check_forward(x, w, bias, taps, geom, out_hw)
        n, c, h, wd, o, kh, kw, ho, wo, t = dims
        y = np.full((n, o, ho, wo), np.nan, x.dtype)
        wp = np.full(max(1, t * c * o), np.nan, x.dtype)
        tp, dd, gg = i64(taps), i64(dims), i64(g)
        getattr(lib, "fwd_" + sfx(x.dtype))(p(x), p(w), p(bias), p(tp), p(wp), p(y), p(dd), p(gg))
        return y

    def dgrad(gy, w, taps, geom, in_hw):
        dims, g = mcc.check_input_grad(gy, w, taps, geom, in_hw)
        n, c, h, wd, o, kh, kw, ho, wo, t = dims
        gx = np.full((n, c, h, wd), np.nan, gy.dtype)
        wp = np.full(max(1, t * c * o), np.nan, gy.dtype)
        tp, dd, gg = i64(taps), i64(dims), i64(g)
        getattr(lib, "dgrad_" + sfx(gy.dtype))(p(gy), p(w), p(tp), p(wp), p(gx), p(dd), p(gg))
        return gx

    def wgrad(x, gy, taps, geom, kernel_hw, splits=None):
        dims, g = mcc.check_weight_grad(x, gy, taps, geom, kernel_hw)
        n, c, h, wd, o, kh, kw, ho, wo, t = dims
        if splits is None:
            splits = mcc.weight_grad_splits(n * ho * wo, t * -(-o // mcc._TILE) * -(-c // mcc._TILE),
                                            mcc._KSTEP * 4)
        gw = np.full((o, c, kh, kw), np.nan, x.dtype)
        part = np.full(max(1, splits * t * o * c), np.nan, x.dtype)
        tp, dd, gg = i64(taps), i64(dims), i64(g)
        getattr(lib, "wgrad_" + sfx(x.dtype))(p(x), p(gy), p(tp), p(part), ctypes.c_int64(splits), p(gw),
                                               p(dd), p(gg))
        return gw

    return fwd, dgrad, wgrad


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cuda_kernels_emulated(emu, case, dtype):
    check_impl(*emu, make_case(case, dtype), dtype, np.asarray, np.asarray)


@pytest.mark.parametrize("splits", [1, 3])
def test_cuda_kernels_emulated_multi_tile(emu, splits):
    """Past one 64 x 64 tile on every axis; the weight gradient's chunks added in order."""
    fwd, dgrad, wgrad = emu
    case = ("big", 2, 70, 9, 8, 67, (3, 3), lambda r: pixelcnn_taps(3, "B"), (1, 1), (1, 1, 1, 1), (1, 1))
    check_impl(fwd, dgrad, lambda *a: wgrad(*a, splits=splits), make_case(case, np.float64), np.float64,
               np.asarray, np.asarray)
