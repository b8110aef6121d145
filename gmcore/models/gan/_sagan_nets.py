"""The residual networks of SAGAN and BigGAN (after Miyato & Koyama 2018's projection-
discriminator ResNets), with spectral normalisation on every weight layer (torch's hook form,
:func:`gmcore.nn.utils.spectral_norm`), SAGAN's self-attention at one resolution, and the
generator's batch norm conditioned on the class (SAGAN) or on the shared class embedding and a
chunk of z (BigGAN).

Generator: z -> linear to a (C0, s0, s0) grid -> residual up-blocks (BN, ReLU, 2x nearest
upsampling, 3x3 conv, BN, ReLU, 3x3 conv; the shortcut a 1x1 conv of the upsampled input), each
halving the channels -> BN, ReLU, 3x3 conv -> sigmoid into [0, 1] (the papers' tanh targets
[-1, 1]). Discriminator: residual blocks (the first without pre-activation, all but the last ending in
2x2 average pooling, so it ends at twice the generator's starting grid, as SN-GAN's) doubling the
channels -> ReLU -> sum over positions -> linear, plus the projection ``<embed(y), h>`` when
class-conditional; it sees images mapped to [-1, 1].
"""
from __future__ import annotations

import numpy as np

from ... import functional as gf
from ... import nn
from ...nn import functional as F
from ...nn.utils import spectral_norm

__all__ = ["resnet_stages", "ResNetGenerator", "ResNetDiscriminator"]


def resnet_stages(height: int, width: int) -> int:
    """Up-blocks from the smallest grid: halve H and W while both stay even and at least 2, at
    most 3 times. 8x8 digits: 2 (from 2x2); 28x28: 2 (from 7x7); 32x32: 3 (from 4x4)."""
    s = 0
    while s < 3 and height % 2 ** (s + 1) == 0 and width % 2 ** (s + 1) == 0 \
            and height // 2 ** (s + 1) >= 2 and width // 2 ** (s + 1) >= 2:
        s += 1
    return s


def latent_chunks(latent_dim: int, stages: int) -> list:
    """BigGAN's hierarchical latent: the sizes of z's chunks, one for the first linear layer and
    one per up-block, as equal as possible (the first ones one larger)."""
    if latent_dim < stages + 1:
        raise ValueError(f"a hierarchical latent of {stages + 1} chunks needs --latent-dim >= {stages + 1}, "
                         f"got {latent_dim}")
    return [len(a) for a in np.array_split(np.arange(latent_dim), stages + 1)]


def _sn(module, on: bool):
    return spectral_norm(module) if on else module


class _Norm(nn.Module):
    """Batch norm, unconditional (``kind`` "none"), from the class (``"class"``: a class
    embedding's gains and biases) or from a vector (``"linear"``: BigGAN)."""

    def __init__(self, channels: int, kind: str, cond: int, sn: bool):
        super().__init__()
        self.kind = kind
        if kind == "none":
            self.bn = nn.BatchNorm2d(channels)
        elif kind == "class":
            self.bn = nn.ConditionalBatchNorm2d(channels, cond)
        else:
            self.bn = nn.LinearConditionalBatchNorm2d(channels, cond)
            _sn(self.bn.gain, sn), _sn(self.bn.bias, sn)   # BigGAN: SN on the gain and bias maps too

    def forward(self, x, cond=None):
        return self.bn(x) if self.kind == "none" else self.bn(x, cond)


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str, cond: int, sn: bool = True):
        super().__init__()
        self.bn1, self.bn2 = _Norm(cin, norm, cond, sn), _Norm(cout, norm, cond, sn)
        self.conv1 = _sn(nn.Conv2d(cin, cout, 3, padding=1), sn)
        self.conv2 = _sn(nn.Conv2d(cout, cout, 3, padding=1), sn)
        self.skip = _sn(nn.Conv2d(cin, cout, 1), sn)

    def forward(self, x, cond=None):
        h = F.interpolate(F.relu(self.bn1(x, cond)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, first: bool, down: bool = True, sn: bool = True):
        super().__init__()
        self.first = first   # the first block sees the image: no activation before its conv
        self.down = down     # ends in 2x2 average pooling
        self.conv1 = _sn(nn.Conv2d(cin, cout, 3, padding=1), sn)
        self.conv2 = _sn(nn.Conv2d(cout, cout, 3, padding=1), sn)
        self.skip = _sn(nn.Conv2d(cin, cout, 1), sn)

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if not self.down:
            return h + self.skip(x)
        # the first block pools before its 1x1 shortcut, the others after (SN-GAN's code)
        sc = self.skip(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.skip(x), 2)
        return F.avg_pool2d(h, 2) + sc


class ResNetGenerator(nn.Module):
    """z (B, latent_dim) and the labels (B,) -> images (B, C, H, W) in [0, 1].

    ``norm``: ``"none"`` (unconditional batch norm), ``"class"`` (SAGAN's class-conditional BN)
    or ``"hierarchical"`` (BigGAN: z split into ``stages + 1`` chunks, the first to the linear
    layer, one per block, each concatenated with the shared class embedding of ``shared_dim``
    and mapped to that block's BN gains and biases). ``attention_res``: the side of the feature
    map after which self-attention runs (0: none)."""

    def __init__(self, latent_dim: int, shape, channels: int, norm: str = "none", num_classes: int = 0,
                 shared_dim: int = 0, attention_res: int = 0, sn: bool = True):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        self.stages = resnet_stages(h, w)
        self.norm = norm
        s0h, s0w = h // 2 ** self.stages, w // 2 ** self.stages
        widths = [channels * 2 ** (self.stages - i) for i in range(self.stages + 1)]
        self.start = (widths[0], s0h, s0w)
        if norm == "hierarchical":
            self.chunks = latent_chunks(latent_dim, self.stages)
            self.shared = nn.Embedding(num_classes, shared_dim)   # BigGAN: no SN on the shared embedding
            kind, cond, z0 = "linear", self.chunks[1] + shared_dim, self.chunks[0]
            if len(set(self.chunks[1:])) != 1:   # every block's condition has one width
                raise ValueError(f"--latent-dim {latent_dim} must split into {self.stages + 1} chunks whose "
                                 f"last {self.stages} are equal, e.g. {(self.stages + 1) * 8}")
        else:
            kind, cond, z0 = ("class" if norm == "class" else "none"), num_classes, latent_dim
        self.linear = _sn(nn.Linear(z0, widths[0] * s0h * s0w), sn)
        self.blocks = nn.ModuleList([GBlock(widths[i], widths[i + 1], kind, cond, sn) for i in range(self.stages)])
        side = [min(s0h, s0w) * 2 ** (i + 1) for i in range(self.stages)]
        self.attention_after = side.index(attention_res) if attention_res in side else -1
        if attention_res and self.attention_after < 0:
            raise ValueError(f"--attention-res {attention_res}: the generator's blocks output sides {side}")
        self.attention = nn.SAGANSelfAttention(widths[self.attention_after + 1]) if attention_res else None
        if self.attention is not None:
            for m in (self.attention.f, self.attention.g, self.attention.h, self.attention.v):
                _sn(m, sn)
        self.out_bn = nn.BatchNorm2d(widths[-1])
        self.out_conv = _sn(nn.Conv2d(widths[-1], c, 3, padding=1), sn)

    def forward(self, z, labels=None):
        if self.norm == "hierarchical":
            zs = gf.split(z, self.chunks, 1)
            shared = self.shared(labels)
            h, conds = zs[0], [gf.cat([zi, shared], 1) for zi in zs[1:]]
        else:
            h, conds = z, [labels] * self.stages
        h = self.linear(h).reshape(z.shape[0], *self.start)
        for i, block in enumerate(self.blocks):
            h = block(h, conds[i] if self.norm != "none" else None)
            if i == self.attention_after:
                h = self.attention(h)
        return self.out_conv(F.relu(self.out_bn(h))).sigmoid()


class ResNetDiscriminator(nn.Module):
    """Images (B, C, H, W) and labels (B,) -> a score (B, 1): residual down-blocks from
    ``channels`` doubling, ReLU, sum over positions, a linear layer, plus the projection
    ``<embed(y), h>`` (Miyato & Koyama 2018) when ``num_classes`` > 0. Self-attention after the
    block whose output side is ``attention_res`` (0: none)."""

    def __init__(self, shape, channels: int, num_classes: int = 0, attention_res: int = 0, sn: bool = True):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        stages = resnet_stages(h, w)
        widths = [c] + [channels * 2 ** i for i in range(stages)]
        # the last block keeps its side (SN-GAN's CIFAR discriminator ends at twice the
        # generator's starting grid): every 2x2 pooling halves a 1-Lipschitz network's scores,
        # and with the last one too the 8x8 digits' scores stayed within +-0.3 (hinge d_loss 1.9)
        self.blocks = nn.ModuleList([DBlock(widths[i], widths[i + 1], i == 0, i < stages - 1, sn)
                                     for i in range(stages)])
        side = [min(h, w) // 2 ** min(i + 1, stages - 1) for i in range(stages)]
        self.attention_after = side.index(attention_res) if attention_res in side else -1
        if attention_res and self.attention_after < 0:
            raise ValueError(f"--attention-res {attention_res}: the discriminator's blocks output sides {side}")
        self.attention = nn.SAGANSelfAttention(widths[self.attention_after + 1]) if attention_res else None
        if self.attention is not None:
            for m in (self.attention.f, self.attention.g, self.attention.h, self.attention.v):
                _sn(m, sn)
        self.head = _sn(nn.Linear(widths[-1], 1), sn)
        self.embed = _sn(nn.Embedding(num_classes, widths[-1]), sn) if num_classes else None

    def forward(self, x, labels=None):
        # the papers' range [-1, 1]: every layer is 1-Lipschitz, so the scores scale with the
        # input, and on [0, 1] digits they hardly reach the hinge's margins of 1
        h = x * 2.0 - 1.0
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attention_after:
                h = self.attention(h)
        h = F.relu(h).sum((2, 3))
        out = self.head(h)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(1, keepdim=True)
        return out
