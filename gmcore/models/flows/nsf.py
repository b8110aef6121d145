"""NSF: Neural Spline Flows (Durkan, Bekasov, Murray & Papamakarios, NeurIPS 2019), with
rational-quadratic splines.

Each layer transforms every feature it touches by a monotonic rational-quadratic spline with K
bins on ``[-B, B]`` and identity (linear) tails outside
(:func:`gmcore.nn.functional.rational_quadratic_spline`); the bin widths, heights and knot
derivatives come from a network:

* ``--variant coupling`` (default, RQ-NSF (C)): half of the features pass unchanged and
  condition, through an MLP, the splines of the other half
  (:class:`gmcore.nn.flows.RQSplineCoupling`); the halves alternate between layers. Density and
  sampling are one pass per layer.
* ``--variant autoregressive`` (RQ-NSF (AR)): a MADE gives the spline of feature d from the
  features before it (:class:`gmcore.nn.flows.RQSplineAutoregressive`), orderings reversed
  between layers; density in one pass, sampling in D passes per layer.

Before every spline layer sit an actnorm and (``--linear lu``, as the paper) an invertible linear
map in LU form (:class:`gmcore.nn.flows.linear.LULinear`), which mixes the features between
layers. Data: images are dequantized, logit-mapped (``a = 0.01``, as MAF) and flattened (bits/dim,
dequantization bound); the 2-D toys are points (nats), fitted with noise regularization
(``--noise-std 0.03``, see ``FlowModel``) for 4000 steps at lr 5e-3 (``points`` defaults).

What differs from the paper: actnorm (data-initialised) in place of the paper's batch norm in
the tabular experiments; plain MLP/MADE conditioners (the paper uses residual nets); each
conditioner's output layer starts at zero, so every spline starts as the identity.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...nn.flows import (FlowDensity, FlowSequential, RQSplineAutoregressive, RQSplineCoupling,
                         StandardNormal)
from ...nn.flows.actnorm1d import ActNorm1d
from ...nn.flows.linear import LULinear
from ..registry import register
from ._density import DequantizationConfig, FlowModel

__all__ = ["NSF", "NSFConfig"]


@dataclass
class NSFConfig(DequantizationConfig):
    variant: str = field(default="coupling", metadata={
        "help": "coupling (one pass each way) or autoregressive (MADE; sampling in D passes)",
        "choices": ["coupling", "autoregressive"]})
    layers: int = field(default=4, metadata={"help": "spline layers", "min": 1})
    hidden: int = field(default=128, metadata={"help": "units per conditioner hidden layer",
                                               "min": 1})
    hidden_layers: int = field(default=2, metadata={"help": "conditioner hidden layers", "min": 1})
    num_bins: int = field(default=8, metadata={"help": "spline bins K", "min": 1})
    tail_bound: float = field(default=3.0, metadata={
        "help": "the splines act on [-B, B], identity outside", "min": 0.0})
    linear: str = field(default="lu", metadata={
        "help": "invertible linear map before each spline layer", "choices": ["lu", "none"]})
    norm: str = field(default="actnorm", metadata={
        "help": "normalisation before each layer", "choices": ["actnorm", "none"]})
    mask_seed: int = field(default=0, metadata={
        "help": "seeds the coupling splits, MADE degrees and LU permutations"})


def coupling_masks(d, layers, seed):
    """Alternating halves: layer 2j keeps a random half fixed, layer 2j+1 its complement (for
    D = 2: feature 0, then feature 1)."""
    rng = np.random.default_rng([int(seed), 2])
    masks = []
    for k in range(layers):
        if k % 2 == 0:
            keep = np.zeros(d, dtype=np.int64)
            keep[np.arange(d // 2) if d == 2 else rng.permutation(d)[: d // 2]] = 1
            masks.append(keep)
        else:
            masks.append(1 - masks[-1])
    return masks


@register("nsf", family="flows", dataset="digits",
          description="NSF: rational-quadratic neural spline flow (coupling or autoregressive)")
class NSF(FlowModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = NSF(NSF.Config(layers=2, hidden=16), DataInfo((2,), 0, "moons"))
    >>> x = gm.randn(8, 2)
    >>> loss, _ = m.loss((x,))
    >>> m.nll((x,)).shape, m.sample(3, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([8]), gmcore.Size([3, 2]))
    """

    Config = NSFConfig
    flat_input = True
    # digits: the logit map (a = 0.01) as MAF (test 1.96 vs 2.04 bits/dim with the affine map)
    preprocess = "logit"
    logit_alpha = 0.01
    # the 2-D toys ("points", see gmcore/models/base.py): with noise regularization the flow
    # can train longer at a higher lr before it overfits the 1000 points (8gaussians: 0.498
    # nats with the digits settings; noise 0.03: 0.397 at lr 5e-3 for 4000 steps)
    train_defaults = {"steps": 1000, "lr": 1e-3, "batch_size": 128,
                      "points": {"lr": 5e-3, "steps": 4000}}
    config_defaults = {"points": {"noise_std": 0.03}}

    def __init__(self, config: NSFConfig, data):
        super().__init__(config, data)
        c, d = config, self.flow_shape[0]
        if d < 2:
            raise ValueError(f"NSF needs at least 2 dimensions, {data.name or 'the data'} has {d}")
        rng = np.random.default_rng([int(c.mask_seed), 3])
        masks = coupling_masks(d, c.layers, c.mask_seed)
        steps = []
        for k in range(c.layers):
            if c.norm == "actnorm":
                steps.append(ActNorm1d(d))
            if c.linear == "lu":
                steps.append(LULinear(d, permutation=rng.permutation(d)))
            spline = dict(hidden=c.hidden, layers=c.hidden_layers, num_bins=c.num_bins,
                          tail_bound=c.tail_bound)
            if c.variant == "coupling":
                steps.append(RQSplineCoupling(masks[k], **spline))
            else:
                steps.append(RQSplineAutoregressive(d, ordering="reverse" if k % 2 else None,
                                                    seed=c.mask_seed * 1000 + k, **spline))
        self.flow = FlowDensity(StandardNormal((d,)), FlowSequential(steps))
