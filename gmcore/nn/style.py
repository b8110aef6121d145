"""Layers of the progressive and style-based GANs (Karras et al.: ProGAN 2018, StyleGAN 2019,
StyleGAN2 2020).

* :class:`EqualLinear`, :class:`EqualConv2d`: the *equalised learning rate*: weights drawn from
  N(0, 1) and multiplied at every forward by He's constant ``gain / sqrt(fan_in)`` (``gain``
  sqrt(2) by default), so Adam's per-parameter step moves every layer's effective weights at
  the same relative speed. ``lr_mul`` scales that speed (StyleGAN's mapping network: 0.01):
  the stored weights start at N(0, 1/lr_mul^2) and the runtime scale takes ``lr_mul`` in.
* :class:`PixelNorm`: each pixel's feature vector divided by its root mean square (ProGAN's
  generator; StyleGAN's z).
* :class:`MinibatchStdDev`: the standard deviation of each feature over a group of examples,
  averaged to one number per group and appended as a constant feature map (ProGAN's
  discriminator sees how varied the batch is).
* :class:`NoiseInjection`: per-pixel Gaussian noise times a learned per-layer strength
  (StyleGAN's stochastic detail).
* :class:`ModulatedConv2d`: StyleGAN2's convolution whose input channels are scaled by a style
  ``s = A(w)`` and whose output channels are *demodulated*: the per-example weights
  ``w'_{oikl} = s_i w_{oikl}`` are divided by ``sqrt(sum_{ikl} w'^2 + eps)``, so each output
  channel's weights have unit norm.
* :func:`fade_in`: ProGAN's blend of the old and the new path while a block grows in.

>>> import gmcore as gm
>>> conv = ModulatedConv2d(4, 6, 3, style_dim=8)
>>> conv(gm.randn(2, 4, 5, 5), gm.randn(2, 8)).shape
gmcore.Size([2, 6, 5, 5])
>>> w = conv.modulated_weight(gm.randn(2, 8))            # (N, out, in, k, k), demodulated
>>> bool(((w.square().sum((2, 3, 4)) - 1).abs() < 1e-4).all().item())
True
"""
from __future__ import annotations

import math

from .. import creation
from .. import functional as gf
from ..tensor import Tensor
from . import functional as F
from .module import Module
from .parameter import Parameter

__all__ = ["EqualLinear", "EqualConv2d", "PixelNorm", "MinibatchStdDev", "NoiseInjection", "ModulatedConv2d",
           "fade_in", "upscale2d", "downscale2d", "lrelu"]

HE_GAIN = math.sqrt(2.0)   # He et al.'s constant for (leaky) ReLU layers


def lrelu(x: Tensor) -> Tensor:
    """LeakyReLU(0.2), the activation of both models."""
    return F.leaky_relu(x, 0.2)


def upscale2d(x: Tensor) -> Tensor:
    """2x nearest-neighbour upsampling (ProGAN's)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downscale2d(x: Tensor) -> Tensor:
    """2x2 average pooling (ProGAN's and the data's downsampling)."""
    return F.avg_pool2d(x, 2)


def fade_in(old: Tensor, new: Tensor, alpha: float) -> Tensor:
    """``(1 - alpha) * old + alpha * new``: the new block's path enters linearly as ``alpha``
    goes from 0 (the old network, exactly) to 1 (the new one, exactly)."""
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"fade_in: alpha must be in [0, 1], got {alpha}")
    if alpha == 1.0:
        return new
    if alpha == 0.0:
        return old
    return old + alpha * (new - old)


def _check_sizes(op, **sizes):
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")


class EqualLinear(Module):
    """A linear layer with an equalised learning rate: ``y = x @ (scale * weight).T + lr_mul *
    bias`` with ``scale = gain * lr_mul / sqrt(in_features)`` applied at run time and ``weight``
    stored as N(0, 1) / lr_mul (ProGAN's "equalized learning rate"; StyleGAN's lr multiplier).

    >>> import gmcore as gm
    >>> fc = EqualLinear(16, 4)
    >>> round(fc.scale, 4)                                    # sqrt(2) / sqrt(16)
    0.3536
    >>> fc(gm.randn(3, 16)).shape
    gmcore.Size([3, 4])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = HE_GAIN,
                 lr_mul: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        _check_sizes("EqualLinear", in_features=in_features, out_features=out_features)
        if not lr_mul > 0:
            raise ValueError(f"EqualLinear: lr_mul must be positive, got {lr_mul}")
        self.in_features, self.out_features, self.lr_mul = in_features, out_features, float(lr_mul)
        self.scale = float(gain) * self.lr_mul / math.sqrt(in_features)
        self.weight = Parameter(creation.randn(out_features, in_features) / self.lr_mul)
        self.bias = Parameter(creation.full((out_features,), bias_init / self.lr_mul)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        b = None if self.bias is None else self.bias * self.lr_mul
        return F.linear(x, self.weight * self.scale, b)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, lr_mul={self.lr_mul}"


class EqualConv2d(Module):
    """A 2-D convolution with an equalised learning rate: the N(0, 1) weights are multiplied at
    run time by ``scale = gain / sqrt(in_channels * k * k)``.

    >>> import gmcore as gm
    >>> EqualConv2d(3, 8, 3, padding=1)(gm.randn(2, 3, 4, 4)).shape
    gmcore.Size([2, 8, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True, gain: float = HE_GAIN):
        super().__init__()
        _check_sizes("EqualConv2d", in_channels=in_channels, out_channels=out_channels,
                     kernel_size=kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.padding = padding
        self.scale = float(gain) / math.sqrt(in_channels * kernel_size * kernel_size)
        self.weight = Parameter(creation.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = Parameter(creation.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}")


class PixelNorm(Module):
    """``x / sqrt(mean over channels of x^2 + eps)`` at every pixel (dim 1), (N, C, ...) or (N, C).

    >>> import gmcore as gm
    >>> [round(v, 4) for v in PixelNorm()(gm.tensor([[3.0, 4.0]]))[0].tolist()]   # rms 3.5355
    [0.8485, 1.1314]
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * (x.square().mean(1, keepdim=True) + self.eps).rsqrt()


class MinibatchStdDev(Module):
    """Append one feature map: the standard deviation (population, over a group of
    ``group_size`` examples) of every feature and pixel, averaged into one number per group and
    broadcast to every pixel of the group's examples (ProGAN, section 3). Example ``n`` belongs
    to group ``n % (N / G)`` as in the official code; ``G`` is the largest divisor of the batch
    size not above ``group_size``. (N, C, H, W) -> (N, C + 1, H, W).

    >>> import gmcore as gm
    >>> MinibatchStdDev(2)(gm.randn(4, 3, 2, 2)).shape
    gmcore.Size([4, 4, 2, 2])
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8):
        super().__init__()
        _check_sizes("MinibatchStdDev", group_size=group_size)
        self.group_size, self.eps = group_size, eps

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"MinibatchStdDev expects (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        m = n // g
        y = x.reshape(g, m, c, h, w)
        y = y - y.mean(0, keepdim=True)
        y = (y.square().mean(0) + self.eps).sqrt().mean((1, 2, 3))       # (M,): one per group
        y = y.reshape(1, m, 1, 1, 1).expand(g, m, 1, h, w).reshape(n, 1, h, w)
        return gf.cat([x, y], 1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class NoiseInjection(Module):
    """``x + strength * noise`` with one N(0, 1) draw per example and pixel shared by the
    channels, and ``strength`` a learned scalar of this layer starting at 0 (StyleGAN2's form;
    StyleGAN's had one per channel). ``noise`` may be given (N, 1, H, W); otherwise it is drawn,
    from ``generator`` when given.

    >>> import gmcore as gm
    >>> layer = NoiseInjection()
    >>> x = gm.randn(2, 3, 4, 4)
    >>> bool((layer(x) == x).all().item())                    # strength 0 at the start
    True
    """

    def __init__(self):
        super().__init__()
        self.weight = Parameter(creation.zeros(1))

    def forward(self, x: Tensor, noise: Tensor = None, generator=None) -> Tensor:
        if noise is None:
            n, _, h, w = x.shape
            noise = creation.randn(n, 1, h, w, generator=generator, device=x.device, dtype=x.dtype)
        return x + self.weight * noise


class ModulatedConv2d(Module):
    """StyleGAN2's modulated convolution (Karras et al. 2020, section 2.2).

    ``s = affine(w)`` (an :class:`EqualLinear` from ``style_dim`` to ``in_channels``, bias 1 so
    that styles start near 1) scales the input channels of the equalised weights
    ``W = weight / sqrt(in * k * k)``: ``W'_n[o, i] = s_n[i] W[o, i]``; with ``demodulate`` each
    output channel is then divided by ``sigma_n[o] = sqrt(sum_{i,k,l} W'_n[o, i, k, l]^2 + eps)``.
    The forward never builds the per-example weights: it convolves ``x * s`` with ``W`` and
    multiplies the output by ``1 / sigma`` (the same numbers, StyleGAN2's non-fused form, one
    batched convolution). :meth:`modulated_weight` returns them for inspection. ``upsample``
    doubles the grid first (bilinear, StyleGAN's smoothed upsampling).

    >>> import gmcore as gm
    >>> ModulatedConv2d(4, 2, 3, style_dim=8, upsample=True)(gm.randn(1, 4, 4, 4), gm.randn(1, 8)).shape
    gmcore.Size([1, 2, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, eps: float = 1e-8):
        super().__init__()
        _check_sizes("ModulatedConv2d", in_channels=in_channels, out_channels=out_channels,
                     kernel_size=kernel_size, style_dim=style_dim)
        if kernel_size % 2 == 0:
            raise ValueError(f"ModulatedConv2d: kernel_size must be odd (same padding), got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.upsample, self.eps = bool(demodulate), bool(upsample), eps
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.weight = Parameter(creation.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.affine = EqualLinear(style_dim, in_channels, gain=1.0, bias_init=1.0)

    def modulated_weight(self, w: Tensor) -> Tensor:
        """The per-example weights (N, out, in, k, k) for styles ``w`` (N, style_dim)."""
        s = self.affine(w)
        weight = (self.weight * self.scale).unsqueeze(0) * s.reshape(s.shape[0], 1, -1, 1, 1)
        if self.demodulate:
            weight = weight * (weight.square().sum((2, 3, 4), keepdim=True) + self.eps).rsqrt()
        return weight

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ModulatedConv2d expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if w.ndim != 2 or w.shape[0] != x.shape[0]:
            raise ValueError(f"ModulatedConv2d: styles must be (N, style_dim) with N = {x.shape[0]}, "
                             f"got {tuple(w.shape)}")
        n = x.shape[0]
        s = self.affine(w)                                                     # (N, in)
        weight = self.weight * self.scale
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear")
        y = F.conv2d(x * s.reshape(n, -1, 1, 1), weight, padding=self.kernel_size // 2)
        if self.demodulate:   # sigma^2[n, o] = sum_i s[n, i]^2 sum_kl W[o, i, k, l]^2
            sigma2 = s.square() @ weight.square().sum((2, 3)).t()              # (N, out)
            y = y * (sigma2 + self.eps).rsqrt().reshape(n, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"demodulate={self.demodulate}, upsample={self.upsample}")
