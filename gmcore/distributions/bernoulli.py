"""``Bernoulli(probs=... | logits=...)``: one coin per batch element (binarised images)."""
import numpy as np

from .. import autograd
from ..functional import clamp, logsigmoid, sigmoid, where
from ..random import _generator_for
from ..tensor import Tensor
from . import constraints
from .distribution import Distribution, broadcast_all, lazy_property

__all__ = ["Bernoulli", "clamp_probs", "probs_to_logits"]


def clamp_probs(probs):
    """Probabilities clamped into ``[eps, 1 - eps]`` of their dtype (finite logs and logits)."""
    eps = float(np.finfo(probs.data.dtype).eps)
    return clamp(probs, eps, 1 - eps)


def probs_to_logits(probs, is_binary=False):
    """``log p - log(1 - p)`` (binary) or ``log p`` (categorical), on clamped probabilities."""
    p = clamp_probs(probs)
    return p.log() - (-p).log1p() if is_binary else p.log()


class Bernoulli(Distribution):
    """``P(x = 1) = probs = sigmoid(logits)``; give exactly one of ``probs`` and ``logits``.

    ``log_prob(x) = x logsigmoid(logits) + (1 - x) logsigmoid(-logits)`` (= -BCEWithLogits):
    finite for ``|logits|`` of any size and accurate to the last bits in both tails, where the
    ``x * logits - softplus(logits)`` form cancels.

    >>> import gmcore as gm
    >>> d = gm.distributions.Bernoulli(logits=gm.tensor([0.0, 1e4, -1e4]))
    >>> d.log_prob(gm.tensor([1.0, 1.0, 0.0])).tolist()[1:]
    [0.0, 0.0]
    >>> round(d.log_prob(gm.tensor([1.0, 1.0, 0.0])).tolist()[0], 4)
    -0.6931
    """

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.boolean

    def __init__(self, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        if probs is not None:
            (self.probs,) = broadcast_all(probs)
            param = self.probs
        else:
            (self.logits,) = broadcast_all(logits)
            param = self.logits
        if not param.is_floating_point():
            raise TypeError(f"Bernoulli parameters must be floating point, got {param.dtype}")
        super().__init__(param.shape, (), validate_args)

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self):
        return sigmoid(self.logits)

    @property
    def param_shape(self):
        return self._batch_shape

    @property
    def mean(self):
        return self.probs

    @property
    def mode(self):
        p = self.probs
        return where(p == 0.5, float("nan"), (p > 0.5).to(p.dtype))

    @property
    def variance(self):
        return self.probs * (1 - self.probs)

    def sample(self, sample_shape=(), generator=None):
        """0/1 draws (in the parameters' dtype): ``u < probs`` with ``u`` uniform."""
        with autograd.no_grad():
            p = self.probs
            shape = tuple(self._extended_shape(sample_shape))
            u = _generator_for(generator, p.device).uniform(shape, 0.0, 1.0, p.data.dtype)
            return Tensor((u < p.data).astype(p.data.dtype))

    def log_prob(self, value):
        value = self._as_value(value)
        logits, value = broadcast_all(self.logits, value.to(self.logits.dtype))
        return _xlogsig(value, logits)

    def entropy(self):
        return -_xlogsig(self.probs, self.logits)

    def enumerate_support(self, expand=True):
        """The values ``0, 1`` (in the parameters' dtype) along a new leading dim, expanded over
        the batch (torch's ``Bernoulli.enumerate_support``)."""
        from ..creation import tensor
        p = self.probs
        values = tensor([0.0, 1.0], dtype=p.dtype, device=p.device).reshape((-1,) + (1,) * len(self._batch_shape))
        return values.expand((-1,) + tuple(self._batch_shape)) if expand else values


def _xlogsig(x, logits):
    """``x log sigmoid(l) + (1 - x) log sigmoid(-l)``; logsigmoid is finite, so 0 * it is 0."""
    return x * logsigmoid(logits) + (1 - x) * logsigmoid(-logits)
