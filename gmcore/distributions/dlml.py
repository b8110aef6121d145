"""``DiscretizedLogisticMixture``: PixelCNN++ / WaveNet output distribution over binned data.

A thin wrapper over :func:`gmcore.functional.discretized_logistic_mixture_nll` (the fused
kernels) and :func:`gmcore.functional.sample_discretized_logistic_mixture`; the parameter
layout is documented there.
"""
import math

import numpy as np

from ..functional import broadcast_to, discretized_logistic_mixture_nll, \
    sample_discretized_logistic_mixture, stack
from ..functional.dlml import _infer_channels
from ..tensor import Tensor
from . import constraints
from .distribution import Distribution

__all__ = ["DiscretizedLogisticMixture"]


class DiscretizedLogisticMixture(Distribution):
    """Mixture of K discretized logistics per position, with PixelCNN++'s channel coupling.

    ``params``: (B, K*(1+2C+C(C-1)/2), H, W) for images (C inferred from the channel count, or
    given by ``channels`` when it fits both 1 and 3) or (B, 3K, T) for sequences.
    ``batch_shape`` is (B,), ``event_shape`` (C, H, W) or (T,): ``log_prob(x)`` is the
    log-likelihood of a whole example in nats (minus the per-example NLL), differentiable
    with respect to ``params``; with ``validate_args`` on (the default) a value outside [-1, 1]
    or off the grid raises a ValueError. ``sample()`` draws on the grid -1 + 2i/(num_bins-1).

    >>> import gmcore as gm
    >>> from gmcore.distributions import DiscretizedLogisticMixture
    >>> d = DiscretizedLogisticMixture(gm.zeros(2, 30, 4, 4), channels=1)   # K = 10, grey
    >>> d.batch_shape, d.event_shape
    (gmcore.Size([2]), gmcore.Size([1, 4, 4]))
    >>> x = d.sample(generator=gm.Generator().manual_seed(0))
    >>> x.shape, d.log_prob(x).shape
    (gmcore.Size([2, 1, 4, 4]), gmcore.Size([2]))
    """

    arg_constraints = {"params": constraints.real}
    # the bin grid in [-1, 1]; discretized_logistic_mixture_nll checks it (validate=) and refuses
    # values off it or outside, instead of a constraint object here
    support = None
    has_rsample = False

    def __init__(self, params, num_bins=256, channels=None, validate_args=None):
        if not isinstance(params, Tensor):
            raise TypeError(f"DiscretizedLogisticMixture: params must be a Tensor, got "
                            f"{type(params).__name__}")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f"DiscretizedLogisticMixture: num_bins must be an int >= 2, got {num_bins!r}")
        self.params = params
        self.num_bins = num_bins
        self.channels = _infer_channels(params, channels)
        if params.ndim == 3:
            event = (params.shape[2],)
        else:
            event = (self.channels,) + tuple(params.shape[2:])
        super().__init__((params.shape[0],), event, validate_args)

    def log_prob(self, value):
        """Log-likelihood (nats) per example; leading sample dims are allowed."""
        value = self._as_value(value)
        n_event = len(self.event_shape)
        lead = tuple(value.shape[:value.ndim - n_event])
        if lead == tuple(self.batch_shape):
            return -discretized_logistic_mixture_nll(value, self.params, self.num_bins,
                                                     validate=self._validate_args)
        shape = np.broadcast_shapes(lead, tuple(self.batch_shape))  # e.g. (S, B)
        rows = math.prod(shape)
        x = broadcast_to(value, shape + tuple(self.event_shape))
        x = x.reshape((rows,) + tuple(self.event_shape))
        p = broadcast_to(self.params, shape[:-1] + tuple(self.params.shape))
        p = p.reshape((rows,) + tuple(self.params.shape[1:]))
        return -discretized_logistic_mixture_nll(x, p, self.num_bins,
                                                 validate=self._validate_args).reshape(shape)

    def sample(self, sample_shape=(), generator=None):
        """Draws of shape ``sample_shape + batch_shape + event_shape`` on the bin grid."""
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        n = math.prod(sample_shape)
        draws = [sample_discretized_logistic_mixture(self.params.detach(), self.num_bins, generator,
                                                     channels=self.channels) for _ in range(n)]
        if not sample_shape:
            return draws[0]
        return stack(draws).reshape(self._extended_shape(sample_shape))

    def __repr__(self):
        return (f"DiscretizedLogisticMixture(params: Size({list(self.params.shape)}), "
                f"num_bins: {self.num_bins}, channels: {self.channels})")
