"""Pooling against direct per-window float64 references with PyTorch's size and divisor rules."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore.testing import assert_close, gradgradcheck
from helpers import check_op


def out_len(n, k, s, p, d, ceil_mode):
    # PyTorch's pooling_output_shape, written with math.ceil/floor instead of integer tricks
    v = (n + 2 * p - d * (k - 1) - 1) / s
    o = (math.ceil(v) if ceil_mode else math.floor(v)) + 1
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o


def ref_max_pool2d(x, k, s, p, d, ceil_mode):
    n, c, h, w = x.shape
    ho, wo = out_len(h, k[0], s[0], p[0], d[0], ceil_mode), out_len(w, k[1], s[1], p[1], d[1],
                                                                   ceil_mode)
    y = np.full((n, c, ho, wo), -np.inf)
    idx = np.zeros((n, c, ho, wo), dtype=np.int64)
    for a in range(ho):
        for b in range(wo):
            for i in range(k[0]):
                for j in range(k[1]):
                    r, q = a * s[0] - p[0] + i * d[0], b * s[1] - p[1] + j * d[1]
                    if 0 <= r < h and 0 <= q < w:
                        v = x[:, :, r, q]
                        better = v > y[:, :, a, b]  # strict: the first maximum wins
                        y[:, :, a, b] = np.where(better, v, y[:, :, a, b])
                        idx[:, :, a, b] = np.where(better, r * w + q, idx[:, :, a, b])
    return y, idx


def ref_avg_pool2d(x, k, s, p, ceil_mode, count_include_pad, divisor_override=None):
    n, c, h, w = x.shape
    ho, wo = out_len(h, k[0], s[0], p[0], 1, ceil_mode), out_len(w, k[1], s[1], p[1], 1,
                                                                ceil_mode)
    y = np.zeros((n, c, ho, wo))
    for a in range(ho):
        for b in range(wo):
            r0, q0 = a * s[0] - p[0], b * s[1] - p[1]
            r1, q1 = min(r0 + k[0], h + p[0]), min(q0 + k[1], w + p[1])
            size = (r1 - r0) * (q1 - q0)
            rr0, qq0, rr1, qq1 = max(r0, 0), max(q0, 0), min(r1, h), min(q1, w)
            total = x[:, :, rr0:rr1, qq0:qq1].sum(axis=(2, 3))
            div = divisor_override or (size if count_include_pad else
                                       (rr1 - rr0) * (qq1 - qq0))
            y[:, :, a, b] = total / div
    return y


def ref_adaptive(x, oh, ow):
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow))
    for a in range(oh):
        for b in range(ow):
            r0, r1 = math.floor(a * h / oh), math.ceil((a + 1) * h / oh)
            q0, q1 = math.floor(b * w / ow), math.ceil((b + 1) * w / ow)
            y[:, :, a, b] = x[:, :, r0:r1, q0:q1].mean(axis=(2, 3))
    return y


# ---- max pooling ------------------------------------------------------------------------------

@pytest.mark.parametrize("k,s,p,d,ceil", [
    ((2, 2), (2, 2), (0, 0), (1, 1), False),
    ((3, 2), (2, 1), (1, 1), (1, 2), False),
    ((3, 3), (2, 2), (1, 0), (1, 1), True),
    ((2, 3), (3, 2), (1, 1), (2, 1), True),
])
def test_max_pool2d(device, k, s, p, d, ceil):
    out = check_op(lambda x: F.max_pool2d(x, k, s, p, d, ceil_mode=ceil),
                   lambda x: ref_max_pool2d(x, k, s, p, d, ceil)[0],
                   [(2, 3, 5, 7)], device=device)
    assert tuple(out.shape[2:]) == (out_len(5, k[0], s[0], p[0], d[0], ceil),
                                    out_len(7, k[1], s[1], p[1], d[1], ceil))


def test_max_pool2d_indices_and_ties(device):
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 6))
    y, idx = F.max_pool2d(gm.tensor(x, device=device), (3, 2), (2, 2), 1, return_indices=True)
    ry, ridx = ref_max_pool2d(x, (3, 2), (2, 2), (1, 1), (1, 1), False)
    assert_close(y.cpu(), ry)
    assert idx.dtype == gm.int64 and (idx.cpu().numpy() == ridx).all()
    # ties: the gradient goes to the first maximum of each (overlapping) window, as PyTorch
    t = gm.ones(1, 1, 3, 3, dtype=gm.float64, device=device, requires_grad=True)
    F.max_pool2d(t, 2, stride=1).sum().backward()
    assert t.grad.cpu().numpy()[0, 0].tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]


def test_max_pool_nan_propagates():
    x = gm.tensor([[[[1.0, float("nan")], [3.0, 2.0]]]])
    assert math.isnan(F.max_pool2d(x, 2).item())


def test_max_pool1d(device):
    check_op(lambda x: F.max_pool1d(x, 3, 2, 1, dilation=2, ceil_mode=True),
             lambda x: ref_max_pool2d(x[:, :, None], (1, 3), (1, 2), (0, 1), (1, 2),
                                      True)[0][:, :, 0],
             [(2, 3, 9)], device=device)


# ---- average pooling --------------------------------------------------------------------------

@pytest.mark.parametrize("k,s,p,ceil,incl,override", [
    ((2, 2), (2, 2), (0, 0), False, True, None),
    ((3, 2), (2, 1), (1, 1), False, False, None),
    ((3, 3), (2, 2), (1, 1), True, True, None),
    ((3, 3), (2, 2), (1, 0), True, False, None),
    ((2, 3), (2, 2), (1, 1), True, True, 5),
])
def test_avg_pool2d(device, k, s, p, ceil, incl, override):
    check_op(lambda x: F.avg_pool2d(x, k, s, p, ceil, incl, override),
             lambda x: ref_avg_pool2d(x, k, s, p, ceil, incl, override),
             [(2, 3, 5, 7)], device=device)


def test_avg_pool2d_ceil_corner():
    # 5x5, 2x2 windows, ceil_mode: the corner window holds only x[4, 4] and divides by 1
    y = F.avg_pool2d(gm.arange(25.0).reshape(1, 1, 5, 5), 2, ceil_mode=True)
    assert tuple(y.shape) == (1, 1, 3, 3) and y[0, 0, 2, 2].item() == 24.0


def test_avg_pool1d(device):
    check_op(lambda x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=False),
             lambda x: ref_avg_pool2d(x[:, :, None], (1, 3), (1, 2), (0, 1), False, False)[:, :, 0],
             [(2, 3, 8)], device=device)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.booleans(), st.booleans(),
       st.integers(0, 2**16))
def test_pool_property(k, s, p, ceil, incl, seed):
    if p > k // 2:
        return
    x = np.random.default_rng(seed).standard_normal((1, 2, 4, 5))
    y = F.avg_pool2d(gm.tensor(x), k, s, p, ceil, incl)
    assert_close(y, ref_avg_pool2d(x, (k, k), (s, s), (p, p), ceil, incl), rtol=1e-10, atol=1e-12)
    m = F.max_pool2d(gm.tensor(x), k, s, p, ceil_mode=ceil)
    assert_close(m, ref_max_pool2d(x, (k, k), (s, s), (p, p), (1, 1), ceil)[0])


# ---- adaptive ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, (3, 2), (5, 4), (None, 3)])
def test_adaptive_avg_pool2d(device, size):
    oh, ow = (size, size) if isinstance(size, int) else (size[0] or 5, size[1])
    check_op(lambda x: F.adaptive_avg_pool2d(x, size), lambda x: ref_adaptive(x, oh, ow),
             [(2, 3, 5, 7)], device=device)


def test_adaptive_avg_pool1d_and_unbatched(device):
    check_op(lambda x: F.adaptive_avg_pool1d(x, 3),
             lambda x: ref_adaptive(x[:, :, None], 1, 3)[:, :, 0], [(2, 3, 7)], device=device)
    x = np.random.default_rng(0).standard_normal((3, 4, 6))
    y = F.adaptive_avg_pool2d(gm.tensor(x, device=device), (2, 3))
    assert_close(y.cpu(), ref_adaptive(x[None], 2, 3)[0])


def test_second_order_through_pools():
    x = gm.randn(1, 2, 4, 5, dtype=gm.float64, requires_grad=True)
    assert gradgradcheck(lambda t: F.max_pool2d(t * t, 2, 1), (x,))
    assert gradgradcheck(lambda t: F.avg_pool2d(t * t, 3, 2, 1, ceil_mode=True), (x,))


# ---- errors -------------------------------------------------------------------------------------

def test_errors():
    x = gm.randn(1, 2, 5, 5)
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        F.max_pool2d(x, 3, padding=2)
    with pytest.raises(RuntimeError, match="Output size is too small"):
        F.max_pool2d(gm.randn(1, 1, 2, 2), 3)
    with pytest.raises(RuntimeError, match="3D .* or 4D"):
        F.avg_pool2d(gm.randn(5, 5), 2)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        F.avg_pool2d(x, 0)
    with pytest.raises(RuntimeError, match="output_size must be >= 1"):
        F.adaptive_avg_pool2d(x, 0)
