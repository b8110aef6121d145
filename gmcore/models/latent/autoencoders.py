"""Regularised autoencoders: denoising (Vincent et al., 2008) and contractive (Rifai et al., 2011).

Both map x to a code h = f(x) and back through a decoder that outputs a discretized logistic
distribution over the data's levels, so the reconstruction term is a proper conditional
log-probability -log p(x | g(f(x))).

* DAE: the encoder sees a corrupted input (Gaussian noise of std ``noise`` on pixels in [0, 1],
  or masking noise that zeroes a fraction ``noise`` of the pixels) and the decoder must
  reconstruct the clean one.
* CAE: the encoder sees the clean input; the loss adds ``lam * ||df/dx||_F^2``, the squared
  Frobenius norm of the encoder's Jacobian. It is estimated without building the Jacobian:
  for Rademacher vectors v, E ||J^T v||^2 = ||J||_F^2, and J^T v is one vector-Jacobian product
  taken with ``create_graph=True``, so minimising the penalty differentiates through a
  gradient (double backward).

Neither is a density model: ``nll`` is the *reconstruction* NLL of the clean input, reported as
"reconstruction (not a likelihood)", and never comparable with a VAE's bound. Samples come from
the Markov chain of Bengio et al. (2013): start from uniform noise, then repeat corrupt ->
encode -> decode (taking the decoder mean) ``chain_steps`` times.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import autograd
from ... import creation as gc
from ... import functional as gf
from ...nn import functional as F
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register
from ._nets import mlp


@dataclass
class AEConfig:
    code_dim: int = field(default=32, metadata={"help": "size of the code h", "min": 1})
    hidden: int = field(default=256, metadata={"help": "width of the MLPs", "min": 1})
    layers: int = field(default=2, metadata={"help": "hidden layers per MLP", "min": 1})
    chain_steps: int = field(default=30, metadata={"help": "Markov-chain steps per sample", "min": 1})


@dataclass
class DAEConfig(AEConfig):
    corruption: str = field(default="gaussian", metadata={"help": "input corruption",
                                                          "choices": ["gaussian", "masking"]})
    noise: float = field(default=0.3, metadata={"help": "noise std (gaussian) or masked fraction",
                                                "min": 0.0})


@dataclass
class CAEConfig(AEConfig):
    lam: float = field(default=0.1, metadata={"help": "weight of the Jacobian penalty", "min": 0.0})
    penalty_samples: int = field(default=1, metadata={
        "help": "random projections per step for the Jacobian norm estimate", "min": 1})
    noise: float = field(default=0.3, metadata={"help": "gaussian corruption of the sampling chain",
                                                "min": 0.0})


class _Autoencoder(GenerativeModel):
    nll_kind = "reconstruction (not a likelihood)"

    def __init__(self, config, data: DataInfo):
        super().__init__(config, data)
        if data.num_levels < 2 or data.shape[0] not in (1, 3):
            raise ValueError("autoencoders here decode a discretized logistic over image levels: "
                             f"need 1 or 3 channels and num_levels, got shape {data.shape}")
        ch = data.shape[0]
        self.param_channels = 1 + 2 * ch + ch * (ch - 1) // 2          # one logistic per pixel
        self.encoder = mlp(data.dims, config.hidden, config.layers, config.code_dim)
        self.decoder = mlp(config.code_dim, config.hidden, config.layers,
                           self.param_channels * data.dims // ch)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x.reshape(x.shape[0], -1)).tanh()

    def _params(self, h: Tensor) -> Tensor:
        return self.decoder(h).reshape(h.shape[0], self.param_channels, *self.data.shape[1:])

    def recon_nll(self, h: Tensor, x: Tensor) -> Tensor:
        """-log p(x | decoder(h)) in nats per example."""
        return F.discretized_logistic_mixture_nll(x * 2.0 - 1.0, self._params(h),
                                                  num_bins=self.data.num_levels)

    def decode_mean(self, h: Tensor) -> Tensor:
        p, ch = self._params(h), self.data.shape[0]
        stride = 3 if ch == 3 else 2
        means = [p[:, 1 + c * stride] for c in range(ch)]
        return (gf.stack(means, 1).clamp(-1.0, 1.0) + 1.0) * 0.5

    def corrupt(self, x: Tensor, generator=None) -> Tensor:
        cfg = self.config
        if getattr(cfg, "corruption", "gaussian") == "masking":
            keep = gc.rand(*x.shape, generator=generator, device=x.device, dtype=x.dtype) >= cfg.noise
            return x * keep.to(x.dtype)
        return x + cfg.noise * gc.randn(*x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def nll(self, batch, generator=None) -> Tensor:
        x = batch[0]
        return self.recon_nll(self.encode(x), x)

    def sample(self, n, generator=None) -> Tensor:
        dev = next(self.parameters()).device
        x = gc.rand(n, *self.data.shape, generator=generator, device=dev)
        for _ in range(self.config.chain_steps):
            x = self.decode_mean(self.encode(self.corrupt(x, generator)))
        return x


@register("dae", family="latent", dataset="digits",
          description="denoising autoencoder (gaussian or masking noise; Markov-chain samples)")
class DAE(_Autoencoder):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> dae = DAE(DAE.Config(code_dim=4, hidden=16, chain_steps=2), DataInfo((1, 8, 8), 17))
    >>> x = gm.rand(5, 1, 8, 8).mul(16).round().div(16)
    >>> dae.loss((x,))[0].ndim, dae.sample(2).shape
    (0, gmcore.Size([2, 1, 8, 8]))
    """

    Config = DAEConfig

    def loss(self, batch):
        x = batch[0]
        recon = self.recon_nll(self.encode(self.corrupt(x)), x).mean()
        return recon / self.data.dims, {"recon": recon.item()}


@register("cae", family="latent", dataset="digits",
          description="contractive autoencoder (Jacobian penalty by double backward)")
class CAE(_Autoencoder):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> cae = CAE(CAE.Config(code_dim=4, hidden=16, chain_steps=2), DataInfo((1, 8, 8), 17))
    >>> x = gm.rand(5, 1, 8, 8).mul(16).round().div(16)
    >>> loss, logs = cae.loss((x,))
    >>> sorted(logs)
    ['jacobian', 'recon']
    """

    Config = CAEConfig

    def jacobian_penalty(self, x: Tensor, h: Tensor, generator=None) -> Tensor:
        """Unbiased estimate of mean_b ||d h_b / d x_b||_F^2 for codes ``h = encode(x)`` computed
        from an ``x`` that requires grad (double backward)."""
        total = 0.0
        for _ in range(self.config.penalty_samples):
            v = (gc.rand(*h.shape, generator=generator, device=h.device, dtype=h.dtype) < 0.5)
            v = v.to(h.dtype) * 2.0 - 1.0                                        # Rademacher
            (jtv,) = autograd.grad(h, x, grad_outputs=v, create_graph=True, retain_graph=True)
            total = total + (jtv * jtv).reshape(x.shape[0], -1).sum(1).mean()
        return total / self.config.penalty_samples

    def loss(self, batch):
        x = batch[0].detach().requires_grad_(True)
        h = self.encode(x)
        recon = self.recon_nll(h, x.detach()).mean()
        penalty = self.jacobian_penalty(x, h)
        loss = (recon + self.config.lam * penalty) / self.data.dims
        return loss, {"recon": recon.item(), "jacobian": penalty.item()}
