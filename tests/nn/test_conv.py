"""Convolutions against a direct nested-loop float64 reference (not im2col), gradients to
second order, PyTorch's output-size formulas, and error messages."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore.testing import assert_close, gradcheck, gradgradcheck
from helpers import check_op


# ---- direct references ------------------------------------------------------------------------

def ref_conv2d(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), groups=1):
    """y[n,o,p,q] = sum_{c,i,j} w[o,c,i,j] x[n, g*Cg+c, p*s - pt + i*d, q*s - pl + j*d]."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = stride, pads, dil
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    y = np.zeros((n, o, ho, wo))
    for b_ in range(n):
        for oc in range(o):
            g = oc // og
            for p in range(ho):
                for q in range(wo):
                    acc = 0.0
                    for ci in range(cg):
                        for i in range(kh):
                            r = p * sh - pt + i * dh
                            if not 0 <= r < h:
                                continue
                            for j in range(kw):
                                col = q * sw - pl + j * dw
                                if 0 <= col < wd:
                                    acc += w[oc, ci, i, j] * x[b_, g * cg + ci, r, col]
                    y[b_, oc, p, q] = acc
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def ref_conv_transpose2d(x, w, b=None, stride=(1, 1), pad=(0, 0), out_pad=(0, 0), groups=1,
                         dil=(1, 1)):
    """Scatter form: every input element adds x * w[tap] at (y*s - p + i*d, x*s - p + j*d)."""
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, pad, out_pad, dil
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    cig = cin // groups
    y = np.zeros((n, cog * groups, ho, wo))
    for b_ in range(n):
        for ci in range(cin):
            g = ci // cig
            for p in range(h):
                for q in range(wd):
                    for co in range(cog):
                        for i in range(kh):
                            r = p * sh - ph + i * dh
                            for j in range(kw):
                                col = q * sw - pw + j * dw
                                if 0 <= r < ho and 0 <= col < wo:
                                    y[b_, g * cog + co, r, col] += x[b_, ci, p, q] * w[ci, co, i, j]
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


# ---- conv2d -----------------------------------------------------------------------------------

def test_conv2d_odd_case(device):
    # N=2, C=3, 5x7 input, 3x2 kernels, stride 2, padding 1, dilation 2, groups 3
    out = check_op(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, dilation=2, groups=3),
                   lambda x, w, b: ref_conv2d(x, w, b, (2, 2), (1, 1, 1, 1), (2, 2), 3),
                   [(2, 3, 5, 7), (6, 1, 3, 2), (6,)], device=device,
                   torch_fn=lambda x, w, b: __import__("torch").nn.functional.conv2d(
                       x, w, b, stride=2, padding=1, dilation=2, groups=3))
    # PyTorch's size formula: (H + 2p - d(k-1) - 1) // s + 1
    assert tuple(out.shape) == (2, 6, (5 + 2 - 4 - 1) // 2 + 1, (7 + 2 - 2 - 1) // 2 + 1)


def test_conv2d_tuple_args_no_bias(device):
    check_op(lambda x, w: F.conv2d(x, w, stride=(1, 2), padding=(2, 0), dilation=(1, 3)),
             lambda x, w: ref_conv2d(x, w, None, (1, 2), (2, 2, 0, 0), (1, 3)),
             [(1, 2, 4, 9), (3, 2, 2, 3)], device=device)


@pytest.mark.parametrize("k,d", [((2, 4), (1, 1)), ((3, 2), (2, 3))])
def test_conv2d_same_padding_asymmetric(device, k, d):
    # total pad d(k-1) may be odd: PyTorch puts the extra one at the bottom/right
    pads = []
    for kk, dd in zip(k, d):
        t = dd * (kk - 1)
        pads += [t // 2, t - t // 2]
    out = check_op(lambda x, w: F.conv2d(x, w, padding="same", dilation=d),
                   lambda x, w: ref_conv2d(x, w, None, (1, 1), tuple(pads), d),
                   [(2, 2, 5, 6), (3, 2) + k], device=device, gradgrad=False)
    assert tuple(out.shape) == (2, 3, 5, 6)


def test_conv2d_valid_and_1x1(device):
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 5))
    w = np.random.default_rng(2).standard_normal((6, 4, 1, 1))
    y = F.conv2d(gm.tensor(x, device=device), gm.tensor(w, device=device), padding="valid")
    assert_close(y.cpu(), ref_conv2d(x, w), rtol=1e-10, atol=1e-12)


def test_conv2d_unbatched(device):
    x = np.random.default_rng(0).standard_normal((3, 5, 4))
    w = np.random.default_rng(1).standard_normal((2, 3, 2, 2))
    y = F.conv2d(gm.tensor(x, device=device), gm.tensor(w, device=device), padding=1)
    assert tuple(y.shape) == (2, 6, 5)
    assert_close(y.cpu(), ref_conv2d(x[None], w, pads=(1, 1, 1, 1))[0], rtol=1e-10, atol=1e-12)


def test_conv2d_third_order(device):
    # the closed set (conv, convT, weight-grad) differentiates to any order
    x = gm.tensor(np.random.default_rng(3).standard_normal((1, 2, 4, 3)), device=device,
                  requires_grad=True)
    w = gm.tensor(np.random.default_rng(4).standard_normal((2, 1, 2, 2)), device=device,
                  requires_grad=True)

    def f(x, w):
        y = F.conv2d(x, w, stride=2, padding=1, groups=2)
        gx, = gm.autograd.grad((y * y).sum(), [x], create_graph=True)
        return gx
    assert gradgradcheck(f, (x, w))


# ---- conv1d -----------------------------------------------------------------------------------

def test_conv1d(device):
    check_op(lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=2, dilation=3, groups=2),
             lambda x, w, b: ref_conv2d(x[:, :, None], w[:, :, None], b, (1, 2), (0, 0, 2, 2),
                                        (1, 3), 2)[:, :, 0],
             [(2, 4, 11), (6, 2, 3), (6,)], device=device)


def test_conv1d_same(device):
    out = check_op(lambda x, w: F.conv1d(x, w, padding="same", dilation=3),
                   lambda x, w: ref_conv2d(x[:, :, None], w[:, :, None], None, (1, 1),
                                           (0, 0, 4, 5), (1, 3))[:, :, 0],
                   [(2, 2, 7), (3, 2, 4)], device=device, gradgrad=False)
    assert tuple(out.shape) == (2, 3, 7)


# ---- transposed convolutions --------------------------------------------------------------------

def test_conv_transpose2d_odd_case(device):
    out = check_op(
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                           groups=3, dilation=2),
        lambda x, w, b: ref_conv_transpose2d(x, w, b, (2, 2), (1, 1), (1, 1), 3, (2, 2)),
        [(2, 3, 3, 4), (3, 2, 3, 2), (6,)], device=device)
    # (H - 1) s - 2p + d (k - 1) + output_padding + 1
    assert tuple(out.shape) == (2, 6, 2 * 2 - 2 + 4 + 1 + 1, 3 * 2 - 2 + 2 + 1 + 1)


def test_conv_transpose2d_output_padding_below_dilation(device):
    # output_padding >= stride is allowed when it is < dilation (PyTorch's rule)
    check_op(lambda x, w: F.conv_transpose2d(x, w, stride=1, output_padding=1, dilation=2),
             lambda x, w: ref_conv_transpose2d(x, w, None, (1, 1), (0, 0), (1, 1), 1, (2, 2)),
             [(1, 2, 3, 2), (2, 1, 2, 2)], device=device)


def test_conv_transpose1d(device):
    check_op(lambda x, w: F.conv_transpose1d(x, w, stride=3, padding=1, output_padding=2),
             lambda x, w: ref_conv_transpose2d(x[:, :, None], w[:, :, None], None, (1, 3),
                                               (0, 1), (0, 2))[:, :, 0],
             [(2, 2, 4), (2, 3, 3)], device=device)


@given(st.integers(1, 3), st.integers(0, 2), st.integers(1, 2), st.sampled_from([1, 2]),
       st.integers(1, 3), st.integers(0, 2), st.integers(0, 2**16))
def test_conv2d_property(stride, padding, dilation, groups, k, out_pad, seed):
    rng = np.random.default_rng(seed)
    c, o = 2 * groups, 2 * groups
    h, w_ = rng.integers(max(1, dilation * (k - 1) + 1 - 2 * padding), 7, size=2)
    x = rng.standard_normal((2, c, h, w_))
    w = rng.standard_normal((o, c // groups, k, 2))
    eff_w = dilation + 1
    if w_ + 2 * padding < eff_w:
        return
    y = F.conv2d(gm.tensor(x), gm.tensor(w), stride=stride, padding=padding, dilation=dilation,
                 groups=groups)
    expected = ref_conv2d(x, w, None, (stride,) * 2, (padding,) * 4, (dilation,) * 2, groups)
    assert_close(y, expected, rtol=1e-9, atol=1e-10)
    # convT is the adjoint of conv: <conv(x), g> == <x, convT(g)> (output_padding restores H, W)
    ho, wo = y.shape[2:]
    op_h = h - ((ho - 1) * stride - 2 * padding + dilation * (k - 1) + 1)
    op_w = w_ - ((wo - 1) * stride - 2 * padding + dilation + 1)
    if op_h < max(stride, dilation) and op_w < max(stride, dilation):
        g = rng.standard_normal(tuple(y.shape))
        xt = F.conv_transpose2d(gm.tensor(g), gm.tensor(w), stride=stride, padding=padding,
                                output_padding=(op_h, op_w), groups=groups, dilation=dilation)
        assert tuple(xt.shape) == x.shape
        assert abs(float((y.numpy() * g).sum()) - float((x * xt.numpy()).sum())) < 1e-9 * (
            1 + abs(float((y.numpy() * g).sum())))
    # and convT matches its own direct reference
    if out_pad < max(stride, dilation):
        xt = rng.standard_normal((1, c, 3, 2))
        wt = rng.standard_normal((c, 2, k, 2))
        try:
            got = F.conv_transpose2d(gm.tensor(xt), gm.tensor(wt), stride=stride, padding=padding,
                                     output_padding=out_pad, groups=groups, dilation=dilation)
        except RuntimeError:  # output size <= 0
            return
        assert_close(got, ref_conv_transpose2d(xt, wt, None, (stride,) * 2, (padding,) * 2,
                                               (out_pad,) * 2, groups, (dilation,) * 2),
                     rtol=1e-9, atol=1e-10)


def test_small_gradcheck_grid():
    # a few strided/dilated/grouped combinations through first and second order
    rng = np.random.default_rng(7)
    for stride, pad, dil, groups in [(1, 0, 1, 1), (2, 1, 1, 2), (3, 2, 2, 1)]:
        x = gm.tensor(rng.standard_normal((1, 2, 5, 4)), requires_grad=True)
        w = gm.tensor(rng.standard_normal((2, 2 // groups, 2, 3)), requires_grad=True)
        def f(x, w):
            return F.conv2d(x, w, stride=stride, padding=pad, dilation=dil, groups=groups)
        assert gradcheck(f, (x, w)) and gradgradcheck(f, (x, w))


# ---- the column cache (forward's im2col reused by the weight gradient) ------------------------

_CACHE_CASES = [  # (x shape, w shape, conv kwargs): padding, crop, stride, dilation, groups, 1x1
    ((2, 4, 7, 6), (6, 4, 3, 3), dict(padding=1)),
    ((3, 4, 9, 8), (4, 2, 2, 3), dict(stride=(2, 3), padding=(2, 0), dilation=(2, 1), groups=2)),
    ((2, 3, 6, 5), (5, 3, 2, 4), dict(padding="same", dilation=(3, 1))),
    ((2, 3, 5, 7), (4, 3, 1, 1), {}),
    ((1, 3, 5, 7), (4, 3, 1, 1), {}),  # N=1 1x1: the columns are a view of x
]


def _weight_grad(xa, wa, gya, kwargs, device, cache):
    from gmcore.nn.functional import conv as conv_mod
    old, conv_mod.CACHE_COLUMNS = conv_mod.CACHE_COLUMNS, cache
    try:
        x = gm.tensor(xa, device=device)
        w = gm.tensor(wa, device=device, requires_grad=True)
        y = F.conv2d(x, w, **kwargs)
        cached = len(y.grad_fn._saved) == 3
        gy = gm.tensor(gya(tuple(y.shape)), device=device)
        (y * gy).sum().backward()
        return w.grad.cpu().numpy(), cached
    finally:
        conv_mod.CACHE_COLUMNS = old


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(_CACHE_CASES)))
def test_cached_columns_weight_grad_identical(device, case, dtype):
    # the cached columns are copies of x: the weight gradient must be bit-identical to the
    # recomputing path, and equal to the direct reference
    xs, ws, kwargs = _CACHE_CASES[case]
    rng = np.random.default_rng(case)
    xa, wa = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    gya = lambda shape: np.random.default_rng(99).standard_normal(shape).astype(dtype)
    fast, used_cache = _weight_grad(xa, wa, gya, kwargs, device, True)
    slow, used_cache_slow = _weight_grad(xa, wa, gya, kwargs, device, False)
    assert used_cache and not used_cache_slow
    assert fast.dtype == dtype and np.array_equal(fast, slow)
    if dtype == np.float64:
        x64 = gm.tensor(xa, requires_grad=False)
        w64 = gm.tensor(wa, requires_grad=True)
        F.conv2d(x64, w64, **kwargs).sum().backward()
        expected = np.zeros_like(wa)  # d/dw of sum(conv) by the reference, one tap at a time
        pads = _ref_pads(xs, ws, kwargs)
        for idx in np.ndindex(wa.shape):
            e = np.zeros_like(wa)
            e[idx] = 1.0
            expected[idx] = ref_conv2d(xa, e, None, *pads).sum()
        assert_close(w64.grad, expected, rtol=1e-10, atol=1e-10)


def _ref_pads(xs, ws, kwargs):
    """``ref_conv2d``'s (stride, pads, dil, groups) for a conv2d kwargs dict."""
    two = lambda v: v if isinstance(v, tuple) else (v, v)
    stride, dil = two(kwargs.get("stride", 1)), two(kwargs.get("dilation", 1))
    p = kwargs.get("padding", 0)
    if p == "same":
        pads = []
        for d, k in zip(dil, ws[2:]):
            pads += [d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2]
    else:
        ph, pw = two(p)
        pads = [ph, ph, pw, pw]
    return stride, tuple(pads), dil, kwargs.get("groups", 1)


def test_cached_columns_freed_after_backward():
    import gc
    import weakref
    # float64: the im2col path (float32 at stride 1 may take the direct kernels, no columns)
    x = gm.tensor(np.random.default_rng(0).standard_normal((2, 3, 6, 6)))
    w = gm.tensor(np.random.default_rng(1).standard_normal((4, 3, 3, 3)), requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    node = y.grad_fn
    cols = weakref.ref(node._saved[2][1].base)  # the column buffer (saved as a reshaped view)
    y.sum().backward(retain_graph=True)
    first = w.grad.numpy().copy()
    assert cols() is not None  # retained: a second backward reuses it
    w.grad = None
    y.sum().backward()
    assert np.array_equal(w.grad.numpy(), first)
    gc.collect()
    assert cols() is None and node._saved is None  # freed with the graph's saved values
    with pytest.raises(RuntimeError, match="second time"):
        y.sum().backward()
    # no caching without a weight gradient, nor under no_grad
    xg = x.detach().requires_grad_()
    assert len(F.conv2d(xg, w.detach(), padding=1).grad_fn._saved) == 2
    with gm.no_grad():
        assert F.conv2d(x, w, padding=1).grad_fn is None


def test_cached_columns_version_check():
    # the cache is only valid for the x of the forward: an in-place edit must be caught
    x = gm.tensor(np.ones((1, 2, 4, 4), np.float32))
    w = gm.tensor(np.ones((3, 2, 3, 3), np.float32), requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    x.add_(1.0)
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_double_backward_with_cached_columns(device):
    # a gradient penalty through conv2d (WGAN-GP): first-order grads with create_graph=True
    # (the weight grad takes the cached columns), then a second backward through them; the
    # result must match the recomputing path exactly and float64 gradgradcheck
    from gmcore.nn.functional import conv as conv_mod
    rng = np.random.default_rng(5)
    xa = rng.standard_normal((2, 3, 6, 5))
    wa = rng.standard_normal((4, 3, 3, 2))

    def penalty(cache):
        old, conv_mod.CACHE_COLUMNS = conv_mod.CACHE_COLUMNS, cache
        try:
            x = gm.tensor(xa, device=device, requires_grad=True)
            w = gm.tensor(wa, device=device, requires_grad=True)
            y = F.conv2d(x, w, stride=(1, 2), padding=1)
            gx, gw = gm.autograd.grad((y * y).sum(), [x, w], create_graph=True)
            ((gx * gx).sum() + (gw * gw).sum()).backward()
            return x.grad.cpu().numpy(), w.grad.cpu().numpy()
        finally:
            conv_mod.CACHE_COLUMNS = old

    (fx, fw), (sx, sw) = penalty(True), penalty(False)
    assert np.array_equal(fx, sx) and np.array_equal(fw, sw)
    assert np.abs(fw).sum() > 0 and np.abs(fx).sum() > 0

    x = gm.tensor(xa[:1, :2, :4, :3], device=device, requires_grad=True)
    w = gm.tensor(wa[:2, :2], device=device, requires_grad=True)

    def gw_of(x, w):
        y = F.conv2d(x, w, padding=1)
        return gm.autograd.grad((y * y).sum(), [w], create_graph=True)[0]
    assert gradgradcheck(gw_of, (x, w))


# ---- unfold / fold ------------------------------------------------------------------------------

def ref_unfold(x, k, d, p, s):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    ho = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    out = np.zeros((n, c * k[0] * k[1], ho * wo))
    for ci in range(c):
        for i in range(k[0]):
            for j in range(k[1]):
                for a in range(ho):
                    for b in range(wo):
                        out[:, (ci * k[0] + i) * k[1] + j, a * wo + b] = \
                            xp[:, ci, a * s[0] + i * d[0], b * s[1] + j * d[1]]
    return out


def test_unfold_fold(device):
    check_op(lambda x: F.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)),
             lambda x: ref_unfold(x, (2, 3), (1, 2), (1, 1), (2, 1)), [(2, 2, 4, 5)],
             device=device)
    # fold is unfold's adjoint
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 4, 5))
    u = F.unfold(gm.tensor(x, device=device), (2, 3), dilation=(1, 2), padding=1, stride=(2, 1))
    v = rng.standard_normal(tuple(u.shape))
    back = F.fold(gm.tensor(v, device=device), (4, 5), (2, 3), dilation=(1, 2), padding=1,
                  stride=(2, 1))
    assert tuple(back.shape) == x.shape
    assert abs(float((u.cpu().numpy() * v).sum()) - float((x * back.cpu().numpy()).sum())) < 1e-9
    assert gradgradcheck(lambda t: F.fold(t, (3, 3), 2), (gm.randn(1, 4, 4, dtype=gm.float64,
                                                                   requires_grad=True),))


# ---- errors -------------------------------------------------------------------------------------

def test_errors():
    x = gm.randn(2, 5, 7, 7)
    with pytest.raises(RuntimeError, match=r"expected input\[2, 5, 7, 7\] to have 3 channels, "
                                           r"but got 5 channels"):
        F.conv2d(x, gm.randn(4, 3, 3, 3))
    with pytest.raises(RuntimeError, match="expected weight to be divisible by 3"):
        F.conv2d(gm.randn(2, 6, 7, 7), gm.randn(4, 2, 3, 3), groups=3)
    with pytest.raises(RuntimeError, match="to have 6 channels, but got 5"):
        F.conv2d(x, gm.randn(6, 2, 3, 3), groups=3)
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        F.conv2d(x, gm.randn(4, 5, 3, 3), padding="full")
    with pytest.raises(ValueError, match="not supported for strided"):
        F.conv2d(x, gm.randn(4, 5, 3, 3), padding="same", stride=2)
    with pytest.raises(RuntimeError, match=r"Kernel size can't be greater"):
        F.conv2d(gm.randn(1, 1, 2, 2), gm.randn(1, 1, 3, 3))
    with pytest.raises(RuntimeError, match=r"bias of size \[4\]"):
        F.conv2d(x, gm.randn(4, 5, 3, 3), gm.randn(3))
    with pytest.raises(RuntimeError, match="4D"):
        F.conv2d(gm.randn(5, 7), gm.randn(4, 5, 3, 3))
    with pytest.raises(RuntimeError, match="same dtype"):
        F.conv2d(x.double(), gm.randn(4, 5, 3, 3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        F.conv2d(x, gm.randn(4, 5, 3, 3), stride=0)
    with pytest.raises(ValueError, match="output padding must be smaller"):
        F.conv_transpose2d(gm.randn(1, 2, 3, 3), gm.randn(2, 1, 2, 2), stride=2,
                           output_padding=2)
    with pytest.raises(RuntimeError, match="to have 2 channels, but got 3"):
        F.conv_transpose2d(gm.randn(1, 3, 3, 3), gm.randn(2, 1, 2, 2))
    with pytest.raises(RuntimeError, match="expected input.*to have 4 channels"):
        F.conv1d(gm.randn(1, 3, 9), gm.randn(2, 4, 3))


# ---- 3-D convolutions (issue 11.14) ----------------------------------------------------------

def ref_conv3d(x, w, b, stride, pad, dil, groups=1):
    """Direct definition: one einsum per kernel tap over the strided input positions."""
    x = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in pad))
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    ks = w.shape[2:]
    out = [(x.shape[2 + i] - dil[i] * (ks[i] - 1) - 1) // stride[i] + 1 for i in range(3)]
    y = np.zeros((n, o) + tuple(out))
    og = o // groups
    for g in range(groups):
        xg, wg = x[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og]
        for i, j, k in np.ndindex(*ks):
            xs = xg[:, :, i * dil[0]::stride[0], j * dil[1]::stride[1], k * dil[2]::stride[2]]
            xs = xs[:, :, :out[0], :out[1], :out[2]]
            y[:, g * og:(g + 1) * og] += np.einsum("ncdhw,oc->nodhw", xs, wg[:, :, i, j, k])
    return y if b is None else y + b.reshape(1, -1, 1, 1, 1)


def _torch_f(name, **kw):
    def fn(*args):
        import torch
        return getattr(torch.nn.functional, name)(*args, **kw)
    return fn


def test_conv3d(device):
    kw = dict(stride=(2, 1, 2), padding=(1, 0, 1), dilation=(1, 2, 1), groups=2)
    out = check_op(lambda x, w, b: F.conv3d(x, w, b, **kw),
                   lambda x, w, b: ref_conv3d(x, w, b, (2, 1, 2), (1, 0, 1), (1, 2, 1), 2),
                   [(1, 4, 3, 4, 3), (4, 2, 2, 2, 2), (4,)], device=device,
                   torch_fn=_torch_f("conv3d", **kw))
    assert tuple(out.shape) == (1, 4, 2, 2, 2)
    # unbatched and padding='same' (an even kernel: the odd extra pad goes after)
    check_op(lambda x, w: F.conv3d(x, w, padding="same"),
             lambda x, w: ref_conv3d(np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 1)))[None], w, None,
                                     (1, 1, 1), (0, 0, 0), (1, 1, 1))[0],
             [(2, 3, 3, 3), (2, 2, 2, 2, 2)], device=device, gradgrad=False)


def test_conv_transpose3d(device):
    torch = pytest.importorskip("torch")
    kw = dict(stride=(2, 1, 3), padding=(1, 0, 1), output_padding=(1, 0, 2), groups=2,
              dilation=(1, 2, 1))

    def ref(x, w, b):
        return torch.nn.functional.conv_transpose3d(
            torch.tensor(x), torch.tensor(w), torch.tensor(b), **kw).numpy()
    out = check_op(lambda x, w, b: F.conv_transpose3d(x, w, b, **kw), ref,
                   [(2, 4, 2, 3, 2), (4, 1, 3, 2, 2), (2,)], device=device,
                   torch_fn=_torch_f("conv_transpose3d", **kw))
    # (D - 1) s - 2p + d (k - 1) + output_padding + 1 per dim
    assert tuple(out.shape) == (2, 2, 1 * 2 - 2 + 2 + 1 + 1, 2 - 0 + 2 + 0 + 1, 3 - 2 + 1 + 2 + 1)


def test_conv3d_modules():
    torch = pytest.importorskip("torch")
    conv, up = gm.nn.Conv3d(2, 3, (2, 3, 1), stride=2, padding=1), \
        gm.nn.ConvTranspose3d(3, 2, 3, stride=2, padding=1)
    assert conv.weight.shape == (3, 2, 2, 3, 1) and up.weight.shape == (3, 2, 3, 3, 3)
    x = gm.randn(1, 2, 4, 5, 3, dtype=gm.float64)
    y = conv.double()(x)
    tconv = torch.nn.Conv3d(2, 3, (2, 3, 1), stride=2, padding=1).double()
    tconv.weight.data = torch.tensor(conv.weight.detach().numpy())
    tconv.bias.data = torch.tensor(conv.bias.detach().numpy())
    assert_close(y, tconv(torch.tensor(x.numpy())).detach().numpy())
    z = up.double()(y, output_size=(6, 5, 6))
    assert z.shape == (1, 2, 6, 5, 6)
    assert "Conv3d(2, 3, kernel_size=(2, 3, 1)" in repr(conv)


def test_conv3d_errors():
    with pytest.raises(RuntimeError, match="5D \\(batched\\)"):
        F.conv3d(gm.ones(2, 3, 3), gm.ones(1, 2, 1, 1, 1))
    with pytest.raises(RuntimeError, match="to have 4 channels"):
        F.conv3d(gm.ones(1, 3, 3, 3, 3), gm.ones(1, 4, 1, 1, 1))
    with pytest.raises(RuntimeError, match="depth"):
        F.conv3d(gm.ones(1, 1, 2, 3, 3), gm.ones(1, 1, 3, 1, 1))
    with pytest.raises(ValueError, match="same"):
        F.conv3d(gm.ones(1, 1, 3, 3, 3), gm.ones(1, 1, 1, 1, 1), stride=2, padding="same")
    with pytest.raises(ValueError, match="output padding"):
        F.conv_transpose3d(gm.ones(1, 1, 2, 2, 2), gm.ones(1, 1, 1, 1, 1), output_padding=1)
