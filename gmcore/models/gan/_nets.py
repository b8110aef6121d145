"""Generator and discriminator networks shared by the GANs: MLPs for vectors (the 2-D toys, or
flattened images) and DCGAN-style convolutions for images (Radford et al. 2016)."""
from __future__ import annotations

from ... import nn
from ...tensor import Tensor

__all__ = ["mlp_generator", "MLPDiscriminator", "ConvGenerator", "ConvDiscriminator", "upsampling_stages"]


def mlp_generator(latent_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    """z -> ``layers`` Linear + ReLU of width ``hidden`` -> a linear output (the caller maps it
    into the data range)."""
    mods, d = [], latent_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    return nn.Sequential(*mods, nn.Linear(d, out_dim))


class MLPDiscriminator(nn.Module):
    """x (flattened) -> ``layers`` Linear + LeakyReLU(0.2) -> one logit (or critic value), plus
    the class logits of an AC-GAN (``outputs`` = 1 + classes). ``minibatch_kernels`` > 0 puts
    minibatch discrimination before the head. ``features(x)`` is the last hidden layer (what
    feature matching matches)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, outputs: int = 1, minibatch_kernels: int = 0):
        super().__init__()
        mods, d = [nn.Flatten()], in_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2)]
            d = hidden
        self.body = nn.Sequential(*mods)
        self.minibatch = _minibatch(d, minibatch_kernels)
        self.head = nn.Linear(d + minibatch_kernels, outputs)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.minibatch(self.body(x)))


def _minibatch(features: int, kernels: int):
    return nn.gan.MinibatchDiscrimination(features, kernels, MINIBATCH_KERNEL_DIM) if kernels else nn.Identity()


MINIBATCH_KERNEL_DIM = 5   # C of minibatch discrimination's kernels (Salimans et al. 2016 used 5)


def upsampling_stages(height: int, width: int) -> int:
    """The generator's stride-2 stages: as many as keep the starting grid at least 4x4 (and H, W
    divisible), at most 3. 8x8 digits: 1 (from 4x4), 28x28: 2 (from 7x7), 32x32: 3 (from 4x4)."""
    s = 0
    while s < 3 and height % 2 ** (s + 1) == 0 and width % 2 ** (s + 1) == 0 \
            and height // 2 ** (s + 1) >= 4 and width // 2 ** (s + 1) >= 4:
        s += 1
    return s


def _norm(kind: str, channels: int):
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":      # over (C, H, W) of each example: what WGAN-GP's critic may use
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class ConvGenerator(nn.Module):
    """DCGAN's generator: z -> Linear to a (C0, h0, w0) grid, then ``stages`` 4x4 stride-2
    transposed convolutions halving the channels, batch norm and ReLU between, a 3x3 conv to the
    image's channels and a sigmoid into [0, 1] (the data range; DCGAN's tanh maps to [-1, 1]).

    ``vbn_reference`` R > 0 replaces batch norm by virtual batch norm (Salimans et al. 2016):
    a fixed reference batch of R noise vectors (the buffer ``reference``, drawn at construction)
    runs in front of every batch and gives the normalisation statistics, its rows then dropped."""

    def __init__(self, latent_dim: int, shape, channels: int, vbn_reference: int = 0):
        super().__init__()
        from ...creation import randn

        c, h, w = (int(v) for v in shape)
        self.stages = upsampling_stages(h, w)
        self.start = (channels * 2 ** self.stages, h // 2 ** self.stages, w // 2 ** self.stages)
        c0, h0, w0 = self.start
        r = int(vbn_reference)

        def norm(ch):
            return nn.gan.VirtualBatchNorm2d(ch, r) if r else nn.BatchNorm2d(ch)
        self.reference = nn.Buffer(randn(r, latent_dim)) if r else None
        self.project = nn.Linear(latent_dim, c0 * h0 * w0)
        mods, ch = [norm(c0), nn.ReLU()], c0
        for _ in range(self.stages):
            mods += [nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1), norm(ch // 2), nn.ReLU()]
            ch //= 2
        mods += [nn.Conv2d(ch, c, 3, padding=1)]
        self.body = nn.Sequential(*mods)

    def forward(self, z: Tensor) -> Tensor:
        r = 0 if self.reference is None else self.reference.shape[0]
        if r:
            from ... import functional as gf
            z = gf.cat([self.reference, z], 0)
        out = self.body(self.project(z).reshape(z.shape[0], *self.start)).sigmoid()
        return out[r:] if r else out


class ConvDiscriminator(nn.Module):
    """DCGAN's discriminator: 4x4 stride-2 convolutions doubling the channels from ``channels``
    (no normalisation on the first, ``norm`` on the others: batch for the probabilistic GANs,
    layer or none for a critic with a gradient penalty), LeakyReLU(0.2), then a linear layer to
    ``outputs`` (1, or 1 + classes for an AC-GAN). ``extra_channels``: input channels beside
    the image's (a cGAN's label maps). ``minibatch_kernels`` > 0 puts minibatch discrimination
    before the head. ``features(x)`` is the last hidden layer (for feature matching)."""

    def __init__(self, shape, channels: int, norm: str = "batch", extra_channels: int = 0, outputs: int = 1,
                 minibatch_kernels: int = 0):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        c += extra_channels
        mods, ch = [nn.Conv2d(c, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)], channels
        h, w = h // 2, w // 2
        for _ in range(upsampling_stages(h * 2, w * 2)):
            mods += [nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1), _norm(norm, ch * 2), nn.LeakyReLU(0.2)]
            ch, h, w = ch * 2, h // 2, w // 2
        self.body = nn.Sequential(*mods, nn.Flatten())
        self.blocks = sum(isinstance(m, nn.LeakyReLU) for m in mods)   # conv blocks, each ending in one
        self.minibatch = _minibatch(ch * h * w, minibatch_kernels)
        self.head = nn.Linear(ch * h * w + minibatch_kernels, outputs)

    def features(self, x: Tensor, layer: int = 0) -> Tensor:
        """The activations after conv block ``layer`` (1 = the first; 0 = the last), flattened to
        (B, F); the network stops there."""
        return self.forward_and_features(x, layer, head=False)[1]

    def forward_and_features(self, x: Tensor, layer: int = 0, head: bool = True):
        """(the outputs, or None without ``head``; ``features(x, layer)``) from one pass."""
        layer = layer or self.blocks
        if not 1 <= layer <= self.blocks:
            raise ValueError(f"feature layer {layer} does not exist: this discriminator has conv blocks "
                             f"1..{self.blocks} (0 = the last)")
        seen, feats = 0, None
        for m in self.body:
            x = m(x)
            if isinstance(m, nn.LeakyReLU):
                seen += 1
                if seen == layer:
                    feats = x.reshape(x.shape[0], -1)
                    if not head:
                        return None, feats
        return self.head(self.minibatch(x)), feats

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.minibatch(self.body(x)))
