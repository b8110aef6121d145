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

``--base mog`` is the paper's MAF-MoG: a MADE with a ``--components`` Gaussian mixture per
conditional (:class:`gmcore.nn.flows.made_mog.MADEMoG`) replaces the standard-normal base. In 2-D
an affine MAF layer maps the first variable of its ordering by an affine function of a Gaussian
and the second by an affine function given the first: a stack of them bends one Gaussian into
separated modes only with bridges of wasted mass between them (5 layers of 256 units: 1.46 nats
on 8gaussians, 10 layers of 64: 1.18, against the 10-component GMM's 0.374), while the mixture
base has the modes at once. It is the default on the 2-D toys (``config_defaults``), with 2 MAF
layers and noise regularization (``--noise-std 0.03``, see ``FlowModel``): 0.364 nats on
8gaussians against the mixture's 0.374 (0.385 without the noise).

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
from ...nn.flows.made_mog import MADEMoG
from ..registry import register
from ._density import DequantizationConfig, FlowModel

__all__ = ["MAF", "MAFConfig"]


@dataclass
class MAFConfig(DequantizationConfig):
    layers: int = field(default=5, metadata={"help": "autoregressive (MADE) layers (0: only the "
                                                     "MoG base, with --base mog)", "min": 0})
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
    base: str = field(default="normal", metadata={
        "help": "base density: normal (MAF) or mog (MAF-MoG: a MADE with a Gaussian mixture "
                "per conditional on top of the layers)", "choices": ["normal", "mog"]})
    components: int = field(default=10, metadata={"help": "mixture components per conditional "
                                                          "(--base mog)", "min": 1})


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
    # the 2-D toys (1000 training points; "points" sections, see gmcore/models/base.py): MAF-MoG,
    # small (2 layers of 32 units; 5 layers of 64 overfit: 0.368 / 0.472 / 2.360 nats on moons /
    # 8gaussians / checkerboard against 0.362 / 0.385 / 2.346), short at a high lr with a weight
    # average: the test NLL is lowest near step 1000 and rises after (5 layers of 64, 2000 steps
    # at lr 5e-3: moons 0.347 at step 1000, 0.404 at the end; at lr 1e-3 1000 steps are too few).
    # Noise regularization (--noise-std 0.03) stops the overfitting, so the run goes to 2000
    # steps: 0.342 / 0.364 / 2.289 (without it, 1000 steps: 0.362 / 0.385 / 2.346)
    train_defaults = {"steps": 1000, "lr": 1e-3, "batch_size": 128,
                      "points": {"lr": 5e-3, "ema": 0.995, "steps": 2000}}
    config_defaults = {"points": {"base": "mog", "layers": 2, "hidden": 32, "noise_std": 0.03}}

    def __init__(self, config: MAFConfig, data):
        super().__init__(config, data)
        c, d = config, self.flow_shape[0]
        if d < 2:
            raise ValueError(f"MAF needs at least 2 dimensions, {data.name or 'the data'} has {d}")
        if c.layers == 0 and c.base != "mog":
            raise ValueError("MAF: --layers 0 leaves no flow; it needs --base mog")
        orders = layer_orderings(d, c.layers + 1, c.ordering, c.mask_seed)
        steps = []
        for k, order in enumerate(orders[:c.layers]):
            if c.norm == "actnorm":
                steps.append(ActNorm1d(d))
            steps.append(MaskedAffineAutoregressive(d, c.hidden, c.hidden_layers, ordering=order,
                                                    seed=c.mask_seed * 1000 + k,
                                                    scale_fn=c.scale_fn))
        if c.base == "mog":
            if c.norm == "actnorm":     # the mixture sees standardised features too
                steps.append(ActNorm1d(d))
            base = MADEMoG(d, c.components, c.hidden, c.hidden_layers, ordering=orders[-1],
                           seed=c.mask_seed * 1000 + c.layers)
        else:
            base = StandardNormal((d,))
        self.flow = FlowDensity(base, FlowSequential(steps))
