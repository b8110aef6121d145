"""StyleGAN core (Karras, Laine & Aila 2019, "A Style-Based Generator Architecture for Generative
Adversarial Networks"; with StyleGAN2's modulated convolution, Karras et al. 2020, "Analyzing
and Improving the Image Quality of StyleGAN").

The generator: a *mapping network* (pixel norm of z, then ``--mapping-layers`` equalised dense
layers with LeakyReLU, learning rate multiplied by ``--mapping-lr-mul`` 0.01) turns z into a
style w; the *synthesis network* starts from a learned constant (C, 4, 4) and at each layer
applies a :class:`gmcore.nn.ModulatedConv2d` (the style scales the input channels; the output
channels are demodulated to unit weight norm), per-pixel noise with a learned strength
(:class:`gmcore.nn.NoiseInjection`), a bias and LeakyReLU; a modulated 1x1 ``toRGB`` at each
resolution adds into the upsampled image (StyleGAN2's skip generator). Each layer takes its own
w (``num_ws`` of them): in training, with probability ``--mixing-prob`` (the paper's 0.9; off by
default here, see below), a second z's w replaces the first from a random crossover layer on
(style mixing regularisation). The average w is tracked by an EMA (``w_avg``, decay 0.995), for
the *truncation trick* ``w' = w_avg + psi (w - w_avg)`` (``gmcore sample RUN --truncation 0.7``;
1 = off).

The discriminator is ProGAN's at full resolution (equalised lr, minibatch stddev; StyleGAN's
own). Loss: non-saturating, with the R1 penalty ``gamma/2 E||grad D(x)||^2`` on the data
(``--r1-weight`` gamma 0.1), computed every ``--r1-every`` 16 steps and weighted by 16 (StyleGAN2's
lazy regularisation); Adam lr 2e-3 betas (0, 0.99); an EMA of the generator (0.999) gives the
samples. At its end a run writes ``style_mixing.png`` (rows: the coarse styles from source A,
the first ``num_ws // 2`` layers; columns: the fine styles from source B; the sources
themselves in the first row and column) and ``truncation.png``, with digits-FID,
precision/recall at psi 0.5, 0.7 and 1.0 in metrics.json.

Differences from the papers: a small network for 8x8 digits (4 mapping layers, not 8; channels
halve from ``--g-channels`` times 2^stages at the 4x4 grid to ``--g-channels`` at the finest, the
paper's 512; z and w of ``--latent-dim``); style mixing is off by default (``--mixing-prob 0``):
on 8x8 digits the generator has only two resolutions and 4 styles, and with 32 channels the
paper's 0.9 collapsed it (800 steps: digits-FID 102, recall 0.03, against 45 and 0.22 without
mixing); with the default 64 channels, 800 steps gave 26.2 (recall 0.49) with 0.9 and 24.1
(0.46) without; the default run (4000 steps, no mixing) 9.0 (recall 0.85; seed 1: 7.6), at 2500
steps 10.2; upsampling
is bilinear before the 3x3 convolution (the papers: a transposed convolution with a
[1, 3, 3, 1] blur) and the skip images are upsampled bilinearly; no
path-length regulariser and no progressive growing (StyleGAN2's choices without the
path-length term); the lazy R1 step adds the scaled penalty to that step's
discriminator loss (no separate update, no Adam-beta correction); one crossover point per batch
(as the official code); the networks work in [-1, 1] and samples are clamped into [0, 1]; the
grid starts at 4x4 (8x8 digits, 32x32 images) or 7x7 (28x28 images).

>>> import gmcore as gm
>>> from gmcore.models.base import DataInfo
>>> _ = gm.manual_seed(0)
>>> m = StyleGAN(StyleGAN.Config(latent_dim=8, g_channels=4, d_channels=4, mapping_layers=2),
...              DataInfo((1, 8, 8), 17, "digits"))
>>> m.generator.num_ws, m.sample(3).shape, m.sample(3, truncation=0.5).shape
(4, gmcore.Size([3, 1, 8, 8]), gmcore.Size([3, 1, 8, 8]))
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ... import creation, nn
from ... import functional as gf
from ...autograd import no_grad
from ...nn import functional as F
from ...nn import gan as gan_losses
from ...nn.style import EqualLinear, ModulatedConv2d, NoiseInjection, PixelNorm, lrelu
from ..base import DataInfo
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults, truncation_options
from ._nets import upsampling_stages
from .progan import ProGANDiscriminator, _channels, refuse_unsupported

__all__ = ["StyleGAN", "StyleGANConfig", "StyleGANGenerator", "MappingNetwork", "mix_styles", "truncate"]


@dataclass
class StyleGANConfig(config_with_defaults("_StyleGANBase", loss="nonsaturating", r1_weight=0.1, beta1=0.0,
                                          beta2=0.99, d_norm="none", latent_dim=64, g_channels=64,
                                          d_channels=64)):
    mapping_layers: int = field(default=4, metadata={"help": "dense layers of the mapping network z -> w",
                                                     "min": 1})
    mapping_lr_mul: float = field(default=0.01, metadata={
        "help": "learning-rate multiplier of the mapping network", "min": 1e-6})
    mixing_prob: float = field(default=0.0, metadata={
        "help": "probability of style mixing (two w's, a random crossover layer) per training batch "
                "(the paper: 0.9; it collapsed the 32-channel 8x8 digits generator)",
        "min": 0.0, "max": 1.0})
    r1_every: int = field(default=16, metadata={
        "help": "lazy R1: the penalty every this many steps, weighted by it (1 = every step)", "min": 1})
    w_avg_beta: float = field(default=0.995, metadata={
        "help": "decay of the EMA of w (w_avg, the truncation trick's centre)", "min": 0.0, "max": 1.0})
    mbstd_group: int = field(default=4, metadata={
        "help": "discriminator's minibatch standard deviation: examples per group", "min": 1})


# GANConfig fields StyleGAN does not use: refused unless left at these values
_UNSUPPORTED = {"loss": "nonsaturating", "labels": "none", "n_critic": 1, "clip": 0.0, "gp_weight": 0.0,
                "d_norm": "none", "feature_matching": False, "historical_weight": 0.0, "minibatch_kernels": 0,
                "vbn_reference": 0, "real_label": 1.0}


def truncate(w, w_avg, psi: float):
    """The truncation trick: ``w_avg + psi (w - w_avg)`` (psi 1: w itself)."""
    return w if psi == 1.0 else w_avg + psi * (w - w_avg)


def mix_styles(w1, w2, num_ws: int, crossover: int) -> list:
    """Per-layer styles: ``w1`` for layers ``[0, crossover)``, ``w2`` from ``crossover`` on."""
    if not 0 <= crossover <= num_ws:
        raise ValueError(f"crossover must be in [0, {num_ws}], got {crossover}")
    return [w1] * crossover + [w2] * (num_ws - crossover)


class MappingNetwork(nn.Module):
    """z -> pixel norm -> ``layers`` equalised dense layers (LeakyReLU 0.2 times sqrt(2), lr
    multiplier ``lr_mul``) -> w."""

    def __init__(self, dim: int, layers: int, lr_mul: float):
        super().__init__()
        self.norm = PixelNorm()
        self.layers = nn.ModuleList([EqualLinear(dim, dim, gain=1.0, lr_mul=lr_mul) for _ in range(layers)])

    def forward(self, z):
        x = self.norm(z)
        for layer in self.layers:
            x = lrelu(layer(x)) * math.sqrt(2.0)
        return x


class _StyledConv(nn.Module):
    """Modulated 3x3 conv (upsampling first when ``upsample``), noise, bias, LeakyReLU * sqrt(2)."""

    def __init__(self, cin: int, cout: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.bias = nn.Parameter(creation.zeros(1, cout, 1, 1))

    def forward(self, x, w, generator=None, noise=None):
        return lrelu(self.noise(self.conv(x, w), noise, generator) + self.bias) * math.sqrt(2.0)


class _ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation, plus a bias."""

    def __init__(self, cin: int, channels: int, style_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(cin, channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(creation.zeros(1, channels, 1, 1))

    def forward(self, x, w):
        return self.conv(x, w) + self.bias


class StyleGANGenerator(nn.Module):
    """The mapping network, the constant input and the synthesis layers (see the module
    docstring); ``w_avg`` (a buffer) is the tracked mean of w. ``synthesis(ws)`` takes one
    (N, D) style per layer (``num_ws`` = 2 + 2 * stages); ``forward(z, psi)`` maps z, truncates
    and uses the one w for every layer. Images come out in [-1, 1] (not clamped)."""

    def __init__(self, dim: int, shape, channels: int, stages: int, mapping_layers: int, lr_mul: float):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        ch = _channels(channels, stages)
        self.mapping = MappingNetwork(dim, mapping_layers, lr_mul)
        self.const = nn.Parameter(creation.randn(1, ch[0], h >> stages, w >> stages))
        self.conv0 = _StyledConv(ch[0], ch[0], dim)
        self.rgb0 = _ToRGB(ch[0], c, dim)
        levels = range(1, stages + 1)
        self.ups = nn.ModuleList([_StyledConv(ch[i - 1], ch[i], dim, upsample=True) for i in levels])
        self.convs = nn.ModuleList([_StyledConv(ch[i], ch[i], dim) for i in levels])
        self.rgbs = nn.ModuleList([_ToRGB(ch[i], c, dim) for i in levels])
        self.num_ws = 2 + 2 * stages
        self.w_avg = nn.Buffer(creation.zeros(dim))
        # the grids of the noise inputs, one per styled conv: the start, then two per stage
        h0, w0 = h >> stages, w >> stages
        self.noise_grids = [(h0, w0)] + [(h0 << i, w0 << i) for i in range(1, stages + 1) for _ in range(2)]

    def make_noise(self, n: int, generator=None, device="cpu") -> list:
        """One (n, 1, H, W) noise draw per styled conv (n = 1 broadcasts over a batch)."""
        return [creation.randn(n, 1, h, w, generator=generator, device=device) for h, w in self.noise_grids]

    def synthesis(self, ws: list, generator=None, noise=None):
        """Images in [-1, 1] from one style per layer ``ws``; the per-pixel noise is drawn (from
        ``generator``) unless ``noise`` (:meth:`make_noise`'s list) is given."""
        if len(ws) != self.num_ws:
            raise ValueError(f"synthesis takes {self.num_ws} styles (one per layer), got {len(ws)}")
        noise = noise or [None] * len(self.noise_grids)
        n = ws[0].shape[0]
        x = self.conv0(self.const.expand(n, *self.const.shape[1:]), ws[0], generator, noise[0])
        rgb = self.rgb0(x, ws[1])
        for i, (up, conv, to_rgb) in enumerate(zip(self.ups, self.convs, self.rgbs)):
            x = up(x, ws[2 * i + 1], generator, noise[2 * i + 1])
            x = conv(x, ws[2 * i + 2], generator, noise[2 * i + 2])
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear") + to_rgb(x, ws[2 * i + 3])
        return rgb

    def forward(self, z, psi: float = 1.0, generator=None):
        w = truncate(self.mapping(z), self.w_avg, psi)
        return self.synthesis([w] * self.num_ws, generator)

    def update_w_avg(self, w, beta: float) -> None:
        """``w_avg = beta * w_avg + (1 - beta) * mean(w)`` (no gradient)."""
        with no_grad():
            self.w_avg.data[...] = (beta * self.w_avg + (1.0 - beta) * w.detach().mean(0)).data


@register("stylegan", family="gan", dataset="digits",
          description="StyleGAN core: mapping network, modulated/demodulated convs, noise, style mixing, "
                      "truncation (psi), R1")
class StyleGAN(AdversarialModel):
    """See the module docstring."""

    Config = StyleGANConfig
    truncation = "psi"
    SampleOptions = truncation_options("psi")     # gmcore sample RUN --truncation 0.7
    train_defaults = {**AdversarialModel.train_defaults, "lr": 2e-3, "ema": 0.999, "steps": 4000}

    def __init__(self, config: StyleGANConfig, data: DataInfo):
        name = type(self).model_name
        refuse_unsupported(name, config, _UNSUPPORTED, "StyleGAN trains its own non-saturating + R1 step")
        if config.arch == "mlp":
            raise ValueError(f"{name} uses convolutional networks: --arch mlp is not supported")
        self._noise_generator = None
        super().__init__(config, data)

    def _check_data(self, data: DataInfo) -> None:
        if len(data.shape) != 3:
            raise ValueError(f"{self.model_name} generates images; {data.name or 'data'} of shape "
                             f"{tuple(data.shape)} are not images")
        self.stages = upsampling_stages(*data.shape[1:])

    def _build_networks(self) -> None:
        c = self.config
        self.generator = StyleGANGenerator(c.latent_dim, self.data.shape, c.g_channels, self.stages,
                                           c.mapping_layers, c.mapping_lr_mul)
        self.discriminator = ProGANDiscriminator(self.data.shape, c.d_channels, self.stages, c.mbstd_group)

    def critic(self, x):
        """The discriminator's logits (N, 1) for images in [-1, 1]."""
        return self.discriminator(x, self.stages)

    # ---- sampling --------------------------------------------------------------------------------
    def generate(self, z, labels=None, psi: float = 1.0):
        """Images in [0, 1] from ``z``, truncated by ``psi``; the per-pixel noise comes from the
        generator ``sample`` was given (so a seed reproduces the samples)."""
        return (self.generator(z, psi, self._noise_generator) * 0.5 + 0.5).clamp(0.0, 1.0)

    def sample(self, n, generator=None, labels=None, label: int = -1, truncation=None):
        self._noise_generator = generator
        try:
            return super().sample(n, generator=generator, labels=labels, label=label, truncation=truncation)
        finally:
            self._noise_generator = None

    # ---- training --------------------------------------------------------------------------------
    def _training_fakes(self, n: int):
        """A batch of fakes in [-1, 1] with style mixing (probability ``mixing_prob``: a second
        z's w from a crossover layer drawn in [1, num_ws)), and the first z's w."""
        g, c = self.generator, self.config
        w1 = g.mapping(self.noise(n))
        ws = [w1] * g.num_ws
        if c.mixing_prob and float(creation.rand(1).item()) < c.mixing_prob:
            crossover = int(creation.randint(1, g.num_ws, (1,)).item())
            ws = mix_styles(w1, g.mapping(self.noise(n)), g.num_ws, crossover)
        return g.synthesis(ws), w1

    def training_step(self, batch, step) -> dict:
        c = self.config
        real = batch[0] * 2.0 - 1.0
        n = real.shape[0]
        with no_grad():
            fake, _ = self._training_fakes(n)
        loss = gan_losses.discriminator_loss(self.critic(real), self.critic(fake), "nonsaturating")
        logs = {}
        if c.r1_weight and step.number % c.r1_every == 0:
            r1 = gan_losses.r1_penalty(self.critic, real)
            loss = loss + (c.r1_weight * c.r1_every) * r1
            logs["r1"] = r1.item()
        d_loss = step.update("discriminator", loss)
        fake, w = self._training_fakes(n)
        g_loss = step.update("generator", gan_losses.generator_loss(self.critic(fake), "nonsaturating"))
        self.generator.update_w_avg(w, c.w_avg_beta)
        return {"d_loss": d_loss, "g_loss": g_loss, **logs}

    # ---- pictures --------------------------------------------------------------------------------
    def style_mixing_grid(self, rows: int = 5, cols: int = 6, generator=None, crossover: int = None):
        """(1 + rows) x (1 + cols) images in [0, 1]: the first row the sources B (fine styles),
        the first column the sources A (coarse styles), cell (i, j) the styles of A_i for the
        layers before ``crossover`` (default ``num_ws // 2``) and of B_j after; the top-left
        cell is blank. All images share one draw of the per-pixel noise."""
        g = self.generator
        crossover = g.num_ws // 2 if crossover is None else crossover
        dev = next(self.parameters()).device
        z = creation.randn(rows + cols, self.config.latent_dim, generator=generator, device=dev)
        noise = g.make_noise(1, generator, dev)
        w = g.mapping(z)
        wa, wb = w[:rows], w[rows:]

        def images(ws):
            return (g.synthesis(ws, noise=noise) * 0.5 + 0.5).clamp(0.0, 1.0)
        first = images([wb] * g.num_ws)
        blank = creation.zeros(1, *first.shape[1:], device=dev)
        a = images([wa] * g.num_ws)
        grid = [blank, first]
        for i in range(rows):
            wai = wa[i:i + 1].expand(cols, wa.shape[1])
            grid += [a[i:i + 1], images(mix_styles(wai, wb, g.num_ws, crossover))]
        return gf.cat(grid, 0)

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``truncation.png`` and the truncation figures (AdversarialModel's), and
        ``style_mixing.png`` (see :meth:`style_mixing_grid`)."""
        from ...plots import save_image_grid

        res = super().save_pictures(out_dir, generator, test_set)
        cols = 6
        save_image_grid(self.style_mixing_grid(5, cols, generator), Path(out_dir) / "style_mixing.png",
                        nrow=cols + 1)
        return {**res, "style_mixing_png": "style_mixing.png",
                "style_mixing_crossover": self.generator.num_ws // 2}
