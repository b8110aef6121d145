"""``Categorical(probs=... | logits=...)``: one of ``K`` classes per batch element (last dim)."""
import numpy as np

from .. import autograd
from ..creation import full
from ..functional import argmax, clamp, gather, log_softmax, softmax
from ..random import _generator_for
from ..tensor import Size, Tensor
from . import constraints
from .bernoulli import probs_to_logits
from .distribution import Distribution, lazy_property

__all__ = ["Categorical"]


class Categorical(Distribution):
    """Class probabilities over the last dim: ``probs`` (normalised to sum to 1) or ``logits``
    (normalised to ``logits - logsumexp(logits)``); give exactly one.

    ``batch_shape`` is ``param.shape[:-1]``; samples are int64 class indices.

    >>> import gmcore as gm
    >>> d = gm.distributions.Categorical(probs=gm.tensor([0.2, 0.3, 0.5]))
    >>> round(d.log_prob(gm.tensor(2)).item(), 4), round(d.entropy().item(), 4)
    (-0.6931, 1.0297)
    >>> d.sample((4,), generator=gm.Generator().manual_seed(0)).shape
    gmcore.Size([4])
    """

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real}
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        param = probs if probs is not None else logits
        if not isinstance(param, Tensor):
            from ..creation import tensor
            param = tensor(param)
        if param.ndim < 1:
            raise ValueError("Categorical parameters need at least one dimension (the classes)")
        if not param.is_floating_point():
            raise TypeError(f"Categorical parameters must be floating point, got {param.dtype}")
        if probs is not None:
            validate = Distribution._validate_args if validate_args is None else validate_args
            if validate and bool(((param.data < 0) | (param.data != param.data)).any()):
                raise ValueError("Categorical: probs must be non-negative (and not NaN)")
            self.probs = param / param.sum(-1, keepdim=True)
        else:
            self.logits = log_softmax(param, -1)  # logits - logsumexp(logits): stable
        self._num_events = param.shape[-1]
        super().__init__(param.shape[:-1], (), validate_args)

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs)

    @lazy_property
    def probs(self):
        return softmax(self.logits, -1)

    @property
    def support(self):
        return constraints.integer_interval(0, self._num_events - 1)

    @property
    def param_shape(self):
        return Size(tuple(self._batch_shape) + (self._num_events,))

    @property
    def mean(self):
        return full(tuple(self._batch_shape), float("nan"), dtype=self.probs.dtype,
                    device=self.probs.device)

    variance = mean

    @property
    def mode(self):
        return argmax(self.probs, -1)

    def sample(self, sample_shape=(), generator=None):
        """int64 class indices of shape ``sample_shape + batch_shape`` (inverse CDF per row)."""
        with autograd.no_grad():
            p = self.probs.data
            xp = self.probs._xp()
            cdf = xp.cumsum(p, axis=-1)
            shape = tuple(self._extended_shape(sample_shape))
            u = _generator_for(generator, self.probs.device).uniform(shape, 0.0, 1.0, p.dtype)
            u = u * cdf[..., -1]  # rounding: the last cdf entry may differ from 1
            idx = (cdf < u[..., None]).sum(-1)
            return Tensor(xp.minimum(idx, self._num_events - 1).astype(np.int64))

    def log_prob(self, value):
        value = self._as_value(value, dtype=None)
        value = value.long()
        shape = np.broadcast_shapes(tuple(value.shape), tuple(self._batch_shape))
        logits = self.logits.broadcast_to(shape + (self._num_events,))
        index = value.broadcast_to(shape).unsqueeze(-1)
        return gather(logits, -1, index).squeeze(-1)

    def _as_value(self, value, dtype=None):
        if not isinstance(value, Tensor):
            from ..creation import tensor
            value = tensor(value, device=self._param_like().device)
        if self._validate_args:
            self._validate_sample(value)
        return value

    def entropy(self):
        lg = self.logits
        lg = clamp(lg, min=float(np.finfo(lg.data.dtype).min))  # -inf logits: 0 * -inf -> 0
        return -(lg * self.probs).sum(-1)

    def enumerate_support(self, expand=True):
        """The classes ``0 .. K-1`` along a new leading dim (expanded over the batch)."""
        from ..creation import arange
        values = arange(self._num_events, device=self._param_like().device)
        values = values.reshape((-1,) + (1,) * len(self._batch_shape))
        return values.expand((-1,) + tuple(self._batch_shape)) if expand else values
