"""Autoregressive convolution layers: PixelCNN's ``MaskedConv2d``, PixelCNN++'s shifted
convolutions (and their transposes), WaveNet's ``CausalConv1d``.

Thin modules over :mod:`gmcore.functional.masked_conv` / :mod:`~gmcore.functional.causal_conv`.
Weights are the plain (unmasked) parameters, initialised as ``Conv2d``/``ConvTranspose2d``
(``kaiming_uniform_(a=sqrt(5))``, bias U(+-1/sqrt(fan_in))); the mask is applied inside the op,
so ``weight_norm`` and other parametrizations of ``weight`` work unchanged.
"""
from __future__ import annotations

from . import functional as F
from .conv import _tuple
from .linear import _reset_fan_in_uniform, _weight_and_bias
from .module import Module

__all__ = ["MaskedConv2d", "DownShiftedConv2d", "DownRightShiftedConv2d",
           "DownShiftedConvTranspose2d", "DownRightShiftedConvTranspose2d", "CausalConv1d"]


def _channels(cls, **sizes):
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{cls}: {name} must be a positive int, got {v!r}")


class _TapConvModule(Module):
    """Weight (and bias) registration shared by the layers below."""

    def _setup(self, in_channels, out_channels, kernel_size, bias, transposed, nd, device, dtype):
        cls = type(self).__name__
        _channels(cls, in_channels=in_channels, out_channels=out_channels)
        kernel_size = _tuple(kernel_size, nd, "kernel_size", cls)
        if any(k <= 0 for k in kernel_size):
            raise ValueError(f"{cls}: kernel_size must be positive, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, \
            kernel_size
        shape = ((in_channels, out_channels) if transposed else (out_channels, in_channels)) \
            + kernel_size
        _weight_and_bias(self, shape, (out_channels,) if bias else None, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_fan_in_uniform(self)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        stride = getattr(self, "stride", None)
        if stride is not None and stride != (1,) * len(stride):
            s += f", stride={stride}"
        if self.bias is None:
            s += ", bias=False"
        return s


class MaskedConv2d(_TapConvModule):
    """PixelCNN masked convolution: ``masked_conv2d(x, weight, bias, mask_type, ...)``.

    The mask (``self.mask``, a function of the shape, recomputed per call and cached; not in
    the state_dict) keeps the taps above the centre and left of it; ``mask_type="A"`` drops
    the centre (first layer), ``"B"`` keeps it; ``groups_rgb=3`` adds the R -> G -> B channel
    ordering at the centre. ``padding=None`` keeps the size for stride 1. Odd kernels only.

    >>> import gmcore as gm
    >>> conv = gm.nn.MaskedConv2d(3, 6, 5, mask_type="A", groups_rgb=3)
    >>> conv(gm.randn(2, 3, 8, 8)).shape, conv
    (gmcore.Size([2, 6, 8, 8]), MaskedConv2d(3, 6, kernel_size=(5, 5), mask_type=A, groups_rgb=3))
    """

    def __init__(self, in_channels, out_channels, kernel_size, mask_type="B", groups_rgb=1,
                 stride=1, padding=None, dilation=1, bias=True, device=None, dtype=None):
        super().__init__()
        cls = type(self).__name__
        kernel_size = _tuple(kernel_size, 2, "kernel_size", cls)
        # validates odd kernel, mask type and the RGB channel blocks now, not at first call
        F.masked_conv2d_mask(out_channels, in_channels, kernel_size, mask_type, groups_rgb)
        self.mask_type, self.groups_rgb = mask_type, groups_rgb
        self.stride = _tuple(stride, 2, "stride", cls)
        self.padding = None if padding is None else _tuple(padding, 2, "padding", cls)
        self.dilation = _tuple(dilation, 2, "dilation", cls)
        self._setup(in_channels, out_channels, kernel_size, bias, False, 2, device, dtype)

    @property
    def mask(self):
        """The (O, C, KH, KW) 0/1 mask as a float64 NumPy array."""
        return F.masked_conv2d_mask(self.out_channels, self.in_channels, self.kernel_size,
                                    self.mask_type, self.groups_rgb)

    def forward(self, input):
        return F.masked_conv2d(input, self.weight, self.bias, self.mask_type, self.groups_rgb,
                               self.stride, self.padding, self.dilation)

    def extra_repr(self):
        s = super().extra_repr() + f", mask_type={self.mask_type}"
        if self.groups_rgb != 1:
            s += f", groups_rgb={self.groups_rgb}"
        if self.padding is not None:
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s


class DownShiftedConv2d(_TapConvModule):
    """PixelCNN++ down-shifted convolution (output row i sees input rows <= i); see
    :func:`gmcore.nn.functional.down_shifted_conv2d`. Gated PixelCNN's vertical stack:
    ``kernel_size=(k//2 + 1, k)``.

    >>> import gmcore as gm
    >>> gm.nn.DownShiftedConv2d(4, 8)(gm.randn(2, 4, 6, 6)).shape
    gmcore.Size([2, 8, 6, 6])
    """

    _fn = staticmethod(F.down_shifted_conv2d)
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size=(2, 3), stride=1, bias=True,
                 device=None, dtype=None):
        super().__init__()
        self.stride = _tuple(stride, 2, "stride", type(self).__name__)
        if any(s <= 0 for s in self.stride):
            raise ValueError(f"{type(self).__name__}: stride must be positive, got {stride!r}")
        self._setup(in_channels, out_channels, kernel_size, bias, self._transposed, 2, device,
                    dtype)

    def forward(self, input):
        return self._fn(input, self.weight, self.bias, self.stride)


class DownRightShiftedConv2d(DownShiftedConv2d):
    """PixelCNN++ down-right-shifted convolution (output (i, j) sees rows <= i, columns <= j);
    see :func:`gmcore.nn.functional.down_right_shifted_conv2d`. Gated PixelCNN's horizontal
    stack: ``kernel_size=(1, k//2 + 1)``.

    >>> import gmcore as gm
    >>> gm.nn.DownRightShiftedConv2d(4, 8)(gm.randn(2, 4, 6, 6)).shape
    gmcore.Size([2, 8, 6, 6])
    """

    _fn = staticmethod(F.down_right_shifted_conv2d)

    def __init__(self, in_channels, out_channels, kernel_size=(2, 2), stride=1, bias=True,
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias, device, dtype)


class DownShiftedConvTranspose2d(DownShiftedConv2d):
    """PixelCNN++ down-shifted transposed convolution (upsampling by ``stride``); weight
    (C_in, C_out, KH, KW); see :func:`gmcore.nn.functional.down_shifted_conv_transpose2d`.

    >>> import gmcore as gm
    >>> gm.nn.DownShiftedConvTranspose2d(4, 8)(gm.randn(2, 4, 3, 3)).shape
    gmcore.Size([2, 8, 6, 6])
    """

    _fn = staticmethod(F.down_shifted_conv_transpose2d)
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size=(2, 3), stride=2, bias=True,
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias, device, dtype)


class DownRightShiftedConvTranspose2d(DownShiftedConv2d):
    """PixelCNN++ down-right-shifted transposed convolution; weight (C_in, C_out, KH, KW); see
    :func:`gmcore.nn.functional.down_right_shifted_conv_transpose2d`.

    >>> import gmcore as gm
    >>> gm.nn.DownRightShiftedConvTranspose2d(4, 8)(gm.randn(2, 4, 3, 3)).shape
    gmcore.Size([2, 8, 6, 6])
    """

    _fn = staticmethod(F.down_right_shifted_conv_transpose2d)
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size=(2, 2), stride=2, bias=True,
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias, device, dtype)


class CausalConv1d(_TapConvModule):
    """WaveNet causal (dilated) 1-D convolution: output as long as the input, ``y[t]`` sees
    ``x[<= t]``; see :func:`gmcore.nn.functional.causal_conv1d`. Weight (O, C, K).

    >>> import gmcore as gm
    >>> conv = gm.nn.CausalConv1d(2, 4, kernel_size=2, dilation=4)
    >>> conv(gm.randn(3, 2, 16)).shape, conv
    (gmcore.Size([3, 4, 16]), CausalConv1d(2, 4, kernel_size=(2,), dilation=4))
    """

    def __init__(self, in_channels, out_channels, kernel_size=2, dilation=1, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
            raise ValueError(f"CausalConv1d: dilation must be a positive int, got {dilation!r}")
        self.dilation = dilation
        self._setup(in_channels, out_channels, kernel_size, bias, False, 1, device, dtype)

    def forward(self, input):
        return F.causal_conv1d(input, self.weight, self.bias, self.dilation)

    def extra_repr(self):
        s = super().extra_repr()
        return s + (f", dilation={self.dilation}" if self.dilation != 1 else "")
