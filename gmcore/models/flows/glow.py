"""Glow: generative flow with invertible 1x1 convolutions (Kingma & Dhariwal, 2018).

A step of flow is actnorm (per-channel affine, initialised from the first batch), an invertible
1x1 convolution (LU-parameterised with ``--lu``, the default: ``log|det W| = sum(log_s)``) and
an affine coupling of the channel halves with ``s = sigmoid(r + 2)`` (Glow's code; ``--scale-fn``)
(:class:`gmcore.nn.flows.GlowStep`). Multi-scale images (C, H, W): each of ``levels`` levels
squeezes 2x2, runs ``depth`` steps of flow and, except on the last level, factors out half of
the channels under a learned prior ``N(mu(h), sigma(h))`` given the half ``h`` that goes on
(a zero-initialised 3x3 conv; written as an affine coupling conditioned on ``h``). Digits
(1, 8, 8) with 2 levels: squeeze to 4x4x4, steps, factor out 2x4x4, squeeze to 8x2x2, steps.
``gmcore sample RUN --temperature T`` draws from the base scaled by T (Glow's reduced-temperature
sampling); a run also writes ``temperature.png``, one row per T = 0, 0.5, 0.7, 1.0 from the same
base draws.

On flat vectors (the 2-D toys) Glow works as a flat flow: ``flat_depth`` steps of actnorm on
the features, an LU-parameterised linear map of the features (the 1x1 convolution at one
position) and an affine coupling of the two halves with an MLP network; there the defaults
(``train_defaults`` / ``config_defaults``, section ``points``) are 16 steps of flow trained
for 4000 steps with noise regularization (``--noise-std 0.03``, see ``FlowModel``).

What differs from the paper: the coupling networks are small (3x3, 1x1, 3x3 convolutions of
``hidden`` channels; Glow used 512) and use no actnorm inside, the top level has a fixed
standard-normal prior (Glow learns one), no class conditioning, and the uniformly dequantized
inputs go through RealNVP's logit map first (``--preprocess logit``; ``affine`` is ``x - 0.5``,
Glow's choice, about 0.3 bits/dim worse on digits) (``FlowModel``; the NLL is the
dequantization bound of the discrete data, as the paper's). ``--dequantization variational``
(every image flow has it) learns the noise instead, Flow++'s variational dequantization
(:class:`gmcore.nn.flows.VariationalDequantizer`): a tighter bound of the same kind, 1.874
bits/dim on digits against 1.978 at seed 0, and 1.785 with ``gmcore eval RUN --dequant-samples
64`` (the importance-weighted bound; uniform noise: 1.865).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...functional import shape as _shape
from ...nn import Conv2d
from ...nn.flows import (AffineCoupling, FactorOut, FlowDensity, FlowSequential, GlowStep,
                         Squeeze, StandardNormal, Unsqueeze)
from ..base import DataInfo
from ..registry import register
from ._density import DequantizationConfig, FlowModel

__all__ = ["Glow", "GlowConfig", "TEMPERATURES"]

TEMPERATURES = (0.0, 0.5, 0.7, 1.0)   # the rows of temperature.png


@dataclass
class GlowConfig(DequantizationConfig):
    preprocess: str = field(default="logit", metadata={
        "help": "map of the dequantized images into the flow's space: logit (RealNVP's, "
                "alpha 0.05) or affine (x - 0.5)", "choices": ["logit", "affine"]})
    levels: int = field(default=2, metadata={"help": "levels of the multi-scale architecture "
                                                     "(images; each squeezes 2x2, all but the "
                                                     "last factor out half)", "min": 1})
    depth: int = field(default=8, metadata={"help": "steps of flow per level (images; K in the "
                                                    "paper)", "min": 1})
    hidden: int = field(default=64, metadata={"help": "channels (images) or units (points) of "
                                                      "the coupling networks", "min": 1})
    flat_depth: int = field(default=8, metadata={"help": "steps of flow on flat vectors (2-D "
                                                         "points)", "min": 1})
    mlp_layers: int = field(default=2, metadata={"help": "hidden layers of the MLP networks "
                                                         "(points)", "min": 1})
    lu: bool = field(default=True, metadata={"help": "LU-parameterised 1x1 convolutions "
                                                     "(--no-lu: a free matrix, O(C^3) log-det)"})
    scale_fn: str = field(default="sigmoid", metadata={
        "help": "coupling scale s(r): sigmoid(r + 2) (Glow's code), exp(tanh(r)) or exp(r)",
        "choices": ["sigmoid", "tanh", "exp"]})
    learned_prior: bool = field(default=True, metadata={
        "help": "factored-out halves get a learned prior N(mu(h), sigma(h)) (else N(0, I))"})


def _zero_conv(c_in, c_out):
    conv = Conv2d(c_in, c_out, 3, padding=1)
    conv.weight.data[...] = 0   # the learned prior starts as N(0, I)
    conv.bias.data[...] = 0
    return conv


@register("glow", family="flows", dataset="digits",
          description="Glow: actnorm, invertible 1x1 conv (LU), affine coupling, multi-scale; "
                      "sample --temperature (Kingma & Dhariwal 2018)")
class Glow(FlowModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = Glow(Glow.Config(hidden=8, depth=1), DataInfo((1, 4, 4), 17))
    >>> x = (gm.rand(5, 1, 4, 4) * 16).round() / 16
    >>> loss, _ = m.loss((x,))
    >>> m.nll((x,)).shape, m.sample(2, temperature=0.7).shape
    (gmcore.Size([5]), gmcore.Size([2, 1, 4, 4]))
    """

    Config = GlowConfig
    # digits have 1500 training images: the flow overfits past ~1000 steps (Glow, depth 8: test
    # 2.01 bits/dim at step 1000, 2.06 at 1500), so a short cosine schedule at a higher lr
    # with a weight average (EMA) for evaluation does best within a few minutes
    # the 2-D toys ("points", see gmcore/models/base.py): 16 steps of flow for 2000 steps. The
    # 8 of the image default underfit moons (0.419 nats at best against the GMM's 0.412, 4
    # steps 0.86; 32-unit networks 0.56); 16 steps reach 0.368-0.380, and overfit the 1000
    # points past ~1500 steps. Noise regularization (--noise-std 0.03) stops that, and the
    # run goes to 4000 steps: moons / 8gaussians / checkerboard 0.346 / 0.580 / 2.334 (2000
    # steps: 0.361 / 0.641 / 2.370; without the noise, 2000 steps: 0.380 / 0.828 / 2.370)
    train_defaults = {"steps": 1000, "batch_size": 64, "lr": 2e-3, "ema": 0.995,
                      "points": {"steps": 4000}}
    config_defaults = {"points": {"flat_depth": 16, "noise_std": 0.03}}
    # the logit map's squeeze: a small one keeps the 17 digit levels apart (test bits/dim:
    # 1.978 with 0.005, 1.989 with 0.01, 2.032 with RealNVP's 0.05)
    logit_alpha = 0.005

    def __init__(self, config: GlowConfig, data: DataInfo):
        super().__init__(config, data)
        self.preprocess = config.preprocess
        c = config
        if self.continuous:
            d = self.flow_shape[0]
            transform = FlowSequential(*[GlowStep(d, c.hidden, c.lu, c.scale_fn, vector=True,
                                                  mlp_layers=c.mlp_layers)
                                         for _ in range(c.flat_depth)])
        else:
            transform = self._level(tuple(data.shape), 0)
        self.flow = FlowDensity(StandardNormal(self.flow_shape), transform)

    def _level(self, shape, level):
        """The flow of ``level`` on inputs of ``shape`` (C, H, W), keeping that shape."""
        cfg = self.config
        ch, h, w = shape
        if h % 2 or w % 2:
            raise ValueError(f"Glow: level {level + 1} squeezes {h}x{w} inputs, which needs even "
                             f"sizes; use fewer --levels (got {cfg.levels})")
        c = 4 * ch
        steps = [GlowStep(c, cfg.hidden, cfg.lu, cfg.scale_fn) for _ in range(cfg.depth)]
        if level == cfg.levels - 1:
            return FlowSequential(Squeeze(), *steps, Unsqueeze())
        keep = c // 2
        split = []
        if cfg.learned_prior:   # z_out = (x_out - mu(h)) / sigma(h): a coupling given h
            split.append(AffineCoupling(_zero_conv(keep, 2 * (c - keep)), "channel", 0, "exp"))
        inner = self._level((keep, h // 2, w // 2), level + 1)
        return FlowSequential(Squeeze(), *steps, *split, FactorOut(inner), Unsqueeze())

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``temperature.png``: 8 samples per row, one row per temperature in TEMPERATURES,
        every row from the same base draws."""
        from ...plots import save_image_grid

        if len(self.data.shape) != 3:   # points: samples.png (over the data) is the picture
            return {}
        state = generator.get_state() if generator is not None else None
        rows = []
        for t in TEMPERATURES:
            if state is not None:
                generator.set_state(state)
            rows.append(self.sample(8, generator=generator, temperature=t))
        save_image_grid(_shape.cat(rows, 0), Path(out_dir) / "temperature.png", nrow=8)
        return {"temperature_png": "temperature.png", "temperatures": list(TEMPERATURES)}
