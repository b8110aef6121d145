"""``Logistic(loc, scale)``: the logistic distribution (the building block of discretized
logistic mixtures), reparameterizable through its inverse CDF."""
import math

import numpy as np

from ..creation import rand
from ..functional import logsigmoid, sigmoid, clamp
from . import constraints
from .distribution import Distribution, broadcast_all

__all__ = ["Logistic"]


class Logistic(Distribution):
    """Density ``exp(-z) / (s (1 + exp(-z))^2)`` with ``z = (x - loc) / scale``; cdf ``sigmoid(z)``.

    ``log_prob = logsigmoid(z) + logsigmoid(-z) - log(scale)`` (finite for any ``|z|``);
    ``rsample`` is ``icdf(u) = loc + scale * (log u - log(1 - u))`` with ``u`` uniform, kept
    strictly inside (0, 1).

    >>> import gmcore as gm
    >>> d = gm.distributions.Logistic(0.0, 1.0)
    >>> round(d.log_prob(gm.tensor(0.0)).item(), 4), d.cdf(gm.tensor(0.0)).item()
    (-1.3863, 0.5)
    >>> round(d.icdf(gm.tensor(0.75)).item(), 4)
    1.0986
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(self.loc.shape, (), validate_args)

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        return self.scale.square() * (math.pi ** 2 / 3)

    def _z(self, value):
        return (value - self.loc) / self.scale

    def log_prob(self, value):
        z = self._z(self._as_value(value))
        return logsigmoid(z) + logsigmoid(-z) - self.scale.log()

    def cdf(self, value):
        return sigmoid(self._z(self._as_value(value)))

    def icdf(self, value):
        value = self._as_icdf_arg(value)
        return self.loc + self.scale * (value.log() - (-value).log1p())

    def _as_icdf_arg(self, value):
        from ..tensor import Tensor
        if not isinstance(value, Tensor):
            ref = self.loc
            from ..creation import tensor
            value = tensor(value, dtype=ref.dtype, device=ref.device)
        if self._validate_args and not bool(constraints.unit_interval.check(value).all()):
            raise ValueError("Logistic.icdf: probabilities must lie in [0, 1]")
        return value

    def rsample(self, sample_shape=(), generator=None):
        u = rand(self._extended_shape(sample_shape), generator=generator,
                 dtype=self.loc.dtype, device=self.loc.device)
        fi = np.finfo(u.data.dtype)
        # u in [tiny, 1 - eps]: log(u) and log1p(-u) stay finite, so samples are finite
        u = clamp(u, float(fi.tiny), float(1 - fi.eps))
        return self.loc + self.scale * (u.log() - (-u).log1p())

    def entropy(self):
        return self.scale.log() + 2.0
