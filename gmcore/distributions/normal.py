"""``Normal(loc, scale)``: the univariate Gaussian, reparameterizable."""
import math

from ..creation import randn
from ..functional import erf
from . import constraints
from .distribution import Distribution, broadcast_all

__all__ = ["Normal"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class Normal(Distribution):
    """Gaussian with mean ``loc`` and standard deviation ``scale`` (broadcast together).

    >>> import gmcore as gm
    >>> d = gm.distributions.Normal(gm.tensor([0.0, 1.0]), gm.tensor([1.0, 2.0]))
    >>> [round(x, 4) for x in d.log_prob(gm.tensor([0.0, 1.0])).tolist()]
    [-0.9189, -1.6121]
    >>> [round(x, 4) for x in d.entropy().tolist()]
    [1.4189, 2.1121]
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
    def stddev(self):
        return self.scale

    @property
    def variance(self):
        return self.scale.square()

    def rsample(self, sample_shape=(), generator=None):
        """``loc + scale * eps`` with ``eps ~ N(0, 1)`` drawn from ``generator``."""
        eps = randn(self._extended_shape(sample_shape), generator=generator,
                    dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + eps * self.scale

    def log_prob(self, value):
        value = self._as_value(value)
        z = (value - self.loc) / self.scale
        return -0.5 * z.square() - self.scale.log() - _HALF_LOG_2PI

    def cdf(self, value):
        value = self._as_value(value)
        return 0.5 * (1 + erf((value - self.loc) / (self.scale * math.sqrt(2))))

    def entropy(self):
        return 0.5 + _HALF_LOG_2PI + self.scale.log()
