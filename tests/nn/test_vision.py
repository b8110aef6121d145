"""interpolate against per-pixel references of PyTorch's index formulas (and known PyTorch
outputs), pixel (un)shuffle against explicit index maps, gradients to second order."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore.testing import assert_close, gradgradcheck
from helpers import check_op


def ref_nearest(x, out, scales=(None, None), exact=False):
    n, c, h, w = x.shape
    y = np.zeros((n, c) + tuple(out))
    sh = np.float32(1 / scales[0] if scales[0] else h / out[0])
    sw = np.float32(1 / scales[1] if scales[1] else w / out[1])
    off = np.float32(0.5 if exact else 0.0)
    for a in range(out[0]):
        r = min(int(math.floor(np.float32(a + off) * sh)), h - 1)
        for b in range(out[1]):
            q = min(int(math.floor(np.float32(b + off) * sw)), w - 1)
            y[:, :, a, b] = x[:, :, r, q]
    return y


def ref_bilinear(x, out, align_corners, scales=(None, None)):
    """Per output pixel: blend the four neighbours of the source point."""
    n, c, h, w = x.shape

    def src(dst, n_in, n_out, scale):
        if align_corners:
            return dst * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        s = 1 / scale if scale else n_in / n_out
        return max((dst + 0.5) * s - 0.5, 0.0)

    y = np.zeros((n, c) + tuple(out))
    for a in range(out[0]):
        fr = src(a, h, out[0], scales[0])
        r0 = min(int(fr), h - 1)
        r1, lr = min(r0 + 1, h - 1), fr - r0
        for b in range(out[1]):
            fq = src(b, w, out[1], scales[1])
            q0 = min(int(fq), w - 1)
            q1, lq = min(q0 + 1, w - 1), fq - q0
            y[:, :, a, b] = ((1 - lr) * (1 - lq) * x[:, :, r0, q0] + (1 - lr) * lq * x[:, :, r0, q1]
                             + lr * (1 - lq) * x[:, :, r1, q0] + lr * lq * x[:, :, r1, q1])
    return y


# ---- known PyTorch outputs -------------------------------------------------------------------

def test_bilinear_known_values():
    x = gm.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    y = F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)
    assert_close(y[0, 0], np.array([[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5],
                                    [2.5, 2.75, 3.25, 3.5], [3.0, 3.25, 3.75, 4.0]]))
    y = F.interpolate(x, size=(3, 3), mode="bilinear", align_corners=True)
    assert_close(y[0, 0], np.array([[1.0, 1.5, 2.0], [2.0, 2.5, 3.0], [3.0, 3.5, 4.0]]))


def test_nearest_known_values():
    x = gm.arange(5.0).reshape(1, 1, 5)
    assert F.interpolate(x, size=3).flatten().tolist() == [0.0, 1.0, 3.0]  # floor(k * 5/3)
    assert F.interpolate(x, size=3, mode="nearest-exact").flatten().tolist() == [0.0, 2.0, 4.0]
    assert F.interpolate(gm.arange(2.0).reshape(1, 1, 2), scale_factor=2.5).flatten().tolist() \
        == [0.0, 0.0, 0.0, 1.0, 1.0]


# ---- against references, with gradients ------------------------------------------------------

@pytest.mark.parametrize("kw,out,scales", [
    (dict(size=(7, 4)), (7, 4), (None, None)),
    (dict(size=(2, 3)), (2, 3), (None, None)),
    (dict(scale_factor=1.7), (5, 6), (1.7, 1.7)),
    (dict(scale_factor=(2, 0.5)), (6, 2), (2.0, 0.5)),
])
def test_nearest(device, kw, out, scales):
    check_op(lambda x: F.interpolate(x, mode="nearest", **kw),
             lambda x: ref_nearest(x, out, scales), [(2, 2, 3, 4)], device=device)


def test_nearest_exact(device):
    check_op(lambda x: F.interpolate(x, size=(5, 3), mode="nearest-exact"),
             lambda x: ref_nearest(x, (5, 3), exact=True), [(1, 2, 3, 4)], device=device)


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("kw,out,scales", [
    (dict(size=(5, 7)), (5, 7), (None, None)),
    (dict(size=(2, 1)), (2, 1), (None, None)),
    (dict(scale_factor=1.5), (4, 6), (1.5, 1.5)),
])
def test_bilinear(device, align, kw, out, scales):
    check_op(lambda x: F.interpolate(x, mode="bilinear", align_corners=align, **kw),
             lambda x: ref_bilinear(x, out, align, scales), [(2, 2, 3, 4)], device=device)


def test_linear_1d(device):
    check_op(lambda x: F.interpolate(x, size=7, mode="linear"),
             lambda x: ref_bilinear(x[:, :, None], (1, 7), False)[:, :, 0], [(2, 3, 4)],
             device=device)


@given(st.integers(1, 6), st.integers(1, 6), st.booleans(), st.integers(0, 2**16))
def test_interpolate_property(oh, ow, align, seed):
    x = np.random.default_rng(seed).standard_normal((1, 2, 3, 4))
    assert_close(F.interpolate(gm.tensor(x), size=(oh, ow), mode="bilinear",
                               align_corners=align), ref_bilinear(x, (oh, ow), align))
    assert_close(F.interpolate(gm.tensor(x), size=(oh, ow)), ref_nearest(x, (oh, ow)))


def test_nearest_gradient_sums_copies():
    # the gradient is the transposed map: each source pixel collects its copies
    x = gm.ones(1, 1, 2, 3, dtype=gm.float64, requires_grad=True)
    F.interpolate(x, scale_factor=2).sum().backward()
    assert x.grad.numpy().tolist() == [[[[4.0] * 3] * 2]]
    assert gradgradcheck(lambda t: F.interpolate(t * t, size=(3, 5), mode="bilinear"), (x,))


# ---- pixel shuffle ----------------------------------------------------------------------------

def ref_pixel_shuffle(x, r):
    n, c, h, w = x.shape
    y = np.zeros((n, c // (r * r), h * r, w * r))
    for ch in range(c // (r * r)):
        for i in range(r):
            for j in range(r):
                y[:, ch, i::r, j::r] = x[:, ch * r * r + i * r + j]
    return y


def test_pixel_shuffle(device):
    check_op(lambda x: F.pixel_shuffle(x, 2), lambda x: ref_pixel_shuffle(x, 2),
             [(2, 8, 3, 5)], device=device)
    check_op(lambda x: F.pixel_unshuffle(x, 3),
             lambda x: ref_pixel_shuffle_inverse(x, 3), [(1, 2, 3, 6)], device=device)


def ref_pixel_shuffle_inverse(x, r):
    n, c, h, w = x.shape
    y = np.zeros((n, c * r * r, h // r, w // r))
    for ch in range(c):
        for i in range(r):
            for j in range(r):
                y[:, ch * r * r + i * r + j] = x[:, ch, i::r, j::r]
    return y


def test_pixel_shuffle_roundtrip_batch_dims():
    x = gm.randn(2, 3, 18, 2, 4)
    y = F.pixel_shuffle(x, 3)
    assert tuple(y.shape) == (2, 3, 2, 6, 12)
    assert_close(F.pixel_unshuffle(y, 3), x)


# ---- errors -----------------------------------------------------------------------------------

def test_errors():
    x = gm.randn(1, 2, 4, 4)
    with pytest.raises(NotImplementedError, match="bicubic"):
        F.interpolate(x, size=3, mode="bicubic")
    with pytest.raises(NotImplementedError, match="expects a 3D input"):
        F.interpolate(x, size=3, mode="linear")
    with pytest.raises(ValueError, match="align_corners option"):
        F.interpolate(x, size=3, align_corners=True)
    with pytest.raises(ValueError, match="exactly one of size or scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="must have 2 entries"):
        F.interpolate(x, size=(2, 3, 4))
    with pytest.raises(RuntimeError, match="divisible by the square of upscale_factor"):
        F.pixel_shuffle(gm.randn(1, 6, 2, 2), 2)
    with pytest.raises(RuntimeError, match="divisible by downscale_factor"):
        F.pixel_unshuffle(gm.randn(1, 1, 3, 4), 2)


def test_scatter_path_matches_dense_path(monkeypatch):
    # big resizes take the scatter-add (np.add.at / cupyx) path instead of the one-hot product
    import gmcore.nn.functional._index as index_mod
    x = gm.tensor(np.random.default_rng(0).standard_normal((1, 2, 3, 4)), requires_grad=True)
    f = lambda t: F.interpolate(t, size=(5, 7), mode="bilinear")  # noqa: E731
    f(x).sum().backward()
    dense = x.grad.numpy().copy()
    x.grad = None
    monkeypatch.setattr(index_mod, "_DENSE_LIMIT", 0)
    f(x).sum().backward()
    assert_close(x.grad, dense, rtol=1e-12, atol=1e-12)
    assert gradgradcheck(f, (x,))


@pytest.mark.parametrize("align_corners", [False, True])
def test_dense_matrix_and_gather_paths_agree(monkeypatch, align_corners):
    """Small axes use a dense interpolation matrix, huge ones gathers: same numbers, same grads."""
    from gmcore.nn.functional import vision
    x = gm.randn(2, 3, 5, 7, dtype=gm.float64, requires_grad=True)
    kw = dict(size=(9, 4), mode="bilinear", align_corners=align_corners)
    dense = F.interpolate(x, **kw)
    (g_dense,) = gm.autograd.grad((dense * dense).sum(), x)
    monkeypatch.setattr(vision, "_DENSE_LIMIT", 0)
    gather = F.interpolate(x, **kw)
    (g_gather,) = gm.autograd.grad((gather * gather).sum(), x)
    assert_close(dense, gather, rtol=1e-12, atol=1e-12)
    assert_close(g_dense, g_gather, rtol=1e-12, atol=1e-12)
