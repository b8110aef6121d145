"""VQ-VAE: vector-quantised variational autoencoder (van den Oord et al., 2017, "Neural Discrete
Representation Learning").

A conv encoder maps an image to a grid of ``code_dim``-vectors, ``downsample`` stride-2 stages
below the image (8x8 digits with 1 stage: a 4x4 grid; 28x28 MNIST and 32x32 CIFAR-10 with 2: 7x7
and 8x8). Each vector is replaced by its nearest of ``codes`` codebook vectors
(:class:`gmcore.nn.VectorQuantizer`: EMA codebook with Laplace smoothing, dead-code restarts
from the current batch, k-means++ seeding from the first batch), and the decoder, the mirror of
the encoder, gives p(x|z) over the data's discrete levels: a discretized logistic mixture
(``--decoder logistic``, the ``dlml`` kernel) or a categorical over the levels
(``--decoder categorical``). Both networks carry residual stacks (ReLU, 3x3 conv, ReLU, 1x1 conv,
added back), as in the paper.

Training minimises, per example, ``-log p(x|z_q) + beta * ||z_e - sg(e)||^2`` (the commitment
term summed over the latent grid, like the reconstruction, so the two are in the same unit);
the codebook follows the encoder by EMA, and gradients pass the quantizer straight through.
Each log row carries the codebook's ``perplexity`` (exp of the entropy of the batch's code
histogram; K when all codes are used evenly), ``usage`` (fraction of the codes the batch used)
and ``dead_codes`` (codes whose decayed usage fell below ``dead_code_threshold``: the next
training call restarts them from batch vectors).

Likelihood: the posterior is deterministic (q(z|x) puts all its mass on z_q(x)), so for any
prior ``-log p(x) <= -log p_prior(z_q(x)) - log p(x|z_q(x))``. Alone, the VQ-VAE's prior is
uniform over the codes, ``log K`` nats per latent position; ``nll`` reports that bound, in the
units of the discrete data (a second-stage prior over the codes, ``vq-prior``, tightens it).

Pictures: samples of a uniform prior over code grids are meaningless (random code patchworks);
``samples.png`` shows them only because every run writes one. The picture that shows what the
model learned is ``reconstructions.png``: test images, each row followed by its reconstruction
(the decoder's mean given the codes), with the codebook's use on the test set in metrics.json.

A second stage reads the model through the "vq-codes" protocol (``latent_kind``): ``code_levels``
(one level, ``(K, h, w)``), :meth:`VQVAE.encode` (images -> a 1-tuple of (B, h, w) int64 code
grids), ``decode`` (that tuple, or the bare grid -> images in [0, 1]), ``recon_nll``
(``-log p(x|z)`` for its bound) and ``prior_nats`` (the uniform prior's own). It also offers
"continuous" latents (``latent_kinds``) to ``latent-diffusion``: ``encode_latents`` gives the
encoder's output before quantization z_e, (B, code_dim, h, w), and ``decode_latents``
quantizes such a grid to the nearest codes and decodes it. The networks, the
likelihood and the pictures are shared with ``vqvae2`` (``_vq_common.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import nn
from ...tensor import Tensor
from ..base import DataInfo
from ..registry import register
from ._vq_common import (VQCodesModel, VQNetConfig, check_image_data, decoder, encoder, level_logs, likelihood_channels,
                         nearest_codes)


@dataclass
class VQVAEConfig(VQNetConfig):
    codes: int = field(default=512, metadata={"help": "codebook size K", "min": 2})
    downsample: int = field(default=2, metadata={
        "help": "stride-2 stages between the image and the code grid (H and W divisible by 2^this)",
        "min": 1})


@register("vqvae", family="latent", dataset="digits",
          description="VQ-VAE (EMA codebook, k-means++ seeding, dead-code restarts); bound with a uniform "
                      "code prior")
class VQVAE(VQCodesModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> _ = gm.manual_seed(0)
    >>> cfg = VQVAE.Config(codes=8, code_dim=4, hidden=8, res_hidden=4, res_blocks=1, downsample=1)
    >>> model = VQVAE(cfg, DataInfo((1, 8, 8), 17, "digits"))
    >>> x = gm.rand(5, 1, 8, 8).mul(16).round().div(16)
    >>> loss, logs = model.loss((x,))
    >>> sorted(logs)
    ['commit', 'dead_codes', 'perplexity', 'recon', 'usage']
    >>> model.latent_kind, model.code_levels
    ('vq-codes', ((8, 4, 4),))
    >>> codes = model.encode(x)
    >>> codes[0].shape, model.decode(codes).shape, model.recon_nll(x, codes).shape
    (gmcore.Size([5, 4, 4]), gmcore.Size([5, 1, 8, 8]), gmcore.Size([5]))
    """

    Config = VQVAEConfig
    # digits are 8x8 with 17 levels: a 4x4 grid of 64 codes and small networks. The codebook
    # EMA decays faster there (0.9): with 0.99 (a 100-step memory) the codes lagged the encoder's
    # outputs, which move quickly at lr 1e-3 on this small data, and the batch perplexity fell
    # from 50 to 5 of 64 by step 100; with 0.9 it was 56 of 64 at step 150, every code in use.
    config_defaults = {"digits": {"codes": 64, "code_dim": 16, "hidden": 32, "res_hidden": 16,
                                  "downsample": 1, "decay": 0.9}}
    train_defaults = {"steps": 2000, "batch_size": 64}

    def __init__(self, config: VQVAEConfig, data: DataInfo):
        super().__init__(config, data)
        c = config
        check_image_data("vqvae", data, c.decoder, 2 ** c.downsample, f"--downsample {c.downsample}")
        ch, h, w = (int(s) for s in data.shape)
        step = 2 ** c.downsample
        self.out_channels = likelihood_channels(c.decoder, c.mixtures, data)
        self.latent_shape = (h // step, w // step)
        self.latent_shapes = (self.latent_shape,)
        self.encoder = encoder(ch, c.hidden, c.res_hidden, c.res_blocks, c.downsample, c.code_dim)
        self.quantizer = nn.VectorQuantizer(c.codes, c.code_dim, beta=c.beta, decay=c.decay,
                                            dead_code_threshold=c.dead_code_threshold,
                                            kmeans_init=c.kmeans_init)
        self.decoder = decoder(c.code_dim, c.hidden, c.res_hidden, c.res_blocks, c.downsample,
                               self.out_channels)

    @property
    def num_codes(self) -> int:
        return self.config.codes

    def quantizers(self) -> tuple:
        return (self.quantizer,)

    def encode(self, x: Tensor) -> tuple:
        """A 1-tuple with the code indices (B, h, w) int64 of images ``x`` (B, C, H, W) in [0, 1];
        changes no state (the quantizer's EMA statistics move only in ``loss``)."""
        return (nearest_codes(self.quantizer, self.encoder(x)),)

    def _decoder_params(self, codes: tuple) -> Tensor:
        return self.decoder(self.embed(0, codes[0]))

    @property
    def continuous_latent_shape(self) -> tuple:
        return (self.config.code_dim, *self.latent_shape)

    def encode_latents(self, x: Tensor) -> Tensor:
        """z_e (B, code_dim, h, w): the encoder's output before quantization."""
        return self.encoder(x)

    def latent_codes(self, z: Tensor) -> tuple:
        return (nearest_codes(self.quantizer, z),)

    def loss(self, batch):
        x = batch[0]
        z = self.encoder(x)
        q, vq_loss, info = self.quantizer(z)
        recon = self._nll_x(self.decoder(q), x).mean()
        # the quantizer's loss is a mean over elements: times the latent size per example, it is
        # the paper's sum over the grid, in the unit of the reconstruction (nats per example)
        commit = vq_loss * (z.numel() // z.shape[0])
        logs = {"recon": recon.item(), "commit": commit.item(), **level_logs(info, self.quantizer)}
        return recon + commit, logs
