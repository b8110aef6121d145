"""NCSN: a noise-conditional score network sampled by annealed Langevin dynamics (Song & Ermon
2019, "Generative Modeling by Estimating Gradients of the Data Distribution"), with the
techniques of NCSNv2 (Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative
Models").

The data x in [0, 1] are perturbed by Gaussian noise at L geometric scales sigma_1 > ... > sigma_L
and one network s(x~, sigma) learns the score of every perturbed density, by denoising score
matching weighted by sigma^2 (``--loss dsm``, :func:`gmcore.score.dsm_loss`) or by sliced score
matching on the perturbed data, weighted the same way (``--loss ssm``,
:func:`gmcore.score.ssm_loss`; double backward through the network, one Rademacher projection
by default). Samples start from uniform noise (as NCSNv2's code) and run annealed Langevin
(:func:`gmcore.score.annealed_langevin`): T steps per scale with the step
eps * sigma_i^2 / sigma_L^2, then the denoising step x + sigma_L^2 s(x, sigma_L); they are
clamped to [0, 1] and rounded to the data's levels, as the other digit models' samples are.

NCSNv2's techniques, as used here:

1. sigma_1 = the largest Euclidean distance between two training examples (``--sigma-max``;
   4.80 for the digits' training split in [0, 1], :func:`max_pairwise_distance`, set in the
   digits defaults; for other data the default 0 means sqrt(D), the largest distance two points
   of [0, 1]^D can have, which bounds it);
2. L (``--num-scales``, 0: this rule) the smallest number of scales whose ratio gamma =
   sigma_{i-1} / sigma_i satisfies Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1)
   - 3 gamma) >= 1/2 (:func:`num_scales`): 22 scales from 4.80 to 0.01 for D = 64 (gamma 1.34);
3. the noise conditioning s(x, sigma) = net(x, sigma) / sigma: here the diffusion U-Net
   (:class:`~gmcore.models.diffusion.unet.UNet`) reads sigma through its float time input as
   t = log(sigma_1 / sigma) / log(gamma) (an affine function of log sigma that puts the scales
   at t = 0, 1, ..., L - 1, as DDPM's integer timesteps) and its output is divided by sigma.
   Under DSM with sigma^2 weighting the network then regresses -z, DDPM's eps target;
4. the step size eps for T steps per scale (``--step-eps``, 0: this rule) minimises NCSNv2's
   expression of the variance ratio after T steps (their technique 4, :func:`step_eps`; it gives
   their CIFAR-10 value 6.2e-6 for T = 5), 9.8e-6 for the digits' 22 scales and T = 20;
5. an exponential moving average of the weights (``--ema 0.999``) for sampling.

``gmcore sample RUN --steps-per-sigma T --step-eps E --no-denoise`` changes the sampler. The
default is T = 20, not NCSNv2's 5: on the digits run of the defaults (1500 steps), T = 5 leaves
the chain behind the annealing (its pixel std 0.91 at the end against the data's 0.37; every
scale's few steps shrink the excess variance too little with a score that is only roughly
learned away from the data) and its samples are noise (digits-FID 106 of 1000 samples), while
T = 20 tracks the scales (std 0.38) and gives digits-FID 9.2 (1000 samples, the same run).

The figure is ``nll_kind = "none"``: the network estimates grad_x log p at each noise scale, not
log p; the normaliser is unknown and annealed Langevin defines no density to evaluate (a bound
would need another model, e.g. the probability-flow ODE of a continuous-time SDE with its
trace integral, which NCSN's discrete scales do not train). Runs on digits are judged by the
digits-FID of their samples.

Differences from the papers: the diffusion U-Net of this project (32 channels, two levels of one
residual block, attention at 4x4 and in the middle) rather than a RefineNet; 22 scales and T = 20
steps per scale on 8x8 digits with 17 levels; 1500 steps of batch 64 on a CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import creation as gc
from ...configs import int_list
from ... import functional as gf
from ...score.dsm import dsm_loss
from ...score.langevin import annealed_langevin, geometric_sigmas
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..diffusion.unet import UNet
from ..registry import register

__all__ = ["NCSN", "NCSNConfig", "NCSNSampleOptions", "num_scales", "step_eps",
           "max_pairwise_distance", "LOSSES"]

LOSSES = ("dsm", "ssm")


# ---- NCSNv2's rules ----------------------------------------------------------------------------

def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def num_scales(sigma_max: float, sigma_min: float, dim: int, target: float = 0.5) -> int:
    """NCSNv2's technique 2: the smallest L whose geometric ratio gamma = (sigma_max /
    sigma_min)^(1 / (L - 1)) gives Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) -
    3 gamma) >= ``target`` (the chance that a sample of the scale sigma_{i-1} lands where the
    scale sigma_i has its mass, about 1/2).

    >>> num_scales(4.8, 0.01, 64), num_scales(50.0, 0.01, 3072)    # digits; CIFAR-10 (NCSNv2 took 232)
    (22, 220)
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"num_scales: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ratio = math.log(sigma_max / sigma_min)
    root = math.sqrt(2.0 * dim)
    L = 2
    while True:
        g = math.exp(ratio / (L - 1))
        if _phi(root * (g - 1) + 3 * g) - _phi(root * (g - 1) - 3 * g) >= target:
            return L
        L += 1


def step_eps(gamma: float, sigma_min: float, steps_per_sigma: int) -> float:
    """NCSNv2's technique 4: the eps that brings the variance ratio after T Langevin steps,
    ``(1 - r)^(2T) (gamma^2 - 2 / (2 - r)) + 2 / (2 - r)`` with r = eps / sigma_L^2, closest to 1
    (it only approaches 1 from above, so: its minimiser over r in (0, 1)).

    >>> round(step_eps(5000 ** (1 / 231), 0.01, 5), 7)     # their CIFAR-10 setting: 6.2e-6
    6.2e-06
    """
    if gamma < 1 or sigma_min <= 0 or steps_per_sigma < 1:
        raise ValueError(f"step_eps: need gamma >= 1, sigma_min > 0, T >= 1, got {gamma}, "
                         f"{sigma_min}, {steps_per_sigma}")
    r = np.linspace(1e-5, 0.999, 200_000)
    c = 2.0 / (2.0 - r)
    f = (1.0 - r) ** (2 * int(steps_per_sigma)) * (gamma * gamma - c) + c
    return float(r[int(np.argmin(f))] * sigma_min ** 2)


def max_pairwise_distance(x) -> float:
    """The largest Euclidean distance between two rows of ``x`` (N, ...) (NCSNv2's sigma_1), in
    blocks of 512 rows (no N x N matrix).

    >>> max_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]]))
    5.0
    """
    a = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, dtype=np.float64)
    a = a.reshape(a.shape[0], -1)
    sq = (a * a).sum(1)
    best = 0.0
    for i in range(0, a.shape[0], 512):
        blk = a[i:i + 512]
        d2 = sq[i:i + 512, None] + sq[None, :] - 2.0 * blk @ a.T
        best = max(best, float(d2.max()))
    return math.sqrt(max(best, 0.0))




# ---- the model ---------------------------------------------------------------------------------

@dataclass
class NCSNConfig:
    loss: str = field(default="dsm", metadata={
        "help": "dsm: denoising score matching; ssm: sliced score matching on the perturbed data "
                "(both weighted by sigma^2)", "choices": list(LOSSES)})
    sigma_max: float = field(default=0.0, metadata={
        "help": "largest noise scale (NCSNv2: the largest distance between two training examples; "
                "0: sqrt(D), which bounds it)", "min": 0.0})
    sigma_min: float = field(default=0.01, metadata={"help": "smallest noise scale", "min": 0.0})
    num_scales: int = field(default=0, metadata={
        "help": "noise scales L (0: NCSNv2's rule from the dimension and the sigma range)", "min": 0})
    ssm_projections: int = field(default=1, metadata={
        "help": "--loss ssm: random projections per example", "min": 1})
    ssm_projection: str = field(default="rademacher", metadata={
        "help": "--loss ssm: projection distribution", "choices": ["rademacher", "gaussian"]})
    channels: int = field(default=32, metadata={"help": "U-Net base width", "min": 1})
    channel_mult: str = field(default="1,2", metadata={
        "help": "U-Net width multipliers, one level each (comma-separated)"})
    num_res_blocks: int = field(default=1, metadata={"help": "residual blocks per U-Net level", "min": 1})
    attention_resolutions: str = field(default="4", metadata={
        "help": "feature-map sizes with self-attention (comma-separated; empty: the middle only)"})
    num_heads: int = field(default=4, metadata={"help": "attention heads", "min": 1})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the residual blocks", "min": 0.0})


@dataclass
class NCSNSampleOptions:
    steps_per_sigma: int = field(default=20, metadata={
        "help": "annealed Langevin: steps T at each noise scale", "min": 1})
    step_eps: float = field(default=0.0, metadata={
        "help": "annealed Langevin: step eps at the smallest scale (alpha_i = eps sigma_i^2 / "
                "sigma_L^2; 0: NCSNv2's rule for T)", "min": 0.0})
    denoise: bool = field(default=True, metadata={
        "help": "end with the denoising step x + sigma_L^2 s(x, sigma_L)"})


@register("ncsn", family="score", dataset="digits",
          description="NCSN: noise-conditional score U-Net (NCSNv2 sigmas, s = net / sigma), DSM or SSM, "
                      "annealed Langevin sampling")
class NCSN(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> m = NCSN(NCSNConfig(channels=8, attention_resolutions="", num_heads=1, sigma_max=4.8, num_scales=4),
    ...          DataInfo((1, 8, 8), 17, "digits"))
    >>> [round(float(v), 3) for v in m.sigmas]                  # geometric, sigma_max .. sigma_min
    [4.8, 0.613, 0.078, 0.01]
    >>> loss, logs = m.loss((gm.rand(4, 1, 8, 8),))            # sigma^2-weighted DSM
    >>> x = m.sample(2, steps_per_sigma=1)                     # annealed Langevin, then rounding
    >>> x.shape, bool(((x * 16).round() == x * 16).all()), m.nll_kind
    (gmcore.Size([2, 1, 8, 8]), True, 'none')
    """

    Config = NCSNConfig
    SampleOptions = NCSNSampleOptions
    nll_kind = "none"
    train_defaults = {"lr": 1e-3, "warmup": 100, "lr_schedule": "cosine", "batch_size": 64,
                      "steps": 1500, "eval_every": 0, "ema": 0.999}
    # NCSNv2's sigma_1 on the digits' training split in [0, 1] (max_pairwise_distance; tested)
    config_defaults = {"digits": {"sigma_max": 4.8}}

    def __init__(self, config: NCSNConfig, data: DataInfo, base=None):
        super().__init__(config, data, base=base)
        c = config
        if len(data.shape) != 3 or data.num_levels < 2:
            raise ValueError(f"ncsn models images with values in [0, 1] (digits, MNIST, CIFAR), not "
                             f"{data.name or 'data'} of shape {tuple(data.shape)}")
        C, H, W = (int(v) for v in data.shape)
        if H != W:
            raise ValueError(f"ncsn: square images only, got {H}x{W}")
        sigma_max = float(c.sigma_max) or math.sqrt(data.dims)
        if not 0 < c.sigma_min < sigma_max:
            raise ValueError(f"ncsn: need 0 < --sigma-min < --sigma-max, got {c.sigma_min} and {sigma_max}")
        L = int(c.num_scales) or num_scales(sigma_max, c.sigma_min, data.dims)
        if L < 2:
            raise ValueError(f"ncsn: --num-scales must be 0 (NCSNv2's rule) or >= 2, got {L}")
        if c.loss not in LOSSES:
            raise ValueError(f"ncsn: --loss must be one of {LOSSES}, got {c.loss!r}")
        self.sigmas = geometric_sigmas(sigma_max, c.sigma_min, L)       # descending, float64
        self.log_gamma = math.log(sigma_max / c.sigma_min) / (L - 1)
        self.net = UNet(C, C, channels=c.channels, channel_mult=int_list(c.channel_mult, "channel-mult", self.model_name),
                        num_res_blocks=c.num_res_blocks,
                        attention_resolutions=int_list(c.attention_resolutions, "attention-resolutions", self.model_name),
                        dropout=c.dropout, num_heads=c.num_heads, image_size=H)

    @property
    def _dtype(self):
        return next(self.parameters()).dtype

    @property
    def gamma(self) -> float:
        """The ratio sigma_{i-1} / sigma_i of neighbouring scales."""
        return math.exp(self.log_gamma)

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """s(x, sigma) = net(x, t(sigma)) / sigma, with t = log(sigma_1 / sigma) / log(gamma)
        (NCSNv2's noise conditioning; ``sigma`` (B,))."""
        t = (math.log(self.sigmas[0]) - sigma.log()) * (1.0 / self.log_gamma)
        return self.net(x, t) / sigma.reshape(-1, 1, 1, 1)

    # ---- the training-loop contract -----------------------------------------------------------
    def loss(self, batch):
        x = batch[0].to(self._dtype)
        if self.config.loss == "dsm":
            per = dsm_loss(self.score, x, self.sigmas, reduction="none")
        else:
            per = self._ssm(x)
        return per.mean(), {}

    def _ssm(self, x):
        """Sliced score matching on x~ = x + sigma z at one drawn scale per example, weighted by
        sigma^2 as DSM (the two then differ by a constant in expectation)."""
        from ...score.ssm import ssm_loss

        B = x.shape[0]
        idx = gc.randint(0, len(self.sigmas), (B,), device=x.device)
        sigma = gc.tensor(self.sigmas.astype(x.data.dtype), device=x.device)[idx]
        x_tilde = (x + sigma.reshape(-1, 1, 1, 1) * gc.randn(*x.shape, dtype=x.dtype, device=x.device)).detach()
        per = ssm_loss(lambda xt: self.score(xt, sigma), x_tilde, n_projections=self.config.ssm_projections,
                       projection=self.config.ssm_projection, reduction="none")
        return per * sigma * sigma

    def sample(self, n, generator=None, steps_per_sigma=20, step_eps=0.0, denoise=True,
               return_chain=False, progress=None):
        """``n`` images in [0, 1] on the data's levels by annealed Langevin from uniform noise
        (see :class:`NCSNSampleOptions`; ``step_eps`` 0: NCSNv2's rule :func:`step_eps`). With
        ``return_chain`` also the chain: the start and x after each scale (unclamped), then the
        denoised x."""
        T = int(steps_per_sigma)
        if T < 1:
            raise ValueError(f"ncsn: --steps-per-sigma must be >= 1, got {steps_per_sigma}")
        if step_eps < 0:
            raise ValueError(f"ncsn: --step-eps must be >= 0 (0: NCSNv2's rule), got {step_eps}")
        eps = float(step_eps) or self.default_step_eps(T)
        dev = next(self.parameters()).device
        x0 = gc.rand(n, *self.data.shape, generator=generator, dtype=self._dtype, device=dev)
        out = annealed_langevin(self.score, x0, self.sigmas, eps=eps, steps_per_sigma=T, denoise=denoise,
                                generator=generator, progress=progress, return_chain=return_chain)
        x, chain = out if return_chain else (out, None)
        L = self.data.num_levels - 1
        img = (x.clamp(0.0, 1.0) * L).round() / L
        return (img, chain + [x]) if return_chain else img

    def default_step_eps(self, steps_per_sigma: int) -> float:
        """NCSNv2's step eps for T steps per scale on this model's sigmas."""
        return step_eps(self.gamma, float(self.sigmas[-1]), int(steps_per_sigma))

    # ---- pictures -------------------------------------------------------------------------------
    CHAIN_FRAMES = 11

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``chain.png``: 8 samples (rows) across the noise scales (columns, from the uniform start
        through every few scales to the last, then the denoised sample), clamped to [0, 1]."""
        from ...plots import save_image_grid

        _, chain = self.sample(8, generator=generator, return_chain=True)
        pick = np.unique(np.linspace(0, len(chain) - 2, self.CHAIN_FRAMES - 1).round().astype(int))
        frames = [chain[i] for i in pick] + [chain[-1]]
        grid = gf.stack([f.clamp(0.0, 1.0) for f in frames], 1)            # (8, F, C, H, W)
        save_image_grid(grid.reshape(-1, *self.data.shape), Path(out_dir) / "chain.png", nrow=len(frames))
        return {"chain_png": "chain.png", "num_scales": len(self.sigmas),
                "sigma_max": float(self.sigmas[0]), "sigma_min": float(self.sigmas[-1]),
                "step_eps": self.default_step_eps(NCSNSampleOptions.steps_per_sigma)}
