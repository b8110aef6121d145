"""ProGAN core (Karras, Aila, Laine & Lehtinen 2018, "Progressive Growing of GANs for Improved
Quality, Stability, and Variation"): both networks start at a coarse grid (4x4 for 8x8 digits)
and grow one resolution at a time; each new block *fades in* (its output blended with the
upsampled old path, ``alpha`` going from 0 to 1) in the generator and, mirrored, in the
discriminator, whose real images are downsampled (and blended the same way) to the current
resolution. Every layer has an equalised learning rate (:class:`gmcore.nn.EqualConv2d`:
N(0, 1) weights times He's constant at run time); the generator normalises each pixel's
features (:class:`gmcore.nn.PixelNorm`) after every convolution; the discriminator ends in a
minibatch standard deviation layer (:class:`gmcore.nn.MinibatchStdDev`, groups of 4). The loss
is WGAN-GP (lambda 10, one critic step) with the paper's drift term ``eps_drift * D(x)^2``
(0.001) keeping the critic's output near 0; Adam lr 1e-3, betas (0, 0.99); an EMA of the
generator (0.999) gives the samples.

The schedule: ``--stable-steps`` steps at each resolution, then ``--fade-steps`` steps of
fade-in of the next one, ..., the last resolution trains until ``--steps`` (3000: on 8x8 digits
600 at 4x4, 600 of fade-in, 1800 at 8x8; digits-FID 10.3, at 2000 steps 17.4). The phase (the
resolution and alpha) is a function of the step number, so ``--resume`` continues exactly;
the model records the steps it trained (``steps_done``) and samples at the phase of its last
step, upsampled (nearest) to the data's resolution: the samples always have the data's size.

Differences from the paper: the growth starts at the grid the data's size allows (4x4 for 8x8
digits and 32x32 images, 7x7 for 28x28: 7 -> 14 -> 28) and goes to the data's size; channels
halve at each resolution from ``--g-channels`` (``--d-channels``) times 2^stages at the coarsest
down to ``--g-channels`` at the finest (the paper: 512 capped, for 1024x1024); the generator's
first layer is a dense layer to the coarsest grid (the paper's 4x4 transposed convolution is
the same map); the networks see images in [-1, 1] (the data's [0, 1] mapped) and samples are
clamped back into [0, 1]; the phase lengths are counted in steps of the batch (the paper: 800k
images per phase); no class conditioning.

>>> import gmcore as gm
>>> from gmcore.models.base import DataInfo
>>> _ = gm.manual_seed(0)
>>> m = ProGAN(ProGAN.Config(latent_dim=8, g_channels=4, d_channels=4, stable_steps=10, fade_steps=10),
...            DataInfo((1, 8, 8), 17, "digits"))
>>> m.phase(5), m.phase(15), m.phase(25)          # (resolution level, alpha)
((0, 1.0), (1, 0.5), (1, 1.0))
>>> m.sample(3).shape
gmcore.Size([3, 1, 8, 8])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ... import creation, nn
from ...autograd import no_grad
from ...nn import gan as gan_losses
from ...nn.style import (HE_GAIN, EqualConv2d, EqualLinear, MinibatchStdDev, PixelNorm, downscale2d, fade_in,
                         lrelu, upscale2d)
from ..base import DataInfo
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults
from ._nets import upsampling_stages

__all__ = ["ProGAN", "ProGANConfig", "ProGANGenerator", "ProGANDiscriminator", "progressive_phase",
           "refuse_unsupported"]


@dataclass
class ProGANConfig(config_with_defaults("_ProGANBase", loss="wasserstein", gp_weight=10.0, beta1=0.0,
                                        beta2=0.99, d_norm="none", latent_dim=64, g_channels=32,
                                        d_channels=32)):
    stable_steps: int = field(default=600, metadata={
        "help": "steps at each resolution before the next one fades in", "min": 0})
    fade_steps: int = field(default=600, metadata={
        "help": "steps over which a new resolution's block fades in (alpha 0 -> 1)", "min": 0})
    drift: float = field(default=0.001, metadata={
        "help": "weight of the drift term eps_drift * D(x)^2 in the critic's loss", "min": 0.0})
    mbstd_group: int = field(default=4, metadata={
        "help": "minibatch standard deviation: examples per group", "min": 1})


# GANConfig fields ProGAN does not use: refused unless left at these values
_UNSUPPORTED = {"loss": "wasserstein", "labels": "none", "n_critic": 1, "clip": 0.0, "r1_weight": 0.0,
                "d_norm": "none", "feature_matching": False, "historical_weight": 0.0, "minibatch_kernels": 0,
                "vbn_reference": 0, "real_label": 1.0}


def refuse_unsupported(name: str, config, unsupported: dict, why: str) -> None:
    """A clear error for a GANConfig flag a model does not use, unless left at its value."""
    for f, default in unsupported.items():
        if getattr(config, f) != default:
            raise ValueError(f"{name} does not support --{f.replace('_', '-')} {getattr(config, f)!r} "
                             f"({why}); leave it at {default!r}")


def progressive_phase(step: int, stages: int, stable: int, fade: int) -> tuple:
    """(level, alpha) at training step ``step``: level 0 (the coarsest grid) for ``stable``
    steps, then level 1 fading in over ``fade`` steps (alpha = steps into the fade / fade), then
    ``stable`` steps at level 1, ... up to level ``stages``, which stays."""
    for level in range(1, stages + 1):
        start = level * stable + (level - 1) * fade     # the first step of level's fade-in
        if step < start:
            return level - 1, 1.0
        if step < start + fade:
            return level, (step - start) / fade
    return stages, 1.0


def _channels(base: int, stages: int) -> list:
    """Feature maps at each level: ``base * 2^stages`` at the coarsest, halving to ``base``."""
    return [base * 2 ** (stages - level) for level in range(stages + 1)]


class _GBlock(nn.Module):
    """Upsample 2x (nearest), then two 3x3 equalised convolutions, each LeakyReLU + pixel norm."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.conv2 = EqualConv2d(cin, cout, 3, 1), EqualConv2d(cout, cout, 3, 1)
        self.norm = PixelNorm()

    def forward(self, x):
        x = self.norm(lrelu(self.conv1(upscale2d(x))))
        return self.norm(lrelu(self.conv2(x)))


class ProGANGenerator(nn.Module):
    """z -> pixel norm -> dense to the coarsest grid -> 3x3 conv, then one :class:`_GBlock` per
    level; ``to_rgb[level]`` (1x1, linear) makes the image at each level. ``forward(z, level,
    alpha)`` returns the image at ``level``'s resolution, faded from the previous level's
    (upsampled) image by ``alpha``."""

    def __init__(self, latent_dim: int, shape, channels: int, stages: int):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        self.stages, self.start = stages, (h >> stages, w >> stages)
        ch = _channels(channels, stages)
        self.norm = PixelNorm()
        # the paper's first layer, a 4x4 transposed conv of the 1x1 latent, is this dense map;
        # its gain sqrt(2)/4 (the official code's) keeps the 16 outputs per channel at unit scale
        self.project = EqualLinear(latent_dim, ch[0] * self.start[0] * self.start[1], gain=HE_GAIN / 4)
        self.conv0 = EqualConv2d(ch[0], ch[0], 3, 1)
        self.blocks = nn.ModuleList([_GBlock(ch[i - 1], ch[i]) for i in range(1, stages + 1)])
        self.to_rgb = nn.ModuleList([EqualConv2d(ch[i], c, 1, gain=1.0) for i in range(stages + 1)])

    def forward(self, z, level: int, alpha: float = 1.0):
        x = lrelu(self.project(self.norm(z))).reshape(z.shape[0], -1, *self.start)
        x = self.norm(lrelu(self.conv0(self.norm(x))))
        prev = x
        for block in self.blocks[:level]:
            prev, x = x, block(x)
        rgb = self.to_rgb[level](x)
        if level and alpha < 1.0:
            rgb = fade_in(upscale2d(self.to_rgb[level - 1](prev)), rgb, alpha)
        return rgb


class _DBlock(nn.Module):
    """Two 3x3 equalised convolutions with LeakyReLU, then 2x2 average pooling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.conv2 = EqualConv2d(cin, cin, 3, 1), EqualConv2d(cin, cout, 3, 1)

    def forward(self, x):
        return downscale2d(lrelu(self.conv2(lrelu(self.conv1(x)))))


class ProGANDiscriminator(nn.Module):
    """The generator's mirror: ``from_rgb[level]`` (1x1) at the input's level, one
    :class:`_DBlock` per level down to the coarsest grid, then minibatch stddev, a 3x3 conv, a
    dense layer and the linear output. While ``level`` fades in, the input also enters
    downsampled through ``from_rgb[level - 1]``, blended after the new block by ``alpha``."""

    def __init__(self, shape, channels: int, stages: int, group: int = 4):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        ch = _channels(channels, stages)
        self.from_rgb = nn.ModuleList([EqualConv2d(c, ch[i], 1) for i in range(stages + 1)])
        self.blocks = nn.ModuleList([_DBlock(ch[i], ch[i - 1]) for i in range(1, stages + 1)])
        self.mbstd = MinibatchStdDev(group)
        self.conv = EqualConv2d(ch[0] + 1, ch[0], 3, 1)
        self.dense = EqualLinear(ch[0] * (h >> stages) * (w >> stages), ch[0])
        self.out = EqualLinear(ch[0], 1, gain=1.0)

    def forward(self, x, level: int, alpha: float = 1.0):
        h = lrelu(self.from_rgb[level](x))
        if level:
            h = self.blocks[level - 1](h)
            if alpha < 1.0:
                h = fade_in(lrelu(self.from_rgb[level - 1](downscale2d(x))), h, alpha)
            for block in reversed(self.blocks[:level - 1]):
                h = block(h)
        h = lrelu(self.conv(self.mbstd(h)))
        return self.out(lrelu(self.dense(h.reshape(h.shape[0], -1))))


@register("progan", family="gan", dataset="digits",
          description="ProGAN core: progressive growing with fade-in, equalised lr, pixel norm, "
                      "minibatch stddev, WGAN-GP with drift")
class ProGAN(AdversarialModel):
    """See the module docstring."""

    Config = ProGANConfig
    train_defaults = {**AdversarialModel.train_defaults, "lr": 1e-3, "ema": 0.999, "steps": 3000}

    def __init__(self, config: ProGANConfig, data: DataInfo):
        name = type(self).model_name
        refuse_unsupported(name, config, _UNSUPPORTED, "ProGAN trains its own WGAN-GP step")
        if config.arch == "mlp":
            raise ValueError(f"{name} grows convolutional networks: --arch mlp is not supported")
        super().__init__(config, data)
        self.steps_done = nn.Buffer(creation.tensor(0, dtype=np.int64))

    def _check_data(self, data: DataInfo) -> None:
        if len(data.shape) != 3:
            raise ValueError(f"{self.model_name} grows image networks; {data.name or 'data'} of shape "
                             f"{tuple(data.shape)} are not images")
        self.stages = upsampling_stages(*data.shape[1:])
        if self.stages == 0:
            raise ValueError(f"{self.model_name}: images of {data.shape[1]}x{data.shape[2]} leave nothing to "
                             "grow (the coarsest grid is 4x4 or more and halves at each stage)")

    def _build_networks(self) -> None:
        c = self.config
        self.generator = ProGANGenerator(c.latent_dim, self.data.shape, c.g_channels, self.stages)
        self.discriminator = ProGANDiscriminator(self.data.shape, c.d_channels, self.stages, c.mbstd_group)

    def phase(self, step: int) -> tuple:
        """(level, alpha) of training step ``step`` (see :func:`progressive_phase`)."""
        return progressive_phase(int(step), self.stages, self.config.stable_steps, self.config.fade_steps)

    def sampling_phase(self) -> tuple:
        """The phase of the last step trained (level 0 before any)."""
        return self.phase(max(int(self.steps_done.item()) - 1, 0))

    def real_at(self, x, level: int, alpha: float):
        """Data images (N, C, H, W) in [0, 1] as the discriminator sees them at ``(level,
        alpha)``: in [-1, 1], downsampled (2x2 means) to the level's grid and, while the level
        fades in, blended with their upsampled coarser version as the generator's output is."""
        y = x * 2.0 - 1.0
        for _ in range(self.stages - level):
            y = downscale2d(y)
        if level and alpha < 1.0:
            y = fade_in(upscale2d(downscale2d(y)), y, alpha)
        return y

    def generate(self, z, labels=None):
        """Images in [0, 1] at the data's size from ``z``, at the last trained step's phase."""
        level, alpha = self.sampling_phase()
        y = self.generator(z, level, alpha)
        for _ in range(self.stages - level):
            y = upscale2d(y)
        return (y * 0.5 + 0.5).clamp(0.0, 1.0)

    def training_step(self, batch, step) -> dict:
        c = self.config
        level, alpha = self.phase(step.number)
        real = self.real_at(batch[0], level, alpha)
        n = real.shape[0]

        def critic(x):
            return self.discriminator(x, level, alpha)
        with no_grad():
            fake = self.generator(self.noise(n), level, alpha)
        d_real = critic(real)
        gp = gan_losses.gradient_penalty(critic, real, fake)
        drift = d_real.square().mean()
        loss = gan_losses.discriminator_loss(d_real, critic(fake), "wasserstein") + c.gp_weight * gp \
            + c.drift * drift
        d_loss = step.update("discriminator", loss)
        fake = self.generator(self.noise(n), level, alpha)
        g_loss = step.update("generator", gan_losses.generator_loss(critic(fake), "wasserstein"))
        self.steps_done.data[...] = step.number + 1
        return {"d_loss": d_loss, "g_loss": g_loss, "gp": gp.item(), "drift": drift.item(),
                "level": float(level), "alpha": float(alpha)}
