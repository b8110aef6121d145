"""F.conv2d's route onto the tap-convolution kernels (taken on CUDA when dispatch selects them).

No GPU here: the route is forced onto the CPU ``cpp`` tap kernels, which share the contract with
the Triton/CUDA ones, so the geometry translation (padding, stride, dilation, output size) is
checked against the im2col path, forward, backward and double backward.
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

    def tap_kernel(x, groups):
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


def test_route_is_off_for_numpy_arrays():
    assert _conv_kernels._tap_kernel(np.zeros((1, 1, 2, 2)), 1) is None
