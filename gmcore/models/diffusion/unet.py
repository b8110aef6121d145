"""The diffusion U-Net (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"; the layout of
Nichol & Dhariwal 2021's improved-diffusion ``unet.py``, simplified).

``UNet(x_t, t, y) -> (B, out_channels, H, W)``: the network that predicts eps (or x0, or v; twice
the channels with a learned variance) from a noisy image, its timestep and optionally its label.

* **Time embedding.** ``timestep_embedding(t, channels)`` (sinusoids of the *float* t, so
  continuous-time models work too) -> Linear -> SiLU -> Linear to ``4 * channels``.
* **Class embedding** (``num_classes`` K > 0): an ``Embedding`` of K + 1 rows added to the time
  embedding. Row K is the "null" label of classifier-free guidance: ``y == K`` (or ``y=None``)
  means unconditional.
* **Residual blocks:** GroupNorm, SiLU, 3x3 conv, + a per-channel projection of the embedding,
  GroupNorm, SiLU, dropout, 3x3 conv (zero-initialised, improved-diffusion's ``zero_module``,
  so every block starts as its skip path), 1x1 skip conv when the channel count changes.
* **Levels:** ``channel_mult[i] * channels`` channels at level i, ``num_res_blocks`` residual
  blocks each; stride-2 3x3 convs go down, nearest x2 + 3x3 conv go up; every down-path
  activation is concatenated back on the way up (``num_res_blocks + 1`` up blocks per level).
* **Self-attention** (:class:`gmcore.nn.SelfAttention2d`, ``num_heads`` heads, zero-initialised
  output projection) after the residual blocks of every level whose feature map is
  ``attention_resolutions`` pixels high for an ``image_size`` input (8x8 digits with
  ``channel_mult=(1, 2)`` have maps 8 and 4), and in the middle block.
* **GroupNorm groups:** ``groups`` (32) for wide layers (64 channels and up); a narrower layer
  uses the largest divisor of its width not above ``min(groups, width // 2)`` (16 channels -> 8
  groups, 24 -> 12). At least two channels per group matters: the embedding is added as one
  constant per channel just before the second GroupNorm, and a one-channel group would subtract
  it again (with ``groups == channels`` the block would ignore t and y entirely).
  ``scale_shift_norm=True`` (improved-diffusion's ``use_scale_shift_norm``) applies the
  embedding after the norm instead: a per-channel scale and shift that no norm removes.
* **Output:** GroupNorm, SiLU, 3x3 conv, zero-initialised: an untrained net outputs 0.
* **Text context** (``context_dim`` D > 0, GLIDE's ``Text2ImUNet``, Nichol et al. 2021): the
  forward takes ``context`` (B, L, D), a text encoder's token sequence, and an optional
  ``context_mask`` (B, L), True at padding. Every attention layer (:class:`ContextAttention2d`)
  projects the tokens to extra keys and values, concatenated to the image positions' (padding
  masked out), so each pixel attends to the caption as well; the last token (the pooled one,
  the caption's end when captions are left-padded) is projected (``context_pool``) and added to
  the time embedding. ``context=None`` runs the net without a caption (image keys only, no
  pooled term); a caption-conditioned model instead feeds the encoding of the empty caption.

The input's H and W must be divisible by 2^(levels - 1); the attention levels are fixed at
construction from ``image_size`` (default 8, the digits), other sizes pass through the same
layers.

>>> import gmcore as gm
>>> net = UNet(1, 1, channels=16, num_heads=2)
>>> out = net(gm.randn(3, 1, 8, 8), gm.tensor([0, 10, 999]))
>>> out.shape, float(out.abs().max())
(gmcore.Size([3, 1, 8, 8]), 0.0)
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ... import functional as gf
from ... import nn
from ...creation import tensor as _tensor
from ...creation import zeros_like as _zeros_like
from ...nn import functional as F
from ...tensor import Tensor

__all__ = ["UNet", "ContextAttention2d", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) of float timesteps: ``[cos(t f_i), sin(t f_i)]`` with
    frequencies ``f_i = max_period^(-i / (dim // 2))``, i < dim // 2 (improved-diffusion's
    ``timestep_embedding``; a zero column pads an odd ``dim``). Integer ``t`` is cast to float32;
    a float ``t`` keeps its dtype and stays differentiable.

    >>> import gmcore as gm
    >>> timestep_embedding(gm.tensor([0, 5]), 4)[0].tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    half = dim // 2
    if not t.is_floating_point():
        t = t.float()
    freqs = np.exp(-math.log(max_period) * np.arange(half) / half)
    freqs = _tensor(freqs.astype(t.data.dtype), device=t.device)
    args = t.reshape(-1, 1) * freqs.reshape(1, -1)
    parts = [gf.cos(args), gf.sin(args)]
    if dim % 2:
        parts.append(_zeros_like(args[:, :1]))
    return gf.cat(parts, 1)


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` not above ``min(groups, channels // 2)`` (GroupNorm
    needs a divisor; two channels or more per group keep the per-channel embedding shift)."""
    g = max(1, min(groups, channels // 2))
    while channels % g:
        g -= 1
    return g


def _zero(module):
    """Zero a layer's weight and bias (improved-diffusion's ``zero_module``)."""
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv3x3, + embedding projection, GroupNorm, SiLU, dropout, conv3x3 (zero
    init), added to the input (through a 1x1 conv when the channel count changes). With
    ``scale_shift`` the projection gives (scale, shift) applied after the second GroupNorm."""

    def __init__(self, in_ch, out_ch, emb_dim, dropout, groups, scale_shift=False):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch, groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        """``emb`` is the embedding after its SiLU (computed once per forward, not per block)."""
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb_proj(emb).reshape(h.shape[0], -1, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, 1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv: halves H and W."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        n, c, h, w = x.shape
        # nearest x2 as a broadcast + reshape: one copy, and its backward is one sum
        x = x.reshape(n, c, h, 1, w, 1).expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)
        return self.conv(x)


class ContextAttention2d(nn.SelfAttention2d):
    """:class:`gmcore.nn.SelfAttention2d` whose keys and values also include a token sequence
    (GLIDE's attention block with ``encoder_channels``): ``forward(x, context, mask)`` with
    ``context`` (N, L, context_dim) projected by ``context_kv`` to L more keys and values, and
    ``mask`` (N, L) True where a token is padding (never attended to). ``context=None``: plain
    self-attention, as the parent.

    >>> import gmcore as gm
    >>> block = ContextAttention2d(8, context_dim=6, num_heads=2)
    >>> block(gm.randn(2, 8, 4, 4), gm.randn(2, 3, 6)).shape
    gmcore.Size([2, 8, 4, 4])
    """

    def __init__(self, channels, context_dim, num_heads=1, num_groups=32):
        super().__init__(channels, num_heads=num_heads, num_groups=num_groups)
        self.context_dim = _check_int(context_dim, "context_dim", 1)
        self.context_kv = nn.Linear(self.context_dim, 2 * channels)

    def forward(self, x, context=None, mask=None):
        if context is None:
            return super().forward(x)
        N, C, H, W = x.shape
        if context.ndim != 3 or context.shape[0] != N or context.shape[2] != self.context_dim:
            raise ValueError(f"ContextAttention2d: context must be ({N}, L, {self.context_dim}), got "
                             f"{tuple(context.shape)}")
        nh = self.num_heads
        h = F.group_norm(x, self.num_groups, self.norm_weight, self.norm_bias, self.eps)
        h = h.reshape(N, C, H * W).transpose(1, 2)                       # (N, HW, C)
        q, k, v = F.linear(h, self.qkv_weight, self.qkv_bias).split([C, C, C], 2)
        ck, cv = self.context_kv(context).chunk(2, 2)                     # (N, L, C) each
        k, v = gf.cat([k, ck], 1), gf.cat([v, cv], 1)

        def heads(t):  # (N, S, C) -> (N, heads, S, C / heads)
            return t.reshape(N, t.shape[1], nh, -1).transpose(1, 2)
        allowed = None
        if mask is not None:   # True = allowed (torch's bool convention): every pixel, no padding
            pixels = _tensor(np.ones((N, H * W), dtype=np.bool_), device=x.device)
            allowed = gf.cat([pixels, mask.logical_not()], 1).reshape(N, 1, 1, -1)
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=allowed)
        out = out.transpose(1, 2).reshape(N, H * W, C)
        out = F.linear(out, self.proj_weight, self.proj_bias).transpose(1, 2).reshape(N, C, H, W)
        return x + out


def _run(step, h, emb, context=None):
    """Apply one U-Net step (a ModuleList of ResBlock / attention / resampling layers);
    ``context``: (tokens, mask) for the attention layers that read a caption."""
    for layer in step:
        if isinstance(layer, ResBlock):
            h = layer(h, emb)
        elif isinstance(layer, ContextAttention2d):
            h = layer(h, *context) if context is not None else layer(h)
        else:
            h = layer(h)
    return h


def _check_int(v, name, minimum):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"UNet: {name} must be an int >= {minimum}, got {v!r}")
    return int(v)


class UNet(nn.Module):
    """The diffusion U-Net; see the module docstring for the layout.

    Args:
        in_channels, out_channels: image channels in and out (out = 2 * in with a learned
            variance).
        channels: base width; the time embedding is ``4 * channels`` wide.
        channel_mult: width multiplier of each level; ``len(channel_mult)`` levels, each below
            the first at half the resolution.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map heights (for an ``image_size`` input) whose level
            gets self-attention; the middle block always has it.
        dropout: dropout rate inside the residual blocks.
        num_classes: K > 0 adds a class embedding of K + 1 rows (row K: unconditional).
        num_heads: attention heads (must divide every attended level's width).
        groups: GroupNorm groups (fewer in layers narrower than ``2 * groups``: see above).
        image_size: the input height the attention resolutions refer to (default 8: digits).
        scale_shift_norm: condition the blocks as ``GroupNorm(h) * (1 + scale) + shift``
            (improved-diffusion's ``use_scale_shift_norm``, its best models' choice) instead of
            adding the embedding before the GroupNorm.
        context_dim: D > 0: the width of a text context the attention layers read and whose last
            token joins the time embedding (GLIDE; see the module docstring).

    ``forward(x, t, y=None)``: ``x`` (B, in_channels, H, W); ``t`` (B,) int64 or float
    timesteps, or one number for the whole batch; ``y`` (B,) int64 labels in [0, K] (K: null),
    only with ``num_classes``; ``y=None`` then means all null; ``context`` (B, L, context_dim)
    and ``context_mask`` (B, L) bool, True at padding: only with ``context_dim``.

    >>> import gmcore as gm
    >>> net = UNet(1, 2, channels=16, num_classes=10, num_heads=2)
    >>> net(gm.randn(2, 1, 8, 8), gm.tensor([3, 7]), gm.tensor([1, 10])).shape
    gmcore.Size([2, 2, 8, 8])
    """

    def __init__(self, in_channels, out_channels, channels=64, channel_mult=(1, 2),
                 num_res_blocks=2, attention_resolutions=(4,), dropout=0.0, num_classes=0,
                 num_heads=4, groups=32, image_size=8, scale_shift_norm=False, context_dim=0):
        super().__init__()
        self.in_channels = _check_int(in_channels, "in_channels", 1)
        self.out_channels = _check_int(out_channels, "out_channels", 1)
        self.channels = _check_int(channels, "channels", 1)
        self.channel_mult = tuple(_check_int(m, "each channel_mult", 1) for m in channel_mult)
        if not self.channel_mult:
            raise ValueError("UNet: channel_mult needs at least one level")
        self.num_res_blocks = _check_int(num_res_blocks, "num_res_blocks", 1)
        self.num_classes = _check_int(num_classes, "num_classes", 0)
        self.num_heads = _check_int(num_heads, "num_heads", 1)
        self.groups = _check_int(groups, "groups", 1)
        self.image_size = _check_int(image_size, "image_size", 1)
        self.scale_shift_norm = bool(scale_shift_norm)
        self.context_dim = _check_int(context_dim, "context_dim", 0)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"UNet: dropout must be in [0, 1), got {dropout!r}")
        levels = len(self.channel_mult)
        self.factor = 2 ** (levels - 1)
        if self.image_size % self.factor:
            raise ValueError(f"UNet: image_size {self.image_size} is not divisible by "
                             f"2^(levels - 1) = {self.factor} ({levels} levels)")
        maps = [self.image_size >> i for i in range(levels)]
        self.attention_resolutions = tuple(_check_int(r, "each attention resolution", 1)
                                           for r in attention_resolutions)
        for r in self.attention_resolutions:
            if r not in maps:
                raise ValueError(f"UNet: attention resolution {r} is none of the feature-map "
                                 f"sizes {maps} of a {self.image_size}x{self.image_size} input")
        attend = [m in self.attention_resolutions for m in maps]

        emb_dim = 4 * self.channels
        self.time_embed = nn.Sequential(nn.Linear(self.channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        if self.num_classes:
            self.label_embed = nn.Embedding(self.num_classes + 1, emb_dim)
        if self.context_dim:
            self.context_pool = nn.Linear(self.context_dim, emb_dim)

        def res(i, o):
            return ResBlock(i, o, emb_dim, dropout, self.groups, self.scale_shift_norm)

        def attn(c):
            if self.context_dim:
                return ContextAttention2d(c, self.context_dim, num_heads=self.num_heads,
                                          num_groups=_groups(c, self.groups))
            return nn.SelfAttention2d(c, num_heads=self.num_heads, num_groups=_groups(c, self.groups))

        # down path: every step's output is kept for the up path
        ch = self.channels
        self.input_conv = nn.Conv2d(self.in_channels, ch, 3, padding=1)
        skips = [ch]
        self.down = nn.ModuleList()
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                step = [res(ch, mult * self.channels)]
                ch = mult * self.channels
                if attend[level]:
                    step.append(attn(ch))
                self.down.append(nn.ModuleList(step))
                skips.append(ch)
            if level != levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
        self.middle = nn.ModuleList([res(ch, ch), attn(ch), res(ch, ch)])
        # up path: each step first concatenates one skip
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(self.num_res_blocks + 1):
                step = [res(ch + skips.pop(), mult * self.channels)]
                ch = mult * self.channels
                if attend[level]:
                    step.append(attn(ch))
                if level and i == self.num_res_blocks:
                    step.append(Upsample(ch))
                self.up.append(nn.ModuleList(step))
        self.out_norm = nn.GroupNorm(_groups(ch, self.groups), ch)
        self.out_conv = _zero(nn.Conv2d(ch, self.out_channels, 3, padding=1))

    # ---- input checks ------------------------------------------------------------------------

    def _check_x(self, x):
        if not isinstance(x, Tensor):
            raise TypeError(f"UNet: x must be a Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet: expected x of shape (B, {self.in_channels}, H, W), got "
                             f"{tuple(x.shape)}")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"UNet: H and W ({x.shape[2]}x{x.shape[3]}) must be divisible by "
                             f"2^(levels - 1) = {self.factor}")

    def _timesteps(self, t, x):
        B = x.shape[0]
        if isinstance(t, numbers.Real) and not isinstance(t, bool):
            t = _tensor(np.full(B, t, dtype=x.data.dtype), device=x.device)
        if not isinstance(t, Tensor):
            raise TypeError(f"UNet: t must be a Tensor (B,) or a number, got {type(t).__name__}")
        if t.data.dtype == np.bool_:
            raise TypeError("UNet: t must hold integer or float timesteps, got bool")
        if t.ndim == 0:
            t = t.reshape(1).expand(B)
        if t.ndim != 1 or t.shape[0] != B:
            raise ValueError(f"UNet: t must have shape ({B},) (one timestep per example), got "
                             f"{tuple(t.shape)}")
        return t if t.dtype == x.dtype else t.to(x.dtype)  # the embedding runs in x's dtype

    def _labels(self, y, B, device):
        K = self.num_classes
        if not K:
            if y is not None:
                raise ValueError("UNet: labels y given to an unconditional net (num_classes=0)")
            return None
        if y is None:  # unconditional: the null row
            return _tensor(np.full(B, K, dtype=np.int64), device=device)
        if not isinstance(y, Tensor) or y.is_floating_point() or y.data.dtype == np.bool_:
            raise TypeError(f"UNet: y must be an int64 Tensor (B,), got "
                            f"{getattr(y, 'dtype', type(y).__name__)}")
        if tuple(y.shape) != (B,):
            raise ValueError(f"UNet: y must have shape ({B},), got {tuple(y.shape)}")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi > K:
            raise ValueError(f"UNet: labels must be in [0, {K}] ({K}: the null label of "
                             f"classifier-free guidance), got values in [{lo}, {hi}]")
        return y

    # ---- forward ------------------------------------------------------------------------------

    def _context(self, context, mask, B):
        """(tokens, mask) checked, or None without a context."""
        if context is None:
            if mask is not None:
                raise ValueError("UNet: context_mask given without a context")
            return None
        if not self.context_dim:
            raise ValueError("UNet: a context given to a net without one (context_dim=0)")
        if not isinstance(context, Tensor) or context.ndim != 3 or context.shape[0] != B \
                or context.shape[2] != self.context_dim:
            raise ValueError(f"UNet: context must be a Tensor ({B}, L, {self.context_dim}), got "
                             f"{tuple(getattr(context, 'shape', ())) or type(context).__name__}")
        if mask is not None and (not isinstance(mask, Tensor) or mask.data.dtype != np.bool_
                                 or tuple(mask.shape) != tuple(context.shape[:2])):
            raise ValueError(f"UNet: context_mask must be a bool Tensor {tuple(context.shape[:2])} "
                             f"(True at padding), got {getattr(mask, 'dtype', type(mask).__name__)} "
                             f"{tuple(getattr(mask, 'shape', ()))}")
        return context, mask

    def forward(self, x, t, y=None, context=None, context_mask=None):
        self._check_x(x)
        t = self._timesteps(t, x)
        y = self._labels(y, x.shape[0], x.device)
        ctx = self._context(context, context_mask, x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.channels))
        if y is not None:
            emb = emb + self.label_embed(y)
        if ctx is not None:   # the pooled caption: its last token
            emb = emb + self.context_pool(context[:, -1])
        emb = F.silu(emb)  # every block's projection starts with SiLU: do it once
        h = self.input_conv(x)
        hs = [h]
        for step in self.down:
            h = _run(step, h, emb, ctx)
            hs.append(h)
        h = _run(self.middle, h, emb, ctx)
        for step in self.up:
            h = _run(step, gf.cat([h, hs.pop()], 1), emb, ctx)
        return self.out_conv(F.silu(self.out_norm(h)))

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"channels={self.channels}, channel_mult={self.channel_mult}, "
                f"num_res_blocks={self.num_res_blocks}, "
                f"attention_resolutions={self.attention_resolutions}, "
                f"num_classes={self.num_classes}, image_size={self.image_size}"
                + (", scale_shift_norm=True" if self.scale_shift_norm else "")
                + (f", context_dim={self.context_dim}" if self.context_dim else ""))
