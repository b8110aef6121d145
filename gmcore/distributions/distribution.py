"""``Distribution``: the base class of gmcore's probability distributions (torch.distributions).

A subclass sets ``arg_constraints`` (parameter name -> constraint), ``support``,
``has_rsample``, calls ``super().__init__(batch_shape, event_shape, validate_args)`` after storing
its parameters, and implements what it can of ``rsample``/``sample``, ``log_prob``, ``cdf``,
``icdf``, ``entropy``, ``mean``, ``mode``, ``variance``. Everything is written with
differentiable Tensor ops, so ``log_prob`` and ``rsample`` carry gradients to the parameters.

Shapes: a draw has shape ``sample_shape + batch_shape + event_shape``; ``log_prob(value)``
reduces the event dims and returns ``broadcast(value batch dims, batch_shape)``.
"""
import numpy as np

from .. import autograd
from .._dtype import get_default_dtype
from ..creation import tensor as _tensor
from ..functional import broadcast_to
from ..tensor import Size, Tensor

__all__ = ["Distribution", "broadcast_all", "lazy_property"]


class lazy_property:
    """A parameter computed from another on first use and cached (``probs`` <-> ``logits``)."""

    def __init__(self, fn):
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        value = self.fn(obj)
        obj.__dict__[self.__name__] = value
        return value


def broadcast_all(*values):
    """Tensors (and numbers, made tensors of the tensors' dtype/device) broadcast to one shape."""
    ref = next((v for v in values if isinstance(v, Tensor)), None)
    out = []
    for v in values:
        if isinstance(v, Tensor):
            out.append(v)
        elif isinstance(v, (int, float, np.ndarray, np.generic, list, tuple)):
            dtype = ref.dtype if ref is not None and ref.is_floating_point() else \
                get_default_dtype()
            out.append(_tensor(v, dtype=dtype, device=None if ref is None else ref.device))
        else:
            raise TypeError(f"expected tensors or numbers, got {type(v).__name__}")
    shape = np.broadcast_shapes(*[tuple(v.shape) for v in out])
    return tuple(v if tuple(v.shape) == shape else broadcast_to(v, shape) for v in out)


class Distribution:
    """Base class of distributions.

    >>> import gmcore as gm
    >>> d = gm.distributions.Normal(gm.zeros(3), 1.0)
    >>> d.batch_shape, d.event_shape
    (gmcore.Size([3]), gmcore.Size([]))
    >>> d.sample((5,), generator=gm.Generator().manual_seed(0)).shape
    gmcore.Size([5, 3])
    """

    has_rsample = False
    has_enumerate_support = False
    arg_constraints = {}
    support = None
    _validate_args = True

    @staticmethod
    def set_default_validate_args(value):
        """Turn argument/sample validation on (default) or off for new distributions."""
        if value not in (True, False):
            raise ValueError("validate_args must be True or False")
        Distribution._validate_args = value

    def __init__(self, batch_shape=(), event_shape=(), validate_args=None):
        self._batch_shape = Size(batch_shape)
        self._event_shape = Size(event_shape)
        if validate_args is not None:
            self._validate_args = bool(validate_args)
        if self._validate_args:
            for name, constraint in self.arg_constraints.items():
                if isinstance(getattr(type(self), name, None), lazy_property) and \
                        name not in self.__dict__:
                    continue  # derived from the parameter actually given
                value = getattr(self, name)
                if not bool(constraint.check(value).all()):
                    raise ValueError(f"Expected parameter {name} (Tensor of shape "
                                     f"{tuple(value.shape)}) of distribution "
                                     f"{type(self).__name__} to satisfy the constraint "
                                     f"{constraint!r}, but found invalid values:\n{value}")

    @property
    def batch_shape(self):
        return self._batch_shape

    @property
    def event_shape(self):
        return self._event_shape

    def _extended_shape(self, sample_shape=()):
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        return Size(tuple(sample_shape) + tuple(self._batch_shape) + tuple(self._event_shape))

    # ---- sampling ---------------------------------------------------------------------------
    def sample(self, sample_shape=(), generator=None):
        """A draw of shape ``sample_shape + batch_shape + event_shape``, outside the graph."""
        with autograd.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def rsample(self, sample_shape=(), generator=None):
        """A reparameterized draw: differentiable with respect to the parameters."""
        raise NotImplementedError(f"{type(self).__name__} does not support rsample "
                                  "(it is not reparameterizable)")

    # ---- densities and moments --------------------------------------------------------------
    def log_prob(self, value):
        raise NotImplementedError(f"{type(self).__name__} does not implement log_prob")

    def cdf(self, value):
        raise NotImplementedError(f"{type(self).__name__} does not implement cdf")

    def icdf(self, value):
        raise NotImplementedError(f"{type(self).__name__} does not implement icdf")

    def entropy(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement entropy")

    @property
    def mean(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement mean")

    @property
    def mode(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement mode")

    @property
    def variance(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement variance")

    @property
    def stddev(self):
        return self.variance.sqrt()

    # ---- helpers for subclasses -------------------------------------------------------------
    def _param_like(self):
        """One parameter tensor (for dtype and device of draws)."""
        for name in self.arg_constraints:
            if name in self.__dict__:
                return self.__dict__[name]
        raise NotImplementedError

    def _as_value(self, value, dtype=None):
        """``value`` as a tensor on the parameters' device; validated when validation is on."""
        if not isinstance(value, Tensor):
            ref = self._param_like()
            value = _tensor(value, dtype=dtype or ref.dtype, device=ref.device)
        if self._validate_args:
            self._validate_sample(value)
        return value

    def _validate_sample(self, value):
        """Check the value's event shape, broadcastability with batch_shape, and support."""
        n = len(self._event_shape)
        shape = tuple(value.shape)
        if n and shape[len(shape) - n:] != tuple(self._event_shape):
            raise ValueError(f"{type(self).__name__}: the rightmost dims of the value's shape "
                             f"{shape} must match event_shape {tuple(self._event_shape)}")
        try:
            np.broadcast_shapes(shape, tuple(self._batch_shape) + tuple(self._event_shape))
        except ValueError:
            raise ValueError(f"{type(self).__name__}: value of shape {shape} is not broadcastable "
                             f"with batch_shape + event_shape "
                             f"{tuple(self._batch_shape) + tuple(self._event_shape)}") from None
        if self.support is not None and not bool(self.support.check(value).all()):
            raise ValueError(f"{type(self).__name__}: the value (shape {shape}) is outside the "
                             f"support {self.support!r} of the distribution")

    def __repr__(self):
        names = [k for k in self.arg_constraints if k in self.__dict__]
        body = ", ".join(f"{k}: {self.__dict__[k].item():.4g}"
                         if self.__dict__[k].numel() == 1 else
                         f"{k}: Size({list(self.__dict__[k].shape)})" for k in names)
        return f"{type(self).__name__}({body})"
