"""latent-diffusion: DDPM over the latents of a finished autoencoder run (Rombach, Blattmann,
Lorenz, Esser & Ommer 2022, "High-Resolution Image Synthesis with Latent Diffusion Models").

A second stage (``--base-run RUN``, a ``vae``, ``vqvae`` or ``vqvae2`` run; the two-stage
mechanism of :mod:`gmcore.models.stages`, latent kind ``"continuous"``): the frozen base encodes
each image to a latent z, this model learns p(z) with the diffusion of
:class:`~gmcore.models.diffusion.ddpm.DDPM` (every ``ddpm`` flag: schedule, ``--predict``,
``--learn-sigma``, ``--class-cond`` with classifier-free guidance; every sampler: ``gmcore sample
RUN --sampler ddim --steps 50``), and a sample is the base's decoding of a sampled latent.

* **The latents.** ``vae``: the posterior mean mu(x), a vector (B, latent_dim), decoded to the
  decoder's mean. ``vqvae``: the encoder's output before quantization z_e (B, code_dim, h, w),
  a grid (4x4 on digits); the decoder quantizes to the nearest codes and decodes, Rombach et
  al.'s "VQ-reg" autoencoder. ``vqvae2``: the bottom z_e with the top z_e moved onto the bottom
  grid by pixel shuffle (one grid, both levels). The training split is encoded once, under
  no_grad (``prepare_data``); the base never trains.
* **Latent scaling** (Rombach et al. sec. 4.3.2 and their ``scale_by_std``): the latents are
  multiplied by ``latent_scale`` = 1 / (their standard deviation over the first training batch,
  all elements together), so the diffused x0 has unit variance as the noise schedules assume.
  It is set once, at the first training step, and kept as a buffer: checkpoints carry it, so a
  resumed run, ``gmcore sample`` and ``gmcore eval`` use the very same scale. (An untrained
  model has scale 0 = unset and uses 1.) The x0 prediction is not clamped to [-1, 1] while
  sampling (latents are not bounded), as in the paper.
* **The denoiser.** Grid latents: the U-Net of ``ddpm`` (the ``--channels``, ``--channel-mult``,
  ``--attention-resolutions`` flags; by default 32 channels, one block per level, attention at
  the 2x2 level of a 4x4 latent grid). Vector latents: :class:`MLPDenoiser`, pre-norm residual
  MLP blocks of width ``--mlp-width`` with the sinusoidal time embedding (and the label's)
  added in every block. It predicts v (``--predict v`` by default, Salimans & Ho 2022): eps
  prediction turns the net's error into an x0 error up to 1 / sqrt(abar_T) ~ 160 times larger
  near t = T, which an image model clamps to [-1, 1] but latents have no range to clamp to
  (measured on a vqvae base: digits-FID 85.5 with eps, 8.6 with v).

Likelihood: none. The diffusion's variational bound is on the latents' *density*, a
continuous one; with the base's decoder it is not a bound on -log p(x) (the latents are a
deterministic function of x, so the bound would need q(z|x) in it, as a VAE's ELBO has), so
``nll_kind`` is "none" and the run is judged by its samples (digits-FID, KID, precision/recall
on the decoded images), against the base's own samples (``vae``: z from N(0, I); ``vqvae``:
uniform codes).

Digits with the defaults (2000 steps, DDIM 50 steps, EMA weights; 1000 samples; the bases
with their own defaults): on a ``vqvae`` base digits-FID 8.6 (its uniform-code samples: 88.3),
on a ``vae`` base 10.0 (its N(0, I) samples: 13.5; ``--predict eps --steps 3000``: 7.3), on a
``vqvae2`` base 10.9 after 800 steps (its uniform-code samples: 19.7).

What differs from the paper: tiny autoencoders and denoisers for 8x8 digits (a 4x4 grid of 16
channels, or a 16-dimensional vector) trained for minutes on a CPU; the scale from one batch
of the encoded training split (the paper's too) but the encoder's mean rather than a posterior
draw for the KL-regularised (vae) base; no cross-attention conditioning (labels enter through
the time embedding, as in ``ddpm``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ... import creation as gc
from ... import nn
from ...autograd import no_grad
from ...nn import functional as F
from ...tensor import Tensor
from ..base import DataInfo
from ..registry import register
from ..stages import encode_dataset
from . import samplers
from .ddpm import DDPM, DDPMConfig
from .unet import timestep_embedding

__all__ = ["LatentDiffusion", "LatentDiffusionConfig", "MLPDenoiser"]


@dataclass
class LatentDiffusionConfig(DDPMConfig):
    base_run: str = field(default="", metadata={
        "help": "the finished vae / vqvae / vqvae2 run whose latents this model diffuses (required)"})
    mlp_width: int = field(default=256, metadata={
        "help": "vector latents (a vae base): width of the MLP denoiser", "min": 1})
    mlp_blocks: int = field(default=3, metadata={
        "help": "vector latents (a vae base): residual blocks of the MLP denoiser", "min": 1})


class _MLPBlock(nn.Module):
    """``h + W2 dropout(SiLU(LN(W1 SiLU(LN(h)) + P emb)))``, W2 zero-initialised (the block
    starts as its skip path, as the U-Net's residual blocks do)."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.lin2 = nn.Linear(width, width)
        self.lin2.weight.data[...] = 0.0
        self.lin2.bias.data[...] = 0.0

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        a = self.lin1(F.silu(self.norm1(h))) + self.emb(emb)
        return h + self.lin2(self.drop(F.silu(self.norm2(a))))


class MLPDenoiser(nn.Module):
    """The denoiser of vector latents: ``net(x_t, t, y=None) -> (B, out_dim)`` for x_t (B, dim),
    float or int timesteps t (B,) and, with ``num_classes`` K > 0, labels y in [0, K] (K, or
    None: the null label of classifier-free guidance). The sinusoidal embedding of t (plus the
    label's embedding) goes through Linear-SiLU-Linear, then into every residual block; the
    output layer is zero-initialised, so an untrained net predicts 0.

    >>> import gmcore as gm
    >>> net = MLPDenoiser(4, 4, width=16, blocks=2, num_classes=3)
    >>> out = net(gm.randn(2, 4), gm.tensor([0, 999]), gm.tensor([1, 3]))
    >>> out.shape, float(out.abs().max())
    (gmcore.Size([2, 4]), 0.0)
    """

    def __init__(self, dim: int, out_dim: int, width: int = 256, blocks: int = 3, num_classes: int = 0,
                 dropout: float = 0.0):
        super().__init__()
        self.dim, self.width, self.num_classes = int(dim), int(width), int(num_classes)
        self.time_embed = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.label_embed = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList([_MLPBlock(width, dropout) for _ in range(blocks)])
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)
        self.out.weight.data[...] = 0.0
        self.out.bias.data[...] = 0.0

    def forward(self, x: Tensor, t, y: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLPDenoiser: expected x of shape (B, {self.dim}), got {tuple(x.shape)}")
        B = x.shape[0]
        if not isinstance(t, Tensor):
            t = gc.full((B,), float(t), device=x.device)
        if t.ndim == 0:
            t = t.reshape(1).expand(B)
        emb = self.time_embed(timestep_embedding(t.to(x.dtype), self.width))
        if self.label_embed is not None:
            if y is None:
                y = gc.full((B,), self.num_classes, device=x.device).long()
            emb = emb + self.label_embed(y)
        elif y is not None:
            raise ValueError("MLPDenoiser: labels y given to an unconditional net (num_classes=0)")
        emb = F.silu(emb)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))


@register("latent-diffusion", family="diffusion", dataset="digits",
          description="DDPM over a vae/vqvae/vqvae2 run's continuous latents (--base-run), scaled to unit "
                      "variance; samples decoded by the base")
class LatentDiffusion(DDPM):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> from gmcore.models.latent.vae import VAE
    >>> _ = gm.manual_seed(0)
    >>> info = DataInfo((1, 8, 8), 17, "digits")
    >>> base = VAE(VAE.Config(latent_dim=4, hidden=16), info)
    >>> ld = LatentDiffusion(LatentDiffusion.Config(timesteps=50, mlp_width=16), info, base=base)
    >>> x = gm.rand(6, 1, 8, 8).mul(16).round().div(16)
    >>> loss, logs = ld.loss((x,))
    >>> ld.diffusion_shape, float(ld.latent_scale) > 0
    ((4,), True)
    >>> ld.sample(2, generator=gm.Generator().manual_seed(0), steps=5).shape
    gmcore.Size([2, 1, 8, 8])
    """

    Config = LatentDiffusionConfig
    EvalOptions = None           # no likelihood (see the module docstring)
    base_kinds = ("continuous",)
    nll_kind = "none"
    clip_x0 = False              # latents are not bounded: no clamp of the x0 prediction
    supports_levels = False      # latents have no levels
    # v-prediction: with eps, x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies the net's
    # error by up to 1 / sqrt(abar_T) ~ 160 near t = T, and nothing clamps it in latent space:
    # on a vqvae base the DDIM chain's std grew from 1 to 14 and digits-FID was 85.5 (uniform
    # codes: 88.3); with v (x0 = sqrt(abar) x_t - sqrt(1 - abar) v, no amplification) 8.6.
    # A 4x4 latent grid has maps 4 and 2: attention at 2 (the 8x8 digits' 4); a U-Net of 32
    # channels and 1 block per level (64 and 2: 3.9x the time per step, measured on a busy CPU).
    config_defaults = {"predict": "v", "attention_resolutions": "2", "channels": 32, "num_res_blocks": 1}
    train_defaults = {**DDPM.train_defaults, "steps": 2000}

    def __init__(self, config: LatentDiffusionConfig, data: DataInfo, base=None):
        super().__init__(config, data, base=base)
        # 1 / std of the first training batch's latents (0: not set yet); a buffer, so
        # checkpoints carry it
        self.latent_scale = nn.Buffer(gc.zeros(()))
        self._scale_checked = False

    # ---- the latent space ----------------------------------------------------------------------
    @property
    def diffusion_shape(self) -> tuple:
        return tuple(int(v) for v in self.base.continuous_latent_shape)

    def build_net(self):
        shape, c = self.diffusion_shape, self.config
        if len(shape) != 1:
            return super().build_net()
        out = shape[0] * (2 if c.learn_sigma else 1)
        return MLPDenoiser(shape[0], out, width=c.mlp_width, blocks=c.mlp_blocks,
                           num_classes=self.num_classes, dropout=c.dropout)

    def _scale(self) -> float:
        return float(self.latent_scale.item()) or 1.0

    def _set_scale(self, z: Tensor) -> None:
        """At the first training step: latent_scale = 1 / std of this batch's latents."""
        if self._scale_checked or not self.training:
            return
        if float(self.latent_scale.item()) == 0.0:
            std = float(z.detach().cpu().numpy().astype(np.float64).std())
            if not std > 0:
                raise ValueError("latent-diffusion: the base's latents of the first batch are constant "
                                 "(std 0); is the base run trained?")
            self.latent_scale.data[...] = 1.0 / std
        self._scale_checked = True

    def _raw_latents(self, batch) -> Tensor:
        """The unscaled latents of a batch (images[, labels][, latents]): the ones it carries
        (``prepare_data``), else the base's encoding of its images."""
        n = 1 + (self.data.num_classes > 0)
        if len(batch) == n + 1:
            z = batch[-1]
        elif len(batch) == n:
            with no_grad():
                z = self.base.encode_latents(batch[0])
        else:
            raise ValueError(f"latent-diffusion: batches must be (images{', labels' if n == 2 else ''}"
                             f"[, latents]), got {len(batch)} arrays")
        if tuple(z.shape[1:]) != self.diffusion_shape:
            want = ", ".join(map(str, self.diffusion_shape))
            raise ValueError(f"latent-diffusion: latents must be (B, {want}), got {tuple(z.shape)}")
        return z.to(self._dtype)

    def batch_x0(self, batch) -> Tensor:
        z = self._raw_latents(batch)
        self._set_scale(z)
        return z * self._scale()

    def to_diffusion(self, x: Tensor) -> Tensor:
        """Images in [0, 1] -> their scaled latents."""
        with no_grad():
            return self.base.encode_latents(x).to(self._dtype) * self._scale()

    def from_diffusion(self, x: Tensor) -> Tensor:
        """Scaled latents -> images in [0, 1]: the base's decoding (its decoder's mean, not
        rounded to the data's levels, as the base's own samples)."""
        return self.base.decode_latents(x * (1.0 / self._scale())).clamp(0.0, 1.0)

    def chain_image(self, x: Tensor) -> Tensor:
        return self.from_diffusion(x)

    def decode(self, x_T, steps: int = 100, spacing: str = "trailing", label: int = -1):
        """x_T (scaled latents) -> images in [0, 1] by deterministic DDIM (eta 0), the inverse of
        :meth:`invert` up to the base's decoding."""
        labels = self._sample_labels(x_T.shape[0], label, 0.0, edit=True)
        z0 = samplers.ddim(self.diffusion, self.denoiser(labels), x_T=x_T, steps=self._steps(steps), eta=0.0,
                           spacing=spacing, clip_x0=False)
        return self.from_diffusion(z0)

    # ---- the training-loop contract ------------------------------------------------------------
    def nll(self, batch, generator=None):
        raise NotImplementedError("latent-diffusion has no likelihood of the data (nll_kind 'none'): "
                                  "judge it by its samples")

    def prepare_data(self, dataset):
        """The dataset with the base's latents appended, encoded once (the base is frozen)."""
        return encode_dataset(self.base, dataset, encode=lambda x: (self.base.encode_latents(x),))

