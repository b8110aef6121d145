"""Causal (dilated) 1-D convolution, the WaveNet layer: ``y[t]`` sees ``x[<= t]`` only.

Kernel family ``causal_conv`` (op ``tap_conv2d``): a tap convolution on a unit height with the
taps ``(0, k)``, ``k < K``, and ``(K-1) * dilation`` zeros of leading padding (implementations
in :mod:`gmcore.functional._tap_conv`). ``GMCORE_KERNELS=causal_conv=reference`` computes it
with differentiable Tensor ops (``pad`` + ``conv1d``), for gradients of any order.
"""
from __future__ import annotations

from .. import backend
from ._tap_conv import TapConv2d, all_taps, check_args, choose_impl, register_tap_conv

__all__ = ["causal_conv1d"]

FAMILY = "causal_conv"
register_tap_conv(FAMILY)


def causal_conv1d(input, weight, bias=None, dilation=1):
    """Causal 1-D convolution: ``conv1d`` of ``input`` left-padded with ``(K-1) * dilation``
    zeros, so the output is as long as the input and ``y[..., t]`` depends on ``x[..., <= t]``.

    ``input`` (N, C, T) or (C, T), ``weight`` (O, C, K), ``bias`` (O,) or None::

        y[n, o, t] = bias[o] + sum_{c, k} weight[o, c, k] * x[n, c, t - (K-1-k) * dilation]

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> x = gm.tensor([[1.0, 2.0, 3.0, 4.0]])
    >>> F.causal_conv1d(x, gm.tensor([[[10.0, 1.0]]]), dilation=2).tolist()
    [[1.0, 2.0, 13.0, 24.0]]
    """
    op = "causal_conv1d"
    check_args(op, input, weight, bias, 1)
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"{op}: dilation must be a positive int, got {dilation!r}")
    k = weight.shape[2]
    pad_left = (k - 1) * dilation
    name, impl = choose_impl(FAMILY, input)
    if name == "reference":
        from ..nn.functional.conv import conv1d
        from .shape import pad
        return conv1d(pad(input, (pad_left, 0)), weight, bias, dilation=dilation)
    x = input.unsqueeze(0) if input.ndim == 2 else input
    geom = ((1, 1), (0, pad_left), (1, dilation))
    with backend.device_context(input.device):
        y = TapConv2d.apply(x.unsqueeze(2), weight.unsqueeze(2), bias, impl, all_taps(1, k), geom,
                            (1, x.shape[-1]), None)
    y = y.squeeze(2)
    return y.squeeze(0) if input.ndim == 2 else y
