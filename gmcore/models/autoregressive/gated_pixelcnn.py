"""Gated PixelCNN, class-conditional (van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves &
Kavukcuoglu, 2016, "Conditional Image Generation with PixelCNN Decoders").

Like PixelCNN, p(x | y) = prod_i p(x_i | x_<i, y) with a ``num_levels``-way softmax per
value, but the network is two stacks of gated layers (:class:`~._pixel_layers.GatedStackLayer`):

* a vertical stack (down-shifted convolutions, kernel (k//2+1, k)) that sees every row above,
* a horizontal stack (down-right shifted convolutions, kernel (1, k//2+1)) that sees the
  current row to the left and receives the vertical stack through a 1x1 link,

so a deep enough stack sees *every* earlier pixel (no blind spot). Activations are gated,
``tanh(W_f * x + V_f^T y) * sigmoid(W_g * x + V_g^T y)``, where ``V^T y`` is a learned
per-layer embedding of the class label (``--conditional``, on by default when the data set has
labels; ``--no-conditional`` trains p(x)). The horizontal stack is residual.

Output: ReLU -> 1x1 -> ReLU -> 1x1 to ``num_levels`` logits per channel.

RGB data (the paper's colour ordering, as PixelRNN Sec. 3.4): p(x_i) = p(R | x_<i) p(G | R,
x_<i) p(B | R, G, x_<i), in every layer. The horizontal stack's feature maps, the output
layers' and the logits are split in three colour groups R, G, B (equal up to one map when
``channels`` or ``out_hidden`` is not divisible by 3); the horizontal convolution's tap on the
current pixel is colour-masked, mask A in the first layer (group g sees the current pixel's
colours < g; that layer then takes the image unshifted) and mask B after (groups <= g), as are
the horizontal 1x1 and the two output 1x1 convolutions; gates and residuals stay within a
group. The vertical stack and its link into the horizontal one need no mask: they see rows
above only, every colour of which precedes the current pixel (:class:`~._pixel_layers.GatedStackLayer`).

Sampling draws pixel by pixel (colour by colour for RGB), by default from cached activations
(the vertical stack once per row, the horizontal one once per pixel, or per colour for RGB:
Ramachandran et al. 2017; ``--sampler naive`` reruns the network per pixel);
class-conditional samples take ``labels`` (``gmcore sample RUN --labels 7``; default: cycling
through the classes 0, 1, 2, ...).

``nll`` is exact: -log p(x | y) for a conditional model (``nll_kind`` says so), -log p(x)
otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import nn
from ...distributions import Categorical
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register
from ._pixel_layers import (ClassConditional, ColourMaskedConv2d, GatedStackLayer, LabelSampleOptions, check_image_data,
                            sample_labels, sample_pixels)
from ._fast_sampling import PixelSampleOptions, check_sampler, fast_sample_gated_pixelcnn

_LOG2 = 0.6931471805599453


@dataclass
class GatedPixelCNNConfig:
    channels: int = field(default=32, metadata={"help": "feature maps p of each stack", "min": 1})
    layers: int = field(default=6, metadata={"help": "gated layers (the first is the strict one)",
                                             "min": 1})
    first_kernel: int = field(default=7, metadata={"help": "kernel k of the first layer (vertical "
                                                           "(k//2+1, k), horizontal (1, k//2+1))",
                                                   "min": 1})
    kernel: int = field(default=3, metadata={"help": "kernel k of the other layers", "min": 1})
    out_hidden: int = field(default=66, metadata={"help": "width of the 1x1 output layers "
                                                          "(split in 3 colour groups for RGB data)",
                                                  "min": 1})
    conditional: bool = field(default=True, metadata={
        "help": "condition on the class label when the data set has labels (nll is then -log p(x|y))"})


@dataclass
class GatedSampleOptions(PixelSampleOptions, LabelSampleOptions):
    """``--sampler`` and ``--labels``."""


@register("gated-pixelcnn", family="autoregressive", dataset="digits",
          description="Gated PixelCNN: vertical+horizontal gated stacks (no blind spot), class-conditional")
class GatedPixelCNN(ClassConditional, GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = GatedPixelCNN(GatedPixelCNN.Config(channels=4, layers=2, out_hidden=6),
    ...                   DataInfo((1, 4, 4), 5, num_classes=3))
    >>> x, y = gm.rand(3, 1, 4, 4).mul(4).round().div(4), gm.tensor([0, 2, 1])
    >>> m.nll((x, y)).shape, m.nll_kind
    (gmcore.Size([3]), 'exact, class-conditional: -log p(x | y)')
    >>> m.sample(2, generator=gm.Generator().manual_seed(0), labels=gm.tensor([1, 1])).shape
    gmcore.Size([2, 1, 4, 4])
    """

    Config = GatedPixelCNNConfig
    SampleOptions = GatedSampleOptions     # gmcore sample RUN --sampler naive --labels 7

    def __init__(self, config: GatedPixelCNNConfig, data: DataInfo):
        super().__init__(config, data)
        C, _, _ = check_image_data("gated-pixelcnn", data)
        c = config
        if C == 3 and min(c.channels, c.out_hidden) < 3:
            raise ValueError("gated-pixelcnn on RGB data splits the stacks and output layers into 3 "
                             f"colour groups: channels and out_hidden must be >= 3, got {c.channels} "
                             f"and {c.out_hidden}")
        self.levels = int(data.num_levels)
        self.num_classes = int(data.num_classes) if c.conditional else 0
        p = c.channels
        self.stack = nn.ModuleList(
            [GatedStackLayer(C, p, c.first_kernel, first=True, colours=C)]
            + [GatedStackLayer(p, p, c.kernel, colours=C) for _ in range(c.layers - 1)])
        if self.num_classes:
            # One (v, h) gate bias per layer and class, zero at start: training begins unconditional.
            self.label_bias = nn.Embedding(self.num_classes, c.layers * 4 * p)
            self.label_bias.weight.data[...] = 0.0
        if C == 3:      # colour group g of the logits sees groups <= g of the horizontal stack
            self.out1 = ColourMaskedConv2d(p, c.out_hidden, "B")
            self.out2 = ColourMaskedConv2d(c.out_hidden, C * self.levels, "B")
        else:
            self.out1 = nn.Conv2d(p, c.out_hidden, 1)
            self.out2 = nn.Conv2d(c.out_hidden, self.levels, 1)

    def logits(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (B, C, num_levels, H, W) for images ``x`` in [0, 1] (and labels (B,) when
        the model is conditional)."""
        if self.num_classes and labels is None:
            raise ValueError("gated-pixelcnn is class-conditional: pass labels")
        xs = x * 2.0 - 1.0
        conds = None
        if self.num_classes:
            conds = self.label_bias(labels).chunk(len(self.stack), dim=1)
        v, h = xs, xs
        for i, layer in enumerate(self.stack):
            v, h = layer(v, h, None if conds is None else conds[i])
        out = self.out2(self.out1(h.relu()).relu())
        B, _, H, W = out.shape
        return out.reshape(B, x.shape[1], self.levels, H, W)

    def nll(self, batch, generator=None) -> Tensor:
        """Exact -log p(x | y) (conditional) or -log p(x), nats per example (B,)."""
        x = batch[0]
        logp = self.logits(x, self._labels(batch)).log_softmax(2)
        target = (x * (self.levels - 1)).round().long().unsqueeze(2)
        return -logp.gather(2, target).sum((1, 2, 3, 4))

    def loss(self, batch):
        nll = self.nll(batch).mean()
        bpd = nll / (self.data.dims * _LOG2)
        return bpd, {"bits_per_dim": bpd.item()}

    def sample(self, n, generator=None, labels=None, sampler="fast") -> Tensor:
        """``n`` images in [0, 1], pixel by pixel; ``labels`` for a conditional model: (n,), or
        a comma-separated string repeated in turn (default: 0, 1, ..., num_classes-1, 0, 1, ...;
        :func:`._pixel_layers.sample_labels`). ``sampler="fast"`` computes the vertical stack
        once per row and the horizontal stack once per pixel (per colour for RGB) from cached
        activations (:mod:`._fast_sampling`); ``"naive"`` reruns the network per pixel. Both
        make the same draws."""
        check_sampler("gated-pixelcnn", sampler)
        dev = next(self.parameters()).device
        labels = sample_labels("gated-pixelcnn", labels, n, self.num_classes, dev)
        if sampler == "fast":
            return fast_sample_gated_pixelcnn(self, n, generator, labels)
        top = self.levels - 1

        def predict(x, i, j, c):
            logits = self.logits(x, labels)[:, :, :, i, j]
            if c is not None:
                logits = logits[:, c]
            return Categorical(logits=logits).sample(generator=generator).float() / top

        return sample_pixels(predict, n, self.data.shape, dev, crop=1, channelwise=self.data.shape[0] == 3)


__all__ = ["GatedPixelCNN", "GatedPixelCNNConfig", "GatedSampleOptions"]
