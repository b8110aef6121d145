"""What the VQ models (``vqvae``, ``vqvae2``) share: the residual conv networks, the discrete
likelihood p(x|z) with its mean, and :class:`VQCodesModel`, the base class that gives both the
"vq-codes" protocol of a first-stage model (``code_levels``, ``encode``, ``decode``,
``recon_nll``, ``prior_nats``), the bound with the uniform code prior, uniform-code samples, the
per-level codebook logs and ``reconstructions.png``.

A subclass builds its networks and quantizers, then defines ``quantizers()`` (its
:class:`gmcore.nn.VectorQuantizer` per level, top first), ``encode(x)`` (a tuple of int64 code
grids, top first) and ``_decoder_params(codes)`` (the likelihood's parameters for a tuple of
code grids already checked).
"""
from __future__ import annotations

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

RECON_IMAGES = 32        # test images in reconstructions.png
USAGE_EXAMPLES = 2000    # test images whose codes give the end-of-run codebook figures


@dataclass
class VQNetConfig:
    """The options vqvae and vqvae2 share: networks, quantizers and the likelihood p(x|z). Each
    model's Config adds its codebook sizes and grid depth."""
    code_dim: int = field(default=64, metadata={"help": "size D of each code vector", "min": 1})
    hidden: int = field(default=128, metadata={"help": "channels of the encoder/decoder convs", "min": 2})
    res_hidden: int = field(default=32, metadata={"help": "channels inside a residual block", "min": 1})
    res_blocks: int = field(default=2, metadata={"help": "residual blocks in each encoder and decoder",
                                                 "min": 0})
    beta: float = field(default=0.25, metadata={"help": "commitment weight", "min": 0.0})
    decay: float = field(default=0.99, metadata={"help": "EMA decay of the codebook statistics, in [0, 1)",
                                                 "min": 0.0})
    dead_code_threshold: float = field(default=1.0, metadata={
        "help": "restart a code when its decayed hits per batch fall below this (0 = never)", "min": 0.0})
    kmeans_init: bool = field(default=True, metadata={
        "help": "seed each codebook by k-means++ on the first batch's encoder outputs"})
    decoder: str = field(default="logistic", metadata={
        "help": "p(x|z): discretized logistic mixture, or a categorical over the levels",
        "choices": ["logistic", "categorical"]})
    mixtures: int = field(default=3, metadata={"help": "logistic decoder: mixture components", "min": 1})


class ResBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))`` (the VQ-VAE papers' residual block)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def encoder(in_ch: int, hidden: int, res_hidden: int, res_blocks: int, stages: int, out_ch: int):
    """Features -> code-vector grid: ``stages`` 4x4 stride-2 convs (the first ones at hidden/2
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
    """Code grid -> output per pixel: the mirror of :func:`encoder` (3x3 conv, residual stack,
    ``stages`` 4x4 stride-2 transposed convs), then a 3x3 conv to ``out_ch`` (for the image
    decoder, the likelihood's parameters: many more channels than the image has)."""
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


def check_image_data(name: str, data: DataInfo, decoder_kind: str, stride: int, flag: str) -> None:
    """Clear errors for data a VQ model cannot take: not images with discrete levels, H or W not
    divisible by the total ``stride`` (``flag`` names the option that sets it), or a logistic
    decoder on other than 1 or 3 channels."""
    if len(data.shape) != 3 or data.num_levels < 2:
        raise ValueError(f"{name} models images with discrete levels; {data.name or 'this data set'} "
                         f"has shape {tuple(data.shape)} and {data.num_levels} levels (train it on "
                         "--dataset digits, mnist, cifar10 or image_folder)")
    ch, h, w = (int(s) for s in data.shape)
    if h % stride or w % stride:
        raise ValueError(f"{name} with {flag} needs H and W divisible by {stride}, got {h}x{w}; "
                         f"use a smaller {flag.split()[0]}")
    if decoder_kind == "logistic" and ch not in (1, 3):
        raise ValueError(f"the logistic decoder needs 1 or 3 channels, got {ch}; use --decoder categorical")


def likelihood_channels(decoder_kind: str, mixtures: int, data: DataInfo) -> int:
    """Channels of the decoder's output: the dlml parameters, or ``num_levels`` logits per channel."""
    ch = int(data.shape[0])
    if decoder_kind == "logistic":
        return mixtures * (1 + 2 * ch + ch * (ch - 1) // 2)
    return ch * data.num_levels


def nearest_codes(quantizer: nn.VectorQuantizer, z: Tensor) -> Tensor:
    """(B, h, w) int64 indices of the nearest codes to the (B, D, h, w) vectors ``z``, with no
    state change (the quantizer's EMA statistics move only in training calls)."""
    flat = z.movedim(1, -1).reshape(-1, quantizer.embedding_dim)
    idx, _ = F.vq_nearest(flat.detach(), quantizer.embedding)
    return idx.reshape(z.shape[0], *z.shape[2:])


def level_logs(info: dict, quantizer: nn.VectorQuantizer, suffix: str = "") -> dict:
    """The log row's codebook figures of one level: perplexity, usage (of the batch) and dead codes."""
    return {f"perplexity{suffix}": info["perplexity"].item(), f"usage{suffix}": info["usage"].item(),
            f"dead_codes{suffix}": float(quantizer.dead_codes())}


class VQCodesModel(GenerativeModel):
    """Base of the first-stage VQ models (see the module docstring). Its Config needs ``decoder``
    ("logistic" or "categorical") and ``mixtures``; ``level_names`` suffixes the per-level logs
    and figures ("" for one level)."""

    latent_kind = "vq-codes"
    # also the encoder's output before quantization, for latent-diffusion (gmcore.models.stages)
    latent_kinds = ("vq-codes", "continuous")
    nll_kind = "bound (uniform prior over the codes)"
    level_names: tuple = ("",)

    def quantizers(self) -> tuple:
        raise NotImplementedError

    def encode(self, x: Tensor) -> tuple:
        raise NotImplementedError

    def _decoder_params(self, codes: tuple) -> Tensor:
        raise NotImplementedError

    def encode_latents(self, x: Tensor) -> Tensor:
        """The "continuous" latents (B, *continuous_latent_shape) of images ``x``: the encoder's
        output before quantization (z_e); no state change."""
        raise NotImplementedError

    def latent_codes(self, z: Tensor) -> tuple:
        """The code grids (top first) nearest to continuous latents ``z``."""
        raise NotImplementedError

    def decode_latents(self, z: Tensor) -> Tensor:
        """Images in [0, 1] for continuous latents ``z``: quantized to the nearest codes, then
        decoded (the decoder's mean), as Rombach et al.'s VQ-regularised autoencoder does."""
        return self.decode(self.latent_codes(z))

    # ---- codes ------------------------------------------------------------------------------
    @property
    def code_levels(self) -> tuple:
        """``(num_codes, h, w)`` per level, the top (coarsest) first."""
        return tuple((q.num_embeddings, h, w) for q, (h, w) in zip(self.quantizers(), self.latent_shapes))

    def check_codes(self, codes) -> tuple:
        """``codes`` as a tuple of int64 (B, h, w) grids, one per level, each checked for shape and
        range (a bare tensor is accepted for a one-level model)."""
        name, levels = self._model_name(), self.code_levels
        if isinstance(codes, Tensor) and len(levels) == 1:
            codes = (codes,)
        if not isinstance(codes, (tuple, list)) or len(codes) != len(levels):
            got = type(codes).__name__
            if isinstance(codes, (tuple, list)):
                got += f" of length {len(codes)}"
            raise ValueError(f"{name}: codes must be a tuple of {len(levels)} int64 grid(s), top level "
                             f"first, shaped {[(None, h, w) for _, h, w in levels]}; got {got}")
        batch = None
        for i, (idx, (k, h, w)) in enumerate(zip(codes, levels)):
            ok = isinstance(idx, Tensor) and idx.dtype == int64 and idx.ndim == 3
            if not ok or tuple(idx.shape[1:]) != (h, w):
                got = (f"{idx.dtype} of shape {tuple(idx.shape)}" if isinstance(idx, Tensor)
                       else type(idx).__name__)
                raise ValueError(f"{name}: code indices of level {i} must be an int64 (B, {h}, {w}) "
                                 f"tensor, got {got}")
            if batch is not None and idx.shape[0] != batch:
                raise ValueError(f"{name}: every level's codes need the same batch size, got "
                                 f"{[int(c.shape[0]) for c in codes]}")
            batch = idx.shape[0]
            bad = (idx < 0) | (idx >= k)
            if bool(bad.any().item()):
                raise ValueError(f"{name}: code indices of level {i} must lie in [0, {k - 1}]")
        return tuple(codes)

    def embed(self, level: int, indices: Tensor) -> Tensor:
        """(B, h, w) indices of ``level`` -> (B, D, h, w) code vectors."""
        return self.quantizers()[level].embedding[indices].movedim(-1, 1)

    def decoder_params(self, codes) -> Tensor:
        """The decoder's output (B, P, H, W) for code grids ``codes``: dlml parameters, or per
        channel the ``num_levels`` logits (channel-major)."""
        return self._decoder_params(self.check_codes(codes))

    def decode(self, codes) -> Tensor:
        """Images (B, C, H, W) in [0, 1]: the mean of p(x|z) for the code grids ``codes``."""
        return self._mean(self.decoder_params(codes))

    def recon_nll(self, x: Tensor, codes=None) -> Tensor:
        """``-log p(x|z)`` in nats per example (B,), with z the codes ``codes`` (default: x's own)."""
        codes = self.encode(x) if codes is None else self.check_codes(codes)
        return self._nll_x(self._decoder_params(codes), x)

    def prior_nats(self) -> float:
        """``-log p_prior(z)`` of the uniform code prior: sum over levels of ``h * w * log K``."""
        return sum(h * w * math.log(k) for k, h, w in self.code_levels)

    def nll(self, batch, generator=None) -> Tensor:
        """The bound ``-log p_prior(z_q(x)) - log p(x|z_q(x))`` in nats per example with the
        uniform code prior; deterministic, so ``generator`` is unused."""
        return self.recon_nll(batch[0]) + self.prior_nats()

    def sample(self, n, generator=None) -> Tensor:
        """Decoder means of code grids drawn uniformly (the model's own prior: patchworks, not
        digits, until a second stage such as ``vq-prior`` learns the codes' distribution)."""
        dev = next(self.parameters()).device
        codes = tuple(gc.randint(0, k, (n, h, w), generator=generator, device=dev, dtype=int64)
                      for k, h, w in self.code_levels)
        return self.decode(codes)

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

    def _model_name(self) -> str:
        return getattr(type(self), "model_name", type(self).__name__.lower())

    # ---- pictures -----------------------------------------------------------------------------
    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``reconstructions.png`` (test images, each row of 8 followed by its reconstruction) and
        each level's codebook use on up to USAGE_EXAMPLES test images: perplexity, codes used,
        dead codes (keys suffixed by the level's name when there are several). ``{}`` without a
        test set."""
        if test_set is None:
            return {}
        from ...data import DataLoader
        from ...plots import save_image_grid

        dev = next(self.parameters()).device
        counts, shown, seen = None, [], 0
        for batch in DataLoader(test_set, batch_size=256, device=dev):
            x = batch[0][:USAGE_EXAMPLES - seen]
            codes = self.encode(x)
            if not shown:
                x8 = x[:RECON_IMAGES]
                rec = self.decode(tuple(c[:RECON_IMAGES] for c in codes))
                for i in range(0, x8.shape[0], 8):
                    shown += [x8[i:i + 8], rec[i:i + 8]]
            c = [gf.bincount(idx.reshape(-1), minlength=k).cpu().numpy()
                 for idx, (k, _, _) in zip(codes, self.code_levels)]
            counts = c if counts is None else [a + b for a, b in zip(counts, c)]
            seen += x.shape[0]
            if seen >= USAGE_EXAMPLES:
                break
        save_image_grid(gf.cat(shown, 0), Path(out_dir) / "reconstructions.png", nrow=8)
        res = {"reconstructions_png": "reconstructions.png", "code_usage_examples": seen}
        for name, cnt, vq in zip(self.level_names, counts, self.quantizers()):
            sfx = f"_{name}" if name else ""
            p = cnt / cnt.sum()
            entropy = -sum(float(v * math.log(v)) for v in p if v > 0)
            res.update({f"test_code_perplexity{sfx}": math.exp(entropy),
                        f"test_codes_used{sfx}": int((cnt > 0).sum()), f"codes{sfx}": vq.num_embeddings,
                        f"dead_codes{sfx}": vq.dead_codes()})
        return res
