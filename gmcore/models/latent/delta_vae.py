"""delta-VAE: a VAE whose rate cannot fall below a committed delta (Razavi, van den Oord, Poole &
Vinyals, 2019, "Preventing Posterior Collapse with delta-VAEs").

With a strong autoregressive decoder, a plain VAE tends to *collapse*: the decoder models x
alone, the posterior equals the prior and KL(q(z|x) || p(z)) -> 0. The delta-VAE removes that
optimum by choosing families that cannot match: the latents are a sequence of ``n`` positions
with ``d`` channels (here the ``h x w`` latent grid in raster order), the prior is a stationary
AR(1) Gaussian process per channel,

    z_1 = eps_1,   z_t = alpha z_{t-1} + sqrt(1 - alpha^2) eps_t      (unit variance, corr alpha^|i-j|),

and the posterior is mean-field (diagonal Gaussian, from a conv encoder). No diagonal Gaussian
equals a correlated prior, so the KL has a floor, the *committed rate*:

    min_q KL(q || p) = 0.5 * sum_k [ (n - 2) ln(1 + alpha_k^2) - ln(1 - alpha_k^2) ].

Derivation (one channel; Sigma_ij = alpha^|i-j|, log det Sigma = (n - 1) ln(1 - alpha^2), the
precision Lambda is tridiagonal with diagonal (1, 1 + alpha^2, ..., 1 + alpha^2, 1) / (1 - alpha^2)):
KL(N(mu, diag s^2) || N(0, Sigma)) = 0.5 [sum_i Lambda_ii s_i^2 + mu' Lambda mu - n + log det Sigma
- sum_i ln s_i^2]; it is least at mu = 0, s_i^2 = 1 / Lambda_ii, where it is 0.5 [log det Sigma +
sum_i ln Lambda_ii], which is the formula above. ``--delta`` (nats per example) sets one alpha
shared by all ``d`` channels, solved from ``delta = d * 0.5 [(n-2) ln(1+alpha^2) - ln(1-alpha^2)]``
by bisection (:func:`alpha_for_delta`); ``kl_min`` in metrics.json is that delta.

The KL is computed exactly and in O(n): under the AR(1) factorisation
``-log p(z) = 0.5 [z_1^2 + sum_{t>1} (z_t - alpha z_{t-1})^2 / (1 - alpha^2)] + const`` and q's
independence, ``E_q (z_t - alpha z_{t-1})^2 = (mu_t - alpha mu_{t-1})^2 + s_t^2 + alpha^2 s_{t-1}^2``
(:func:`ar1_kl`; no n x n matrix anywhere).

Decoder: a Gated PixelCNN (the stacks of :mod:`gmcore.models.autoregressive.gated_pixelcnn`)
over the image with a categorical over the data's levels, conditioned on z: z is upsampled to
the image grid by a small transposed-conv stack and a 1x1 conv gives every gated layer a
per-pixel bias of its gates (where the class-conditional model adds a per-example one). Given z
the decoder is causal in x, so p(x|z) = prod_i p(x_i | x_<i, z).

``--prior normal`` keeps the same posterior and decoder with p(z) = N(0, I) (alpha = 0): the plain
VAE, whose rate is free to collapse. ``nll`` is the IWAE bound (Burda et al., 2016) with
``iw_samples`` samples (k = 1: the negative ELBO, sampled); the run's metrics.json also holds the
test ELBO with the exact KL (``test_elbo_bits_per_dim``, ``test_kl``, ``test_recon``), ``kl_min``
and ``alpha``. Log rows carry ``kl`` and ``recon`` (nats per example).

Auxiliary prior: the committed rate is paid in full by the bound under the model's own prior,
information or not, while the latents' aggregate posterior q(z) = E_x q(z|x) is far from the
AR(1) process. The paper therefore trains an *auxiliary* prior p_aux(z) on the aggregate
posterior and reports the bound of the model p_aux(z) p(x|z) (theirs is
autoregressive). Here (``--aux-prior made``, the default) it is a MADE over the d * n latents in
the sequence's order with a ``--aux-components`` Gaussian mixture per conditional
(:class:`gmcore.nn.flows.MADEMoG`), trained alongside the model on the detached posterior samples
of every step (max E_x E_q log p_aux(z) over its own weights; the encoder and decoder get exactly
their ELBO's gradients, and, built last and drawing no noise, it leaves their path unchanged). It
is part of the model, so the checkpoint, ``gmcore eval`` and ``--resume`` carry it; ``nll`` and
``sample`` use it (``gmcore sample RUN --own-prior`` draws z from p(z) instead), and metrics.json
keeps the bound under p(z) itself beside it (``test_bits_per_dim_own_prior``). Any normalised
p_aux gives a valid bound on -log p(x) of the model p_aux(z) p(x|z) with the same decoder. The
plain VAE (``--prior normal``) gets the same auxiliary prior, so the two compare like for like.

Digits with the defaults (2000 steps; delta = 8 nats, alpha = 0.376, a 4x4x8 latent), test
bits/dim of the IWAE bound (k = 64) under the auxiliary MADE prior at seeds 0, 1, 2: delta-VAE
1.749, 1.746, 1.735 (under its own AR(1) prior 1.808, 1.806, 1.797; at seed 0 a full-covariance
Gaussian moment-matched to the training posteriors after the run gives 1.747 on the same
checkpoint), test KL 10.4-11.0 nats, every log row >= 8; ``--prior normal`` 1.757, 1.761, 1.751
(the same under N(0, I)), its KL collapsed to under 0.01 nats. The delta-VAE is better at each
seed, by 0.008, 0.015 and 0.017 bits/dim (mean 0.013; the two models' own seed-to-seed spreads
are 0.014 and 0.010). The latent is used: the delta-VAE's reconstructions follow their inputs,
the plain VAE's do not.

What differs from the paper: the latent is a small 4x4 grid (on 8x8 digits) in raster order, not
a temporal sequence or the paper's per-channel layout; the auxiliary prior is a MADE trained
alongside (with a stop-gradient) rather than a separate network trained afterwards; no anti-causal
encoder, no free bits; on RGB images (CIFAR-10 by ``--dataset cifar10 --data-root``) the decoder
is gated-pixelcnn's with the colour order in every layer.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ... import creation as gc
from ... import functional as gf
from ... import metrics
from ... import nn
from ...distributions import Categorical
from ...tensor import Tensor
from ...nn.flows.made_mog import MADEMoG
from ..autoregressive._pixel_layers import ColourMaskedConv2d, GatedStackLayer, check_image_data, sample_pixels
from ..base import DataInfo, GenerativeModel
from ..registry import register

LOG2PI = math.log(2.0 * math.pi)
IW_CHUNK = 4096          # images per decoder call in the IWAE bound (bounds the memory)
RECON_IMAGES = 16        # test images in reconstructions.png


# ---- the AR(1) prior's arithmetic (floats and Tensors; alpha = 0 is N(0, I)) --------------------

def committed_rate(alpha: float, n: int, channels: int = 1) -> float:
    """min over diagonal Gaussians q of KL(q || AR(1) prior), in nats: ``channels`` times
    ``0.5 [(n - 2) ln(1 + alpha^2) - ln(1 - alpha^2)]`` (module docstring).

    >>> round(committed_rate(0.5, 16, 8), 4)
    13.6468
    """
    if n < 2:
        raise ValueError(f"the committed rate needs a latent sequence of n >= 2 positions, got n={n}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
    a2 = alpha * alpha
    return channels * 0.5 * ((n - 2) * math.log1p(a2) - math.log1p(-a2))


def alpha_for_delta(delta: float, n: int, channels: int = 1) -> float:
    """The common alpha in [0, 1) whose committed rate over ``channels`` AR(1) channels of length
    ``n`` is ``delta`` nats (bisection: the rate grows from 0 at alpha = 0 to infinity at 1).

    >>> a = alpha_for_delta(10.0, 16, 8)
    >>> round(committed_rate(a, 16, 8), 9)
    10.0
    """
    if delta < 0 or not math.isfinite(delta):
        raise ValueError(f"delta must be a finite rate >= 0 nats, got {delta}")
    if n < 2:
        raise ValueError(f"the AR(1) prior needs n >= 2 latent positions, got n={n}")
    lo, hi = 0.0, 1.0
    for _ in range(200):            # to float64 resolution; the rate is monotone in alpha
        mid = 0.5 * (lo + hi)
        if mid == lo or mid == hi:
            break
        if committed_rate(mid, n, channels) < delta:
            lo = mid
        else:
            hi = mid
    return lo


def ar1_kl(mu: Tensor, log_var: Tensor, alpha: float) -> Tensor:
    """KL(N(mu, diag exp(log_var)) || AR(1)) in nats per example (B,) for (B, d, n) sequences
    (each channel its own AR(1) process of correlation ``alpha`` along the last dim), exact and in
    O(n): ``0.5 [E_q(-2 log p(z)) - n ln 2pi - sum ln s^2 - n]`` with the AR(1) factorisation."""
    a, n, d = float(alpha), mu.shape[-1], mu.shape[-2]
    var = log_var.exp()
    first = mu[..., :1] * mu[..., :1] + var[..., :1]
    diff = mu[..., 1:] - a * mu[..., :-1]
    rest = (diff * diff + var[..., 1:] + (a * a) * var[..., :-1]) / (1.0 - a * a)
    const = d * (n - 1) * math.log1p(-a * a) - d * n
    return 0.5 * (first.sum((1, 2)) + rest.sum((1, 2)) - log_var.sum((1, 2)) + const)


def ar1_log_prob(z: Tensor, alpha: float) -> Tensor:
    """log p(z) under the AR(1) prior for (..., d, n) sequences, summed over d and n: (...)."""
    a, n, d = float(alpha), z.shape[-1], z.shape[-2]
    innov = (z[..., 1:] - a * z[..., :-1])
    quad = (z[..., :1] * z[..., :1]).sum((-1, -2)) + (innov * innov).sum((-1, -2)) / (1.0 - a * a)
    return -0.5 * quad - 0.5 * d * n * LOG2PI - 0.5 * d * (n - 1) * math.log1p(-a * a)


def ar1_sample(shape, alpha: float, generator=None, device="cpu") -> Tensor:
    """Draws (B, d, n) from the stationary AR(1) prior (the recursion of the module docstring)."""
    a = float(alpha)
    eps = gc.randn(*shape, generator=generator, device=device)
    steps = [eps[..., 0]]
    for t in range(1, shape[-1]):
        steps.append(a * steps[-1] + math.sqrt(1.0 - a * a) * eps[..., t])
    return gf.stack(steps, -1)


# ---- networks ------------------------------------------------------------------------------------

def encoder(in_ch: int, hidden: int, stages: int, out_ch: int) -> nn.Sequential:
    """Image -> (B, out_ch, H / 2^stages, W / 2^stages): a 3x3 conv, ``stages`` 4x4 stride-2
    convs, a 3x3 conv and a 1x1 conv to the posterior's (mu, log_var). ELU throughout."""
    mods, c = [nn.Conv2d(in_ch, hidden, 3, padding=1), nn.ELU()], hidden
    for _ in range(stages):
        mods += [nn.Conv2d(c, 2 * hidden, 4, stride=2, padding=1), nn.ELU()]
        c = 2 * hidden
    mods += [nn.Conv2d(c, c, 3, padding=1), nn.ELU(), nn.Conv2d(c, out_ch, 1)]
    return nn.Sequential(*mods)


def upsampler(in_ch: int, hidden: int, stages: int, out_ch: int) -> nn.Sequential:
    """z (B, d, h, w) -> (B, out_ch, H, W): a 3x3 conv, ``stages`` 4x4 stride-2 transposed convs
    and a 1x1 conv (every gated layer's gate biases at once). ELU between."""
    mods, c = [nn.Conv2d(in_ch, hidden, 3, padding=1), nn.ELU()], hidden
    for _ in range(stages):
        mods += [nn.ConvTranspose2d(c, hidden, 4, stride=2, padding=1), nn.ELU()]
    mods += [nn.Conv2d(hidden, out_ch, 1)]
    return nn.Sequential(*mods)


@dataclass
class DeltaVAEConfig:
    prior: str = field(default="ar1", metadata={
        "help": "p(z): the AR(1) process with the committed rate delta (the delta-VAE), or N(0, I) with "
                "the same posterior and decoder (the plain VAE)", "choices": ["ar1", "normal"]})
    delta: float = field(default=8.0, metadata={
        "help": "committed rate in nats per example (ar1 prior): sets the prior's correlation alpha",
        "min": 0.0})
    latent_channels: int = field(default=8, metadata={"help": "channels d of the latent grid", "min": 1})
    downsample: int = field(default=1, metadata={
        "help": "stride-2 stages between the image and the latent grid (8x8 digits: a 4x4 grid)", "min": 0})
    enc_hidden: int = field(default=32, metadata={"help": "channels of the encoder and the z upsampler",
                                                  "min": 1})
    channels: int = field(default=32, metadata={"help": "feature maps p of the decoder's gated stacks",
                                                "min": 1})
    layers: int = field(default=6, metadata={"help": "gated layers of the decoder", "min": 1})
    first_kernel: int = field(default=7, metadata={"help": "kernel of the decoder's first layer", "min": 1})
    kernel: int = field(default=3, metadata={"help": "kernel of the decoder's other layers", "min": 1})
    out_hidden: int = field(default=64, metadata={"help": "width of the decoder's 1x1 output layers",
                                                  "min": 1})
    iw_samples: int = field(default=64, metadata={"help": "importance samples of the test bound", "min": 1})
    aux_prior: str = field(default="made", metadata={
        "help": "auxiliary prior over z, fitted to the aggregate posterior alongside training (its gradient "
                "stops at the posterior samples) and used by the reported bound and the samples: an "
                "autoregressive MADE with a Gaussian mixture per conditional, or none (the bound and the "
                "samples then use p(z) itself)", "choices": ["made", "none"]})
    aux_hidden: int = field(default=256, metadata={"help": "units in each hidden layer of the auxiliary MADE",
                                                   "min": 1})
    aux_components: int = field(default=4, metadata={"help": "Gaussian components of each conditional of the "
                                                             "auxiliary MADE", "min": 1})


@dataclass
class DeltaVAESampleOptions:
    own_prior: bool = field(default=False, metadata={
        "help": "draw z from the model's own prior p(z) (AR(1), or N(0, I)) instead of the auxiliary one"})


@register("delta-vae", family="latent", dataset="digits",
          description="delta-VAE: AR(1) prior + mean-field posterior commit a minimum rate; Gated PixelCNN "
                      "decoder (--prior normal: the plain VAE, which collapses)")
class DeltaVAE(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> _ = gm.manual_seed(0)
    >>> cfg = DeltaVAE.Config(delta=3.0, latent_channels=2, enc_hidden=4, channels=4, layers=2,
    ...                       out_hidden=8, iw_samples=4)
    >>> m = DeltaVAE(cfg, DataInfo((1, 8, 8), 17, "digits"))
    >>> x = gm.rand(3, 1, 8, 8).mul(16).round().div(16)
    >>> loss, logs = m.loss((x,))
    >>> sorted(logs), logs["kl"] >= m.kl_min
    (['aux_nats', 'bits_per_dim', 'kl', 'recon'], True)
    >>> m.nll((x,)).shape, m.sample(2, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([3]), gmcore.Size([2, 1, 8, 8]))
    """

    Config = DeltaVAEConfig
    SampleOptions = DeltaVAESampleOptions
    # 28x28 MNIST: a 7x7 latent grid (n = 49), as 8x8 digits get a 4x4 one (n = 16)
    config_defaults = {"mnist": {"downsample": 2}}

    def __init__(self, config: DeltaVAEConfig, data: DataInfo):
        super().__init__(config, data)
        c = config
        C, H, W = check_image_data("delta-vae", data)
        if C == 3 and min(c.channels, c.out_hidden) < 3:
            raise ValueError("delta-vae on RGB data splits the decoder's stacks and output layers into 3 "
                             f"colour groups: channels and out_hidden must be >= 3, got {c.channels} "
                             f"and {c.out_hidden}")
        step = 2 ** c.downsample
        if H % step or W % step:
            raise ValueError(f"delta-vae with --downsample {c.downsample} needs H and W divisible by {step}, "
                             f"got {H}x{W}")
        self.latent_shape = (c.latent_channels, H // step, W // step)
        self.positions = (H // step) * (W // step)      # n: the latent sequence length
        if c.prior == "ar1":
            if self.positions < 2:
                raise ValueError(f"the AR(1) prior needs a latent grid of >= 2 positions, got "
                                 f"{H // step}x{W // step}; use a smaller --downsample")
            self.alpha = alpha_for_delta(c.delta, self.positions, c.latent_channels)
            self.kl_min = committed_rate(self.alpha, self.positions, c.latent_channels)
        else:
            self.alpha, self.kl_min = 0.0, 0.0
        self.levels = int(data.num_levels)
        p = c.channels
        self.encoder = encoder(C, c.enc_hidden, c.downsample, 2 * c.latent_channels)
        self.cond = upsampler(c.latent_channels, c.enc_hidden, c.downsample, c.layers * 4 * p)
        # the stacks take z's map (B, 4p, H, W) as a per-position bias of their gates
        # RGB: gated-pixelcnn's colour order (R -> G -> B) within each pixel, in every layer
        self.stack = nn.ModuleList([GatedStackLayer(C, p, c.first_kernel, first=True, colours=C)]
                                   + [GatedStackLayer(p, p, c.kernel, colours=C) for _ in range(c.layers - 1)])
        if C == 3:
            self.out1 = ColourMaskedConv2d(p, c.out_hidden, "B")
            self.out2 = ColourMaskedConv2d(c.out_hidden, C * self.levels, "B")
        else:
            self.out1 = nn.Conv2d(p, c.out_hidden, 1)
            self.out2 = nn.Conv2d(c.out_hidden, self.levels, 1)
        # Built last, so that the networks above draw the same initial weights with or without it
        # (and, since it draws no noise in loss, train along the same path).
        self.aux = None
        if c.aux_prior == "made":
            self.aux = MADEMoG(c.latent_channels * self.positions, components=c.aux_components,
                               hidden=c.aux_hidden, layers=2)

    # ---- pieces --------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log_var) of q(z|x), each (B, d, n): the latent grid in raster order."""
        h = self.encoder(x)
        B, d = h.shape[0], self.config.latent_channels
        mu, log_var = h.reshape(B, 2 * d, self.positions).chunk(2, dim=1)
        return mu, log_var.clamp(-12.0, 8.0)      # the clamp keeps exp() finite early on

    def conditioning(self, z: Tensor) -> Tensor:
        """Every gated layer's per-pixel gate bias (B, layers * 4p, H, W) for latents (B, d, n)."""
        return self.cond(z.reshape(z.shape[0], *self.latent_shape))

    def logits(self, x: Tensor, cond: Tensor) -> Tensor:
        """Logits (B, C, num_levels, H, W) of p(x_i | x_<i, z) for images ``x`` in [0, 1] and the
        conditioning of :meth:`conditioning` (cut to x's rows)."""
        xs = x * 2.0 - 1.0
        conds = cond.chunk(len(self.stack), dim=1)
        v, h = xs, xs
        for layer, cl in zip(self.stack, conds):
            v, h = layer(v, h, cl)
        out = self.out2(self.out1(h.relu()).relu())
        B, _, H, W = out.shape
        return out.reshape(B, x.shape[1], self.levels, H, W)

    def recon_nll(self, x: Tensor, z: Tensor) -> Tensor:
        """-log p(x|z) in nats per example (B,), for latents z (B, d, n)."""
        logp = self.logits(x, self.conditioning(z)).log_softmax(2)
        target = (x * (self.levels - 1)).round().long().unsqueeze(2)     # (B, C, 1, H, W)
        return -logp.gather(2, target).sum((1, 2, 3, 4))

    def kl(self, mu: Tensor, log_var: Tensor) -> Tensor:
        """KL(q(z|x) || p(z)) in nats per example (B,), exact (:func:`ar1_kl`; alpha = 0 for N(0, I))."""
        return ar1_kl(mu, log_var, self.alpha)

    # ---- the model interface -------------------------------------------------------------------
    def loss(self, batch):
        x = batch[0]
        mu, log_var = self.encode(x)
        z = mu + (0.5 * log_var).exp() * gc.randn(*mu.shape, device=mu.device, dtype=mu.dtype)
        recon = self.recon_nll(x, z).mean()
        kl = self.kl(mu, log_var).mean()
        loss = recon + kl                                     # the negative ELBO, nats per example
        logs = {"recon": recon.item(), "kl": kl.item(),
                "bits_per_dim": loss.item() / (self.data.dims * math.log(2.0))}
        if self.aux is not None:
            # max E_x E_q(z|x) log p_aux(z) over the auxiliary prior's weights alone: z is detached,
            # so the encoder and decoder see exactly the gradients of their ELBO
            aux = -self.aux.log_prob(self._aux_layout(z.detach())).mean()
            logs["aux_nats"] = aux.item()
            loss = loss + aux
        return loss, logs

    def nll(self, batch, generator=None) -> Tensor:
        """IWAE bound on -log p(x) in nats per example (B,), with ``iw_samples`` samples."""
        x = batch[0]
        k, B = self.config.iw_samples, x.shape[0]
        mu, log_var = self.encode(x)
        eps = gc.randn(k, *mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + (0.5 * log_var).exp() * eps                              # (k, B, d, n)
        log_q = (-0.5 * eps * eps - 0.5 * log_var - 0.5 * LOG2PI).sum((2, 3))
        log_pz = self._log_prior(z)                                         # (k, B)
        per = max(1, IW_CHUNK // B)                                         # samples per decoder call
        log_px = []
        for s in range(0, k, per):
            zs = z[s:s + per]
            m = zs.shape[0]
            xs = x.unsqueeze(0).expand(m, *x.shape).reshape(m * B, *x.shape[1:])
            log_px.append(-self.recon_nll(xs, zs.reshape(m * B, *zs.shape[2:])).reshape(m, B))
        return metrics.iwae_bound(gf.cat(log_px, 0) + log_pz - log_q)

    @property
    def nll_kind(self):
        k = self.config.iw_samples
        if self._uses_aux():
            return (f"IWAE bound (k={k}), autoregressive auxiliary prior (MADE, {self.config.aux_components} "
                    f"Gaussians per conditional) fitted to the aggregate posterior")
        return f"IWAE bound (k={k}), {self.config.prior} prior"

    # ---- the auxiliary prior (as the paper's: trained on the aggregate posterior) ----------------
    own_prior_only = False   # True: nll and sample use p(z) even when an auxiliary prior exists

    def _uses_aux(self) -> bool:
        return self.aux is not None and not self.own_prior_only

    def _aux_layout(self, z: Tensor) -> Tensor:
        """(..., d, n) latents -> (N, n * d) rows for the MADE, position-major (the latent
        sequence's order, each position's channels together)."""
        return z.transpose(-1, -2).reshape(-1, self.positions * self.config.latent_channels)

    def _log_prior(self, z: Tensor) -> Tensor:
        """log p(z) summed over (d, n), shape z.shape[:-2]: the auxiliary prior when there is one
        (and ``own_prior_only`` is off), else the model's own (AR(1) or N(0, I))."""
        if not self._uses_aux():
            return ar1_log_prob(z, self.alpha)
        return self.aux.log_prob(self._aux_layout(z)).reshape(z.shape[:-2])

    def sample(self, n, generator=None, z: Tensor | None = None, own_prior: bool = False) -> Tensor:
        """``n`` images in [0, 1]: z from the auxiliary prior (``own_prior`` or no auxiliary prior:
        from p(z) itself), or the given ``z`` of shape (n, d, positions), then pixel by pixel from
        p(x|z)."""
        dev = next(self.parameters()).device
        shape = (n, self.config.latent_channels, self.positions)
        if z is None and self.aux is not None and not own_prior:
            rows = self.aux.sample(n, generator=generator)
            z = rows.reshape(n, self.positions, self.config.latent_channels).transpose(1, 2)
        elif z is None:
            z = ar1_sample(shape, self.alpha, generator=generator, device=dev)
        elif tuple(z.shape) != shape:
            raise ValueError(f"delta-vae.sample: z must have shape {shape} (n, d, positions), got "
                             f"{tuple(z.shape)}")
        cond = self.conditioning(z)
        top = self.levels - 1

        def predict(x, i, j, c):
            logits = self.logits(x, cond[:, :, :x.shape[2]])[:, :, :, i, j]      # (n, C, levels)
            if c is not None:
                logits = logits[:, c]
            return Categorical(logits=logits).sample(generator=generator).float() / top

        return sample_pixels(predict, n, self.data.shape, dev, crop=1, channelwise=self.data.shape[0] == 3)

    def test_elbo(self, dataset, generator=None, batch_size: int = 256) -> dict:
        """The test ELBO with the exact KL (one z per example for the reconstruction term):
        ``test_kl``, ``test_recon`` (nats per example) and ``test_elbo_bits_per_dim``."""
        from ...autograd import no_grad
        from ...data import DataLoader

        dev = next(self.parameters()).device
        kl = recon = 0.0
        count = 0
        with no_grad():
            for batch in DataLoader(dataset, batch_size=batch_size, device=dev):
                x = batch[0]
                mu, log_var = self.encode(x)
                eps = gc.randn(*mu.shape, generator=generator, device=dev, dtype=mu.dtype)
                z = mu + (0.5 * log_var).exp() * eps
                recon += float(self.recon_nll(x, z).sum().item())
                kl += float(self.kl(mu, log_var).sum().item())
                count += x.shape[0]
        kl, recon = kl / count, recon / count
        return {"test_kl": kl, "test_recon": recon,
                "test_elbo_bits_per_dim": metrics.bits_per_dim(kl + recon, self.data.dims)}

    def own_prior_bound(self, dataset, generator=None, batch_size: int = 256) -> dict:
        """The test IWAE bound (nats per example and bits/dim) under the model's own prior p(z)
        (AR(1) or N(0, I)), the one the ELBO trains, beside the auxiliary prior's main figure."""
        from ...autograd import no_grad
        from ...data import DataLoader

        total, count = 0.0, 0
        self.own_prior_only = True
        try:
            with no_grad():
                for batch in DataLoader(dataset, batch_size=batch_size, device=next(self.parameters()).device):
                    nll = self.nll(batch, generator)
                    total += float(nll.sum().item())
                    count += nll.shape[0]
            kind = self.nll_kind
        finally:
            self.own_prior_only = False
        nats = total / count
        return {"test_nll_nats_own_prior": nats, "own_prior_nll_kind": kind,
                "test_bits_per_dim_own_prior": metrics.bits_per_dim(nats, self.data.dims)}

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``kl_min`` and ``alpha``, the test ELBO's parts (:meth:`test_elbo`), the IWAE bound with
        an auxiliary prior fitted to the training posteriors (:meth:`fit_aux_prior`), and
        ``reconstructions.png``: rows of 8 test images, each followed by images drawn from
        p(x | z) with z from their posterior (a collapsed VAE draws unrelated digits)."""
        from ...plots import save_image_grid

        res = {"kl_min": self.kl_min, "alpha": self.alpha, "prior": self.config.prior}
        if test_set is None:
            test_set = _run_split(Path(out_dir), "test")
        if test_set is None:
            return res
        res.update(self.test_elbo(test_set, generator))
        if self.aux is not None:      # the bound under p(z) itself, beside the auxiliary prior's
            res.update(self.own_prior_bound(test_set, generator))
        from ...data import DataLoader

        x = next(iter(DataLoader(test_set, batch_size=RECON_IMAGES, device=next(self.parameters()).device)))[0]
        mu, log_var = self.encode(x)
        z = mu + (0.5 * log_var).exp() * gc.randn(*mu.shape, generator=generator, device=x.device)
        rec = self.sample(x.shape[0], generator=generator, z=z)
        rows = []
        for i in range(0, x.shape[0], 8):
            rows += [x[i:i + 8], rec[i:i + 8]]
        save_image_grid(gf.cat(rows, 0), Path(out_dir) / "reconstructions.png", nrow=8)
        res["reconstructions_png"] = "reconstructions.png"
        return res


def _run_split(out_dir: Path, split: str):
    """The run's ``split`` ("train", "test"), found through the run folder's config.json (the
    hook receives the test split at most); None when the folder does not say."""
    from ...data import get_dataset

    try:
        cfg = json.loads((out_dir / "config.json").read_text("utf-8"))
        root = cfg["train"].get("data_root") or None
        return get_dataset(cfg["data"], split, root=root)
    except (OSError, KeyError, ValueError, TypeError):
        return None


__all__ = ["DeltaVAE", "DeltaVAEConfig", "DeltaVAESampleOptions", "committed_rate", "alpha_for_delta", "ar1_kl", "ar1_log_prob",
           "ar1_sample"]
