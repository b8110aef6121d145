"""Probability distributions (``torch.distributions``' names and semantics).

``log_prob`` and ``rsample`` are differentiable; ``sample`` takes a ``gmcore.Generator``.

>>> import gmcore as gm
>>> from gmcore.distributions import Normal, kl_divergence
>>> q = Normal(gm.zeros(2, requires_grad=True), gm.ones(2))
>>> z = q.rsample(generator=gm.Generator().manual_seed(0))
>>> kl_divergence(q, Normal(0.0, 1.0)).sum().item()
0.0
"""
from . import constraints
from .distribution import Distribution
from .normal import Normal
from .bernoulli import Bernoulli
from .categorical import Categorical
from .logistic import Logistic
from .dlml import DiscretizedLogisticMixture
from .kl import kl_divergence, register_kl

__all__ = ["Distribution", "Normal", "Bernoulli", "Categorical", "Logistic", "kl_divergence",
           "register_kl", "constraints", "DiscretizedLogisticMixture"]
