"""Variational autoencoder (Kingma & Welling, 2014; Rezende et al., 2014), with beta-VAE
(Higgins et al., 2017), free bits (Kingma et al., 2016) and KL warm-up (Bowman et al., 2016;
Sonderby et al., 2016) against posterior collapse, and the importance-weighted bound
(Burda et al., 2016) for evaluation.

Encoder q(z|x) = N(mu(x), diag sigma(x)^2); prior p(z) = N(0, I). The networks are MLPs
(``--arch mlp``, the default: digits are 64 pixels) or strided convolutions (``--arch conv``,
for MNIST/CIFAR-sized images with H and W divisible by 4). Decoders p(x|z):

* ``logistic`` (default): a discretized logistic mixture per pixel over the data's
  ``num_levels`` bins (PixelCNN++'s likelihood, :func:`gmcore.nn.functional.
  discretized_logistic_mixture_nll`): an exact likelihood of the discrete data.
* ``bernoulli``: per-pixel Bernoulli logits on binarized data (the data set is binarized with a
  fixed seed; ``num_levels`` becomes 2).
* ``gaussian``: per-pixel Normal (mean, log-scale) on uniformly dequantized data
  ``y = (level + u) / num_levels``; its NLL carries the dequantization term
  (:func:`gmcore.metrics.dequantization_nats`) so bits/dim compare with the discrete decoders.

Training minimises the negative ELBO ``recon + beta_t * KL`` where ``beta_t`` ramps linearly from
0 to ``beta`` over ``kl_warmup`` steps and, with ``free_bits`` = lambda > 0, each latent
dimension's batch-mean KL is floored at lambda nats (so the encoder is not pushed to switch
dimensions off). ``nll`` is the IWAE bound with ``iw_samples`` samples (k = 1: the negative
ELBO).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ... import creation as gc
from ... import functional as gf
from ...nn import functional as F

from ..._dtype import int64
from ...tensor import Tensor
from ... import metrics
from ..base import DataInfo, GenerativeModel
from ..registry import register
from ._nets import conv_decoder, conv_encoder, mlp

LOG2PI = math.log(2.0 * math.pi)


@dataclass
class VAEConfig:
    latent_dim: int = field(default=16, metadata={"help": "size of z", "min": 1})
    arch: str = field(default="mlp", metadata={
        "help": "encoder/decoder networks: MLPs, or convolutions for images with H, W divisible by 4",
        "choices": ["mlp", "conv"]})
    hidden: int = field(default=256, metadata={"help": "width of the encoder/decoder MLPs", "min": 1})
    layers: int = field(default=2, metadata={"help": "hidden layers per MLP", "min": 1})
    channels: int = field(default=32, metadata={"help": "conv arch: channels of the first conv", "min": 1})
    decoder: str = field(default="logistic", metadata={
        "help": "p(x|z)", "choices": ["logistic", "bernoulli", "gaussian"]})
    mixtures: int = field(default=3, metadata={"help": "logistic decoder: mixture components", "min": 1})
    beta: float = field(default=1.0, metadata={"help": "KL weight (beta-VAE)", "min": 0.0})
    free_bits: float = field(default=0.0, metadata={"help": "per-dimension KL floor in nats (0 = off)",
                                                    "min": 0.0})
    kl_warmup: int = field(default=0, metadata={"help": "steps to ramp the KL weight from 0 to beta",
                                                "min": 0})
    iw_samples: int = field(default=64, metadata={"help": "importance samples of the test bound", "min": 1})
    sample_mode: str = field(default="mean", metadata={
        "help": "samples.png shows the decoder mean or a draw from p(x|z)", "choices": ["mean", "draw"]})


@register("vae", family="latent", dataset="digits",
          description="variational autoencoder (beta-VAE, free bits, KL warm-up; IWAE test bound)")
class VAE(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> vae = VAE(VAE.Config(latent_dim=2, hidden=16), DataInfo((1, 8, 8), 17))
    >>> x = gm.rand(5, 1, 8, 8).mul(16).round().div(16)
    >>> loss, logs = vae.loss((x,))
    >>> sorted(logs), vae.nll((x,)).shape, vae.sample(3).shape
    (['kl', 'recon'], gmcore.Size([5]), gmcore.Size([3, 1, 8, 8]))
    """

    Config = VAEConfig

    @classmethod
    def dataset_options(cls, config) -> dict:
        return {"binarize": "stochastic"} if config.decoder == "bernoulli" else {}

    def __init__(self, config: VAEConfig, data: DataInfo):
        super().__init__(config, data)
        if config.decoder == "bernoulli" and data.num_levels != 2:
            raise ValueError(f"the bernoulli decoder needs binary data; {data.name or 'the data'} has "
                             f"{data.num_levels} levels (the CLI binarizes digits for it)")
        if config.decoder in ("logistic", "gaussian") and data.num_levels < 2:
            raise ValueError(f"the vae models images: its {config.decoder} decoder needs data with discrete "
                             f"levels and {data.name or 'this data set'} has continuous values; train it "
                             "on images (--dataset digits, mnist, cifar10 or image_folder)")
        if config.decoder == "logistic" and data.shape[0] not in (1, 3):
            raise ValueError(f"the logistic decoder needs 1 or 3 channels, got shape {data.shape}")
        d, c = data.dims, config
        ch = data.shape[0]
        if c.decoder == "logistic":
            self.out_channels = c.mixtures * (1 + 2 * ch + ch * (ch - 1) // 2)
        else:  # per pixel: one logit, or a mean and a log-scale
            self.out_channels = {"bernoulli": 1, "gaussian": 2}[c.decoder] * ch
        if c.arch == "conv":
            self.encoder = conv_encoder(data.shape, c.channels, 2 * c.latent_dim)
            self.decoder = conv_decoder(c.latent_dim, c.channels, data.shape, self.out_channels)
        else:
            self.encoder = mlp(d, c.hidden, c.layers, 2 * c.latent_dim)
            self.decoder = mlp(c.latent_dim, c.hidden, c.layers, self.out_channels * d // ch)
        # Counts training steps for the KL warm-up; a buffer, so checkpoints carry it.
        self.register_buffer("steps_done", gc.zeros((), dtype=int64))

    # ---- pieces --------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log_var) of q(z|x), each (B, latent_dim)."""
        h = self.encoder(x if self.config.arch == "conv" else x.reshape(x.shape[0], -1))
        mu, log_var = h.chunk(2, dim=1)
        return mu, log_var.clamp(-12.0, 8.0)  # keeps exp() finite early in training

    def _decoder_out(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def _log_px(self, out: Tensor, x: Tensor, u: Tensor | None) -> Tensor:
        """log p(x|z) in nats per example, for decoder outputs ``out`` (N, ...) and data (N, ...)."""
        n, cfg, shape = x.shape[0], self.config, self.data.shape
        if cfg.decoder == "bernoulli":
            logits = out.reshape(n, -1)
            return -F.binary_cross_entropy_with_logits(logits, x.reshape(n, -1), reduction="none").sum(1)
        if cfg.decoder == "gaussian":
            mean, log_scale = out.reshape(n, 2, -1).unbind(1)
            log_scale = log_scale.clamp(min=-7.0)
            y = (x.reshape(n, -1) * (self.data.num_levels - 1) + u) / self.data.num_levels
            z = (y - mean) * (-log_scale).exp()
            logp = -0.5 * z * z - log_scale - 0.5 * LOG2PI
            return logp.sum(1) - metrics.dequantization_nats(self.data.dims, self.data.num_levels)
        params = out.reshape(n, self.out_channels, *shape[1:])
        # the data check costs a GPU sync: first training batch and evaluation batches only
        validate = not (self.training and getattr(self, "_dlml_checked", False))
        self._dlml_checked = getattr(self, "_dlml_checked", False) or self.training
        return -F.discretized_logistic_mixture_nll(x * 2.0 - 1.0, params, num_bins=self.data.num_levels,
                                                   validate=validate)

    def _dequant_noise(self, x: Tensor, generator=None) -> Tensor | None:
        if self.config.decoder != "gaussian":
            return None
        return gc.rand(x.shape[0], self.data.dims, generator=generator, device=x.device, dtype=x.dtype)

    def _kl_weight(self) -> float:
        c = self.config
        if not c.kl_warmup:
            return c.beta
        return c.beta * min(1.0, (int(self.steps_done.item()) + 1) / c.kl_warmup)

    # ---- the model interface -------------------------------------------------------------
    def loss(self, batch):
        x = batch[0]
        mu, log_var = self.encode(x)
        eps = gc.randn(*mu.shape, device=mu.device, dtype=mu.dtype)
        z = mu + (0.5 * log_var).exp() * eps
        recon = -self._log_px(self._decoder_out(z), x, self._dequant_noise(x)).mean()
        kl_dims = 0.5 * (mu * mu + log_var.exp() - 1.0 - log_var)          # (B, latent)
        kl = kl_dims.sum(1).mean()
        if self.config.free_bits > 0:
            kl_term = kl_dims.mean(0).clamp(min=self.config.free_bits).sum()
        else:
            kl_term = kl
        loss = recon + self._kl_weight() * kl_term
        if self.training:
            self.steps_done.data[...] += 1
        return loss, {"recon": recon.item(), "kl": kl.item()}

    def nll(self, batch, generator=None) -> Tensor:
        """IWAE bound on -log p(x) in nats per example, with ``iw_samples`` samples."""
        x = batch[0]
        k, n = self.config.iw_samples, x.shape[0]
        mu, log_var = self.encode(x)
        std = (0.5 * log_var).exp()
        eps = gc.randn(k, *mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + std * eps                                                   # (k, B, latent)
        log_q = (-0.5 * eps * eps - 0.5 * log_var - 0.5 * LOG2PI).sum(-1)
        log_pz = (-0.5 * z * z - 0.5 * LOG2PI).sum(-1)
        xk = x.unsqueeze(0).expand(k, *x.shape).reshape(k * n, *x.shape[1:])
        u = self._dequant_noise(xk, generator)
        log_px = self._log_px(self._decoder_out(z.reshape(k * n, -1)), xk, u).reshape(k, n)
        return metrics.iwae_bound(log_px + log_pz - log_q)

    @property
    def nll_kind(self):
        extra = " + dequantization" if self.config.decoder == "gaussian" else ""
        return f"IWAE bound (k={self.config.iw_samples}){extra}"

    def decode_mean(self, z: Tensor) -> Tensor:
        """E[x|z] in [0, 1], shaped like the data (for the logistic decoder: the mixture's mean)."""
        n, shape, out = z.shape[0], self.data.shape, self._decoder_out(z)
        if self.config.decoder == "bernoulli":
            return out.sigmoid().reshape(n, *shape)
        if self.config.decoder == "gaussian":
            return out.reshape(n, 2, -1)[:, 0].clamp(0.0, 1.0).reshape(n, *shape)
        params = out.reshape(n, self.out_channels, *shape[1:])
        k, ch = self.config.mixtures, shape[0]
        weights = params[:, :k].softmax(1)                                  # (n, K, H, W)
        stride = 3 * k if ch == 3 else 2 * k
        means = [(weights * params[:, k + c * stride:k + c * stride + k]).sum(1) for c in range(ch)]
        return (gf.stack(means, 1).clamp(-1.0, 1.0) + 1.0) * 0.5

    def sample(self, n, generator=None) -> Tensor:
        dev = next(self.parameters()).device
        z = gc.randn(n, self.config.latent_dim, generator=generator, device=dev)
        if self.config.sample_mode == "mean":
            return self.decode_mean(z)
        out, shape = self._decoder_out(z), self.data.shape
        if self.config.decoder == "bernoulli":
            p = out.sigmoid().reshape(n, *shape)
            return (gc.rand(*p.shape, generator=generator, device=dev) < p).to(p.dtype)
        if self.config.decoder == "gaussian":
            mean, log_scale = out.reshape(n, 2, -1).unbind(1)
            y = mean + log_scale.exp() * gc.randn(*mean.shape, generator=generator, device=dev)
            return y.clamp(0.0, 1.0).reshape(n, *shape)
        params = out.reshape(n, self.out_channels, *shape[1:])
        x = F.sample_discretized_logistic_mixture(params, self.data.num_levels, generator=generator)
        return (x + 1.0) * 0.5


