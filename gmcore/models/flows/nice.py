"""NICE: Non-linear Independent Components Estimation (Dinh, Krueger & Bengio, 2014).

A flow on flat vectors: ``couplings`` additive coupling layers ``y_b = x_b + m(x_a)``
(volume preserving), the partition alternating between the odd and the even entries of the
vector (a checkerboard on the flattened image), each ``m`` an MLP of ``layers`` ReLU layers of
``hidden`` units, then a diagonal scaling layer ``z = exp(s) * y`` (the only log-determinant:
``sum(s)``), onto a factorised prior: the standard logistic (the paper's choice on MNIST) or a
standard normal (``--prior gaussian``).

What differs from the paper: it used 4 couplings of 5 hidden layers of 1000 units on MNIST,
trained with Adam and a small L2; here the networks are smaller (digits are 64 pixels and only
1500 training images: 4 couplings of 3 x 128; with 4 x 256 the test NLL was already 0.5 bits/dim
above the training loss after 500 steps) and the last layer of
each coupling network starts at zero (the flow starts as the identity). Images are uniformly
dequantized and mapped by a logit (``--preprocess logit``, RealNVP's; the paper rescaled the
data linearly: ``--preprocess affine``) (``FlowModel``); the NLL is the dequantization bound of
the discrete data. On the 2-D toys the partition is the two coordinates, alternating.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import creation as gc
from ...nn import Module
from ...nn import functional as F
from ...nn.flows import (AdditiveCoupling, FlowDensity, FlowSequential, Scaling, StandardNormal,
                         mlp_conditioner)
from ..base import DataInfo
from ..registry import register
from ._density import DequantizationConfig, FlowModel

__all__ = ["NICE", "NICEConfig", "StandardLogistic"]


class StandardLogistic(Module):
    """Factorised standard logistic density over events of ``shape``: ``log p(z) =
    -sum(softplus(z) + softplus(-z))``; draws ``logit(u)``, ``u ~ U(0, 1)``, scaled by the
    temperature.

    >>> import gmcore as gm
    >>> round(float(StandardLogistic((1,)).log_prob(gm.zeros(1, 1))[0]), 4)   # log(1/4)
    -1.3863
    """

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def log_prob(self, z):
        if tuple(z.shape[1:]) != self.shape:
            raise ValueError(f"StandardLogistic{self.shape}: got values of shape {tuple(z.shape)}")
        return -(F.softplus(z) + F.softplus(-z)).reshape(z.shape[0], -1).sum(1)

    def sample(self, n, generator=None, temperature=1.0, device=None, dtype=None):
        u = gc.rand(int(n), *self.shape, generator=generator, device=device, dtype=dtype)
        # keep u inside (0, 1): rand may return exactly 0
        eps = 1e-6
        u = u * (1 - 2 * eps) + eps
        z = u.log() - (1 - u).log()
        return z * temperature if temperature != 1.0 else z


@dataclass
class NICEConfig(DequantizationConfig):
    preprocess: str = field(default="logit", metadata={
        "help": "map of the dequantized images into the flow's space: logit (alpha 0.05) or "
                "affine (x - 0.5)", "choices": ["logit", "affine"]})
    couplings: int = field(default=4, metadata={"help": "additive coupling layers", "min": 1})
    hidden: int = field(default=128, metadata={"help": "units per hidden layer of each coupling "
                                                       "network", "min": 1})
    layers: int = field(default=3, metadata={"help": "hidden layers per coupling network",
                                             "min": 1})
    prior: str = field(default="logistic", metadata={"help": "the factorised base density",
                                                     "choices": ["logistic", "gaussian"]})


@register("nice", family="flows", dataset="digits",
          description="NICE: additive coupling layers + diagonal scaling (Dinh et al. 2014)")
class NICE(FlowModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = NICE(NICE.Config(hidden=8, layers=1), DataInfo((1, 4, 4), 17))
    >>> x = (gm.rand(5, 1, 4, 4) * 16).round() / 16
    >>> loss, _ = m.loss((x,))
    >>> m.nll((x,)).shape, m.sample(2).shape
    (gmcore.Size([5]), gmcore.Size([2, 1, 4, 4]))
    """

    Config = NICEConfig
    flat_input = True
    train_defaults = {"steps": 1000, "batch_size": 64, "lr": 2e-3, "ema": 0.995}

    def __init__(self, config: NICEConfig, data: DataInfo):
        super().__init__(config, data)
        self.preprocess = config.preprocess
        d = self.flow_shape[0]
        if d < 2:
            raise ValueError(f"NICE needs at least 2 dimensions, got shape {tuple(data.shape)}")
        layers = [AdditiveCoupling(mlp_conditioner(d, d, config.hidden, config.layers),
                                   mask="checkerboard", parity=i % 2)
                  for i in range(config.couplings)]
        base = StandardLogistic((d,)) if config.prior == "logistic" else StandardNormal((d,))
        self.flow = FlowDensity(base, FlowSequential(*layers, Scaling((d,))))

