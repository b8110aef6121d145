"""Convolution layers: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``.

Thin modules over ``gmcore.nn.functional``'s convolutions with PyTorch's constructor
arguments, weight layout, checks and initialisation (``kaiming_uniform_(a=sqrt(5))``, bias
U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
"""
from __future__ import annotations


from . import functional as F
from .linear import _reset_fan_in_uniform, _weight_and_bias
from .module import Module

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]

_CONV = {1: "conv1d", 2: "conv2d", 3: "conv3d"}

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _tuple(value, n, name, cls):
    if isinstance(value, (list, tuple)):
        if len(value) != n or not all(isinstance(v, int) and not isinstance(v, bool)
                                      for v in value):
            raise ValueError(f"{cls}: {name} must be an int or a tuple of {n} ints, got {value!r}")
        return tuple(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{cls}: {name} must be an int or a tuple of {n} ints, got {value!r}")
    return (value,) * n


class _ConvNd(Module):
    """Shared state of the convolution layers (PyTorch's ``_ConvNd``)."""

    _nd = 0
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                 bias, padding_mode, output_padding=0, device=None, dtype=None):
        super().__init__()
        cls = type(self).__name__
        nd = self._nd
        if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"{cls}: groups must be a positive integer, got {groups!r}")
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{cls}: {name} must be a positive int, got {v!r}")
        if in_channels % groups != 0:
            raise ValueError(f"{cls}: in_channels must be divisible by groups "
                             f"({in_channels} vs groups={groups})")
        if out_channels % groups != 0:
            raise ValueError(f"{cls}: out_channels must be divisible by groups "
                             f"({out_channels} vs groups={groups})")
        kernel_size = _tuple(kernel_size, nd, "kernel_size", cls)
        stride = _tuple(stride, nd, "stride", cls)
        dilation = _tuple(dilation, nd, "dilation", cls)
        if any(k <= 0 for k in kernel_size) or any(s <= 0 for s in stride) \
                or any(d <= 0 for d in dilation):
            raise ValueError(f"{cls}: kernel_size, stride and dilation must be positive, got "
                             f"{kernel_size}, {stride}, {dilation}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{cls}: padding_mode must be one of {list(_PADDING_MODES)}, but "
                             f"got padding_mode={padding_mode!r}")
        if isinstance(padding, str):
            if self._transposed:
                raise ValueError(f"{cls}: padding must be an int or a tuple of ints, got "
                                 f"{padding!r}")
            if padding not in ("same", "valid"):
                raise ValueError(f"{cls}: Invalid padding string {padding!r}, should be one of "
                                 "{'valid', 'same'}")
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError(f"{cls}: padding='same' is not supported for strided "
                                 f"convolutions (stride={stride})")
            if padding == "same":
                # total d*(k-1) per dim, the odd one after: as F.conv*d and PyTorch
                pads = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                        for d, k in zip(dilation, kernel_size)]
            else:
                pads = [(0, 0)] * nd
        else:
            padding = _tuple(padding, nd, "padding", cls)
            if any(p < 0 for p in padding):
                raise ValueError(f"{cls}: padding must be non-negative, got {padding}")
            pads = [(p, p) for p in padding]
        # F.pad order: last dim first, (left, right) per dim
        self._reversed_padding_repeated_twice = tuple(v for pair in reversed(pads) for v in pair)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.transposed = self._transposed
        self.output_padding = _tuple(output_padding, nd, "output_padding", cls)
        self.groups = groups
        self.padding_mode = padding_mode
        if self._transposed:
            shape = (in_channels, out_channels // groups) + kernel_size
        else:
            shape = (out_channels, in_channels // groups) + kernel_size
        _weight_and_bias(self, shape, (out_channels,) if bias else None, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_fan_in_uniform(self)

    def extra_repr(self):
        nd = self._nd
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * nd:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * nd:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class _Conv(_ConvNd):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, 0, device, dtype)

    def _conv_forward(self, input, weight, bias):
        fn = getattr(F, _CONV[self._nd])
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return fn(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return fn(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)


class Conv1d(_Conv):
    """1-D convolution over (N, C_in, L) or (C_in, L): weight (C_out, C_in/groups, k).

    ``padding``: int, tuple, ``'valid'`` or ``'same'`` (stride 1); ``padding_mode``: ``'zeros'``,
    ``'reflect'``, ``'replicate'`` or ``'circular'``.

    >>> import gmcore as gm
    >>> conv = gm.nn.Conv1d(2, 4, 3, padding="same")
    >>> conv(gm.randn(1, 2, 10)).shape
    gmcore.Size([1, 4, 10])
    """

    _nd = 1


class Conv2d(_Conv):
    """2-D convolution over (N, C_in, H, W) or (C_in, H, W): weight (C_out, C_in/groups, kH, kW).

    >>> import gmcore as gm
    >>> conv = gm.nn.Conv2d(3, 8, 3, stride=2, padding=1)
    >>> conv(gm.randn(2, 3, 9, 9)).shape, conv
    (gmcore.Size([2, 8, 5, 5]), Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)))
    """

    _nd = 2


class Conv3d(_Conv):
    """3-D convolution over (N, C_in, D, H, W) or (C_in, D, H, W): weight
    (C_out, C_in/groups, kD, kH, kW).

    >>> import gmcore as gm
    >>> conv = gm.nn.Conv3d(2, 4, 3, padding=1)
    >>> conv(gm.randn(1, 2, 4, 5, 6)).shape
    gmcore.Size([1, 4, 4, 5, 6])
    """

    _nd = 3


class _ConvTransposeNd(_ConvNd):
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding, device, dtype)

    def _output_padding(self, input, output_size):
        """The output_padding that makes the output ``output_size`` (PyTorch's rule)."""
        if output_size is None:
            return self.output_padding
        nd = self._nd
        output_size = [int(s) for s in output_size]
        non_spatial = 2 if input.ndim == nd + 2 else 1
        if len(output_size) == non_spatial + nd:
            output_size = output_size[non_spatial:]
        if len(output_size) != nd:
            raise ValueError(f"{type(self).__name__}: for {input.ndim}D input, output_size must "
                             f"have {nd} or {nd + non_spatial} elements (got {len(output_size)})")
        spatial = tuple(input.shape[non_spatial:])
        lo = [(spatial[d] - 1) * self.stride[d] - 2 * self.padding[d]
              + self.dilation[d] * (self.kernel_size[d] - 1) + 1 for d in range(nd)]
        hi = [lo[d] + self.stride[d] - 1 for d in range(nd)]
        for d in range(nd):
            if not lo[d] <= output_size[d] <= hi[d]:
                raise ValueError(f"requested an output size of {output_size}, but valid sizes "
                                 f"range from {lo} to {hi} (for an input of {list(spatial)})")
        return tuple(output_size[d] - lo[d] for d in range(nd))

    def forward(self, input, output_size=None):
        fn = getattr(F, "conv_transpose" + _CONV[self._nd][4:])
        output_padding = self._output_padding(input, output_size)
        return fn(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                  self.groups, self.dilation)


class ConvTranspose1d(_ConvTransposeNd):
    """Transposed 1-D convolution: weight (C_in, C_out/groups, k); output length
    ``(L - 1) s - 2p + d (k - 1) + output_padding + 1``, or pass ``output_size`` to forward.

    >>> import gmcore as gm
    >>> up = gm.nn.ConvTranspose1d(4, 2, 4, stride=2, padding=1)
    >>> up(gm.randn(1, 4, 8)).shape
    gmcore.Size([1, 2, 16])
    """

    _nd = 1


class ConvTranspose2d(_ConvTransposeNd):
    """Transposed 2-D convolution: weight (C_in, C_out/groups, kH, kW).

    >>> import gmcore as gm
    >>> up = gm.nn.ConvTranspose2d(8, 3, 3, stride=2, padding=1)
    >>> up(gm.randn(1, 8, 4, 4), output_size=(8, 8)).shape
    gmcore.Size([1, 3, 8, 8])
    """

    _nd = 2


class ConvTranspose3d(_ConvTransposeNd):
    """Transposed 3-D convolution: weight (C_in, C_out/groups, kD, kH, kW).

    >>> import gmcore as gm
    >>> up = gm.nn.ConvTranspose3d(4, 2, 4, stride=2, padding=1)
    >>> up(gm.randn(1, 4, 2, 3, 3)).shape
    gmcore.Size([1, 2, 4, 6, 6])
    """

    _nd = 3
