"""DDPM (Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models") with the
improvements of Nichol & Dhariwal 2021 ("Improved Denoising Diffusion Probabilistic Models"),
DDIM sampling (Song, Meng & Ermon 2021), PNDM (Liu et al. 2022) and classifier-free guidance
(Ho & Salimans 2022).

The forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) over x_0 = 2 * data - 1
in [-1, 1], T steps of a ``--schedule`` (linear as Ho et al., cosine as Nichol & Dhariwal,
sigmoid as Chen 2023); the U-Net (:class:`~gmcore.models.diffusion.unet.UNet`) predicts
``--predict`` eps, x0 or v, trained by L_simple (the MSE on that target); with ``--learn-sigma``
it also outputs the interpolation between the two fixed variances, trained by the hybrid loss
L_simple + ``vb_weight`` * L_vlb (improved DDPM). ``--timestep-sampler importance`` draws t in
proportion to the root mean square of the recent L_vlb terms (improved DDPM's
importance sampling for the bound), its history kept in buffers, so resume stays exact.
``--predict levels`` (:mod:`.levels`, images only) has the network output logits over the data's
levels per pixel; x0 is the mean of their posterior with the pixel's own Gaussian likelihood
(exact at low noise, where the bound weighs x0 errors most), trained by the levels'
cross-entropy (plus improved DDPM's vb term for the variances with ``--learn-sigma``).

The quoted figure is the variational bound on the discrete data, in bits per dimension: the
KL terms at t = 1 .. T-1, a discretized Gaussian decoder over the data's levels at t = 0 and the
prior term at T, as Ho et al. The full sum costs T network passes per test batch (a few minutes
on digits); ``--timesteps-subsample K`` (a flag of training and of ``gmcore eval RUN``) estimates
its KL sum from one timestep drawn in each block of K consecutive ones, weighted by K: unbiased,
T/K passes (``nll_kind`` says when the figure is such an estimate). Samples are drawn with the
sampler of the sampling options (DDIM, 50 steps, eta 0 by default: ``gmcore sample RUN --sampler
ddpm|ddim|pndm --steps N --eta E``) under the EMA weights (``--ema`` 0.999 by default for this
model), and rounded to the data's levels, as the data are.

Class conditioning (``--class-cond``): the label enters the U-Net's time embedding; during
training it is replaced by the null label with probability ``--label-dropout``, so one network
is both conditional and unconditional, and ``gmcore sample RUN --guidance w`` mixes them,
eps = (1 + w) eps(x, y) - w eps(x) (classifier-free guidance; w = 0: the conditional model).

Classifier guidance (Dhariwal & Nichol 2021): ``gmcore sample RUN --classifier CLS_RUN --label y
--guidance s``, CLS_RUN a ``noisy-classifier`` run trained on this run's schedule
(:mod:`.noisy_classifier`), shifts each reverse step by ``s * grad_x log p(y | x_t, t)``; with
``--classifier``, ``--guidance`` is that classifier scale s, otherwise the classifier-free weight w.
A ddpm run is a base of latent kind ``"diffusion"`` for such second stages.

Points mode (the 2-D toys, ``gmcore train ddpm --dataset 8gaussians|checkerboard|moons``): the
denoiser is an MLP with a sinusoidal time embedding added to each hidden layer
(:class:`~gmcore.models.score.score_mlp.ConditionalMLP`; ``--channels`` is its width and
``--num-res-blocks`` its number of hidden layers, defaults from the ``"points"`` sections below),
diffusing the points as they are (no rescaling, x0 not clipped: the toys are not in [-1, 1]).
Its figure is the sample distance of the 2-D toys (energy distance of 2000 samples to the
held-out points, 8gaussians' mode coverage), and ``nll_kind`` is "none" there: the digits' bound
ends in a decoder *discretized* on the data's levels, which continuous points do not have. A
continuous-data bound (the same KL sum ending in a Gaussian decoder density, nats per point)
would be an honest bound on -log p(x), but it costs T network passes per point and its t = 0
term is a density under a reverse step of scale sqrt(beta~_1), which the bound's tightness
depends on; it is not computed here (so no density map either). ``--learn-sigma``,
``--timestep-sampler importance`` and ``--class-cond`` are image-only.

Differences from the papers: a U-Net sized for 8x8 digits (32 channels, two levels of one
residual block, attention at 4x4 and in the middle), 1500 steps of 64 on a CPU, not 800k steps
on TPUs; EMA decay 0.999 rather than 0.9999 for a run that short.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import autograd
from ... import creation as gc
from ...configs import int_list
from ... import functional as gf
from ... import nn
from ...schedules import NoiseSchedule
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register
from . import samplers
from .gaussian_diffusion import (LN2, GaussianDiffusion, LossSecondMomentResampler, UniformSampler,
                                 stratified_timesteps)
from .levels import LevelsHead
from .unet import UNet

__all__ = ["DDPM", "DDPMConfig", "DDPMSampleOptions", "DDPMGuidedSampleOptions", "DDPMEvalOptions"]




# The bound costs one network pass per timestep: `--timesteps-subsample K` estimates it from one
# timestep drawn in each block of K (unbiased, T/K passes); a run's own figure is exact by default
def _subsample_field():
    return field(default=1, metadata={
        "help": "1: the exact bound (T network passes per test batch); K > 1: its KL sum estimated "
                "from one timestep drawn in each block of K (unbiased; T/K passes)", "min": 1})


@dataclass
class DDPMConfig:
    timesteps: int = field(default=1000, metadata={"help": "diffusion steps T", "min": 2})
    schedule: str = field(default="linear", metadata={
        "help": "noise schedule: linear (Ho et al.), cosine (Nichol & Dhariwal), sigmoid (Chen)",
        "choices": ["linear", "cosine", "sigmoid"]})
    predict: str = field(default="eps", metadata={
        "help": "what the network predicts: the noise eps, the clean x0, v (Salimans & Ho), or "
                "levels: logits over the data's levels per pixel, x0 their posterior mean with the "
                "pixel's own likelihood (trained by cross-entropy; ddpm on images only)",
        "choices": ["eps", "x0", "v", "levels"]})
    learn_sigma: bool = field(default=False, metadata={
        "help": "also learn the reverse variances (improved DDPM's learned range, hybrid loss)"})
    vb_weight: float = field(default=0.001, metadata={
        "help": "weight lambda of L_vlb in the hybrid loss (with --learn-sigma)", "min": 0.0})
    timestep_sampler: str = field(default="uniform", metadata={
        "help": "how training draws t: uniform, or importance (by the recent L_vlb terms; for "
                "--learn-sigma)", "choices": ["uniform", "importance"]})
    channels: int = field(default=32, metadata={"help": "U-Net base width", "min": 1})
    channel_mult: str = field(default="1,2", metadata={
        "help": "U-Net width multipliers, one level each (comma-separated)"})
    num_res_blocks: int = field(default=1, metadata={"help": "residual blocks per U-Net level",
                                                     "min": 1})
    attention_resolutions: str = field(default="4", metadata={
        "help": "feature-map sizes with self-attention (comma-separated; empty: the middle only)"})
    num_heads: int = field(default=4, metadata={"help": "attention heads", "min": 1})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the residual blocks", "min": 0.0})
    scale_shift_norm: bool = field(default=False, metadata={
        "help": "the time embedding scales and shifts the normalised features (improved DDPM) "
                "instead of being added before the norm"})
    class_cond: bool = field(default=False, metadata={
        "help": "condition on the class label (classifier-free guidance at sampling)"})
    label_dropout: float = field(default=0.1, metadata={
        "help": "with --class-cond: probability of training on the null label", "min": 0.0})
    timesteps_subsample: int = _subsample_field()


@dataclass
class DDPMSampleOptions:
    sampler: str = field(default="ddim", metadata={
        "help": "ddpm (ancestral), ddim (eta 0: deterministic), pndm (pseudo linear multistep)",
        "choices": ["ddpm", "ddim", "pndm"]})
    steps: int = field(default=50, metadata={"help": "denoising steps (0 or more than T: all T)", "min": 0})
    eta: float = field(default=0.0, metadata={"help": "DDIM: noise scale (0 deterministic, 1 DDPM-like)",
                                              "min": 0.0})
    spacing: str = field(default="trailing", metadata={
        "help": "which timesteps a shortened sampler visits", "choices": ["leading", "trailing", "linspace"]})
    guidance: float = field(default=0.0, metadata={
        "help": "classifier-free guidance weight w (class-conditional runs): (1+w) eps(x,y) - w eps(x); "
                "with --classifier: the classifier scale s", "min": 0.0})
    label: int = field(default=-1, metadata={
        "help": "class-conditional runs or --classifier: draw this class only (-1: the classes in turn)",
        "min": -1})


@dataclass
class DDPMGuidedSampleOptions(DDPMSampleOptions):
    """ddpm's sampling options: :class:`DDPMSampleOptions` and classifier guidance (a subclass
    model whose ``sample`` takes no ``classifier`` keeps the plain :class:`DDPMSampleOptions`)."""
    classifier: str = field(default="", metadata={
        "help": "a noisy-classifier run (trained on this run's schedule): classifier guidance towards "
                "--label with scale --guidance"})


@dataclass
class DDPMEvalOptions:
    timesteps_subsample: int = _subsample_field()


@register("ddpm", family="diffusion", dataset="digits",
          description="DDPM: U-Net denoiser, L_simple or the hybrid loss, DDPM/DDIM/PNDM samplers, "
                      "classifier-free guidance")
class DDPM(GenerativeModel):
    """See the module docstring."""

    Config = DDPMConfig
    SampleOptions = DDPMGuidedSampleOptions
    EvalOptions = DDPMEvalOptions
    # a second stage on a diffusion run (noisy-classifier) uses diffusion, diffusion_shape,
    # to_diffusion and sample(..., classifier=) (gmcore.models.stages)
    latent_kind = "diffusion"
    # A test evaluation costs T network passes per batch: only at the end by default
    train_defaults = {"lr": 1e-3, "warmup": 100, "lr_schedule": "cosine", "batch_size": 64,
                      "steps": 1500, "eval_every": 0, "ema": 0.999,
                      "points": {"batch_size": 256, "steps": 4000}}
    # points mode: the MLP denoiser's width (channels) and hidden layers (num_res_blocks)
    config_defaults = {"points": {"channels": 128, "num_res_blocks": 3, "dropout": 0.0}}

    def __init__(self, config: DDPMConfig, data: DataInfo, base=None):
        super().__init__(config, data, base=base)
        c = config
        # the 2-D toys (vectors of reals): an MLP denoiser, the points diffused as they are
        # (ddpm itself only: a subclass keeps its own check_data)
        self.points = type(self) is DDPM and len(data.shape) == 1 and data.num_levels == 0
        self.check_data(data)
        if self.points:
            self.clip_x0 = False
            self.check_points_config(c)
        self.num_classes = int(data.num_classes) if c.class_cond else 0
        if c.class_cond and self.num_classes < 2:
            raise ValueError(f"ddpm --class-cond needs a data set with class labels; "
                             f"{data.name or 'this one'} has none")
        if not 0.0 <= c.label_dropout < 1.0:
            raise ValueError(f"ddpm: --label-dropout must be in [0, 1), got {c.label_dropout}")
        self.schedule = getattr(NoiseSchedule, c.schedule)(c.timesteps)
        # --predict levels: the net outputs level logits, which the head turns into an x0
        # prediction; the process then sees an x0-predicting model
        self.levels = None
        if c.predict == "levels":
            if not self.supports_levels or self.points:
                raise ValueError(f"{self.model_name}: --predict levels is for ddpm on images with "
                                 "discrete levels (its x0 is a distribution over them)")
            self.levels = LevelsHead(self.schedule, data.num_levels)
        self.net = self.build_net()
        self.diffusion = GaussianDiffusion(self.schedule, predict="x0" if self.levels else c.predict,
                                           learn_sigma=c.learn_sigma, vb_weight=c.vb_weight)
        T = c.timesteps
        if c.timestep_sampler == "importance":
            self.timestep_sampler = LossSecondMomentResampler(T)
            # its loss history lives in buffers, so checkpoints carry it and resume is exact
            state = self.timestep_sampler.state_dict()
            self.sampler_losses = nn.Buffer(gc.tensor(state["losses"]))
            self.sampler_counts = nn.Buffer(gc.tensor(state["counts"]))
        else:
            self.timestep_sampler = UniformSampler(T)

    def build_net(self):
        """The denoiser ``net(x_t, t, y)``: a U-Net over ``diffusion_shape`` (a subclass that
        diffuses vectors builds another network)."""
        c = self.config
        if self.points:
            from ..score.score_mlp import ConditionalMLP
            return ConditionalMLP(self.diffusion_shape[0], hidden=c.channels, layers=c.num_res_blocks)
        C, H, W = self.diffusion_shape
        if H != W:
            raise ValueError(f"{self.model_name}: square inputs only, got {H}x{W}")
        prediction = self.levels.logit_channels(C) if self.levels else C
        return UNet(self.net_in_channels, prediction + (C if c.learn_sigma else 0), channels=c.channels,
                    channel_mult=int_list(c.channel_mult, "channel-mult", self.model_name),
                    num_res_blocks=c.num_res_blocks,
                    attention_resolutions=int_list(c.attention_resolutions, "attention-resolutions", self.model_name),
                    dropout=c.dropout, num_classes=self.num_classes, num_heads=c.num_heads,
                    image_size=H, scale_shift_norm=c.scale_shift_norm)

    # ---- conditioning and the denoiser ---------------------------------------------------------
    @property
    def class_conditional(self) -> bool:
        """Samples drawn without a label cycle through the classes 0, 1, 2, ... (the run reports
        how often the digits classifier reads them as their label)."""
        return self.num_classes > 0

    def _batch_labels(self, batch):
        if not self.num_classes:
            return None
        if len(batch) < 2:
            raise ValueError("ddpm --class-cond: batches must be (images, labels)")
        return batch[1].long()

    def denoiser(self, labels=None, guidance: float = 0.0):
        """The network as the process sees it, ``model_fn(x_t, t) -> output``, with the labels
        (B,) closed over (None: the null label of a class-conditional net) and classifier-free
        guidance of weight ``guidance`` (w): the prediction channels become
        ``(1 + w) out(x, y) - w out(x, null)``; a learned variance is the conditional one's."""
        if not guidance:
            return lambda x, t: self.net_output(x, t, labels)
        if labels is None:
            raise ValueError("ddpm: classifier-free guidance needs the labels to guide towards")
        null = gc.full(tuple(labels.shape), self.num_classes, device=labels.device).long()
        C = self.diffusion_shape[0]

        def guided(x, t):
            out = self.net_output(gf.cat([x, x], 0), gf.cat([t, t], 0), gf.cat([labels, null], 0))
            cond, uncond = out[:x.shape[0]], out[x.shape[0]:]
            pred = cond[:, :C] * (1.0 + guidance) - uncond[:, :C] * guidance
            return gf.cat([pred, cond[:, C:]], 1) if self.config.learn_sigma else pred
        return guided

    def net_output(self, x_t, t, labels=None):
        """The network's output as the process reads it: the prediction (and variance) channels;
        with ``--predict levels`` the level logits become the x0 prediction (:mod:`.levels`)."""
        out = self.net(x_t, t, labels)
        if self.levels is None:
            return out
        logits, v_sigma = self._split_levels_output(out, x_t.shape[1])
        x0 = self.levels.x0(logits, x_t, t)
        return gf.cat([x0, v_sigma], 1) if self.config.learn_sigma else x0

    def _split_levels_output(self, out, channels: int):
        """``--predict levels``: (level logits, variance channels) of the network's output."""
        n = self.levels.logit_channels(channels)
        return out[:, :n], out[:, n:]

    def _guided(self, n: int, label: int, guidance: float, classifier="", edit: bool = False):
        """(model_fn, sampler keywords) for drawing ``n``: classifier guidance of scale ``guidance``
        by the noisy classifier ``classifier`` (a run folder or model), else the denoiser with
        classifier-free guidance of weight ``guidance``."""
        if not classifier:
            return self.denoiser(self._sample_labels(n, label, guidance, edit=edit), guidance), {}
        from .noisy_classifier import classifier_guidance

        labels, cond_fn = classifier_guidance(self, classifier, n, label, guidance, edit=edit)
        return self.denoiser(labels if self.num_classes else None), dict(cond_fn=cond_fn, guidance_scale=guidance)

    def _sample_labels(self, n: int, label: int, guidance: float, edit: bool = False):
        if not self.num_classes:
            if label >= 0 or guidance:
                raise ValueError("ddpm: --label and --guidance need a class-conditional run "
                                 "(gmcore train ddpm --class-cond) or a --classifier")
            return None
        if label >= self.num_classes:
            raise ValueError(f"ddpm: --label must be in [0, {self.num_classes - 1}], got {label}")
        dev = next(self.parameters()).device
        if label >= 0:
            return gc.full((n,), int(label), device=dev).long()
        if edit:     # an edit without a label: the unconditional model
            if guidance:
                raise ValueError("ddpm edit: --guidance needs a --label to guide towards")
            return None
        return gc.arange(n, device=dev) % self.num_classes

    # ---- the space the process runs in (a subclass may diffuse something else: latents, bits) -----
    clip_x0 = True   # the samplers clamp the x0 prediction to [-1, 1], the data's range
    supports_levels = True   # x0 lies on the data's levels (--predict levels); not for latents or bits

    def batch_x0(self, batch) -> Tensor:
        """The x0 of a training batch (a subclass may read latents the batch carries)."""
        return self.to_diffusion(batch[0])

    def chain_image(self, x: Tensor) -> Tensor:
        """One frame of chain.png: a point x_t of the chain as an image in [0, 1]."""
        return ((x + 1.0) * 0.5).clamp(0.0, 1.0)

    def check_points_config(self, c) -> None:
        """Points mode: refuse the options that assume images on discrete levels."""
        for flag, on in (("learn-sigma", c.learn_sigma), ("class-cond", c.class_cond),
                         ("timestep-sampler importance", c.timestep_sampler == "importance")):
            if on:
                raise ValueError(f"{self.model_name} on points ({self.data.name or 'vectors'}): --{flag} "
                                 "is for images only (its bound terms need discrete levels)")

    def check_data(self, data: DataInfo) -> None:
        """Refuse data this model cannot diffuse (here: anything but images with levels, or
        the 2-D toys' vectors in points mode)."""
        if self.points:
            return
        if len(data.shape) != 3 or data.num_levels < 2:
            raise ValueError(f"{self.model_name} models images with discrete levels (digits, MNIST, "
                             f"CIFAR), not {data.name or 'data'} of shape {tuple(data.shape)}")

    @property
    def net_in_channels(self) -> int:
        """Channels the U-Net reads: the diffused ones (a subclass may append conditioning
        channels, as bit diffusion's self-conditioning estimate)."""
        return self.diffusion_shape[0]

    @property
    def diffusion_shape(self) -> tuple:
        """The shape (C, H, W) of one diffused example: the image's."""
        return tuple(int(v) for v in self.data.shape)

    def to_diffusion(self, x: Tensor) -> Tensor:
        """Data in [0, 1] -> x0 in [-1, 1] (points: as they are)."""
        if self.points:
            return x.to(self._dtype)
        return x.to(self._dtype) * 2.0 - 1.0

    def from_diffusion(self, x: Tensor) -> Tensor:
        """x0 in [-1, 1] -> the data range [0, 1], rounded to the data's levels (as the data are)."""
        if self.points:
            return x
        L = self.data.num_levels - 1
        return (((x + 1.0) * 0.5).clamp(0.0, 1.0) * L).round() / L

    def _steps(self, steps: int) -> int:
        """A sampler's step count: 0, or more than the process has, means all T."""
        T = self.config.timesteps
        return T if steps <= 0 or steps > T else int(steps)

    @property
    def _dtype(self):
        return next(self.parameters()).dtype

    # ---- the training-loop contract ------------------------------------------------------------
    def _training_condition(self, batch):
        """What the denoiser is conditioned on in training: the batch's labels, each replaced by
        the null label with probability ``label_dropout`` (a subclass may condition on something
        else, as glide-core on captions)."""
        labels = self._batch_labels(batch)
        if labels is not None and self.config.label_dropout:
            drop = gc.rand(labels.shape[0], device=labels.device) < self.config.label_dropout
            labels = gf.where(drop, gc.full_like(labels, self.num_classes), labels)
        return labels

    def loss(self, batch):
        x0 = self.batch_x0(batch)
        labels = self._training_condition(batch)
        importance = self.config.timestep_sampler == "importance"
        if importance:
            self.timestep_sampler.load_state_dict({"losses": self.sampler_losses.cpu().numpy(),
                                                   "counts": self.sampler_counts.cpu().numpy()})
        t, weights = self.timestep_sampler.sample(x0.shape[0], device=x0.device)
        if self.levels is not None:
            per_example, logs = self._levels_losses(x0, t, labels)
        else:
            per_example, logs = self.diffusion.training_losses(self.denoiser(labels), x0, t)
        if importance:
            self.timestep_sampler.update(t.cpu(), per_example.detach().cpu())
            state = self.timestep_sampler.state_dict()
            self.sampler_losses.copy_(gc.tensor(state["losses"], device=x0.device))
            self.sampler_counts.copy_(gc.tensor(state["counts"], device=x0.device))
        loss = (per_example * weights.to(per_example.dtype)).mean()
        return loss, {k: float(v.mean().item()) for k, v in logs.items()}

    def _levels_losses(self, x0, t, labels):
        """``--predict levels``: the cross-entropy of the true levels (nats per dimension), and
        with ``--learn-sigma`` improved DDPM's ``lambda T L_t`` (bits per dimension, the decoder
        at t = 0 over the data's levels, the mean detached) for the variance channels."""
        noise = gc.randn(*x0.shape, dtype=x0.dtype, device=x0.device)
        x_t = self.diffusion.q_sample(x0, t, noise)
        logits, v_sigma = self._split_levels_output(self.net(x_t, t, labels), x0.shape[1])
        logp = self.levels.log_posterior(logits, x_t, t)
        ce = self.levels.level_nll(logp, x0)
        with autograd.no_grad():
            x0_hat = self.levels.posterior_mean(logp)
        logs = {"ce": ce.detach(), "mse": ((x0_hat - x0) ** 2).reshape(x0.shape[0], -1).mean(1)}
        if not self.config.learn_sigma:
            return ce, logs
        dims = x0[0].numel()
        vb = self.diffusion._vb_nats(x0, x_t, t, x0_hat, v_sigma, self.data.num_levels) / (dims * LN2)
        logs["vb"] = vb.detach()
        return ce + (self.config.vb_weight * self.config.timesteps) * vb, logs

    @property
    def nll_kind(self) -> str:
        if self.points:   # no discretized decoder on continuous points (see the module docstring)
            return "none"
        k = self.config.timesteps_subsample
        cond = " on -log p(x | y)" if self.num_classes else ""
        if k == 1:
            return f"variational bound{cond}"
        return (f"variational bound{cond}, estimated: its KL sum from one timestep drawn in each "
                f"block of {k} of the {self.config.timesteps} (unbiased)")

    def nll(self, batch, generator=None):
        """The variational bound on -log p(x) of the discrete data (-log p(x | y) when
        class-conditional) in nats per example, its KL sum estimated from every K-th term
        when ``timesteps_subsample`` K > 1 (:attr:`nll_kind` says which)."""
        if self.points:
            raise NotImplementedError("ddpm on points reports no likelihood (nll_kind 'none')")
        k = self.config.timesteps_subsample
        x0 = self.to_diffusion(batch[0])
        return self.diffusion.nll_bound(self.denoiser(self._batch_labels(batch)), x0, self.data.num_levels,
                                        timesteps=None if k == 1 else int(k), generator=generator)

    # where the bound lies: its KL sum split at these fractions of T (test_metrics), every term
    # below the second split computed (they vary fastest), one in each block of BLOCK above
    BOUND_SPLITS = (0.01, 0.03, 0.1, 0.3)
    BOUND_SPLIT_BLOCK = 10

    def test_metrics(self, test_set) -> dict:
        """Where the bound's bits lie: ``bound_bits_by_timesteps`` maps timestep ranges
        (``"[1, 10)"`` ...; split at BOUND_SPLITS of T) to their share of the KL sum in bits per
        dimension, with the decoder (t = 0) and prior terms beside them. Every term below the
        second split is computed, above it one timestep drawn in each block of
        BOUND_SPLIT_BLOCK (unbiased; seed 0, so ``gmcore eval`` reproduces it), whatever the
        run's own figure used. The run's end and ``gmcore eval`` call it (the model contract's
        ``test_metrics``). Empty for points and for subclasses with a bound of their own."""
        if self.points or type(self).nll is not DDPM.nll:
            return {}
        from ...data import DataLoader
        from ...random import Generator

        T = self.config.timesteps
        edges = sorted({1, *(max(1, round(f * T)) for f in self.BOUND_SPLITS), T})
        dev = next(self.parameters()).device
        exact_until = max(2, min(T, round(self.BOUND_SPLITS[1] * T)))
        drawn, sizes = stratified_timesteps(exact_until, T, self.BOUND_SPLIT_BLOCK, Generator().manual_seed(0))
        ts = np.concatenate([np.arange(1, exact_until), drawn])
        weights = np.concatenate([np.ones(exact_until - 1), sizes])
        ranges = np.searchsorted(edges, ts, side="right") - 1      # the range of each kept t
        gen = Generator(device=dev).manual_seed(0)
        sums = np.zeros(len(edges) + 1)        # the ranges, then the decoder and the prior
        count = 0
        for batch in DataLoader(test_set, batch_size=256, device=dev):
            x0 = self.to_diffusion(batch[0])
            r = self.diffusion.nll_bound(self.denoiser(self._batch_labels(batch)), x0, self.data.num_levels,
                                         timesteps=ts, generator=gen, return_terms=True)
            kl = r["kl"].cpu().numpy().astype(np.float64).sum(0) * weights     # (the kept t are ts)
            np.add.at(sums, ranges, kl)
            sums[-2] += float(r["decoder"].sum().item())
            sums[-1] += float(r["prior"].sum().item())
            count += x0.shape[0]
        bits = sums / (count * float(np.prod(self.data.shape)) * np.log(2.0))
        by_range = {f"[{lo}, {hi})": float(b) for lo, hi, b in zip(edges[:-1], edges[1:], bits)}
        by_range.update({"decoder (t = 0)": float(bits[-2]), "prior (T)": float(bits[-1])})
        return {"bound_bits_by_timesteps": by_range,
                "bound_bits_by_timesteps_kind": f"every term below t = {exact_until}, one timestep drawn in "
                                                f"each block of {self.BOUND_SPLIT_BLOCK} above (seed 0)"}

    def sample(self, n, generator=None, sampler="ddim", steps=50, eta=0.0, spacing="trailing",
               guidance=0.0, label=-1, classifier="", return_chain=False):
        """``n`` images in [0, 1] on the data's levels (see :class:`DDPMSampleOptions`); with
        ``return_chain`` also the chain x_T ... x_0 (in [-1, 1], one tensor per step).
        ``classifier``: a noisy-classifier run folder (or model) for classifier guidance."""
        model_fn, guide = self._guided(n, label, guidance, classifier)
        return self.draw(model_fn, n, generator, sampler, steps, eta, spacing, return_chain, **guide)

    def draw(self, model_fn, n, generator=None, sampler="ddim", steps=50, eta=0.0, spacing="trailing",
             return_chain=False, **guide):
        """``n`` images from the denoiser ``model_fn(x_t, t)`` (conditioning and guidance already
        in it, as :meth:`denoiser` makes) by the named sampler; :meth:`sample` without the choice
        of the condition (a subclass conditions its own way and draws through this)."""
        dev = next(self.parameters()).device
        out = samplers.sample(self.diffusion, model_fn, (n, *self.diffusion_shape),
                              sampler, steps=self._steps(steps), eta=eta, spacing=spacing, generator=generator,
                              return_chain=return_chain, device=dev, dtype=self._dtype,
                              clip_x0=self.clip_x0, **guide)
        if return_chain:
            return self.from_diffusion(out[0]), out[1]
        return self.from_diffusion(out)

    def edit(self, x, strength: float, generator=None, sampler="ddim", steps=50, eta=0.0,
             spacing="trailing", guidance=0.0, label=-1, classifier=""):
        """SDEdit: images ``x`` (B, C, H, W) in [0, 1] noised to ``strength * T`` and denoised
        (``gmcore edit RUN``); a class-conditional run edits unconditionally unless ``label``
        names a class (then with ``guidance`` too); ``classifier`` guides towards ``label``."""
        if tuple(x.shape[1:]) != tuple(self.data.shape):
            raise ValueError(f"ddpm edit: images must be (B, {', '.join(map(str, self.data.shape))}), "
                             f"got {tuple(x.shape)}")
        model_fn, guide = self._guided(x.shape[0], label, guidance, classifier, edit=True)
        x0 = self.to_diffusion(x)
        out = samplers.sdedit(self.diffusion, model_fn, x0, strength, sampler=sampler,
                              steps=self._steps(steps), eta=eta, spacing=spacing, generator=generator,
                              clip_x0=self.clip_x0, **guide)
        return self.from_diffusion(out)

    def invert(self, x, steps: int = 100, spacing: str = "trailing", iterations: int = 0, label: int = -1):
        """DDIM's deterministic encoding (the reverse ODE, Song et al. 2021 sec. 4.3): images ``x``
        in [0, 1] -> their x_T, which :meth:`decode` with the same steps maps back to ``x``
        (``iterations`` > 0 refines each step by fixed-point iteration, one network pass each).

        >>> import gmcore as gm
        >>> from gmcore.models.base import DataInfo
        >>> m = DDPM(DDPMConfig(channels=8, timesteps=50), DataInfo((1, 8, 8), 17, "digits")).eval()
        >>> x = gm.rand(2, 1, 8, 8)
        >>> bool(((m.decode(m.invert(x, steps=20), steps=20) - x).abs().max() < 0.02).item())
        True
        """
        labels = self._sample_labels(x.shape[0], label, 0.0, edit=True)
        return samplers.ddim_invert(self.diffusion, self.denoiser(labels), self.to_diffusion(x),
                                    steps=self._steps(steps), spacing=spacing, iterations=iterations)

    def decode(self, x_T, steps: int = 100, spacing: str = "trailing", label: int = -1):
        """x_T -> images in [0, 1] by deterministic DDIM (eta 0, x0 unclipped along the way, so
        that it inverts :meth:`invert`); not rounded to the data's levels."""
        labels = self._sample_labels(x_T.shape[0], label, 0.0, edit=True)
        x0 = samplers.ddim(self.diffusion, self.denoiser(labels), x_T=x_T, steps=self._steps(steps), eta=0.0,
                           spacing=spacing, clip_x0=False)
        return (x0 + 1.0) * 0.5

    # ---- pictures -------------------------------------------------------------------------------
    CHAIN_FRAMES = 10
    GUIDANCE_SCALES = (0.0, 1.0, 3.0, 7.0)

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``chain.png``: 8 samples (rows) from x_T to x_0 (columns) with the default sampler;
        class-conditional runs also ``guidance.png``: one row per guidance weight in
        GUIDANCE_SCALES, the classes along the row, every row from the same noise."""
        from ...plots import save_image_grid

        if self.points:   # points: samples.png (over the data) is the picture
            return {}
        state = generator.get_state() if generator is not None else None
        _, chain = self.sample(8, generator=generator, return_chain=True)
        pick = np.unique(np.linspace(0, len(chain) - 1, self.CHAIN_FRAMES).round().astype(int))
        frames = gf.stack([self.chain_image(chain[i]) for i in pick], 1)   # (8, F, C, H, W)
        save_image_grid(frames.reshape(-1, *self.data.shape), Path(out_dir) / "chain.png", nrow=len(pick))
        res = {"chain_png": "chain.png"}
        if self.num_classes:
            rows = []
            for w in self.GUIDANCE_SCALES:
                if state is not None:
                    generator.set_state(state)
                rows.append(self.sample(self.num_classes, generator=generator, guidance=w))
            save_image_grid(gf.cat(rows, 0), Path(out_dir) / "guidance.png", nrow=self.num_classes)
            res.update(guidance_png="guidance.png", guidance_scales=list(self.GUIDANCE_SCALES))
            if self.data.name == "digits":
                res["label_accuracy_by_guidance"] = self.guidance_accuracy(generator)
        return res

    GUIDANCE_ACCURACY_SAMPLES = 200

    def guidance_accuracy(self, generator=None) -> dict:
        """Digits runs: how often the digits classifier (gmcore.feature_metrics) reads a sample
        as the class it was drawn for, at each guidance weight of GUIDANCE_SCALES
        (GUIDANCE_ACCURACY_SAMPLES samples each, the classes in turn)."""
        from ...autograd import enable_grad
        from ...feature_metrics import DigitsFeatures

        with enable_grad():        # the classifier trains on first use (a cache miss)
            net = DigitsFeatures.get()
        n = self.GUIDANCE_ACCURACY_SAMPLES
        labels = np.arange(n) % self.num_classes
        return {str(w): net.accuracy(self.sample(n, generator=generator, guidance=w), labels)
                for w in self.GUIDANCE_SCALES}
