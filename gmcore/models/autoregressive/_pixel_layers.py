"""Layers shared by the PixelCNN family: concat_elu, PixelCNN++'s gated resnet, the Gated
PixelCNN's vertical/horizontal stack layer (with R -> G -> B colour groups for RGB), class
labels for sampling, and the pixel-by-pixel sampling loop.

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
from dataclasses import dataclass, field

import numpy as np

from ... import creation as gc
from ... import nn
from ..._dtype import int64
from ...autograd import no_grad
from ...configs import int_list
from ...nn import functional as F
from ...progress import Bar
from ...tensor import Tensor

__all__ = ["concat_elu", "GatedResnet", "GatedStackLayer", "sample_pixels", "eval_mode", "scale_init",
           "maybe_weight_norm", "check_image_data", "LabelSampleOptions", "sample_labels",
           "colour_groups", "colour_mask", "ColourMaskedConv2d", "ColourMaskedRowConv2d"]


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
        c = conv2(dropout(concat_elu(c))) [+ W_y[y]]         2 * channels outputs
        out = x + c[:C] * sigmoid(c[C:])

    ``conv`` and ``conv2`` are the causal convolution ``conv_cls`` (a down-shifted one for the
    down stream, a down-right shifted one for the down-right stream) with ``kernel_size``;
    ``nin`` is a 1x1 convolution, which cannot break causality when ``a`` obeys the same
    invariant as ``x``. With ``num_classes``, a class label ``y`` (B,) adds the block's own
    linear map of its one-hot vector, ``W_y[y]`` (an embedding row, 2 * channels wide), to both
    halves before the gate, as openai/pixel-cnn's conditional ``gated_resnet`` does (its ``hw``,
    initialised N(0, 0.05^2)); a per-example bias cannot break causality.
    """

    def __init__(self, channels: int, conv_cls, kernel_size, aux_channels: int = 0,
                 dropout: float = 0.0, weight_norm: bool = False, num_classes: int = 0):
        super().__init__()
        self.conv1 = maybe_weight_norm(conv_cls(2 * channels, channels, kernel_size), weight_norm)
        self.nin = (maybe_weight_norm(nn.Conv2d(2 * aux_channels, channels, 1), weight_norm)
                    if aux_channels else None)
        self.dropout = nn.Dropout(dropout) if dropout else None
        conv2 = scale_init(conv_cls(2 * channels, 2 * channels, kernel_size), 0.1)
        self.conv2 = maybe_weight_norm(conv2, weight_norm)
        self.label_map = None
        if num_classes:
            self.label_map = nn.Embedding(num_classes, 2 * channels)
            nn.init.normal_(self.label_map.weight, 0.0, 0.05)

    def forward(self, x: Tensor, a: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        c = self.conv1(concat_elu(x))
        if a is not None:
            c = c + self.nin(concat_elu(a))
        c = concat_elu(c)
        if self.dropout is not None:
            c = self.dropout(c)
        c = self.conv2(c)
        if self.label_map is not None:
            if y is None:
                raise ValueError("this gated resnet is class-conditional: pass labels y")
            c = c + self.label_map(y)[:, :, None, None]
        value, gate = c.chunk(2, dim=1)
        return x + value * gate.sigmoid()


def colour_groups(channels: int, groups: int = 3) -> list:
    """Sizes of the ``groups`` contiguous colour blocks (R, G, B) that split ``channels``
    feature maps, as equal as possible (the first blocks one larger when it does not divide).

    >>> colour_groups(32), colour_groups(3), colour_groups(66)
    ([11, 11, 10], [1, 1, 1], [22, 22, 22])
    """
    if channels < groups:
        raise ValueError(f"{channels} feature maps cannot be split into {groups} colour groups: "
                         f"use at least {groups}")
    return [int(len(b)) for b in np.array_split(np.arange(channels), groups)]


def _group_of(channels: int) -> np.ndarray:
    """The colour group (0: R, 1: G, 2: B) of each of ``channels`` feature maps."""
    return np.repeat(np.arange(3), colour_groups(channels))


def colour_mask(out_group, in_group, mask_type: str) -> np.ndarray:
    """(O, I) 0/1 float64 mask between feature maps of colour groups ``out_group`` (O,) and
    ``in_group`` (I,): output group g sees input groups < g (``"A"``) or <= g (``"B"``), the
    R -> G -> B order of the current pixel (PixelRNN Sec. 3.4, the Gated PixelCNN's
    horizontal stack).

    >>> colour_mask([0, 1, 2], [0, 1, 2], "A").astype(int).tolist()
    [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    o, i = np.asarray(out_group)[:, None], np.asarray(in_group)[None, :]
    return ((i < o) if mask_type == "A" else (i <= o)).astype(np.float64)


class _ColourMasked:
    """Mixin: the convolution runs with ``weight * mask`` (``self.mask``: a float64 NumPy
    array of the weight's shape, not in the state_dict, as :class:`gmcore.nn.MaskedConv2d`'s);
    the masked-out weights get zero gradient. Groups may be unequal, unlike ``groups_rgb=3``."""

    def _masked_weight(self) -> Tensor:
        w = self.weight
        key = (str(w.device), str(w.dtype))
        if getattr(self, "_mask_key", None) != key:
            self._mask_tensor = gc.tensor(self.mask, dtype=w.dtype, device=w.device)
            self._mask_key = key
        return w * self._mask_tensor


class ColourMaskedConv2d(_ColourMasked, nn.Conv2d):
    """A 1x1 convolution between colour-grouped feature maps (``in_channels`` and
    ``out_channels`` each split by :func:`colour_groups`): output group g sees input groups
    <= g (mask ``"B"``) or < g (``"A"``).

    >>> import gmcore as gm
    >>> conv = ColourMaskedConv2d(4, 3, "B")
    >>> conv.mask[:, :, 0, 0].astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    >>> conv(gm.randn(2, 4, 5, 5)).shape
    gmcore.Size([2, 3, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, mask_type: str = "B"):
        super().__init__(in_channels, out_channels, 1)
        self.mask_type = mask_type
        self.mask = colour_mask(_group_of(out_channels), _group_of(in_channels), mask_type)[:, :, None, None]

    def forward(self, input: Tensor) -> Tensor:
        return F.conv2d(input, self._masked_weight(), self.bias)


class ColourMaskedRowConv2d(_ColourMasked, nn.DownRightShiftedConv2d):
    """The Gated PixelCNN's horizontal convolution for RGB: a down-right shifted (1, ``kw``)
    convolution (columns ``j - kw + 1 .. j`` of the current row) whose centre tap (column
    ``j``, the current pixel) is colour-masked, ``mask_type`` ``"A"`` on the image (group g
    sees the current pixel's colours < g) and ``"B"`` on features; every colour of the pixels
    to the left stays visible. The output is a gate's input, two halves ``[a | b]`` each split
    in colour groups, so ``chunk(2)`` pairs ``a`` and ``b`` of the same group.

    >>> import gmcore as gm
    >>> conv = ColourMaskedRowConv2d(3, 6, 2, "A")        # 2 x 3 outputs, (1, 2) kernel
    >>> conv.mask[:, :, 0, 1].astype(int).tolist()         # the centre tap
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0]]
    >>> conv(gm.randn(2, 3, 4, 4)).shape
    gmcore.Size([2, 6, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, kw: int, mask_type: str):
        if out_channels % 2:
            raise ValueError(f"ColourMaskedRowConv2d feeds a gate: out_channels must be even, got {out_channels}")
        super().__init__(in_channels, out_channels, (1, kw))
        self.mask_type = mask_type
        half = _group_of(out_channels // 2)
        mask = np.ones((out_channels, in_channels, 1, kw))
        mask[:, :, 0, -1] = colour_mask(np.concatenate([half, half]), _group_of(in_channels), mask_type)
        self.mask = mask

    def forward(self, input: Tensor) -> Tensor:
        return F.down_right_shifted_conv2d(input, self._masked_weight(), self.bias, self.stride)


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

    ``colours=3`` (RGB images, channels R, G, B): the horizontal stack's feature maps are split
    in three colour groups (:func:`colour_groups`) and carry the current pixel's colours in
    order, so that group g at ``(i, j)`` depends on the colours < g of pixel ``(i, j)`` (and on
    everything before it): the horizontal convolution's centre tap is colour-masked
    (:class:`ColourMaskedRowConv2d`), mask A in the first layer, which then takes the image
    unshifted, and mask B after; the 1x1 output convolution is a mask-B
    :class:`ColourMaskedConv2d`; the gate and the residual stay within a group. The vertical
    stack and the v -> h link need no mask: ``v`` at row ``i`` sees rows ``< i`` only, every
    colour of which comes before every colour of row ``i``.
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, first: bool = False,
                 colours: int = 1, dropout: float = 0.0):
        super().__init__()
        if colours not in (1, 3):
            raise ValueError(f"GatedStackLayer: colours must be 1 or 3, got {colours!r}")
        k = kernel_size
        self.first = first
        self.channels = channels
        self.colours = colours
        self.vconv = nn.DownShiftedConv2d(in_channels, 2 * channels, (k // 2 + 1, k))
        if colours == 3:
            self.hconv = ColourMaskedRowConv2d(in_channels, 2 * channels, k // 2 + 1, "A" if first else "B")
        else:
            self.hconv = nn.DownRightShiftedConv2d(in_channels, 2 * channels, (1, k // 2 + 1))
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.hout = ColourMaskedConv2d(channels, channels, "B") if colours == 3 else nn.Conv2d(channels, channels, 1)
        # on the gated outputs: the vertical stack's, and the horizontal one's inside the residual
        # branch (before its 1x1), as PixelCNN++'s gated resnets drop inside the branch;
        # elementwise, so causality is unchanged
        self.drop = nn.Dropout(dropout) if dropout else None

    @staticmethod
    def _gate(x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a.tanh() * b.sigmoid()

    def forward(self, v: Tensor, h: Tensor, cond: Tensor | None = None):
        if self.first:
            v = F.down_shift(v)
            if self.colours == 1:        # RGB: the mask-A centre tap keeps the current pixel out
                h = F.right_shift(h)
        v_pre = self.vconv(v)
        h_pre = self.hconv(h) + self.link(v_pre)
        if cond is not None:
            if cond.ndim == 2:
                cond = cond[:, :, None, None]
            cv, ch = cond.chunk(2, dim=1)
            v_pre = v_pre + cv
            h_pre = h_pre + ch
        v_out, h_gated = self._gate(v_pre), self._gate(h_pre)
        if self.drop is not None:
            v_out, h_gated = self.drop(v_out), self.drop(h_gated)
        h_out = self.hout(h_gated)
        return v_out, (h_out if self.first else h + h_out)


class CategoricalPixels:
    """For a model whose ``logits(x)`` gives (B, C, num_levels, H, W) logits of every pixel's
    categorical conditional (``pixelcnn``, ``pixelrnn``): the exact ``nll`` and the bits/dim
    ``loss``. Needs ``self.levels`` and ``self.data``."""

    def _levels_of(self, x: Tensor) -> Tensor:
        return (x * (self.levels - 1)).round().long()

    def nll(self, batch, generator=None) -> Tensor:
        """Exact -log p(x) in nats per example (B,)."""
        x = batch[0]
        logp = self.logits(x).log_softmax(2)
        return -logp.gather(2, self._levels_of(x).unsqueeze(2)).sum((1, 2, 3, 4))

    def loss(self, batch):
        nll = self.nll(batch).mean()
        bpd = nll / (self.data.dims * math.log(2.0))
        return bpd, {"bits_per_dim": bpd.item()}


class ClassConditional:
    """For a model conditioned on class labels when ``self.num_classes`` > 0 (``gated-pixelcnn``,
    ``pixelcnn++ --conditional``): its ``nll_kind``, ``class_conditional`` (samples drawn
    without labels cycle through the classes, and a run reports their label accuracy) and the
    checked labels of a batch."""

    @property
    def nll_kind(self):
        return "exact, class-conditional: -log p(x | y)" if self.num_classes else "exact"

    @property
    def class_conditional(self) -> bool:
        return self.num_classes > 0

    def _labels(self, batch) -> Tensor | None:
        if not self.num_classes:
            return None
        if len(batch) < 2:
            raise ValueError(f"{self.model_name} is class-conditional: batches must be (images, labels) "
                             f"(or build it without --conditional)")
        y = batch[1]
        if y.ndim != 1 or y.shape[0] != batch[0].shape[0]:
            raise ValueError(f"{self.model_name}: labels must be (B,) for images of shape "
                             f"{tuple(batch[0].shape)}, got {tuple(y.shape)}")
        return y.long()


@dataclass
class LabelSampleOptions:
    labels: str = field(default="", metadata={
        "help": "class labels of a class-conditional model's samples, comma-separated and repeated "
                "in turn to fill --n (e.g. 7, or 0,1,2); empty: the classes in turn, 0, 1, 2, ..."})


def sample_labels(model: str, labels, n: int, num_classes: int, device) -> Tensor | None:
    """The (n,) int64 labels a pixel model samples with, or None for an unconditional model.

    ``labels``: None or "" (the classes in turn: 0, 1, ..., num_classes - 1, 0, 1, ...); a
    comma-separated string, as ``gmcore sample RUN --labels 7`` passes it (repeated in turn to
    fill ``n``); or a Tensor / sequence of exactly ``n`` labels. Anything else, a label outside
    [0, num_classes) or labels for an unconditional model is a ValueError naming ``model``.

    >>> sample_labels("m", "7", 3, 10, "cpu").tolist(), sample_labels("m", None, 3, 2, "cpu").tolist()
    ([7, 7, 7], [0, 1, 0])
    """
    given = not (labels is None or (isinstance(labels, str) and not labels.strip()))
    if not num_classes:
        if given:
            raise ValueError(f"{model}.sample: this model is unconditional; labels are not used")
        return None
    if not given:
        return gc.arange(n, dtype=int64, device=device) % num_classes
    if isinstance(labels, str):
        values = int_list(labels, "labels", model)
        if not values:
            raise ValueError(f"{model}: --labels must be comma-separated integers, got {labels!r}")
        labels = gc.tensor(np.resize(np.asarray(values, dtype=np.int64), n))
    labels = (labels if isinstance(labels, Tensor) else gc.tensor(labels)).long().to(device)
    if tuple(labels.shape) != (n,):
        raise ValueError(f"{model}.sample: labels must be ({n},), got {tuple(labels.shape)}")
    if int(labels.min().item()) < 0 or int(labels.max().item()) >= num_classes:
        raise ValueError(f"{model}.sample: labels must lie in [0, {num_classes})")
    return labels


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
