"""MAF: Masked Autoregressive Flow (Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow
for Density Estimation", NeurIPS 2017).

A stack of autoregressive affine layers on flat vectors (B, D). Layer l maps
``z_d = x_d * s_d(x_<d) + shift_d(x_<d)`` with ``(log s, shift)`` from a MADE
(:class:`gmcore.nn.flows.MaskedAffineAutoregressive`); the Jacobian is triangular in the layer's
ordering, ``log|det| = sum_d log s_d``. The density ``log p(x) = log N(f(x); 0, I) + log|det|``
takes one pass per layer; sampling inverts each layer in D sequential passes. Successive layers
reverse the ordering (``--ordering reverse``, the paper's choice); ``--ordering random`` (the
default, better on digits) draws a fresh random ordering for every other layer and reverses it in
the next.

Data: images are dequantized, mapped by RealNVP's logit transform (``a = 0.01``, its log-det
counted) and flattened (``FlowModel``): 64-d vectors for digits, with the dequantization bound in
bits/dim; the 2-D toys are modelled as points (nats).

What differs from the paper:

* between layers an actnorm (Glow's, data-initialised on the first batch; ``--norm actnorm``)
  stands in for the paper's batch norm: the same per-feature standardisation, but a fixed map at
  test time without running averages, so train and test densities are the same function;
* the scale is ``exp(tanh(r))`` by default (``--scale-fn``; the paper's ``exp(r)`` is
  ``--scale-fn exp``): a bounded log-scale per layer, which keeps early training stable;
* the output layer of each MADE starts at zero, so the flow starts as the identity.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...nn.flows import FlowDensity, FlowSequential, MaskedAffineAutoregressive, StandardNormal
from ...nn.flows.actnorm1d import ActNorm1d
from ..registry import register
from ._density import FlowModel

__all__ = ["MAF", "MAFConfig"]


@dataclass
class MAFConfig:
    layers: int = field(default=5, metadata={"help": "autoregressive (MADE) layers", "min": 1})
    hidden: int = field(default=256, metadata={"help": "units per MADE hidden layer", "min": 1})
    hidden_layers: int = field(default=2, metadata={"help": "hidden layers per MADE", "min": 1})
    ordering: str = field(default="random", metadata={
        "help": "orderings of successive layers: reverse (alternate natural and reversed) or "
                "random (a random permutation, then its reversal, ...)",
        "choices": ["reverse", "random"]})
    norm: str = field(default="actnorm", metadata={
        "help": "normalisation before each layer", "choices": ["actnorm", "none"]})
    scale_fn: str = field(default="tanh", metadata={
        "help": "scale of the affine map from the raw output r: exp(tanh r), exp(r) or "
                "sigmoid(r + 2)", "choices": ["tanh", "exp", "sigmoid"]})
    mask_seed: int = field(default=0, metadata={"help": "seeds the orderings and MADE degrees"})


def layer_orderings(d, layers, ordering, seed):
    """The ordering of each layer: alternately natural and reversed; or, for ``random``, a fresh
    random permutation on even layers, each followed by its reversal (so that every variable is
    also conditioned on those after it; in 2-D, two random draws could repeat an ordering)."""
    rng = np.random.default_rng([int(seed), 1])
    orders = []
    for k in range(layers):
        if k % 2:
            orders.append(orders[-1][::-1].copy())
        else:
            orders.append(np.arange(d) if ordering == "reverse" else rng.permutation(d))
    return orders


@register("maf", family="flows", dataset="digits",
          description="MAF: masked autoregressive flow (density in one pass, sampling in D passes)")
class MAF(FlowModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = MAF(MAF.Config(layers=2, hidden=16), DataInfo((2,), 0, "moons"))
    >>> x = gm.randn(8, 2)
    >>> loss, _ = m.loss((x,))
    >>> m.nll((x,)).shape, m.sample(3, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([8]), gmcore.Size([3, 2]))
    """

    Config = MAFConfig
    flat_input = True
    # digits: RealNVP's logit map (a = 0.01) spreads the dequantized boxes at levels 0 and 16,
    # which an affine MAF fits far better than the boxes themselves (test 2.07 vs 2.49 bits/dim
    # at 1000 steps); more steps or a wider MADE overfit the 1500 training images.
    preprocess = "logit"
    logit_alpha = 0.01
    train_defaults = {"steps": 1000, "lr": 1e-3, "batch_size": 128}

    def __init__(self, config: MAFConfig, data):
        super().__init__(config, data)
        c, d = config, self.flow_shape[0]
        if d < 2:
            raise ValueError(f"MAF needs at least 2 dimensions, {data.name or 'the data'} has {d}")
        steps = []
        for k, order in enumerate(layer_orderings(d, c.layers, c.ordering, c.mask_seed)):
            if c.norm == "actnorm":
                steps.append(ActNorm1d(d))
            steps.append(MaskedAffineAutoregressive(d, c.hidden, c.hidden_layers, ordering=order,
                                                    seed=c.mask_seed * 1000 + k,
                                                    scale_fn=c.scale_fn))
        self.flow = FlowDensity(StandardNormal((d,)), FlowSequential(steps))
