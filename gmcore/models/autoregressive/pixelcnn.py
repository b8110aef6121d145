"""PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu, 2016, "Pixel Recurrent Neural
Networks", Sec. 3.5 and Fig. 5).

p(x) = prod_i p(x_i | x_<i) over pixels in raster order (and, for RGB, channels R, G, B in
order within a pixel). Each conditional is a ``num_levels``-way softmax. The network:

* a 7x7 mask-A convolution (strict: pixel ``(i, j)`` sees rows above and columns to its left),
* ``blocks`` residual blocks ReLU -> 1x1 (2h -> h) -> ReLU -> 3x3 mask B -> ReLU -> 1x1 (h -> 2h),
  added to the stream (mask B also sees the current pixel's permitted channels); optional
  dropout before the last 1x1 (``--dropout``: 1500 digits are few for this many weights),
* ReLU -> 1x1 mask B -> ReLU -> 1x1 mask B to ``C * num_levels`` logits.

RGB data (C = 3) uses ``groups_rgb=3``: every feature map is split into three consecutive
channel blocks, one per colour, and the centre tap of a mask lets block g see input blocks
``< g`` (mask A) or ``<= g`` (mask B); the logits are laid out per colour group as
(B, 3, num_levels, H, W), so R is predicted from earlier pixels, G also from the current R, B
from the current R and G. Feature widths must then be divisible by 3 (the defaults are
divisible by 6). Grey data uses ``groups_rgb=1``.

Stacks of 3x3 masked convolutions have a blind spot (pixels above and to the right that no
path reaches); the Gated PixelCNN (``gated-pixelcnn``) removes it. ``nll`` is the exact
negative log-likelihood of the discrete data; samples are drawn pixel by pixel, by default
computing only the new pixel's position of every layer from cached activations (Ramachandran
et al. 2017; ``--sampler naive`` reruns the network: H*W forward passes, C*H*W for RGB).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import nn
from ...distributions import Categorical
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register
from ._pixel_layers import CategoricalPixels, check_image_data, eval_mode, sample_pixels
from ._fast_sampling import PixelSampleOptions, check_sampler, fast_sample_pixelcnn



@dataclass
class PixelCNNConfig:
    channels: int = field(default=96, metadata={
        "help": "width 2h of the residual stream (divisible by 6 for RGB data)", "min": 2})
    blocks: int = field(default=6, metadata={"help": "residual blocks (each has one 3x3 mask-B conv)",
                                             "min": 0})
    first_kernel: int = field(default=7, metadata={"help": "kernel of the first, mask-A convolution",
                                                   "min": 1})
    kernel: int = field(default=3, metadata={"help": "kernel of the mask-B convolutions in the blocks",
                                             "min": 1})
    out_hidden: int = field(default=96, metadata={
        "help": "width of the 1x1 output layers (divisible by 3 for RGB data)", "min": 1})
    dropout: float = field(default=0.3, metadata={
        "help": "dropout before the last 1x1 of each residual block (regularises small data sets)",
        "min": 0.0})


class _ResidualBlock(nn.Module):
    """ReLU -> 1x1 -> ReLU -> kxk mask B -> ReLU -> 1x1, added to the input (Fig. 5)."""

    def __init__(self, channels: int, kernel: int, groups: int, dropout: float):
        super().__init__()
        h = channels // 2
        self.reduce = nn.MaskedConv2d(channels, h, 1, mask_type="B", groups_rgb=groups)
        self.conv = nn.MaskedConv2d(h, h, kernel, mask_type="B", groups_rgb=groups)
        self.expand = nn.MaskedConv2d(h, channels, 1, mask_type="B", groups_rgb=groups)
        self.dropout = nn.Dropout(dropout) if dropout else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(self.reduce(x.relu()).relu()).relu()
        if self.dropout is not None:
            y = self.dropout(y)
        return x + self.expand(y)


@register("pixelcnn", family="autoregressive", dataset="digits",
          description="PixelCNN: masked convolutions, per-pixel softmax over levels (RGB channel masks)")
class PixelCNN(CategoricalPixels, GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = PixelCNN(PixelCNN.Config(channels=8, blocks=1, out_hidden=8), DataInfo((1, 4, 4), 5))
    >>> x = gm.rand(3, 1, 4, 4).mul(4).round().div(4)
    >>> loss, logs = m.loss((x,))
    >>> m.nll((x,)).shape, m.sample(2, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([3]), gmcore.Size([2, 1, 4, 4]))
    """

    Config = PixelCNNConfig
    SampleOptions = PixelSampleOptions     # gmcore sample RUN --sampler naive

    def __init__(self, config: PixelCNNConfig, data: DataInfo):
        super().__init__(config, data)
        C, _, _ = check_image_data("pixelcnn", data)
        c = config
        groups = 3 if C == 3 else 1
        if groups == 3:
            bad = [f"{n}={v}" for n, v in (("channels", c.channels), ("channels/2", c.channels // 2),
                                            ("out_hidden", c.out_hidden)) if v % 3]
            if bad or c.channels % 2:
                raise ValueError("pixelcnn on RGB data splits features into 3 colour groups: channels "
                                 f"must be divisible by 6 and out_hidden by 3 (got {', '.join(bad) or c.channels})")
        if not 0.0 <= c.dropout < 1.0:
            raise ValueError(f"pixelcnn: dropout must be in [0, 1), got {c.dropout}")
        for name in ("first_kernel", "kernel"):
            if getattr(c, name) % 2 == 0:
                raise ValueError(f"pixelcnn: {name} must be odd (a centred mask), got {getattr(c, name)}")
        self.groups = groups
        self.levels = int(data.num_levels)
        self.inp = nn.MaskedConv2d(C, c.channels, c.first_kernel, mask_type="A", groups_rgb=groups)
        self.blocks = nn.ModuleList([_ResidualBlock(c.channels, c.kernel, groups, c.dropout) for _ in range(c.blocks)])
        self.out1 = nn.MaskedConv2d(c.channels, c.out_hidden, 1, mask_type="B", groups_rgb=groups)
        self.out2 = nn.MaskedConv2d(c.out_hidden, C * self.levels, 1, mask_type="B", groups_rgb=groups)

    def logits(self, x: Tensor) -> Tensor:
        """Logits (B, C, num_levels, H, W) of every pixel's conditional, for images in [0, 1]."""
        h = self.inp(x * 2.0 - 1.0)
        for block in self.blocks:
            h = block(h)
        out = self.out2(self.out1(h.relu()).relu())
        B, _, H, W = out.shape
        return out.reshape(B, x.shape[1], self.levels, H, W)

    def sample(self, n, generator=None, sampler="fast") -> Tensor:
        """``n`` images in [0, 1] (levels / (num_levels - 1)), drawn pixel by pixel (dropout off).
        ``sampler="fast"`` computes only the new pixel's position of every layer (cached
        activations, :mod:`._fast_sampling`); ``"naive"`` reruns the network per pixel. Both
        make the same draws."""
        if check_sampler("pixelcnn", sampler) == "fast":
            return fast_sample_pixelcnn(self, n, generator)
        dev = next(self.parameters()).device
        top = self.levels - 1

        def predict(x, i, j, c):
            logits = self.logits(x)[:, :, :, i, j]                 # (n, C, L)
            if c is not None:
                logits = logits[:, c]
            return Categorical(logits=logits).sample(generator=generator).float() / top

        with eval_mode(self):
            return sample_pixels(predict, n, self.data.shape, dev, crop=1, channelwise=self.groups == 3)


__all__ = ["PixelCNN", "PixelCNNConfig"]
