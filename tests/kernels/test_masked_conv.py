"""Tap convolution on the CPU (families masked_conv / causal_conv) and the masked_conv ops.

* The contract's three functions of every CPU implementation (reference, cpp, numba) against
  a dense float64 NumPy convolution written here (pad, one einsum per tap), on hypothesis-drawn
  geometries (stride, dilation, asymmetric padding, arbitrary tap subsets), both dtypes, and
  with the batch split into several chunks.
* masked_conv2d_mask, masked_conv2d, the PixelCNN++ shifted convolutions and their transposes
  through each implementation: values and gradients vs torch / the dense reference, causality
  as a property (the gradient of one output w.r.t. the input is exactly zero on the future),
  gradcheck of the reference path, once-differentiable error, dispatch override, errors.
"""
import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.functional import _tap_conv_reference
from gmcore.kernels import _tap_conv_cpu
from gmcore.testing import gradcheck

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
IMPL_NAMES = ["reference", "cpp", "numba"]
# the contract also runs cpp's packed-GEMM path where its direct kernels would take the call
CONTRACT_NAMES = ["reference", "cpp", "cpp-gemm", "numba"]
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


class _GemmPath:
    """The cpp implementation with its direct AVX-512 kernels off: the packed-GEMM path."""

    def __getattr__(self, name):
        fn = getattr(_tap_conv_cpu, name)

        def call(*args, **kwargs):
            old, _tap_conv_cpu.USE_DIRECT = _tap_conv_cpu.USE_DIRECT, False
            try:
                return fn(*args, **kwargs)
            finally:
                _tap_conv_cpu.USE_DIRECT = old
        return call


def _direct_or_skip():
    _module("cpp")
    if not _tap_conv_cpu.direct_applies(np.float32, ((1, 1), (0, 0), (1, 1))):
        pytest.skip("the direct kernels need an x86-64 CPU with AVX-512")


def _module(name):
    """The implementation module of the contract (skip when unavailable)."""
    if name == "reference":
        return _tap_conv_reference
    if name == "cpp-gemm":
        _module("cpp")
        return _GemmPath()
    if name == "cpp":
        try:
            _tap_conv_cpu.check_available()
        except (ImportError, RuntimeError) as exc:
            pytest.skip(f"cpp unavailable: {exc}")
        return _tap_conv_cpu
    if not HAVE_NUMBA:
        pytest.skip("numba not installed")
    from gmcore.kernels.numba import masked_conv
    return masked_conv


def _use(kernels_env, name):
    """Route both families' public ops to implementation ``name`` (skip when unavailable)."""
    _module(name)
    kernels_env(f"masked_conv={name},causal_conv={name}")


# ---- dense float64 reference ------------------------------------------------------------------

def _frame(x, geom, out_hw, kernel_hw):
    (sh, sw), (pt, pl), (dh, dw) = geom
    n, c, h, w = x.shape
    hb = max(pt + h, (out_hw[0] - 1) * sh + (kernel_hw[0] - 1) * dh + 1)
    wb = max(pl + w, (out_hw[1] - 1) * sw + (kernel_hw[1] - 1) * dw + 1)
    f = np.zeros((n, c, hb, wb))
    f[:, :, pt:pt + h, pl:pl + w] = x
    return f


def _view(f, ky, kx, geom, out_hw):
    (sh, sw), _, (dh, dw) = geom
    r, q = ky * dh, kx * dw
    return f[:, :, r:r + (out_hw[0] - 1) * sh + 1:sh, q:q + (out_hw[1] - 1) * sw + 1:sw]


def dense_forward(x, w, b, taps, geom, out_hw):
    f = _frame(x.astype(np.float64), geom, out_hw, w.shape[2:])
    y = np.zeros((x.shape[0], w.shape[0]) + tuple(out_hw))
    for ky, kx in taps:
        y += np.einsum("nchw,oc->nohw", _view(f, ky, kx, geom, out_hw), w[:, :, ky, kx])
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def dense_input_grad(gy, w, taps, geom, in_hw):
    (sh, sw), (pt, pl), _ = geom
    n, c = gy.shape[0], w.shape[1]
    f = _frame(np.zeros((n, c) + tuple(in_hw)), geom, gy.shape[2:], w.shape[2:])
    for ky, kx in taps:
        _view(f, ky, kx, geom, gy.shape[2:])[...] += np.einsum("nohw,oc->nchw", gy, w[:, :, ky, kx])
    return f[:, :, pt:pt + in_hw[0], pl:pl + in_hw[1]]


def dense_weight_grad(x, gy, taps, geom, kernel_hw):
    f = _frame(x.astype(np.float64), geom, gy.shape[2:], kernel_hw)
    gw = np.zeros((gy.shape[1], x.shape[1]) + tuple(kernel_hw))
    for ky, kx in taps:
        gw[:, :, ky, kx] = np.einsum("nchw,nohw->oc", _view(f, ky, kx, geom, gy.shape[2:]), gy)
    return gw


TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _close(got, want, dtype, scale=1.0):
    assert got.dtype == np.dtype(dtype)
    tol = TOL[dtype]
    np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * scale)


@st.composite
def problems(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    pt, pl = draw(st.integers(0, dh * (kh - 1) + 1)), draw(st.integers(0, dw * (kw - 1) + 1))
    pb, pr = draw(st.integers(0, dh * (kh - 1))), draw(st.integers(0, dw * (kw - 1)))
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:  # the padded input must hold the dilated kernel
        ho, wo = max(ho, 1), max(wo, 1)
    active = draw(st.lists(st.booleans(), min_size=kh * kw, max_size=kh * kw))
    taps = [(i // kw, i % kw) for i, a in enumerate(active) if a] or [(kh - 1, kw - 1)]
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(n=n, c=c, o=o, h=h, w=w, kh=kh, kw=kw, taps=np.array(taps, dtype=np.int64),
                geom=((sh, sw), (pt, pl), (dh, dw)), out_hw=(ho, wo), seed=draw(st.integers(0, 99)))


def _arrays(p, dtype):
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal((p["n"], p["c"], p["h"], p["w"])).astype(dtype)
    w = rng.standard_normal((p["o"], p["c"], p["kh"], p["kw"])).astype(dtype)
    b = rng.standard_normal(p["o"]).astype(dtype)
    gy = rng.standard_normal((p["n"], p["o"]) + p["out_hw"]).astype(dtype)
    return x, w, b, gy


# ---- the contract, per implementation -----------------------------------------------------------

@pytest.mark.parametrize("name", CONTRACT_NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(p=problems())
def test_contract_matches_dense(name, dtype, p):
    mod = _module(name)
    x, w, b, gy = _arrays(p, dtype)
    taps, geom, out_hw = p["taps"], p["geom"], p["out_hw"]
    w_inactive = w.copy()
    mask = np.zeros(w.shape[2:], bool)
    mask[taps[:, 0], taps[:, 1]] = True
    w_inactive[:, :, ~mask] = np.nan  # inactive taps are never read
    y = mod.tap_conv2d_forward(x, w_inactive, b, taps, geom, out_hw)
    _close(y, dense_forward(x, w, b, taps, geom, out_hw), dtype, scale=4)
    gx = mod.tap_conv2d_input_grad(gy, w_inactive, taps, geom, (p["h"], p["w"]))
    _close(gx, dense_input_grad(gy, w, taps, geom, (p["h"], p["w"])), dtype, scale=4)
    gw = mod.tap_conv2d_weight_grad(x, gy, taps, geom, (p["kh"], p["kw"]))
    _close(gw, dense_weight_grad(x, gy, taps, geom, (p["kh"], p["kw"])), dtype, scale=8)
    assert np.all(gw[:, :, ~mask] == 0)


@pytest.mark.parametrize("name", ["cpp-gemm", "numba"])
@pytest.mark.parametrize("chunk", [1, 3000])
def test_batch_chunks(name, chunk, monkeypatch):
    """Several chunks (one image each, or a few with a remainder) give the same result."""
    mod = _module(name)
    monkeypatch.setattr(_tap_conv_cpu, "CHUNK_BYTES", chunk)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3, 5, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    taps = np.array([[0, 0], [0, 2], [1, 0], [1, 1]], dtype=np.int64)
    geom = ((1, 2), (1, 1), (1, 1))
    out_hw = (5, 3)
    gy = rng.standard_normal((7, 4) + out_hw)
    np.testing.assert_allclose(mod.tap_conv2d_forward(x, w, None, taps, geom, out_hw),
                               dense_forward(x, w, None, taps, geom, out_hw), atol=1e-12)
    np.testing.assert_allclose(mod.tap_conv2d_input_grad(gy, w, taps, geom, (5, 6)),
                               dense_input_grad(gy, w, taps, geom, (5, 6)), atol=1e-12)
    np.testing.assert_allclose(mod.tap_conv2d_weight_grad(x, gy, taps, geom, (3, 3)),
                               dense_weight_grad(x, gy, taps, geom, (3, 3)), atol=1e-12)


@pytest.mark.parametrize("name", ["cpp", "cpp-gemm", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contract_outputs_are_new_arrays_and_extremes(name, dtype):
    mod = _module(name)
    x = np.full((1, 1, 3, 3), np.inf, dtype)
    w = np.ones((1, 1, 1, 1), dtype)
    taps = np.array([[0, 0]], dtype=np.int64)
    geom = ((1, 1), (0, 0), (1, 1))
    y = mod.tap_conv2d_forward(x, w, None, taps, geom, (3, 3))
    assert np.all(np.isinf(y)) and not np.shares_memory(y, x)
    # a stride that only samples the padding: zeros, not garbage
    y = mod.tap_conv2d_forward(np.ones((1, 1, 2, 2), dtype), w, None, taps,
                               ((5, 5), (3, 3), (1, 1)), (1, 1))
    assert y.tolist() == [[[[0.0]]]]


@st.composite
def stride1_problems(draw):
    """Stride-1 float32 problems for the direct kernels: channel counts that leave remainders
    of every tile (6 output channels, 6 input channels, 16-lane output-channel vectors), images
    wider and narrower than one 64-pixel tile, padding larger than the kernel."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 40))
    pt, pl = draw(st.integers(0, dh * (kh - 1) + 2)), draw(st.integers(0, dw * (kw - 1) + 2))
    pb, pr = draw(st.integers(0, dh * (kh - 1) + 1)), draw(st.integers(0, dw * (kw - 1) + 1))
    ho = max(1, h + pt + pb - dh * (kh - 1))
    wo = max(1, w + pl + pr - dw * (kw - 1))
    active = draw(st.lists(st.booleans(), min_size=kh * kw, max_size=kh * kw))
    taps = [(i // kw, i % kw) for i, a in enumerate(active) if a] or [(0, 0)]
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 14)), draw(st.integers(1, 70))
    return dict(n=n, c=c, o=o, h=h, w=w, kh=kh, kw=kw, taps=np.array(taps, dtype=np.int64),
                geom=((1, 1), (pt, pl), (dh, dw)), out_hw=(ho, wo), seed=draw(st.integers(0, 99)))


@given(p=stride1_problems())
def test_direct_kernels_match_dense(p):
    """The AVX-512 kernels (the cpp default for float32 at stride 1) against float64 dense."""
    _direct_or_skip()
    x, w, b, gy = _arrays(p, np.float32)
    taps, geom, out_hw = p["taps"], p["geom"], p["out_hw"]
    k = len(taps) * p["c"]  # terms per output: the float32 error grows with it
    w_inactive = w.copy()
    mask = np.zeros(w.shape[2:], bool)
    mask[taps[:, 0], taps[:, 1]] = True
    w_inactive[:, :, ~mask] = np.nan  # inactive taps are never read
    y = _tap_conv_cpu.tap_conv2d_forward(x, w_inactive, b, taps, geom, out_hw)
    np.testing.assert_allclose(y, dense_forward(x, w, b, taps, geom, out_hw), rtol=1e-5,
                               atol=1e-6 * k)
    gx = _tap_conv_cpu.tap_conv2d_input_grad(gy, w_inactive, taps, geom, (p["h"], p["w"]))
    np.testing.assert_allclose(gx, dense_input_grad(gy, w, taps, geom, (p["h"], p["w"])),
                               rtol=1e-5, atol=1e-6 * len(taps) * p["o"])
    gw = _tap_conv_cpu.tap_conv2d_weight_grad(x, gy, taps, geom, (p["kh"], p["kw"]))
    np.testing.assert_allclose(gw, dense_weight_grad(x, gy, taps, geom, (p["kh"], p["kw"])),
                               rtol=1e-5, atol=1e-6 * p["n"] * out_hw[0] * out_hw[1])
    assert y.dtype == gx.dtype == gw.dtype == np.float32


def test_direct_kernels_pixelcnn_sizes():
    """A PixelCNN layer's size (several 64-pixel tiles and weight-gradient row blocks per
    image) against the packed-GEMM path, and the weight gradient is bitwise repeatable."""
    _direct_or_skip()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 16, 33, 35), dtype=np.float32)
    w = rng.standard_normal((40, 16, 7, 7), dtype=np.float32)
    gy = rng.standard_normal((3, 40, 33, 35), dtype=np.float32)
    taps = np.argwhere(F.masked_conv2d_mask(40, 16, 7, "A").any(axis=(0, 1))).astype(np.int64)
    geom, gemm = ((1, 1), (3, 3), (1, 1)), _GemmPath()
    for fn, args in (("tap_conv2d_forward", (x, w, None, taps, geom, (33, 35))),
                     ("tap_conv2d_input_grad", (gy, w, taps, geom, (33, 35))),
                     ("tap_conv2d_weight_grad", (x, gy, taps, geom, (7, 7)))):
        got = getattr(_tap_conv_cpu, fn)(*args)
        np.testing.assert_allclose(got, getattr(gemm, fn)(*args), rtol=1e-4, atol=2e-3)
    gw = _tap_conv_cpu.tap_conv2d_weight_grad(x, gy, taps, geom, (7, 7))
    assert np.array_equal(gw, _tap_conv_cpu.tap_conv2d_weight_grad(x, gy, taps, geom, (7, 7)))


def test_direct_kernels_several_image_chunks():
    """Images of 64 channels at 64x64 fill a ~2 MB chunk of padded planes each, so the batch
    runs in several chunks that reuse one buffer; the last chunk is a remainder."""
    _direct_or_skip()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 64, 64, 64), dtype=np.float32)
    w = rng.standard_normal((8, 64, 3, 3), dtype=np.float32)
    gy = rng.standard_normal((3, 8, 64, 64), dtype=np.float32)
    taps = np.argwhere(F.masked_conv2d_mask(8, 64, 3, "B").any(axis=(0, 1))).astype(np.int64)
    geom = ((1, 1), (1, 1), (1, 1))
    np.testing.assert_allclose(_tap_conv_cpu.tap_conv2d_forward(x, w, None, taps, geom, (64, 64)),
                               dense_forward(x, w, None, taps, geom, (64, 64)), atol=2e-4)
    np.testing.assert_allclose(_tap_conv_cpu.tap_conv2d_weight_grad(x, gy, taps, geom, (3, 3)),
                               dense_weight_grad(x, gy, taps, geom, (3, 3)), rtol=1e-4, atol=2e-3)


def test_direct_kernels_read_only_real_pixels():
    """Infinite inputs reach exactly the outputs and weight gradients that read them: the grid
    columns past each output row are computed in the forward pass but never stored, and never
    enter the weight gradient (0 * inf there would be NaN)."""
    _direct_or_skip()
    x = np.ones((1, 1, 3, 4), np.float32)
    x[0, 0, :, -1] = np.inf  # the last column
    w = np.ones((1, 1, 1, 2), np.float32)
    taps = np.array([[0, 0], [0, 1]], dtype=np.int64)
    geom = ((1, 1), (0, 1), (1, 1))  # causal along x: tap 0 reads ox - 1, tap 1 reads ox
    y = _tap_conv_cpu.tap_conv2d_forward(x, w, None, taps, geom, (3, 4))
    assert np.array_equal(y[0, 0, :, :3], np.array([[1, 2, 2]] * 3, np.float32))
    assert np.all(np.isinf(y[0, 0, :, 3]))
    # no output reads the last column through tap 0, so its gradient is finite
    gw = _tap_conv_cpu.tap_conv2d_weight_grad(x, np.ones_like(y), taps, geom, (1, 2))
    assert gw[0, 0, 0, 0] == 9 and np.isinf(gw[0, 0, 0, 1])


def test_direct_binding_checks():
    _direct_or_skip()
    from gmcore import _C
    x = np.zeros((1, 2, 3, 3), np.float32)
    a = np.zeros((4, 1, 2), np.float32)
    s = np.zeros((1, 2), np.int64)
    out = np.zeros((1, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="float32"):
        _C.masked_conv_shift_forward_cpu(x.astype(np.float64), a, s, out)
    with pytest.raises(ValueError, match=r"a must be \(M, T, C\)"):
        _C.masked_conv_shift_forward_cpu(x, np.zeros((4, 2, 2), np.float32), s, out)
    with pytest.raises(ValueError, match="out must be"):
        _C.masked_conv_shift_forward_cpu(x, a, s, np.zeros((1, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="bias must be"):
        _C.masked_conv_shift_forward_cpu(x, a, s, out, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="shifts"):
        _C.masked_conv_shift_forward_cpu(x, a, s.astype(np.int32), out)
    with pytest.raises(ValueError, match=r"gw must be \(T, C, M\)"):
        _C.masked_conv_shift_weight_grad_cpu(x, out, s, np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="gy must be"):
        _C.masked_conv_shift_weight_grad_cpu(x, np.zeros((2, 4, 3, 3), np.float32), s,
                                             np.zeros((1, 2, 4), np.float32))


def test_direct_path_selection():
    """float32 at stride 1 takes the direct kernels where the CPU has them; float64 and strided
    calls take the packed-GEMM path."""
    _module("cpp")
    from gmcore import _C
    one = ((1, 1), (0, 0), (1, 1))
    assert _tap_conv_cpu.direct_applies(np.float32, one) == _C.masked_conv_direct_supported()
    assert not _tap_conv_cpu.direct_applies(np.float64, one)
    assert not _tap_conv_cpu.direct_applies(np.float32, ((2, 1), (0, 0), (1, 1)))


def test_cpp_binding_checks():
    _module("cpp")
    from gmcore import _C
    x = np.zeros((1, 2, 3, 3), np.float32)
    taps = np.array([[0, 0]], np.int64)
    with pytest.raises(ValueError, match="cols must be"):
        _C.masked_conv_pack_cpu(x, np.zeros((3, 9), np.float32), taps, 3, 3, 1, 1, 0, 0, 1, 1)
    with pytest.raises(ValueError, match="dtype"):
        _C.masked_conv_pack_cpu(x, np.zeros((2, 9), np.float64), taps, 3, 3, 1, 1, 0, 0, 1, 1)
    with pytest.raises(ValueError, match="stride"):
        _C.masked_conv_pack_cpu(x, np.zeros((2, 9), np.float32), taps, 3, 3, 0, 1, 0, 0, 1, 1)
    with pytest.raises(ValueError, match="taps"):
        _C.masked_conv_pack_cpu(x, np.zeros((2, 9), np.float32), taps.astype(np.int32), 3, 3,
                                1, 1, 0, 0, 1, 1)


# ---- masks ----------------------------------------------------------------------------------------

def test_mask_structure():
    a = F.masked_conv2d_mask(2, 2, (5, 3), "A")
    b = F.masked_conv2d_mask(2, 2, (5, 3), "B")
    assert a.dtype == np.float64 and a.shape == (2, 2, 5, 3)
    assert np.all(a[:, :, :2] == 1) and np.all(a[:, :, 3:] == 0)
    assert a[0, 0, 2].tolist() == [1, 0, 0] and b[0, 0, 2].tolist() == [1, 1, 0]
    rgb = F.masked_conv2d_mask(6, 3, 3, "A", groups_rgb=3)[:, :, 1, 1]
    assert rgb.astype(int).tolist() == [[0, 0, 0]] * 2 + [[1, 0, 0]] * 2 + [[1, 1, 0]] * 2
    rgb_b = F.masked_conv2d_mask(3, 6, 3, "B", groups_rgb=3)[:, :, 1, 1]
    assert rgb_b.astype(int).tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1] * 6]
    # outside the centre tap the RGB mask is the plain one
    full = F.masked_conv2d_mask(6, 3, 3, "A", groups_rgb=3)
    full[:, :, 1, 1] = 0
    assert np.array_equal(full, F.masked_conv2d_mask(6, 3, 3, "A"))
    # a copy: editing it does not change later masks
    a[:] = 7
    assert F.masked_conv2d_mask(2, 2, (5, 3), "A").max() == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=4), "odd kernel"),
    (dict(kernel_size=(3, 2)), "odd kernel"),
    (dict(mask_type="C"), "mask_type"),
    (dict(groups_rgb=2), "groups_rgb"),
    (dict(groups_rgb=3), "divisible by 3"),
])
def test_mask_errors(kwargs, match):
    args = dict(out_channels=4, in_channels=3, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        F.masked_conv2d_mask(**args)


# ---- masked_conv2d through each implementation -------------------------------------------------

def _torch():
    return pytest.importorskip("torch")


def _run_with_grads(fn, arrays, seed=0):
    ts = [gm.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    g = np.random.default_rng(seed).standard_normal(y.shape).astype(arrays[0].dtype)
    (y * gm.tensor(g)).sum().backward()
    return y.detach().numpy(), [t.grad.numpy() for t in ts], g


def _torch_grads(torch, fn, arrays, g):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    (y * torch.tensor(g)).sum().backward()
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("name", IMPL_NAMES)
@pytest.mark.parametrize("case", [
    dict(k=3, mask_type="B"), dict(k=5, mask_type="A", groups_rgb=3),
    dict(k=(3, 5), mask_type="B", stride=2, dilation=(1, 2)),
    dict(k=3, mask_type="A", padding=0), dict(k=7, mask_type="A", stride=(2, 1), padding=(1, 4)),
    dict(k=1, mask_type="B", groups_rgb=3), dict(k=1, mask_type="A"),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_masked_conv2d_vs_torch(name, case, dtype, kernels_env):
    torch = _torch()
    _use(kernels_env, name)
    case = dict(case)
    k = case.pop("k")
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 9, 8)).astype(dtype)
    w = rng.standard_normal((3, 6, kh, kw)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    y, grads, g = _run_with_grads(lambda *t: F.masked_conv2d(*t, **case), [x, w, b])
    mask = F.masked_conv2d_mask(3, 6, (kh, kw), case["mask_type"], case.get("groups_rgb", 1))
    stride, dil = case.get("stride", 1), case.get("dilation", 1)
    d2 = (dil, dil) if isinstance(dil, int) else dil
    pad = case.get("padding", (d2[0] * (kh // 2), d2[1] * (kw // 2)))
    tm = torch.tensor(mask.astype(dtype))
    yr, gr = _torch_grads(torch, lambda xt, wt, bt: torch.nn.functional.conv2d(
        xt, wt * tm, bt, stride=stride, padding=pad, dilation=dil), [x, w, b], g)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y, yr, **tol)
    for a, r in zip(grads, gr):
        np.testing.assert_allclose(a, r, **tol)
    assert np.all(grads[1][:, :, mask.sum(axis=(0, 1)) == 0] == 0)


def _future(h, w, i, j, strict):
    """Boolean (h, w): input positions at or after (i, j) in raster order (after only if not
    ``strict``)."""
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    after = (r > i) | ((r == i) & (c > j))
    return after | ((r == i) & (c == j)) if strict else after


@pytest.mark.parametrize("name", IMPL_NAMES)
@FIXTURE_OK
@given(k=st.sampled_from([1, 3, 5]), mask_type=st.sampled_from("AB"), rgb=st.booleans(),
       dil=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 6), seed=st.integers(0, 99))
def test_masked_conv2d_causality(name, kernels_env, k, mask_type, rgb, dil, h, w, seed):
    """d y[n, o, i, j] / d x is exactly 0 at positions after (i, j), at (i, j) itself for mask A
    (for mask B: at (i, j) only in channel groups after o's with groups_rgb=3)."""
    _use(kernels_env, name)
    rng = np.random.default_rng(seed)
    c = o = 3 if rgb else 2
    x = gm.tensor(rng.standard_normal((2, c, h, w)), requires_grad=True)
    wt = gm.tensor(rng.standard_normal((o, c, k, k)))
    i, j, oc = int(rng.integers(h)), int(rng.integers(w)), int(rng.integers(o))
    y = F.masked_conv2d(x, wt, mask_type=mask_type, groups_rgb=3 if rgb else 1, dilation=dil)
    y[1, oc, i, j].backward()
    gx = x.grad.numpy()
    assert np.all(gx[0] == 0)  # other images
    fut = _future(h, w, i, j, strict=False)
    assert np.all(gx[1][:, fut] == 0)
    centre = gx[1][:, i, j]
    if rgb:
        allowed = np.arange(c) < oc if mask_type == "A" else np.arange(c) <= oc
        assert np.all(centre[~allowed] == 0)
        if k == 1 and allowed.any():
            assert np.all(centre[allowed] != 0)
    elif mask_type == "A":
        assert np.all(centre == 0)
    else:
        assert np.all(centre != 0)
    if k > 1 and j >= dil:  # the left neighbour (dilated) is seen
        assert np.all(gx[1][:, i, j - dil] != 0)


# ---- PixelCNN++ shifted convolutions -------------------------------------------------------------

SHIFTED = [("down_shifted_conv2d", (2, 3), False), ("down_shifted_conv2d", (3, 5), False),
           ("down_shifted_conv2d", (2, 2), False),
           ("down_right_shifted_conv2d", (2, 2), True), ("down_right_shifted_conv2d", (1, 3), True),
           ("down_right_shifted_conv2d", (2, 1), True)]


@pytest.mark.parametrize("name", IMPL_NAMES)
@pytest.mark.parametrize("op, kernel, right", SHIFTED)
@pytest.mark.parametrize("stride", [1, 2])
def test_shifted_conv_vs_torch(name, op, kernel, right, stride, kernels_env):
    torch = _torch()
    _use(kernels_env, name)
    kh, kw = kernel
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, kh, kw)), \
        rng.standard_normal(4)
    y, grads, g = _run_with_grads(lambda *t: getattr(F, op)(*t, stride=stride), [x, w, b])
    pad = (kw - 1, 0, kh - 1, 0) if right else ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)
    tf = torch.nn.functional
    yr, gr = _torch_grads(torch, lambda xt, wt, bt: tf.conv2d(tf.pad(xt, pad), wt, bt,
                                                              stride=stride), [x, w, b], g)
    np.testing.assert_allclose(y, yr, rtol=1e-10, atol=1e-10)
    for a, r in zip(grads, gr):
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", IMPL_NAMES)
@pytest.mark.parametrize("op, kernel, right", [
    ("down_shifted_conv_transpose2d", (2, 3), False), ("down_shifted_conv_transpose2d", (3, 5), False),
    ("down_shifted_conv_transpose2d", (2, 2), False),
    ("down_right_shifted_conv_transpose2d", (2, 2), True),
    ("down_right_shifted_conv_transpose2d", (3, 1), True)])
@pytest.mark.parametrize("stride", [1, 2, (2, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shifted_conv_transpose_vs_torch(name, op, kernel, right, stride, dtype, kernels_env):
    """conv_transpose2d(output_padding=stride-1) then openai/pixel-cnn's crop."""
    torch = _torch()
    _use(kernels_env, name)
    kh, kw = kernel
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 3, 5)).astype(dtype)
    w = rng.standard_normal((4, 3, kh, kw)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    y, grads, g = _run_with_grads(lambda *t: getattr(F, op)(*t, stride=stride), [x, w, b])
    s = (stride, stride) if isinstance(stride, int) else stride

    def ref(xt, wt, bt):
        z = torch.nn.functional.conv_transpose2d(xt, wt, bt, stride=s,
                                                 output_padding=(s[0] - 1, s[1] - 1))
        hh, ww = z.shape[2:]
        if right:
            return z[:, :, :hh - kh + 1, :ww - kw + 1]
        p = (kw - 1) // 2
        return z[:, :, :hh - kh + 1, p:ww - p]

    yr, gr = _torch_grads(torch, ref, [x, w, b], g)
    if kw % 2 or right:
        assert y.shape[2:] == (3 * s[0], 5 * s[1])
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y, yr, **tol)
    for a, r in zip(grads, gr):
        np.testing.assert_allclose(a, r, **tol)


@pytest.mark.parametrize("name", IMPL_NAMES)
@FIXTURE_OK
@given(right=st.booleans(), kh=st.integers(1, 3), kw=st.sampled_from([1, 3, 5]),
       h=st.integers(1, 5), w=st.integers(1, 5), seed=st.integers(0, 99))
def test_shifted_conv_causality(name, kernels_env, right, kh, kw, h, w, seed):
    """down-shifted: y[i, j] sees rows <= i; down-right-shifted: also columns <= j."""
    _use(kernels_env, name)
    rng = np.random.default_rng(seed)
    x = gm.tensor(rng.standard_normal((1, 2, h, w)), requires_grad=True)
    wt = gm.tensor(rng.standard_normal((2, 2, kh, kw)))
    op = F.down_right_shifted_conv2d if right else F.down_shifted_conv2d
    y = op(x, wt)
    i, j = int(rng.integers(y.shape[2])), int(rng.integers(y.shape[3]))
    y[0, 1, i, j].backward()
    gx = x.grad.numpy()[0]
    assert np.all(gx[:, i + 1:] == 0)
    if right:
        assert np.all(gx[:, :, j + 1:] == 0)
    assert np.all(gx[:, i, j] != 0)  # the same position is seen (shift it to exclude)


def test_shift_helpers():
    x = gm.arange(12.0).reshape(1, 1, 3, 4)
    assert F.down_shift(x)[0, 0].tolist() == [[0] * 4, [0, 1, 2, 3], [4, 5, 6, 7]]
    assert F.right_shift(x)[0, 0].tolist() == [[0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10]]
    with pytest.raises(ValueError, match="at least 2 dims"):
        F.down_shift(gm.ones(3))


# ---- gradients: reference path (any order), fused paths (first order) ----------------------------

@pytest.mark.parametrize("op", ["masked", "masked_rgb", "down", "down_right", "down_t",
                                "down_right_t"])
def test_reference_gradcheck(op, kernels_env):
    kernels_env("masked_conv=reference")
    rng = np.random.default_rng(4)
    c = 3 if op == "masked_rgb" else 2
    x = gm.tensor(rng.standard_normal((1, c, 4, 3)), requires_grad=True)
    b = gm.tensor(rng.standard_normal(3), requires_grad=True)
    if op.startswith("masked"):
        w = gm.tensor(rng.standard_normal((3, c, 3, 3)), requires_grad=True)
        fn = lambda x, w, b: F.masked_conv2d(x, w, b, "A", groups_rgb=3 if c == 3 else 1)  # noqa: E731
    elif op.endswith("_t"):
        w = gm.tensor(rng.standard_normal((c, 3, 2, 3)), requires_grad=True)
        f = F.down_shifted_conv_transpose2d if op == "down_t" else \
            F.down_right_shifted_conv_transpose2d
        fn = lambda x, w, b: f(x, w, b)  # noqa: E731
    else:
        w = gm.tensor(rng.standard_normal((3, c, 2, 3)), requires_grad=True)
        f = F.down_shifted_conv2d if op == "down" else F.down_right_shifted_conv2d
        fn = lambda x, w, b: f(x, w, b)  # noqa: E731
    assert gradcheck(fn, (x, w, b))
    # double backward exists on the reference path
    y = fn(x, w, b)
    (gx,) = gm.autograd.grad((y * y).sum(), (x,), create_graph=True)
    gx.sum().backward()
    assert w.grad is not None


@pytest.mark.parametrize("name", ["cpp", "numba"])
def test_fused_is_once_differentiable(name, kernels_env):
    _use(kernels_env, name)
    x = gm.randn(1, 2, 4, 4, dtype=gm.float64, requires_grad=True)
    w = gm.randn(2, 2, 3, 3, dtype=gm.float64, requires_grad=True)
    y = F.masked_conv2d(x, w)
    (gx,) = gm.autograd.grad((y * y).sum(), (x,), create_graph=True)
    with pytest.raises(RuntimeError, match="once-differentiable"):
        gx.sum().backward()
    z = F.down_shifted_conv_transpose2d(x, gm.randn(2, 3, 2, 3, dtype=gm.float64,
                                                    requires_grad=True))
    (gx,) = gm.autograd.grad((z * z).sum(), (x,), create_graph=True)
    with pytest.raises(RuntimeError, match="TapConvTranspose2d"):
        gx.sum().backward()


@pytest.mark.parametrize("name", ["cpp", "numba"])
def test_fused_partial_grads_and_unbatched(name, kernels_env):
    """Only what needs a gradient gets one; (C, H, W) inputs work; no-grad forward."""
    _use(kernels_env, name)
    rng = np.random.default_rng(5)
    xa, wa = rng.standard_normal((2, 5, 4)), rng.standard_normal((3, 2, 3, 3))
    x, w = gm.tensor(xa), gm.tensor(wa, requires_grad=True)
    y = F.masked_conv2d(x, w)
    assert y.shape == (3, 5, 4)
    y.sum().backward()
    assert x.grad is None and w.grad.shape == (3, 2, 3, 3)
    kernels_env("masked_conv=reference")
    w2 = gm.tensor(wa, requires_grad=True)
    F.masked_conv2d(x, w2).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), w2.grad.numpy(), atol=1e-12)
    with gm.no_grad():
        assert not F.down_shifted_conv2d(x, w[:, :, :2]).requires_grad


# ---- dispatch and errors ---------------------------------------------------------------------------

def test_dispatch_registrations_and_override(kernels_env):
    for fam in ("masked_conv", "causal_conv"):
        assert dispatch.implementations(fam, "cpu") == ["cpp", "numba", "reference"]
        assert dispatch.implementations(fam, "cuda") == ["triton", "cuda", "reference"]
    if HAVE_NUMBA:
        kernels_env("masked_conv=numba")
        assert dispatch.choose("masked_conv", "tap_conv2d", "cpu")[0] == "numba"
    kernels_env("reference")
    assert dispatch.choose("causal_conv", "tap_conv2d", "cpu")[0] == "reference"
    kernels_env("masked_conv=nonesuch")
    with pytest.raises(ValueError, match="nonesuch"):
        dispatch.choose("masked_conv", "tap_conv2d", "cpu")


def test_float16_runs_reference():
    x = gm.randn(1, 2, 4, 4).to(gm.float16)
    w = gm.randn(2, 2, 3, 3).to(gm.float16)
    y = F.masked_conv2d(x, w)
    assert y.dtype == gm.float16 and y.shape == (1, 2, 4, 4)


@pytest.mark.parametrize("call, err, match", [
    (lambda: F.masked_conv2d(gm.ones(4, 4), gm.ones(1, 1, 3, 3)), ValueError, "3D .* 4D|4D"),
    (lambda: F.masked_conv2d(gm.ones(1, 2, 4, 4), gm.ones(1, 3, 3, 3)), ValueError, "channels"),
    (lambda: F.masked_conv2d(gm.ones(1, 1, 4, 4), gm.ones(1, 1, 2, 2)), ValueError, "odd"),
    (lambda: F.masked_conv2d(gm.ones(1, 1, 4, 4), gm.ones(1, 1, 3, 3), mask_type="b"),
     ValueError, "mask_type"),
    (lambda: F.masked_conv2d(gm.ones(1, 1, 4, 4), gm.ones(1, 1, 3, 3, dtype=gm.float64)),
     TypeError, "same dtype"),
    (lambda: F.masked_conv2d(gm.ones(1, 1, 4, 4), gm.ones(1, 1, 3, 3), gm.ones(2)),
     ValueError, "bias of size"),
    (lambda: F.masked_conv2d(gm.ones(1, 1, 4, 4), gm.ones(1, 1, 3, 3), groups_rgb=3),
     ValueError, "divisible by 3"),
    (lambda: F.masked_conv2d(gm.ones(1, 1, 2, 2), gm.ones(1, 1, 5, 5), padding=0),
     ValueError, "smaller than"),
    (lambda: F.masked_conv2d(gm.ones(1, 1, 4, 4), np.ones((1, 1, 3, 3))), TypeError, "Tensor"),
    (lambda: F.down_shifted_conv2d(gm.ones(1, 2, 4, 4), gm.ones(3, 1, 2, 3)), ValueError,
     "channels"),
    (lambda: F.down_shifted_conv_transpose2d(gm.ones(1, 2, 4, 4), gm.ones(3, 2, 2, 3)),
     ValueError, "channels"),
    (lambda: F.down_right_shifted_conv2d(gm.ones(1, 2, 4, 4), gm.ones(3, 2, 2)), ValueError,
     "4D weight"),
    (lambda: F.masked_conv2d(gm.ones(1, 1, 4, 4, dtype=gm.int64), gm.ones(1, 1, 3, 3)),
     TypeError, "floating point"),
])
def test_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()
