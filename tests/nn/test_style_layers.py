"""The layers of ProGAN and StyleGAN (gmcore.nn.style), each against a hand computation:
equalised learning rate (the runtime scale), pixel norm, minibatch standard deviation, noise
injection, modulation/demodulation, and the fade-in blend."""
import math

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore.testing import gradcheck
from gmcore.nn.style import (EqualConv2d, EqualLinear, MinibatchStdDev, ModulatedConv2d, NoiseInjection,
                             PixelNorm, fade_in)


def test_equal_linear_scales_its_unit_weights_at_run_time():
    gm.manual_seed(0)
    fc = EqualLinear(400, 300, lr_mul=0.01, bias_init=0.5)
    w, b = fc.weight.detach().numpy(), fc.bias.detach().numpy()
    # stored N(0, 1) / lr_mul; the runtime scale is He's constant times lr_mul
    assert abs(w.std() * 0.01 - 1.0) < 0.01 and fc.scale == pytest.approx(math.sqrt(2) * 0.01 / 20)
    assert np.allclose(b * 0.01, 0.5)
    x = np.random.default_rng(0).standard_normal((3, 400)).astype(np.float32)
    expect = x @ (w * fc.scale).T + b * 0.01
    assert np.allclose(fc(gm.tensor(x)).detach().numpy(), expect, atol=1e-4)
    # what the optimizer sees: the gradient of the stored weight is scale times the effective one's
    fc(gm.tensor(x)).sum().backward()
    assert np.allclose(fc.weight.grad.numpy(), fc.scale * np.ones((300, 1)) * x.sum(0), rtol=1e-5, atol=1e-6)


def test_equal_conv_is_a_convolution_with_he_scaled_weights():
    gm.manual_seed(1)
    conv = EqualConv2d(3, 5, 3, padding=1)
    assert conv.scale == pytest.approx(math.sqrt(2.0 / 27))
    x = gm.randn(2, 3, 6, 6)
    expect = F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1)
    assert np.allclose(conv(x).detach().numpy(), expect.detach().numpy(), atol=1e-6)
    assert EqualConv2d(3, 5, 1, gain=1.0).scale == pytest.approx(1 / math.sqrt(3))


def test_pixel_norm_divides_each_pixel_by_its_rms_over_channels():
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 3)).astype(np.float32)
    expect = x / np.sqrt((x ** 2).mean(1, keepdims=True) + 1e-8)
    assert np.allclose(PixelNorm()(gm.tensor(x)).detach().numpy(), expect, atol=1e-5)


def test_minibatch_stddev_appends_each_groups_mean_standard_deviation():
    x = np.random.default_rng(2).standard_normal((6, 3, 2, 2)).astype(np.float32)
    out = MinibatchStdDev(group_size=3)(gm.tensor(x)).detach().numpy()
    assert out.shape == (6, 4, 2, 2) and np.array_equal(out[:, :3], x)
    # groups of 3: example n is in group n % 2 (the official layout), population std per feature
    for m in range(2):
        members = x[m::2]
        sd = np.sqrt(((members - members.mean(0)) ** 2).mean(0) + 1e-8).mean()
        assert np.allclose(out[m::2, 3], sd, atol=1e-6)
    # a batch the group size does not divide: the largest divisor below it (5 -> groups of 1 ... 5)
    assert MinibatchStdDev(4)(gm.randn(5, 2, 2, 2)).shape == (5, 3, 2, 2)
    same = MinibatchStdDev(4)(gm.ones(4, 2, 2, 2)).detach().numpy()[:, 2]     # identical examples: std 0
    assert np.allclose(same, 1e-4, atol=1e-6)


def test_noise_injection_adds_learned_strength_times_noise_shared_by_channels():
    layer = NoiseInjection()
    x, noise = gm.randn(2, 3, 4, 4), gm.randn(2, 1, 4, 4)
    assert np.array_equal(layer(x).detach().numpy(), x.numpy())          # strength starts at 0
    layer.weight.data[...] = 0.3
    assert np.allclose(layer(x, noise).detach().numpy(), x.numpy() + 0.3 * noise.numpy(), atol=1e-6)
    a = layer(x, generator=gm.Generator().manual_seed(5)).detach().numpy()
    b = layer(x, generator=gm.Generator().manual_seed(5)).detach().numpy()
    d = a - x.numpy()
    assert np.array_equal(a, b) and np.allclose(d, d[:, :1], atol=1e-6) and np.abs(d).max() > 0


def _styles(conv, w):
    """s = A(w) by hand: the affine EqualLinear (gain 1, bias 1)."""
    a = conv.affine
    return w @ (a.weight.detach().numpy() * a.scale).T + a.bias.detach().numpy() * a.lr_mul


def test_modulated_weights_match_a_hand_computation_and_have_unit_norm():
    gm.manual_seed(3)
    conv = ModulatedConv2d(4, 3, 3, style_dim=5)
    w = np.random.default_rng(3).standard_normal((2, 5)).astype(np.float32)
    s = _styles(conv, w)                                                   # (2, 4)
    base = conv.weight.detach().numpy() / math.sqrt(4 * 9)                 # (3, 4, 3, 3)
    mod = base[None] * s[:, None, :, None, None]
    expect = mod / np.sqrt((mod ** 2).sum((2, 3, 4), keepdims=True) + 1e-8)
    got = conv.modulated_weight(gm.tensor(w)).detach().numpy()
    assert np.allclose(got, expect, atol=1e-5)
    assert np.allclose((got ** 2).sum((2, 3, 4)), 1.0, atol=1e-5)       # unit norm per output channel
    # the forward (x * s, shared weights, times 1/sigma) equals one convolution per example
    x = gm.randn(2, 4, 5, 5)
    y = conv(x, gm.tensor(w)).detach().numpy()
    for n in range(2):
        ref = F.conv2d(x[n:n + 1], gm.tensor(expect[n]), padding=1).detach().numpy()
        assert np.allclose(y[n:n + 1], ref, atol=1e-4)
    # without demodulation: the modulated weights themselves
    plain = ModulatedConv2d(4, 3, 1, style_dim=5, demodulate=False)
    s = _styles(plain, w)
    ref = np.einsum("oi,ni,nihw->nohw", plain.weight.detach().numpy()[:, :, 0, 0] / 2.0, s, x.numpy())
    assert np.allclose(plain(x, gm.tensor(w)).detach().numpy(), ref, atol=1e-4)


def test_modulated_conv_gradients_and_upsampling():
    gm.manual_seed(4)
    conv = ModulatedConv2d(2, 3, 3, style_dim=3, upsample=True)
    x, w = gm.randn(2, 2, 3, 3, requires_grad=True), gm.randn(2, 3, requires_grad=True)
    assert conv(x, w).shape == (2, 3, 6, 6)
    conv64 = conv.to(dtype=gm.float64)
    inputs = (x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True))
    assert gradcheck(lambda a, b: conv64(a, b), inputs, max_full=0, n_directions=3)
    with pytest.raises(ValueError, match="styles must be"):
        conv(gm.randn(2, 2, 3, 3), gm.randn(3, 3))
    with pytest.raises(ValueError, match="odd"):
        ModulatedConv2d(2, 3, 2, style_dim=3)


def test_fade_in_is_the_old_path_at_0_and_the_new_at_1():
    old, new = gm.tensor([1.0, 2.0]), gm.tensor([3.0, 6.0])
    assert fade_in(old, new, 0.0).tolist() == [1.0, 2.0]
    assert fade_in(old, new, 1.0).tolist() == [3.0, 6.0]
    assert fade_in(old, new, 0.25).tolist() == [1.5, 3.0]
    with pytest.raises(ValueError, match="alpha"):
        fade_in(old, new, 1.5)
