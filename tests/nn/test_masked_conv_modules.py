"""nn modules of the masked/causal convolutions: shapes, parameters, init, the op they call,
weight_norm, state_dict, errors."""
import math

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn as nn
import gmcore.nn.functional as F
from gmcore.nn.utils.parametrizations import weight_norm


def test_masked_conv2d_module():
    gm.manual_seed(0)
    m = nn.MaskedConv2d(3, 6, 5, mask_type="A", groups_rgb=3)
    assert m.weight.shape == (6, 3, 5, 5) and m.bias.shape == (6,)
    bound = 1 / math.sqrt(3 * 25)
    assert float(m.weight.abs().max()) <= bound and float(m.bias.abs().max()) <= bound
    assert np.array_equal(m.mask, F.masked_conv2d_mask(6, 3, 5, "A", 3))
    assert set(m.state_dict()) == {"weight", "bias"}  # the mask is not state
    x = gm.randn(2, 3, 7, 7)
    y = m(x)
    np.testing.assert_allclose(
        y.detach().numpy(),
        F.masked_conv2d(x, m.weight, m.bias, "A", 3).detach().numpy(), atol=1e-6)
    assert "mask_type=A" in repr(m) and "groups_rgb=3" in repr(m)


def test_masked_conv2d_module_options():
    m = nn.MaskedConv2d(2, 4, (3, 5), stride=2, padding=(1, 2), dilation=1, bias=False)
    assert m.bias is None and m(gm.randn(1, 2, 8, 8)).shape == (1, 4, 4, 4)
    m = nn.MaskedConv2d(2, 4, 3, dilation=2)
    assert m(gm.randn(2, 9, 9)).shape == (4, 9, 9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=4), "odd"), (dict(mask_type="X"), "mask_type"),
    (dict(groups_rgb=3, in_channels=4), "divisible by 3"), (dict(in_channels=0), "positive"),
])
def test_masked_conv2d_module_errors(kwargs, match):
    args = dict(in_channels=3, out_channels=6, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        nn.MaskedConv2d(**args)


@pytest.mark.parametrize("cls, fn, kernel, transposed, shape_out", [
    (nn.DownShiftedConv2d, F.down_shifted_conv2d, (2, 3), False, (2, 5, 6, 7)),
    (nn.DownRightShiftedConv2d, F.down_right_shifted_conv2d, (2, 2), False, (2, 5, 6, 7)),
    (nn.DownShiftedConvTranspose2d, F.down_shifted_conv_transpose2d, (2, 3), True, (2, 5, 12, 14)),
    (nn.DownRightShiftedConvTranspose2d, F.down_right_shifted_conv_transpose2d, (2, 2), True,
     (2, 5, 12, 14)),
])
def test_shifted_modules(cls, fn, kernel, transposed, shape_out):
    m = cls(4, 5)
    assert m.kernel_size == kernel
    assert m.weight.shape == ((4, 5) if transposed else (5, 4)) + kernel
    x = gm.randn(2, 4, 6, 7)
    y = m(x)
    assert y.shape == shape_out
    np.testing.assert_allclose(y.detach().numpy(),
                               fn(x, m.weight, m.bias, m.stride).detach().numpy(), atol=1e-6)
    y.sum().backward()
    assert m.weight.grad.shape == m.weight.shape and m.bias.grad.shape == (5,)


def test_shifted_module_stride_and_gated_stacks():
    assert nn.DownShiftedConv2d(2, 3, stride=2)(gm.randn(1, 2, 8, 8)).shape == (1, 3, 4, 4)
    k = 5  # Gated PixelCNN: vertical (k//2+1, k), horizontal (1, k//2+1) keep the size
    assert nn.DownShiftedConv2d(2, 3, (k // 2 + 1, k))(gm.randn(1, 2, 6, 6)).shape == (1, 3, 6, 6)
    assert nn.DownRightShiftedConv2d(2, 3, (1, k // 2 + 1))(gm.randn(1, 2, 6, 6)).shape == \
        (1, 3, 6, 6)
    with pytest.raises(ValueError, match="stride"):
        nn.DownShiftedConv2d(2, 3, stride=0)


def test_causal_conv1d_module():
    m = nn.CausalConv1d(3, 4, kernel_size=3, dilation=2)
    assert m.weight.shape == (4, 3, 3)
    x = gm.randn(2, 3, 11)
    y = m(x)
    assert y.shape == (2, 4, 11)
    np.testing.assert_allclose(y.detach().numpy(),
                               F.causal_conv1d(x, m.weight, m.bias, 2).detach().numpy(), atol=1e-6)
    assert "dilation=2" in repr(m)
    with pytest.raises(ValueError, match="dilation"):
        nn.CausalConv1d(3, 4, dilation=0)


@pytest.mark.parametrize("make, x_shape", [
    (lambda: nn.MaskedConv2d(3, 6, 3, "B", 3), (2, 3, 5, 5)),
    (lambda: nn.DownShiftedConv2d(3, 4), (2, 3, 5, 5)),
    (lambda: nn.DownRightShiftedConvTranspose2d(3, 4), (2, 3, 3, 3)),
    (lambda: nn.CausalConv1d(3, 4, 2, dilation=2), (2, 3, 9)),
])
def test_weight_norm(make, x_shape):
    m = weight_norm(make())
    keys = set(m.state_dict())
    assert {"parametrizations.weight.original0", "parametrizations.weight.original1"} <= keys
    x = gm.randn(*x_shape)
    y = m(x)
    y.sum().backward()
    g = m.parametrizations.weight.original0
    v = m.parametrizations.weight.original1
    assert g.grad is not None and v.grad is not None and v.grad.shape == v.shape
    # the output equals the plain module with the normalised weight
    plain = make()
    with gm.no_grad():
        plain.weight.copy_(m.weight)
        plain.bias.copy_(m.bias)
    np.testing.assert_allclose(plain(x).detach().numpy(), y.detach().numpy(), atol=1e-5)


def test_float64_modules_and_device_dtype_args():
    m = nn.MaskedConv2d(2, 2, 3, dtype=gm.float64)
    assert m.weight.dtype == gm.float64
    assert m(gm.randn(1, 2, 4, 4, dtype=gm.float64)).dtype == gm.float64
    with pytest.raises(TypeError, match="same dtype"):
        m(gm.randn(1, 2, 4, 4))
