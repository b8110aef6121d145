"""PixelRNN (van den Oord, Kalchbrenner & Kavukcuoglu, 2016, "Pixel Recurrent Neural
Networks", Sec. 3 and Fig. 4): Row LSTM and Diagonal BiLSTM.

p(x) = prod_i p(x_i | x_<i) over pixels in raster order (for RGB, channels R, G, B in order
within a pixel); each conditional is a ``num_levels``-way softmax. The network (Table 1 of the
paper, with its residual connections of Fig. 4):

* a 7x7 mask-A convolution to ``2h`` features (pixel ``(i, j)`` sees rows above and columns
  to its left only),
* ``layers`` residual LSTM layers: the ``2h``-feature map -> input-to-state convolution to
  the 4 gates of ``h`` units -> the LSTM over rows (``--cell row-lstm``: input-to-state 1 x k
  mask B along the row, state-to-state width k over the row above) or over diagonals
  (``--cell diagonal-bilstm``, the default: the map skewed, input-to-state 1x1 mask B,
  state-to-state 2x1 over the previous diagonal, in both directions, the right-to-left output
  shifted down one row before the two are added) -> 1x1 mask-B convolution back to ``2h``,
  added to the layer's input; the layers live in :mod:`gmcore.nn.pixel_rnn`,
* ReLU -> 1x1 mask B -> ReLU -> 1x1 mask B to ``C * num_levels`` logits.

RGB data (C = 3) carries PixelCNN's channel masks (``groups_rgb=3``) in every convolution and
splits the LSTM units into three colour groups (``hidden`` must be divisible by 3); the logits
are laid out (B, 3, num_levels, H, W), R predicted from earlier pixels, G also from the
current R, B from the current R and G.

Context: the Row LSTM sees a triangle above the pixel (wider by one column per row up, the
first convolution's reach added), with blind spots like a PixelCNN's. The Diagonal BiLSTM sees
every earlier pixel but one: pixel ``(i - 1, W - 1)`` (the end of the row above) reaches the
network only through inputs at row ``i``, which the left-to-right LSTM at ``(i, j)`` reads up
to column ``j``; the first convolution carries it to columns ``>= W - 1 - first_kernel // 2``,
so pixels further left miss it (the paper's construction has the same one-pixel gap; the
tests check the exact context).

What differs from the paper: sizes are small for 8x8 digits (defaults ``hidden=32``,
``layers=4``; the paper used 7 layers of 16 units on binarized MNIST and 12 of 128 on CIFAR-10,
with RMSProp), training uses Adam with a cosine schedule; the diagonal layers skew the
input-to-state output rather than the input (a 1x1 convolution commutes with the skew; the
positions outside the image get zero rather than the bias); the optional ``--dropout`` before
each layer's output 1x1 is ours. ``nll`` is the exact negative log-likelihood of the discrete
data; samples are drawn pixel by pixel, rerunning the network on the rows so far (H*W passes,
C*H*W for RGB).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import nn
from ...distributions import Categorical
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register
from ._pixel_layers import CategoricalPixels, check_image_data, eval_mode, sample_pixels

CELLS = ("diagonal-bilstm", "row-lstm")


@dataclass
class PixelRNNConfig:
    cell: str = field(default="diagonal-bilstm", metadata={
        "help": "recurrent layer: the Diagonal BiLSTM (full context) or the Row LSTM (a triangle "
                "above the pixel)", "choices": list(CELLS)})
    hidden: int = field(default=32, metadata={
        "help": "LSTM units h per direction; the residual stream has 2h features (divisible by 3 "
                "for RGB data)", "min": 1})
    layers: int = field(default=4, metadata={"help": "residual LSTM layers", "min": 1})
    first_kernel: int = field(default=7, metadata={"help": "kernel of the first, mask-A convolution",
                                                   "min": 1})
    kernel: int = field(default=3, metadata={
        "help": "row-lstm: width k of the input-to-state (1 x k, mask B) and state-to-state "
                "convolutions", "min": 1})
    out_hidden: int = field(default=64, metadata={
        "help": "width of the 1x1 output layers (divisible by 3 for RGB data)", "min": 1})
    dropout: float = field(default=0.0, metadata={
        "help": "dropout before each LSTM layer's output 1x1 convolution", "min": 0.0})


class _LSTMLayer(nn.Module):
    """Fig. 4's residual block: 2h -> input-to-state -> LSTM (h units) -> 1x1 mask B -> 2h, + x."""

    def __init__(self, cell: str, hidden: int, kernel: int, groups: int, dropout: float):
        super().__init__()
        if cell == "row-lstm":
            self.lstm = nn.RowLSTM(2 * hidden, hidden, kernel, mask_type="B", groups_rgb=groups)
        else:
            self.lstm = nn.DiagonalBiLSTM(2 * hidden, hidden, mask_type="B", groups_rgb=groups)
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.out = nn.MaskedConv2d(hidden, 2 * hidden, 1, mask_type="B", groups_rgb=groups)

    def forward(self, x: Tensor) -> Tensor:
        h = self.lstm(x)
        if self.dropout is not None:
            h = self.dropout(h)
        return x + self.out(h)


@register("pixelrnn", family="autoregressive", dataset="digits",
          description="PixelRNN: Row LSTM or Diagonal BiLSTM layers, per-pixel softmax over levels")
class PixelRNN(CategoricalPixels, GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = PixelRNN(PixelRNN.Config(hidden=4, layers=1, out_hidden=8), DataInfo((1, 4, 4), 5))
    >>> x = gm.rand(3, 1, 4, 4).mul(4).round().div(4)
    >>> loss, logs = m.loss((x,))
    >>> m.nll((x,)).shape, m.sample(2, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([3]), gmcore.Size([2, 1, 4, 4]))
    """

    Config = PixelRNNConfig

    def __init__(self, config: PixelRNNConfig, data: DataInfo):
        super().__init__(config, data)
        C, _, _ = check_image_data("pixelrnn", data)
        c = config
        if c.cell not in CELLS:
            raise ValueError(f"pixelrnn: --cell must be one of {', '.join(CELLS)}, got {c.cell!r}")
        groups = 3 if C == 3 else 1
        if groups == 3 and (c.hidden % 3 or c.out_hidden % 3):
            raise ValueError("pixelrnn on RGB data splits the LSTM units and the output layers into 3 "
                             f"colour groups: hidden and out_hidden must be divisible by 3 (got "
                             f"hidden={c.hidden}, out_hidden={c.out_hidden})")
        if not 0.0 <= c.dropout < 1.0:
            raise ValueError(f"pixelrnn: dropout must be in [0, 1), got {c.dropout}")
        for name in ("first_kernel", "kernel"):
            if getattr(c, name) % 2 == 0:
                raise ValueError(f"pixelrnn: {name} must be odd (a centred mask), got {getattr(c, name)}")
        self.groups = groups
        self.levels = int(data.num_levels)
        self.inp = nn.MaskedConv2d(C, 2 * c.hidden, c.first_kernel, mask_type="A", groups_rgb=groups)
        self.layers = nn.ModuleList([_LSTMLayer(c.cell, c.hidden, c.kernel, groups, c.dropout)
                                     for _ in range(c.layers)])
        self.out1 = nn.MaskedConv2d(2 * c.hidden, c.out_hidden, 1, mask_type="B", groups_rgb=groups)
        self.out2 = nn.MaskedConv2d(c.out_hidden, C * self.levels, 1, mask_type="B", groups_rgb=groups)

    def logits(self, x: Tensor) -> Tensor:
        """Logits (B, C, num_levels, H, W) of every pixel's conditional, for images in [0, 1]."""
        h = self.inp(x * 2.0 - 1.0)
        for layer in self.layers:
            h = layer(h)
        out = self.out2(self.out1(h.relu()).relu())
        B, _, H, W = out.shape
        return out.reshape(B, x.shape[1], self.levels, H, W)

    def sample(self, n, generator=None) -> Tensor:
        """``n`` images in [0, 1] (levels / (num_levels - 1)), drawn pixel by pixel (dropout
        off), the network rerun on the rows so far for each pixel (row i depends on rows <= i
        only, for both cells)."""
        dev = next(self.parameters()).device
        top = self.levels - 1

        def predict(x, i, j, c):
            logits = self.logits(x)[:, :, :, i, j]                 # (n, C, L)
            if c is not None:
                logits = logits[:, c]
            return Categorical(logits=logits).sample(generator=generator).float() / top

        with eval_mode(self):
            return sample_pixels(predict, n, self.data.shape, dev, crop=1, channelwise=self.groups == 3)


__all__ = ["PixelRNN", "PixelRNNConfig"]
