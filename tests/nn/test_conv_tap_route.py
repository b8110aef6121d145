"""F.conv2d's route onto the tap-convolution kernels.

* The geometry translation (padding, stride, dilation, output size), forward, backward and
  double backward, against the im2col path: the route is forced onto the CPU ``cpp`` tap
  kernels (which share the contract with the Triton/CUDA ones that CUDA would route to), in
  float64, so the packed-GEMM path serves every geometry.
* The default CPU route: float32 stride-1 convolutions take cpp's direct AVX-512 kernels where
  the CPU has them, everything else im2col; ``GMCORE_KERNELS`` can switch the route off.
"""
import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.nn.functional import _conv_kernels


@pytest.fixture
def routed(monkeypatch):
    """Route groups=1 convolutions onto the CPU tap kernels; the list counts routed calls."""
    name, impl = dispatch.choose("masked_conv", "tap_conv2d", "cpu")
    assert name != "reference"
    calls = []

    def tap_kernel(x, groups, stride):
        calls.append(groups)
        return impl if groups == 1 else None

    monkeypatch.setattr(_conv_kernels, "_tap_kernel", tap_kernel)
    return calls


def _run(stride, padding, dilation, groups=1):
    rng = np.random.default_rng(0)
    x = gm.tensor(rng.standard_normal((2, 4, 9, 8)), requires_grad=True)
    w = gm.tensor(rng.standard_normal((6, 4 // groups, 3, 2)), requires_grad=True)
    y = F.conv2d(x, w, None, stride=stride, padding=padding, dilation=dilation, groups=groups)
    gx, gw = gm.autograd.grad((y * y).sum(), (x, w), create_graph=True)
    (ggx,) = gm.autograd.grad(gw.sum(), x)
    return [t.detach().numpy() for t in (y, gx, gw, ggx)]


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), (1, "same", 2), ((2, 1), (2, 0), (1, 2))])
def test_conv2d_on_tap_kernels_equals_im2col(request, stride, padding, dilation):
    expected = _run(stride, padding, dilation)
    calls = request.getfixturevalue("routed")
    for got, want in zip(_run(stride, padding, dilation), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert calls.count(1) >= 4  # forward, both first-order maps and the double-backward ones


def test_grouped_conv_keeps_im2col(routed):
    # groups > 1 is not a tap convolution: the route declines it and the result still holds
    y = _run(1, 1, 1, groups=2)[0]
    assert y.shape == (2, 6, 9, 9)


def _direct_or_skip():
    from gmcore.kernels import _tap_conv_cpu
    if not _tap_conv_cpu.direct_applies(np.float32, ((1, 1), (0, 0), (1, 1))):
        pytest.skip("the direct kernels need an x86-64 CPU with AVX-512")


def test_default_cpu_route(kernels_env):
    """float32 at stride 1 routes to cpp's direct kernels; float64, strides and groups don't."""
    _direct_or_skip()
    kernels_env(None)
    f32 = np.zeros((1, 1, 2, 2), np.float32)
    assert _conv_kernels._tap_kernel(f32, 1, (1, 1)) is not None
    assert _conv_kernels._tap_kernel(f32, 1, (2, 1)) is None
    assert _conv_kernels._tap_kernel(f32, 2, (1, 1)) is None
    assert _conv_kernels._tap_kernel(f32.astype(np.float64), 1, (1, 1)) is None
    kernels_env("masked_conv=reference")
    assert _conv_kernels._tap_kernel(f32, 1, (1, 1)) is None
    kernels_env("masked_conv=numba")  # no conv2d op there: plain convs keep im2col
    assert _conv_kernels._tap_kernel(f32, 1, (1, 1)) is None


@pytest.mark.parametrize("padding, dilation", [(0, 1), (1, 1), ("same", 2), ((2, 0), (1, 3))])
def test_float32_conv2d_direct_equals_im2col(kernels_env, padding, dilation):
    """conv2d and conv_transpose2d (stride 1) through the direct kernels vs im2col + BLAS."""
    _direct_or_skip()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 11, 20)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 4)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)

    def run():
        xt, wt, bt = (gm.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(xt, wt, bt, padding=padding, dilation=dilation)
        z = F.conv_transpose2d(y, wt, dilation=dilation)
        (z * z).sum().backward()
        return [t.numpy() for t in (y.detach(), z.detach(), xt.grad, wt.grad, bt.grad)]

    kernels_env("masked_conv=reference")
    want = run()
    kernels_env(None)
    for got, ref in zip(run(), want):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4 * np.abs(ref).max())
