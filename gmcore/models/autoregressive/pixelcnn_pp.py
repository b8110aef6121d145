"""PixelCNN++ (Salimans, Karpathy, Chen & Kingma, 2017, "PixelCNN++: Improving the PixelCNN
with Discretized Logistic Mixture Likelihood and Other Modifications"; openai/pixel-cnn).

Changes from PixelCNN, as in the paper:

* the likelihood of a pixel is a mixture of ``mixtures`` discretized logistics over the data's
  ``num_levels`` bins (:func:`gmcore.nn.functional.discretized_logistic_mixture_nll`); for RGB
  one mixture component covers all three colours, G's and B's means shifted linearly by the
  current pixel's R (and G) values, so no channel masking is needed;
* no masks: two streams, *down* (down-shifted convolutions, kernel (2, 3): everything above)
  and *down-right* (down-right shifted convolutions, kernel (2, 2): above and to the left),
  which together have no blind spot;
* gated resnet blocks with ``concat_elu`` and dropout (:class:`~._pixel_layers.GatedResnet`);
* ``resolutions`` scales: stride-2 shifted convolutions down, shifted transposed convolutions
  back up, with U-Net-like shortcuts from every block of the way down to the way up;
* optional weight normalisation (``--weight-norm``);
* class conditioning (``--conditional``, the paper's conditional variant as in openai/pixel-cnn):
  every gated resnet block adds its own linear map of the one-hot class label to its
  pre-gate activations (:class:`~._pixel_layers.GatedResnet`). ``nll`` is then the exact
  -log p(x | y) (``nll_kind`` says so); samples take ``labels`` (``gmcore sample RUN --labels
  7``), by default the classes in turn, and a run on digits reports their label accuracy.
  Off by default, so the unconditional figure and runs keep their meaning (``gated-pixelcnn``,
  whose flag it shares, conditions by default).

The first layer pads the image with a channel of ones (so the network can tell zero padding
from black) and shifts its output (``down_shift``, ``right_shift``) so it is strict. H and W
must be divisible by ``2**(resolutions-1)``. ``nll`` is exact; samples are drawn pixel by pixel
(all colours of a pixel at once, from the mixture) by rerunning the network on the rows so far
(the cached sampler of ``pixelcnn`` and ``gated-pixelcnn`` does not cover the U-Net).

Defaults are small, for 8x8 digits on a CPU (the paper's CIFAR-10 model has 160 filters, 5
resnets and 3 resolutions): 24 filters, 1 resnet per scale, 2 scales (8x8, 4x4), 5 components,
and the paper's dropout 0.5, which 1500 training images need (at 0.1-0.3 the test NLL rises after
~1000 steps). At this depth the receptive field is complete except on the last row of an image
of even height, which never reaches the coarse scale: its left end does not see the far right of
the row above (``--resnets 2`` closes that gap).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import creation as gc
from ... import functional as gf
from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register
from ._pixel_layers import (ClassConditional, GatedResnet, LabelSampleOptions, check_image_data, eval_mode, maybe_weight_norm,
                            sample_labels, sample_pixels)

_LOG2 = 0.6931471805599453
_DOWN, _DOWN_RIGHT = (2, 3), (2, 2)


@dataclass
class PixelCNNPPConfig:
    filters: int = field(default=24, metadata={"help": "feature maps of both streams", "min": 1})
    resnets: int = field(default=1, metadata={"help": "gated resnet blocks per resolution", "min": 1})
    resolutions: int = field(default=2, metadata={"help": "scales (each one halves H and W)", "min": 1})
    mixtures: int = field(default=5, metadata={"help": "logistic mixture components per pixel", "min": 1})
    dropout: float = field(default=0.5, metadata={"help": "dropout inside the gated resnets", "min": 0.0})
    weight_norm: bool = field(default=False, metadata={"help": "weight-normalise every convolution"})
    conditional: bool = field(default=False, metadata={
        "help": "condition every gated resnet on the class label (the data set must have labels; "
                "nll is then -log p(x|y))"})


@register("pixelcnn++", family="autoregressive", dataset="digits",
          description="PixelCNN++: discretized logistic mixture, down/down-right streams, gated resnets, U-Net")
class PixelCNNPP(ClassConditional, GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = PixelCNNPP(PixelCNNPP.Config(filters=4, resnets=1, mixtures=2), DataInfo((1, 4, 4), 5))
    >>> x = gm.rand(3, 1, 4, 4).mul(4).round().div(4)
    >>> m.nll((x,)).shape, m.sample(2, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([3]), gmcore.Size([2, 1, 4, 4]))
    >>> mc = PixelCNNPP(PixelCNNPP.Config(filters=4, mixtures=2, conditional=True),
    ...                 DataInfo((1, 4, 4), 5, num_classes=3))
    >>> mc.nll((x, gm.tensor([0, 2, 1]))).shape, mc.nll_kind
    (gmcore.Size([3]), 'exact, class-conditional: -log p(x | y)')
    >>> mc.sample(2, generator=gm.Generator().manual_seed(0), labels="2").shape
    gmcore.Size([2, 1, 4, 4])
    """

    Config = PixelCNNPPConfig
    SampleOptions = LabelSampleOptions      # gmcore sample RUN --labels 7

    def __init__(self, config: PixelCNNPPConfig, data: DataInfo):
        super().__init__(config, data)
        C, H, W = check_image_data("pixelcnn++", data)
        c = config
        if not 0.0 <= c.dropout < 1.0:
            raise ValueError(f"pixelcnn++: dropout must be in [0, 1), got {c.dropout}")
        self.crop = 2 ** (c.resolutions - 1)
        if H % self.crop or W % self.crop:
            raise ValueError(f"pixelcnn++ with {c.resolutions} resolutions halves the image "
                             f"{c.resolutions - 1} times: H and W must be divisible by {self.crop}, "
                             f"got {H}x{W} (use fewer --resolutions)")
        if c.conditional and not data.num_classes:
            raise ValueError(f"pixelcnn++ --conditional needs a data set with class labels; "
                             f"{data.name or 'the data'} has none")
        self.num_classes = int(data.num_classes) if c.conditional else 0
        self.levels = int(data.num_levels)
        f, wn = c.filters, c.weight_norm

        def conv(cls, cin, cout, k, **kw):
            return maybe_weight_norm(cls(cin, cout, k, **kw), wn)

        def block(kind, aux):
            cls, k = (nn.DownShiftedConv2d, _DOWN) if kind == "u" else (nn.DownRightShiftedConv2d, _DOWN_RIGHT)
            return GatedResnet(f, cls, k, aux_channels=aux, dropout=c.dropout, weight_norm=wn,
                               num_classes=self.num_classes)

        # Start (input + a channel of ones): strict by the shifts in forward.
        self.u_init = conv(nn.DownShiftedConv2d, C + 1, f, (2, 3))
        self.ul_init_up = conv(nn.DownShiftedConv2d, C + 1, f, (1, 3))
        self.ul_init_left = conv(nn.DownRightShiftedConv2d, C + 1, f, (2, 1))
        R, n = c.resolutions, c.resnets
        # Up pass: n blocks per scale, then a stride-2 step down (not after the last scale).
        self.up_u = nn.ModuleList([block("u", 0) for _ in range(R * n)])
        self.up_ul = nn.ModuleList([block("ul", f) for _ in range(R * n)])
        self.down_u_conv = nn.ModuleList([conv(nn.DownShiftedConv2d, f, f, _DOWN, stride=2)
                                          for _ in range(R - 1)])
        self.down_ul_conv = nn.ModuleList([conv(nn.DownRightShiftedConv2d, f, f, _DOWN_RIGHT, stride=2)
                                           for _ in range(R - 1)])
        # Down pass: n blocks at the coarsest scale, n + 1 at the others (the extra one takes the
        # shortcut saved right after the stride-2 step), each fed a shortcut from the up pass.
        counts = [n] + [n + 1] * (R - 1)
        self.dn_u = nn.ModuleList([block("u", f) for _ in range(sum(counts))])
        self.dn_ul = nn.ModuleList([block("ul", 2 * f) for _ in range(sum(counts))])
        self.up_u_conv = nn.ModuleList([conv(nn.DownShiftedConvTranspose2d, f, f, _DOWN, stride=2)
                                        for _ in range(R - 1)])
        self.up_ul_conv = nn.ModuleList([conv(nn.DownRightShiftedConvTranspose2d, f, f, _DOWN_RIGHT, stride=2)
                                         for _ in range(R - 1)])
        self.counts = counts
        self.per_component = 3 if C == 1 else 10
        self.out = maybe_weight_norm(nn.Conv2d(f, c.mixtures * self.per_component, 1), wn)

    def mixture_params(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Mixture parameters (B, K*(3 or 10), H, W) (the DLML layout) for images in [0, 1]
        (and labels (B,) when the model is conditional)."""
        if self.num_classes and labels is None:
            raise ValueError("pixelcnn++ is class-conditional: pass labels")
        y = labels if self.num_classes else None
        xs = x * 2.0 - 1.0
        ones = gc.ones(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        xp = gf.cat([xs, ones], 1)
        u = F.down_shift(self.u_init(xp))
        ul = F.down_shift(self.ul_init_up(xp)) + F.right_shift(self.ul_init_left(xp))
        us, uls = [u], [ul]
        R, n = self.config.resolutions, self.config.resnets
        for r in range(R):
            for b in range(r * n, (r + 1) * n):
                u = self.up_u[b](u, y=y)
                ul = self.up_ul[b](ul, u, y=y)
                us.append(u)
                uls.append(ul)
            if r < R - 1:
                u, ul = self.down_u_conv[r](u), self.down_ul_conv[r](ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        b = 0
        for r, count in enumerate(self.counts):
            for _ in range(count):
                u = self.dn_u[b](u, us.pop(), y=y)
                ul = self.dn_ul[b](ul, gf.cat([u, uls.pop()], 1), y=y)
                b += 1
            if r < R - 1:
                u, ul = self.up_u_conv[r](u), self.up_ul_conv[r](ul)
        return self.out(F.elu(ul))

    def nll(self, batch, generator=None) -> Tensor:
        """Exact -log p(x | y) (conditional) or -log p(x), nats per example (B,)."""
        x = batch[0]
        labels = self._labels(batch)
        # the data check costs a GPU sync: first training batch and evaluation batches only
        validate = not (self.training and getattr(self, "_dlml_checked", False))
        self._dlml_checked = getattr(self, "_dlml_checked", False) or self.training
        return F.discretized_logistic_mixture_nll(x * 2.0 - 1.0, self.mixture_params(x, labels), num_bins=self.levels,
                                                  validate=validate)

    def loss(self, batch):
        nll = self.nll(batch).mean()
        bpd = nll / (self.data.dims * _LOG2)
        return bpd, {"bits_per_dim": bpd.item()}

    def sample(self, n, generator=None, labels=None) -> Tensor:
        """``n`` images in [0, 1] (levels / (num_levels - 1)), drawn pixel by pixel (dropout off);
        ``labels`` for a conditional model: (n,) or a comma-separated string repeated in turn
        (default: 0, 1, ..., num_classes-1, 0, 1, ...; see :func:`._pixel_layers.sample_labels`)."""
        dev = next(self.parameters()).device
        C = self.data.shape[0]
        labels = sample_labels("pixelcnn++", labels, n, self.num_classes, dev)

        def predict(x, i, j, c):
            p = self.mixture_params(x, labels)[:, :, i:i + 1, j:j + 1]
            v = F.sample_discretized_logistic_mixture(p, self.levels, generator=generator, channels=C)
            return ((v + 1.0) * (0.5 * (self.levels - 1))).round() / (self.levels - 1)

        with eval_mode(self):
            return sample_pixels(predict, n, self.data.shape, dev, crop=self.crop)


__all__ = ["PixelCNNPP", "PixelCNNPPConfig"]
