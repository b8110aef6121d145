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

The later stage reads codes with :meth:`VQVAE.encode` (images -> (B, h, w) int64 indices) and
decodes with :meth:`VQVAE.decode` (indices -> images in [0, 1]); :meth:`VQVAE.recon_nll` gives
``-log p(x|z)`` for its bound.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ... import creation as gc
from ... import functional as gf
from ... import nn
from ...nn import functional as F
from ..._dtype import int64
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register

RECON_IMAGES = 32        # test images in reconstructions.png
USAGE_EXAMPLES = 2000    # test images whose codes give the end-of-run codebook figures


@dataclass
class VQVAEConfig:
    codes: int = field(default=512, metadata={"help": "codebook size K", "min": 2})
    code_dim: int = field(default=64, metadata={"help": "size D of each code vector", "min": 1})
    hidden: int = field(default=128, metadata={"help": "channels of the encoder/decoder convs", "min": 2})
    res_hidden: int = field(default=32, metadata={"help": "channels inside a residual block", "min": 1})
    res_blocks: int = field(default=2, metadata={"help": "residual blocks in the encoder and the decoder",
                                                 "min": 0})
    downsample: int = field(default=2, metadata={
        "help": "stride-2 stages between the image and the code grid (H and W divisible by 2^this)",
        "min": 1})
    beta: float = field(default=0.25, metadata={"help": "commitment weight", "min": 0.0})
    decay: float = field(default=0.99, metadata={"help": "EMA decay of the codebook statistics, in [0, 1)",
                                                 "min": 0.0})
    dead_code_threshold: float = field(default=1.0, metadata={
        "help": "restart a code when its decayed hits per batch fall below this (0 = never)", "min": 0.0})
    kmeans_init: bool = field(default=True, metadata={
        "help": "seed the codebook by k-means++ on the first batch's encoder outputs"})
    decoder: str = field(default="logistic", metadata={
        "help": "p(x|z): discretized logistic mixture, or a categorical over the levels",
        "choices": ["logistic", "categorical"]})
    mixtures: int = field(default=3, metadata={"help": "logistic decoder: mixture components", "min": 1})


class ResBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))`` (the paper's residual block)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def encoder(in_ch: int, hidden: int, res_hidden: int, res_blocks: int, stages: int, out_ch: int):
    """Image -> code-vector grid: ``stages`` 4x4 stride-2 convs (the first ones at hidden/2
    channels), a 3x3 conv, the residual stack, ReLU and a 1x1 conv to ``out_ch``."""
    mods, c = [], in_ch
    for s in range(stages):
        width = hidden if s == stages - 1 else hidden // 2
        mods += [nn.Conv2d(c, width, 4, stride=2, padding=1), nn.ReLU()]
        c = width
    mods += [nn.Conv2d(c, hidden, 3, padding=1)]
    mods += [ResBlock(hidden, res_hidden) for _ in range(res_blocks)]
    mods += [nn.ReLU(), nn.Conv2d(hidden, out_ch, 1)]
    return nn.Sequential(*mods)


def decoder(in_ch: int, hidden: int, res_hidden: int, res_blocks: int, stages: int, out_ch: int):
    """Code grid -> decoder parameters per pixel: the mirror of :func:`encoder` (3x3 conv,
    residual stack, ``stages`` 4x4 stride-2 transposed convs), then a 3x3 conv to ``out_ch``
    (the likelihood's parameters: many more channels than the image has)."""
    mods = [nn.Conv2d(in_ch, hidden, 3, padding=1)]
    mods += [ResBlock(hidden, res_hidden) for _ in range(res_blocks)]
    c = hidden
    for _ in range(stages):
        mods += [nn.ReLU(), nn.ConvTranspose2d(c, hidden // 2, 4, stride=2, padding=1)]
        c = hidden // 2
    mods += [nn.ReLU(), nn.Conv2d(c, out_ch, 3, padding=1)]
    return nn.Sequential(*mods)


def logistic_mixture_mean(params: Tensor, mixtures: int, channels: int) -> Tensor:
    """E[x] in [-1, 1] (B, C, H, W) of the discretized logistic mixture with ``params`` in the
    ``dlml`` layout (:func:`gmcore.nn.functional.discretized_logistic_mixture_nll`): per
    component, channel c's mean is ``mu_c + sum_{j<c} tanh(coeff) * E[x_j]`` (RGB coupling),
    then the components are averaged by their weights (the edge bins' clipping is ignored)."""
    k = mixtures
    weights = params[:, :k].softmax(1)
    stride = 3 * k if channels == 3 else 2 * k
    means = []
    for c in range(channels):
        m = params[:, k + c * stride:k + c * stride + k]
        for j in range(c):
            q = c * (c - 1) // 2 + j
            m = m + params[:, k + q * stride + 2 * k:k + q * stride + 3 * k].tanh() * means[j]
        means.append(m)
    return gf.stack([(weights * m).sum(1) for m in means], 1).clamp(-1.0, 1.0)


@register("vqvae", family="latent", dataset="digits",
          description="VQ-VAE (EMA codebook, k-means++ seeding, dead-code restarts); bound with a uniform "
                      "code prior")
class VQVAE(GenerativeModel):
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
    >>> idx = model.encode(x)
    >>> idx.shape, model.decode(idx).shape, model.nll((x,)).shape
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
    nll_kind = "bound (uniform prior over the codes)"

    def __init__(self, config: VQVAEConfig, data: DataInfo):
        super().__init__(config, data)
        c = config
        if len(data.shape) != 3 or data.num_levels < 2:
            raise ValueError(f"vqvae models images with discrete levels; {data.name or 'this data set'} "
                             f"has shape {tuple(data.shape)} and {data.num_levels} levels (train it on "
                             "--dataset digits, mnist, cifar10 or image_folder)")
        ch, h, w = (int(s) for s in data.shape)
        step = 2 ** c.downsample
        if h % step or w % step:
            raise ValueError(f"vqvae with --downsample {c.downsample} needs H and W divisible by {step}, "
                             f"got {h}x{w}; use a smaller --downsample")
        if c.decoder == "logistic" and ch not in (1, 3):
            raise ValueError(f"the logistic decoder needs 1 or 3 channels, got {ch}; use --decoder "
                             "categorical")
        if c.decoder == "logistic":
            self.out_channels = c.mixtures * (1 + 2 * ch + ch * (ch - 1) // 2)
        else:
            self.out_channels = ch * data.num_levels
        self.latent_shape = (h // step, w // step)
        self.encoder = encoder(ch, c.hidden, c.res_hidden, c.res_blocks, c.downsample, c.code_dim)
        self.quantizer = nn.VectorQuantizer(c.codes, c.code_dim, beta=c.beta, decay=c.decay,
                                            dead_code_threshold=c.dead_code_threshold,
                                            kmeans_init=c.kmeans_init)
        self.decoder = decoder(c.code_dim, c.hidden, c.res_hidden, c.res_blocks, c.downsample,
                               self.out_channels)

    # ---- codes ------------------------------------------------------------------------------
    @property
    def num_codes(self) -> int:
        return self.config.codes

    def encode(self, x: Tensor) -> Tensor:
        """Code indices (B, h, w) int64 of images ``x`` (B, C, H, W) in [0, 1]; changes no state
        (the quantizer's EMA statistics move only in ``loss``)."""
        z = self.encoder(x)
        flat = z.movedim(1, -1).reshape(-1, self.config.code_dim)
        idx, _ = F.vq_nearest(flat.detach(), self.quantizer.embedding)
        return idx.reshape(z.shape[0], *z.shape[2:])

    def _embed(self, indices: Tensor) -> Tensor:
        """(B, h, w) indices -> (B, D, h, w) code vectors."""
        if indices.dtype != int64 or indices.ndim != 3:
            raise ValueError(f"vqvae: code indices must be an int64 (B, h, w) tensor, got "
                             f"{indices.dtype} of shape {tuple(indices.shape)}")
        bad = (indices < 0) | (indices >= self.config.codes)
        if bool(bad.any().item()):
            raise ValueError(f"vqvae: code indices must lie in [0, {self.config.codes - 1}]")
        return self.quantizer.embedding[indices].movedim(-1, 1)

    def decoder_params(self, indices: Tensor) -> Tensor:
        """The decoder's output (B, P, H, W) for code grids: dlml parameters, or per channel the
        ``num_levels`` logits (channel-major)."""
        return self.decoder(self._embed(indices))

    def decode(self, indices: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1]: the mean of p(x|z) for code grids ``indices``."""
        return self._mean(self.decoder_params(indices))

    def recon_nll(self, x: Tensor, indices: Tensor | None = None) -> Tensor:
        """``-log p(x|z)`` in nats per example (B,), with z the codes ``indices`` (default: x's own)."""
        if indices is None:
            indices = self.encode(x)
        return self._nll_x(self.decoder_params(indices), x)

    # ---- the likelihood p(x|z) ----------------------------------------------------------------
    def _nll_x(self, out: Tensor, x: Tensor) -> Tensor:
        n, (ch, h, w), levels = x.shape[0], self.data.shape, self.data.num_levels
        if self.config.decoder == "categorical":
            logits = out.reshape(n, ch, levels, h, w).movedim(2, 1)          # (B, L, C, H, W)
            target = (x * (levels - 1)).round().to(int64)
            return F.cross_entropy(logits, target, reduction="none").reshape(n, -1).sum(1)
        # the data check costs a GPU sync: first training batch and evaluation batches only
        validate = not (self.training and getattr(self, "_dlml_checked", False))
        self._dlml_checked = getattr(self, "_dlml_checked", False) or self.training
        return F.discretized_logistic_mixture_nll(x * 2.0 - 1.0, out, num_bins=levels, validate=validate)

    def _mean(self, out: Tensor) -> Tensor:
        n, (ch, h, w), levels = out.shape[0], self.data.shape, self.data.num_levels
        if self.config.decoder == "categorical":
            probs = out.reshape(n, ch, levels, h, w).softmax(2)
            grid = gc.arange(levels, device=out.device, dtype=out.dtype).reshape(1, 1, levels, 1, 1)
            return (probs * grid).sum(2) / (levels - 1)
        return (logistic_mixture_mean(out, self.config.mixtures, ch) + 1.0) * 0.5

    # ---- the model interface ------------------------------------------------------------------
    def loss(self, batch):
        x = batch[0]
        z = self.encoder(x)
        q, vq_loss, info = self.quantizer(z)
        recon = self._nll_x(self.decoder(q), x).mean()
        # the quantizer's loss is a mean over elements: times the latent size per example, it is
        # the paper's sum over the grid, in the unit of the reconstruction (nats per example)
        commit = vq_loss * (z.numel() // z.shape[0])
        logs = {"recon": recon.item(), "commit": commit.item(), "perplexity": info["perplexity"].item(),
                "usage": info["usage"].item(), "dead_codes": float(self.quantizer.dead_codes())}
        return recon + commit, logs

    def prior_nats(self) -> float:
        """``-log p_prior(z)`` of the uniform code prior: ``h * w * log K`` nats per example."""
        h, w = self.latent_shape
        return h * w * math.log(self.config.codes)

    def nll(self, batch, generator=None) -> Tensor:
        """The bound ``-log p_prior(z_q(x)) - log p(x|z_q(x))`` in nats per example (module
        docstring); deterministic, so ``generator`` is unused."""
        return self.recon_nll(batch[0]) + self.prior_nats()

    def sample(self, n, generator=None) -> Tensor:
        """Decoder means of code grids drawn uniformly (the model's prior; see the module
        docstring: meaningless pictures until a prior over codes is trained)."""
        dev = next(self.parameters()).device
        idx = gc.randint(0, self.config.codes, (n, *self.latent_shape), generator=generator, device=dev,
                         dtype=int64)
        return self.decode(idx)

    def save_pictures(self, out_dir, generator=None) -> dict:
        """``reconstructions.png`` (test images, each row of 8 followed by its reconstruction) and
        the codebook's use on up to USAGE_EXAMPLES test images: perplexity, codes used, dead codes."""
        from ...plots import save_image_grid

        test = self._test_set(Path(out_dir))
        if test is None:
            return {}
        from ...data import DataLoader

        dev = next(self.parameters()).device
        counts, shown, seen = None, [], 0
        for batch in DataLoader(test, batch_size=256, device=dev):
            x = batch[0][:USAGE_EXAMPLES - seen]
            idx = self.encode(x)
            if not shown:
                x8 = x[:RECON_IMAGES]
                rec = self.decode(idx[:RECON_IMAGES])
                for i in range(0, x8.shape[0], 8):
                    shown += [x8[i:i + 8], rec[i:i + 8]]
            c = gf.bincount(idx.reshape(-1), minlength=self.config.codes).cpu().numpy()
            counts = c if counts is None else counts + c
            seen += x.shape[0]
            if seen >= USAGE_EXAMPLES:
                break
        save_image_grid(gf.cat(shown, 0), Path(out_dir) / "reconstructions.png", nrow=8)
        p = counts / counts.sum()
        entropy = -sum(float(v * math.log(v)) for v in p if v > 0)
        return {"reconstructions_png": "reconstructions.png", "code_usage_examples": seen,
                "test_code_perplexity": math.exp(entropy), "test_codes_used": int((counts > 0).sum()),
                "codes": self.config.codes, "dead_codes": self.quantizer.dead_codes()}

    def _test_set(self, out_dir: Path):
        """The run's test split, found through the run folder's config.json (the hook receives
        no data); None when the folder does not say."""
        from ...data import get_dataset

        try:
            cfg = json.loads((out_dir / "config.json").read_text("utf-8"))
            root = cfg["train"].get("data_root") or None
            return get_dataset(cfg["data"], "test", root=root)
        except (OSError, KeyError, ValueError, TypeError):
            return None
