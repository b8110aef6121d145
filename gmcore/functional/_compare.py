"""Comparisons, logical and bitwise ops, and NaN/inf tests: bool or integer results, no gradient.

``eq ne lt le gt ge`` promote their operands first (PyTorch rules: ``int_tensor < 2.5`` compares
as floats) and broadcast; Python numbers are allowed on either side. Their outputs never require
grad, so they can be used freely inside backward formulas (masks for ``where``).
"""
import numpy as np

from ..autograd import Function
from ..backend import xp_of
from ..tensor import Tensor
from ._util import promote

__all__ = ["eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor",
           "logical_not", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "isnan",
           "isinf", "isfinite"]


def _is_array(x):
    return hasattr(x, "dtype") and hasattr(x, "ndim")


def _xp2(a, b):
    return xp_of(a if _is_array(a) else b)


def _as_array(xp, y):
    return xp.asarray(y) if isinstance(y, np.generic) else y


def _nondiff(name, compute, nargs, promote_args=False, check=None):
    """A ``Function`` with array result ``compute(xp, *arrays)`` and no gradient."""
    def forward(ctx, *args):
        if promote_args:
            args = promote(*args)
        if check is not None:
            check(*args)
        xp = _xp2(args[0], args[-1])
        return _as_array(xp, compute(xp, *args))

    def backward(ctx, *grads):
        return (None,) * nargs

    return type(name, (Function,), {"forward": staticmethod(forward),
                                    "backward": staticmethod(backward), "__module__": __name__})


def _binary(cls, op):
    def fn(input, other):
        if not isinstance(input, Tensor) and not isinstance(other, Tensor):
            raise TypeError(f"{op}(): expected at least one Tensor argument, got "
                            f"{type(input).__name__} and {type(other).__name__}")
        for v in (input, other):
            if not isinstance(v, (Tensor, bool, int, float, np.generic, np.ndarray)):
                raise TypeError(f"{op}(): unsupported operand of type {type(v).__name__}")
        return cls.apply(input, other)
    fn.__name__ = fn.__qualname__ = op
    return fn


def _integral(op):
    def check(a, b=None):
        dt = a.dtype if _is_array(a) else b.dtype
        if dt.kind not in "biu":
            raise TypeError(f"{op}(): only integer and bool tensors are supported, got {dt} "
                            "(use logical_* for masks)")
    return check


Eq = _nondiff("Eq", lambda xp, a, b: xp.equal(a, b), 2, promote_args=True)
Ne = _nondiff("Ne", lambda xp, a, b: xp.not_equal(a, b), 2, promote_args=True)
Lt = _nondiff("Lt", lambda xp, a, b: xp.less(a, b), 2, promote_args=True)
Le = _nondiff("Le", lambda xp, a, b: xp.less_equal(a, b), 2, promote_args=True)
Gt = _nondiff("Gt", lambda xp, a, b: xp.greater(a, b), 2, promote_args=True)
Ge = _nondiff("Ge", lambda xp, a, b: xp.greater_equal(a, b), 2, promote_args=True)
LogicalAnd = _nondiff("LogicalAnd", lambda xp, a, b: xp.logical_and(a, b), 2)
LogicalOr = _nondiff("LogicalOr", lambda xp, a, b: xp.logical_or(a, b), 2)
LogicalXor = _nondiff("LogicalXor", lambda xp, a, b: xp.logical_xor(a, b), 2)
LogicalNot = _nondiff("LogicalNot", lambda xp, a: xp.logical_not(a), 1)
BitwiseAnd = _nondiff("BitwiseAnd", lambda xp, a, b: xp.bitwise_and(a, b), 2, True,
                      _integral("bitwise_and"))
BitwiseOr = _nondiff("BitwiseOr", lambda xp, a, b: xp.bitwise_or(a, b), 2, True,
                     _integral("bitwise_or"))
BitwiseXor = _nondiff("BitwiseXor", lambda xp, a, b: xp.bitwise_xor(a, b), 2, True,
                      _integral("bitwise_xor"))
BitwiseNot = _nondiff("BitwiseNot", lambda xp, a: xp.invert(a), 1, False,
                      _integral("bitwise_not"))
IsNan = _nondiff("IsNan", lambda xp, a: xp.isnan(a), 1)
IsInf = _nondiff("IsInf", lambda xp, a: xp.isinf(a), 1)
IsFinite = _nondiff("IsFinite", lambda xp, a: xp.isfinite(a), 1)

eq = _binary(Eq, "eq")
eq.__doc__ = """Elementwise ``input == other`` (bool, broadcast; numbers allowed).

>>> import gmcore as gm
>>> gm.eq(gm.tensor([1, 2]), 2).tolist()
[False, True]
"""
ne = _binary(Ne, "ne")
ne.__doc__ = "Elementwise ``input != other`` (bool, broadcast)."
lt = _binary(Lt, "lt")
lt.__doc__ = """Elementwise ``input < other`` (bool, broadcast; promotes first).

>>> import gmcore as gm
>>> gm.lt(gm.tensor([1, 3]), 2.5).tolist()
[True, False]
"""
le = _binary(Le, "le")
le.__doc__ = "Elementwise ``input <= other`` (bool, broadcast)."
gt = _binary(Gt, "gt")
gt.__doc__ = "Elementwise ``input > other`` (bool, broadcast)."
ge = _binary(Ge, "ge")
ge.__doc__ = "Elementwise ``input >= other`` (bool, broadcast)."
logical_and = _binary(LogicalAnd, "logical_and")
logical_and.__doc__ = """Elementwise AND of truth values (nonzero is True); bool result.

>>> import gmcore as gm
>>> gm.logical_and(gm.tensor([True, True]), gm.tensor([False, True])).tolist()
[False, True]
"""
logical_or = _binary(LogicalOr, "logical_or")
logical_or.__doc__ = "Elementwise OR of truth values; bool result."
logical_xor = _binary(LogicalXor, "logical_xor")
logical_xor.__doc__ = "Elementwise XOR of truth values; bool result."
bitwise_and = _binary(BitwiseAnd, "bitwise_and")
bitwise_and.__doc__ = """Bitwise AND of integer/bool tensors (``&``).

>>> import gmcore as gm
>>> gm.bitwise_and(gm.tensor([6, 5]), 3).tolist()
[2, 1]
"""
bitwise_or = _binary(BitwiseOr, "bitwise_or")
bitwise_or.__doc__ = "Bitwise OR of integer/bool tensors (``|``)."
bitwise_xor = _binary(BitwiseXor, "bitwise_xor")
bitwise_xor.__doc__ = "Bitwise XOR of integer/bool tensors (``^``)."


def logical_not(input):
    """Elementwise NOT of truth values (nonzero is True); bool result.

    >>> import gmcore as gm
    >>> gm.logical_not(gm.tensor([0.0, 2.0])).tolist()
    [True, False]
    """
    return LogicalNot.apply(input)


def bitwise_not(input):
    """Bitwise NOT of an integer tensor; logical NOT of a bool tensor (``~``)."""
    return BitwiseNot.apply(input)


def isnan(input):
    """True where the element is NaN.

    >>> import gmcore as gm
    >>> gm.isnan(gm.tensor([1.0, float('nan')])).tolist()
    [False, True]
    """
    return IsNan.apply(input)


def isinf(input):
    """True where the element is +inf or -inf."""
    return IsInf.apply(input)


def isfinite(input):
    """True where the element is neither NaN nor infinite."""
    return IsFinite.apply(input)
