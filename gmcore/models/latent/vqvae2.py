"""VQ-VAE-2: a two-level hierarchical VQ-VAE (Razavi, van den Oord & Vinyals, 2019, "Generating
Diverse High-Fidelity Images with VQ-VAE-2").

Two code grids describe an image: a *bottom* grid at 1/2 of the image's resolution (local detail)
and a *top* grid at 1/4 (global structure): 8x8 digits give 4x4 and 2x2, 28x28 MNIST 14x14 and
7x7, 32x32 CIFAR-10 16x16 and 8x8 (``--downsample`` moves both grids further down). As in the
paper:

* the bottom encoder maps the image to features at the bottom resolution; the top encoder maps
  those features one stride-2 stage further down to the top code vectors, quantized by the top
  codebook;
* the bottom is conditioned on the top: a top decoder maps the top codes up to the bottom
  resolution, and the bottom quantizer's input is a 1x1 conv of the bottom encoder features
  concatenated with that output; the bottom codebook quantizes it;
* the decoder sees the bottom codes concatenated with the top codes upsampled by a stride-2
  transposed conv, and gives p(x|z) over the data's discrete levels.

Each level has its own :class:`gmcore.nn.VectorQuantizer` (EMA codebook with Laplace smoothing,
k-means++ seeding from the first batch, dead-code restarts from the current batch). Training
minimises ``-log p(x|z) + beta * (||z_top - sg(e_top)||^2 + ||z_bot - sg(e_bot)||^2)`` per
example (each commitment term summed over its grid); gradients pass both quantizers straight
through, so the top encoder learns from the decoder through the top decoder and the upsampling.
Each log row carries, per level, the codebook's perplexity, usage and dead codes
(``perplexity_top``, ``usage_bottom`` ...).

What differs from the paper: the paper's decoder likelihood is a Gaussian (MSE); here it is
discrete, as ``vqvae``'s (a discretized logistic mixture through the ``dlml`` kernel, or a
categorical over the levels), so the model has a bound in bits/dim. The grids sit at 1/2 and 1/4
(the paper's 256x256 images used 1/4 and 1/8) so that small images keep more than one top code.
The networks are ``vqvae``'s (``_vq_common.py``): no attention in the encoders. The paper's
priors (PixelCNNs with self-attention over the codes) are a second stage, ``vq-prior``.

Likelihood: the posterior is deterministic, so ``-log p(x) <= -log p_prior(z_top, z_bot) -
log p(x|z)``; alone, the prior is uniform (``log K`` nats per code position of each level) and
``nll`` reports that bound. ``reconstructions.png`` shows test images and their reconstructions;
metrics.json gets each level's code use on the test set.

The "vq-codes" protocol a second stage reads: ``code_levels`` ((K, h, w) of the top, then the
bottom), ``encode(x) -> (top, bottom)`` int64 grids, ``decode((top, bottom))``, ``recon_nll``
and ``prior_nats``; and the "continuous" one of ``latent-diffusion``: both levels' z_e on the
bottom grid (the top's moved there by pixel shuffle, see ``continuous_latent_shape``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import functional as gf
from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ..base import DataInfo
from ..registry import register
from ._vq_common import (VQCodesModel, VQNetConfig, check_image_data, decoder, encoder, level_logs, likelihood_channels,
                         nearest_codes)


@dataclass
class VQVAE2Config(VQNetConfig):
    codes_top: int = field(default=512, metadata={"help": "codebook size of the top level", "min": 2})
    codes_bottom: int = field(default=512, metadata={"help": "codebook size of the bottom level", "min": 2})
    downsample: int = field(default=1, metadata={
        "help": "stride-2 stages between the image and the bottom grid; the top grid is one stage "
                "below (H and W divisible by 2^(this+1))", "min": 1})


@register("vqvae2", family="latent", dataset="digits",
          description="VQ-VAE-2: two code levels (top 1/4, bottom 1/2 resolution, bottom conditioned on "
                      "the top); bound with a uniform code prior")
class VQVAE2(VQCodesModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> _ = gm.manual_seed(0)
    >>> cfg = VQVAE2.Config(codes_top=8, codes_bottom=16, code_dim=4, hidden=8, res_hidden=4, res_blocks=1)
    >>> model = VQVAE2(cfg, DataInfo((1, 8, 8), 17, "digits"))
    >>> x = gm.rand(5, 1, 8, 8).mul(16).round().div(16)
    >>> loss, logs = model.loss((x,))
    >>> sorted(k for k in logs if k.endswith("_top"))
    ['commit_top', 'dead_codes_top', 'perplexity_top', 'usage_top']
    >>> model.latent_kind, model.code_levels
    ('vq-codes', ((8, 2, 2), (16, 4, 4)))
    >>> top, bottom = model.encode(x)
    >>> top.shape, bottom.shape, model.decode((top, bottom)).shape, model.recon_nll(x).shape
    (gmcore.Size([5, 2, 2]), gmcore.Size([5, 4, 4]), gmcore.Size([5, 1, 8, 8]), gmcore.Size([5]))
    """

    Config = VQVAE2Config
    # digits (8x8, 17 levels; a 2x2 top and a 4x4 bottom grid) are the base of a ``vq-prior``
    # whose bound is prior bits + reconstruction bits. On 1.5k training images a prior learns
    # little beyond the codes' marginals (a class-conditional MADE fit to the codes gained ~1 bit
    # a code over the uniform prior), so every code bit is paid almost in full: small codebooks
    # win. Measured with that MADE as the prior (test bits/dim, 2000 steps): 64/64 codes 2.56
    # (at 500 steps), 32/16 2.28, 16/8 2.17, 16/4 2.06, 8/4 2.00, 8/2 2.00, 32/2 2.01, 16/2 1.99
    # (reconstruction 1.64 bits/dim, the codes 1.13 bits each). Wider nets (hidden 64), 4000
    # steps or weight EMA lowered the training reconstruction but not the test bound (1.5k
    # images: the decoder overfits). The decoded training codes score digits-FID ~5.5 for all of
    # these (what a perfect prior's samples would). Decay 0.9: see ``vqvae``.
    config_defaults = {"digits": {"codes_top": 16, "codes_bottom": 2, "code_dim": 16, "hidden": 32,
                                  "res_hidden": 16, "decay": 0.9}}
    train_defaults = {"steps": 2000, "batch_size": 64}
    level_names = ("top", "bottom")

    def __init__(self, config: VQVAE2Config, data: DataInfo):
        super().__init__(config, data)
        c = config
        check_image_data("vqvae2", data, c.decoder, 2 ** (c.downsample + 1), f"--downsample {c.downsample}")
        ch, h, w = (int(s) for s in data.shape)
        step = 2 ** c.downsample
        self.out_channels = likelihood_channels(c.decoder, c.mixtures, data)
        self.latent_shapes = ((h // step // 2, w // step // 2), (h // step, w // step))
        d = c.code_dim
        vq = dict(beta=c.beta, decay=c.decay, dead_code_threshold=c.dead_code_threshold,
                  kmeans_init=c.kmeans_init)
        # image -> bottom-resolution features; features -> top code vectors (one stage down)
        self.encoder_bottom = encoder(ch, c.hidden, c.res_hidden, c.res_blocks, c.downsample, c.hidden)
        self.encoder_top = encoder(c.hidden, c.hidden, c.res_hidden, c.res_blocks, 1, d)
        self.quantizer_top = nn.VectorQuantizer(c.codes_top, d, **vq)
        # top codes -> bottom resolution, the condition of the bottom quantizer's input
        self.decoder_top = decoder(d, c.hidden, c.res_hidden, c.res_blocks, 1, d)
        self.pre_quantize_bottom = nn.Conv2d(c.hidden + d, d, 1)
        self.quantizer_bottom = nn.VectorQuantizer(c.codes_bottom, d, **vq)
        # the decoder's input: bottom codes and the top codes brought up to their resolution
        self.upsample_top = nn.ConvTranspose2d(d, d, 4, stride=2, padding=1)
        self.decoder = decoder(2 * d, c.hidden, c.res_hidden, c.res_blocks, c.downsample, self.out_channels)

    def quantizers(self) -> tuple:
        return (self.quantizer_top, self.quantizer_bottom)

    def _bottom_input(self, features: Tensor, q_top: Tensor) -> Tensor:
        return self.pre_quantize_bottom(gf.cat([features, self.decoder_top(q_top)], 1))

    def encode(self, x: Tensor) -> tuple:
        """``(top, bottom)`` code indices, int64 (B, h_top, w_top) and (B, h_bot, w_bot), of images
        ``x`` (B, C, H, W) in [0, 1]; changes no state (the codebooks move only in ``loss``)."""
        features = self.encoder_bottom(x)
        top = nearest_codes(self.quantizer_top, self.encoder_top(features))
        bottom = nearest_codes(self.quantizer_bottom, self._bottom_input(features, self.embed(0, top)))
        return top, bottom

    def _decoder_params(self, codes: tuple) -> Tensor:
        q_top, q_bottom = self.embed(0, codes[0]), self.embed(1, codes[1])
        return self._decode_vectors(q_top, q_bottom)

    # ---- the "continuous" latents (gmcore.models.stages): both grids' z_e on the bottom grid ----
    @property
    def continuous_latent_shape(self) -> tuple:
        """(code_dim + code_dim / 4, h_bot, w_bot): the bottom z_e, then the top z_e moved onto
        the bottom grid by pixel shuffle (each top vector's 4 quarters on its 2x2 bottom cells),
        so one grid holds both, losslessly; needs code_dim divisible by 4."""
        d, (h, w) = self.config.code_dim, self.latent_shapes[1]
        return (d + d // 4, h, w)

    def encode_latents(self, x: Tensor) -> Tensor:
        d = self.config.code_dim
        if d % 4:
            raise ValueError(f"vqvae2: continuous latents put the top grid's z_e on the bottom grid by "
                             f"pixel shuffle, which needs --code-dim divisible by 4, got {d}")
        features = self.encoder_bottom(x)
        z_top = self.encoder_top(features)
        top = nearest_codes(self.quantizer_top, z_top)
        z_bottom = self._bottom_input(features, self.embed(0, top))
        return gf.cat([z_bottom, F.pixel_shuffle(z_top, 2)], 1)

    def latent_codes(self, z: Tensor) -> tuple:
        d = self.config.code_dim
        z_top = F.pixel_unshuffle(z[:, d:], 2)
        return (nearest_codes(self.quantizer_top, z_top), nearest_codes(self.quantizer_bottom, z[:, :d]))

    def _decode_vectors(self, q_top: Tensor, q_bottom: Tensor) -> Tensor:
        return self.decoder(gf.cat([self.upsample_top(q_top), q_bottom], 1))

    def loss(self, batch):
        x = batch[0]
        features = self.encoder_bottom(x)
        z_top = self.encoder_top(features)
        q_top, loss_top, info_top = self.quantizer_top(z_top)
        z_bottom = self._bottom_input(features, q_top)
        q_bottom, loss_bottom, info_bottom = self.quantizer_bottom(z_bottom)
        recon = self._nll_x(self._decode_vectors(q_top, q_bottom), x).mean()
        # each quantizer's loss is a mean over its elements: times its latent size per example, it
        # is the paper's sum over the grid, in the unit of the reconstruction (nats per example)
        commit_top = loss_top * (z_top.numel() // z_top.shape[0])
        commit_bottom = loss_bottom * (z_bottom.numel() // z_bottom.shape[0])
        logs = {"recon": recon.item(), "commit_top": commit_top.item(), "commit_bottom": commit_bottom.item(),
                **level_logs(info_top, self.quantizer_top, "_top"),
                **level_logs(info_bottom, self.quantizer_bottom, "_bottom")}
        return recon + commit_top + commit_bottom, logs
