"""Layers shared by the PixelCNN family: concat_elu, PixelCNN++'s gated resnet, the Gated
PixelCNN's vertical/horizontal stack layer, and the pixel-by-pixel sampling loop.

The causal geometry lives in the shifted and masked convolutions of :mod:`gmcore.nn`
(``MaskedConv2d``, ``DownShiftedConv2d``, ``DownRightShiftedConv2d`` and their transposed
twins); here we only compose them. Two stream invariants are kept throughout:

* a *down* (vertical) stream value at row ``i`` depends on input rows ``< i`` only;
* a *down-right* (horizontal) stream value at ``(i, j)`` depends on rows ``< i`` and on row
  ``i`` at columns ``< j`` only.

Every layer below maps streams with these invariants to streams with the same invariants
(row ``i`` of a down-shifted convolution sees rows ``<= i`` of its input; a down-right shifted
one sees rows ``< i`` and ``(i, <= j)``), so the first layer alone has to shift its input.
"""
from __future__ import annotations

import contextlib
import math

from ... import creation as gc
from ... import nn
from ...autograd import no_grad
from ...nn import functional as F
from ...progress import Bar
from ...tensor import Tensor

__all__ = ["concat_elu", "GatedResnet", "GatedStackLayer", "sample_pixels", "eval_mode", "scale_init",
           "maybe_weight_norm", "check_image_data"]


def concat_elu(x: Tensor) -> Tensor:
    """ELU of ``[x, -x]`` along channels (PixelCNN++): keeps both signs' information; doubles C.
    (``F.concat_elu``: one fused kernel pass each way.)"""
    return F.concat_elu(x)


def scale_init(module, factor: float):
    """Scale a layer's initial weight (and zero its bias): residual branches then start near
    the identity (PixelCNN++ uses ``init_scale=0.1`` on a gated resnet's last conv)."""
    with no_grad():
        module.weight.data[...] *= factor
        if getattr(module, "bias", None) is not None:
            module.bias.data[...] = 0.0
    return module


def maybe_weight_norm(module, on: bool):
    """``module`` with weight normalisation (Salimans & Kingma 2016) when ``on``.

    The norm runs over every dim but the output channels: dim 0 for convolutions, dim 1 for
    transposed ones (their weight is (in, out, kh, kw)).
    """
    if not on:
        return module
    from ...nn.utils.parametrizations import weight_norm
    dim = 1 if "Transpose" in type(module).__name__ else 0
    return weight_norm(module, "weight", dim=dim)


def check_image_data(model: str, data, channels=(1, 3), min_levels: int = 2) -> tuple:
    """(C, H, W) of ``data`` (a DataInfo), or a ValueError naming what does not fit."""
    shape, name = tuple(data.shape), data.name or "the data"
    if len(shape) != 3:
        raise ValueError(f"{model} models images (C, H, W); {name} has examples of shape {shape}")
    if shape[0] not in channels:
        raise ValueError(f"{model} needs {' or '.join(map(str, channels))} image channels; {name} "
                         f"has shape {shape}")
    if not data.num_levels or data.num_levels < min_levels:
        raise ValueError(f"{model} needs discrete pixel levels (>= {min_levels}); {name} reports "
                         f"num_levels={data.num_levels}")
    return shape


class GatedResnet(nn.Module):
    """PixelCNN++'s gated residual block (Salimans et al. 2017, Sec. 2.5 and openai/pixel-cnn)::

        c = conv(concat_elu(x)) [+ nin(concat_elu(a))]      a: a skip input (same H, W)
        c = conv2(dropout(concat_elu(c)))                    2 * channels outputs
        out = x + c[:C] * sigmoid(c[C:])

    ``conv`` and ``conv2`` are the causal convolution ``conv_cls`` (a down-shifted one for the
    down stream, a down-right shifted one for the down-right stream) with ``kernel_size``;
    ``nin`` is a 1x1 convolution, which cannot break causality when ``a`` obeys the same
    invariant as ``x``.
    """

    def __init__(self, channels: int, conv_cls, kernel_size, aux_channels: int = 0,
                 dropout: float = 0.0, weight_norm: bool = False):
        super().__init__()
        self.conv1 = maybe_weight_norm(conv_cls(2 * channels, channels, kernel_size), weight_norm)
        self.nin = (maybe_weight_norm(nn.Conv2d(2 * aux_channels, channels, 1), weight_norm)
                    if aux_channels else None)
        self.dropout = nn.Dropout(dropout) if dropout else None
        conv2 = scale_init(conv_cls(2 * channels, 2 * channels, kernel_size), 0.1)
        self.conv2 = maybe_weight_norm(conv2, weight_norm)

    def forward(self, x: Tensor, a: Tensor | None = None) -> Tensor:
        c = self.conv1(concat_elu(x))
        if a is not None:
            c = c + self.nin(concat_elu(a))
        c = concat_elu(c)
        if self.dropout is not None:
            c = self.dropout(c)
        c = self.conv2(c)
        value, gate = c.chunk(2, dim=1)
        return x + value * gate.sigmoid()


class GatedStackLayer(nn.Module):
    """One layer of the Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation
    with PixelCNN Decoders", Fig. 2), without the blind spot.

    Vertical stack ``v``: ``DownShiftedConv2d`` with kernel ``(k//2 + 1, k)`` (rows above and the
    current row of its input); horizontal stack ``h``: ``DownRightShiftedConv2d`` with kernel
    ``(1, k//2 + 1)`` (the current row, columns up to the current one). Each produces ``2p``
    channels gated as ``tanh(a) * sigmoid(b)``; the vertical pre-activation reaches the
    horizontal one through a 1x1 convolution (the v -> h link) and the horizontal output goes
    through a 1x1 convolution and a residual connection. ``cond`` (B, 4p), e.g. a label
    embedding, is a per-example bias of both gates; a map (B or 1, 4p, H, W) is a per-position
    bias (a position embedding, or features of a coarser level as VQ-VAE-2's bottom prior uses):
    it must not depend on the image this stack models, or causality breaks.

    With ``first=True`` the inputs are the image twice and the layer shifts them (``down_shift``
    for ``v``, ``right_shift`` for ``h``): the strict (mask-A) start; no residual there.
    Because ``v`` at row ``i`` sees only rows ``< i`` here, the link needs no extra shift.
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, first: bool = False):
        super().__init__()
        k = kernel_size
        self.first = first
        self.channels = channels
        self.vconv = nn.DownShiftedConv2d(in_channels, 2 * channels, (k // 2 + 1, k))
        self.hconv = nn.DownRightShiftedConv2d(in_channels, 2 * channels, (1, k // 2 + 1))
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.hout = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def _gate(x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a.tanh() * b.sigmoid()

    def forward(self, v: Tensor, h: Tensor, cond: Tensor | None = None):
        if self.first:
            v, h = F.down_shift(v), F.right_shift(h)
        v_pre = self.vconv(v)
        h_pre = self.hconv(h) + self.link(v_pre)
        if cond is not None:
            if cond.ndim == 2:
                cond = cond[:, :, None, None]
            cv, ch = cond.chunk(2, dim=1)
            v_pre = v_pre + cv
            h_pre = h_pre + ch
        v_out = self._gate(v_pre)
        h_out = self.hout(self._gate(h_pre))
        return v_out, (h_out if self.first else h + h_out)


@contextlib.contextmanager
def eval_mode(module):
    """``module`` in evaluation mode (no dropout) inside the block, its own mode restored after:
    a sample drawn with dropout masks would come from a different network at every pixel."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def sample_pixels(predict, n: int, shape, device, crop: int | None = 1, channelwise: bool = False) -> Tensor:
    """Draw ``n`` images pixel by pixel in raster order (channels in order when ``channelwise``).

    ``predict(x, i, j, c)`` gets the images so far (n, C, R, W), cut after row ``R >= i + 1``
    (rounded up to a multiple of ``crop``, or the full height when ``crop`` is None), and returns
    the values of pixel ``(i, j)`` in [0, 1]: shape (n, C), or (n,) for channel ``c`` when
    ``channelwise``. Cutting is exact for networks whose row ``i`` depends on rows ``<= i`` only
    (and, with stride-2 layers, on a height divisible by ``crop``); it halves the work on
    average. H * W (times C) forward passes in all.
    """
    C, H, W = (int(s) for s in shape)
    x = gc.zeros(n, C, H, W, device=device)
    bar = Bar(H * W, "pixels")   # drawn only under gmcore.progress.show_progress()
    with no_grad():
        for i in range(H):
            rows = H if crop is None else min(H, math.ceil((i + 1) / crop) * crop)
            for j in range(W):
                for c in (range(C) if channelwise else (None,)):
                    vals = predict(x[:, :, :rows], i, j, c)
                    if c is None:
                        x.data[:, :, i, j] = vals.data.reshape(n, C)
                    else:
                        x.data[:, c, i, j] = vals.data.reshape(n)
                bar.update(i * W + j + 1)
    bar.close()
    return x
