"""Constraints on distribution parameters and values (``torch.distributions.constraints``' names).

A constraint's ``check(value)`` returns a raw boolean array (NumPy or CuPy) saying, per element
(per event for ``simplex``), whether ``value`` is allowed.
"""
from ..backend import xp_of
from ..tensor import Tensor

__all__ = ["Constraint", "real", "positive", "unit_interval", "boolean", "simplex",
           "integer_interval", "nonnegative_integer"]


def _raw(value):
    return value.data if isinstance(value, Tensor) else value


class Constraint:
    """Base class: ``check(value) -> bool array``; ``is_discrete``; ``event_dim``."""

    is_discrete = False
    event_dim = 0

    def check(self, value):
        raise NotImplementedError

    def __repr__(self):
        return type(self).__name__.lstrip("_") + "()"


class _Real(Constraint):
    def check(self, value):
        v = _raw(value)
        return v == v  # rejects NaN only, as PyTorch's ``real``


class _GreaterThan(Constraint):
    def __init__(self, lower):
        self.lower = lower

    def check(self, value):
        return _raw(value) > self.lower

    def __repr__(self):
        return f"GreaterThan(lower_bound={self.lower})"


class _UnitInterval(Constraint):
    def check(self, value):
        v = _raw(value)
        return (v >= 0) & (v <= 1)

    def __repr__(self):
        return "Interval(lower_bound=0.0, upper_bound=1.0)"


class _Boolean(Constraint):
    is_discrete = True

    def check(self, value):
        v = _raw(value)
        return (v == 0) | (v == 1)


class _Simplex(Constraint):
    event_dim = 1

    def check(self, value):
        v = _raw(value)
        xp = xp_of(v)
        return xp.all(v >= 0, axis=-1) & (xp.abs(v.sum(-1) - 1) < 1e-6)


class _IntegerInterval(Constraint):
    is_discrete = True

    def __init__(self, lower, upper):
        self.lower, self.upper = lower, upper

    def check(self, value):
        v = _raw(value)
        return (v % 1 == 0) & (v >= self.lower) & (v <= self.upper)

    def __repr__(self):
        return f"IntegerInterval(lower_bound={self.lower}, upper_bound={self.upper})"


class _NonnegativeInteger(Constraint):
    is_discrete = True

    def check(self, value):
        v = _raw(value)
        return (v % 1 == 0) & (v >= 0)


real = _Real()
positive = _GreaterThan(0.0)
unit_interval = _UnitInterval()
boolean = _Boolean()
simplex = _Simplex()
nonnegative_integer = _NonnegativeInteger()
integer_interval = _IntegerInterval
