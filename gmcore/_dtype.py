"""Data types: thin named wrappers over NumPy dtypes, with PyTorch's names and promotion rules.

A ``gmcore.dtype`` prints as ``gmcore.float32`` and compares equal only to itself; ``.np`` is the
NumPy dtype the arrays hold (CuPy uses the same dtype objects).
"""
import builtins

import numpy as np

_CATEGORY_BOOL, _CATEGORY_INT, _CATEGORY_FLOAT = 0, 1, 2


class dtype:
    """A tensor element type. Use the module constants: ``gmcore.float32``, ``gmcore.int64`` ..."""

    __slots__ = ("name", "np", "itemsize", "is_floating_point", "is_signed", "_category")

    def __init__(self, name):
        self.name = name
        self.np = np.dtype(name)
        self.itemsize = self.np.itemsize
        self.is_floating_point = self.np.kind == "f"
        self.is_signed = self.np.kind in "if"
        self._category = {"b": _CATEGORY_BOOL, "u": _CATEGORY_INT, "i": _CATEGORY_INT,
                          "f": _CATEGORY_FLOAT}[self.np.kind]

    def __repr__(self):
        return f"gmcore.{self.name}"

    def __reduce__(self):  # pickles/copies as the same singleton
        return (as_dtype, (self.name,))


float16 = half = dtype("float16")
float32 = float = dtype("float32")
float64 = double = dtype("float64")
uint8 = dtype("uint8")
int8 = dtype("int8")
int16 = short = dtype("int16")
int32 = int = dtype("int32")
int64 = long = dtype("int64")
bool = dtype("bool")

_BY_NP = {d.np: d for d in (float16, float32, float64, uint8, int8, int16, int32, int64, bool)}
_BY_NAME = {d.name: d for d in _BY_NP.values()}
_BY_NAME.update(half=float16, float=float32, double=float64, short=int16, int=int32, long=int64)

_default_float = float32


def get_default_dtype():
    """The floating dtype that Python floats and factories produce (``gmcore.float32`` unless set)."""
    return _default_float


def set_default_dtype(d):
    """Set the default floating dtype (``gmcore.float32`` or ``gmcore.float64``).

    >>> import gmcore as gm
    >>> gm.set_default_dtype(gm.float64); gm.tensor(1.0).dtype
    gmcore.float64
    >>> gm.set_default_dtype(gm.float32)
    """
    global _default_float
    d = as_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"default dtype must be a floating dtype, got {d}")
    _default_float = d


def as_dtype(d):
    """Turn a gmcore dtype, NumPy dtype, string or Python type into a ``gmcore.dtype``."""
    if type(d) is dtype:
        return d
    if isinstance(d, str) and d in _BY_NAME:
        return _BY_NAME[d]
    if d is builtins.float:  # as torch: the Python float type means double precision
        return float64
    try:
        npd = np.dtype(d)
    except TypeError:
        raise TypeError(f"cannot interpret {d!r} as a gmcore dtype") from None
    try:
        return _BY_NP[npd]
    except KeyError:
        names = ", ".join(sorted(x.name for x in _BY_NP.values()))
        raise TypeError(f"dtype {npd} is not supported by gmcore (supported: {names})") from None


def from_numpy_dtype(npd):
    """The gmcore dtype of a NumPy dtype (fast path used by ``Tensor.dtype``)."""
    try:
        return _BY_NP[npd]
    except KeyError:
        return as_dtype(npd)


def _promote_pair(a, b):
    """PyTorch's rule for two dtypes: the higher category wins, else the wider type."""
    if a is b:
        return a
    if a._category != b._category:
        return a if a._category > b._category else b
    if a._category == _CATEGORY_INT and a.is_signed != b.is_signed:
        # uint8 with a signed int: the signed one, widened so every uint8 value fits
        s = a if a.is_signed else b
        return s if s.itemsize > 1 else int16
    return a if a.itemsize >= b.itemsize else b


def _scalar_dtype(x):
    if isinstance(x, builtins.bool) or isinstance(x, np.bool_):
        return bool
    if isinstance(x, (builtins.int, np.integer)):
        return int64
    if isinstance(x, (builtins.float, np.floating)):
        return _default_float
    raise TypeError(f"unsupported operand of type {type(x).__name__}")


def result_type(*operands):
    """The dtype of an op on ``operands`` (arrays and Python scalars), with PyTorch's rules.

    Three tiers take part in order of priority: arrays with dimensions, zero-dimensional
    arrays, Python scalars. A lower tier changes the result only when its category
    (bool < integer < floating) is higher, so ``float32 tensor * 2.5`` stays float32 and
    ``int64 tensor * 2.5`` becomes the default float dtype.
    """
    tiers = [None, None, None]
    for x in operands:
        if hasattr(x, "dtype") and hasattr(x, "ndim"):
            d = from_numpy_dtype(x.dtype)
            tier = 0 if x.ndim else 1
        else:
            d, tier = _scalar_dtype(x), 2
        tiers[tier] = d if tiers[tier] is None else _promote_pair(tiers[tier], d)
    result = None
    for d in tiers:
        if d is None:
            continue
        if result is None:
            result = d
        elif d._category > result._category:
            result = d
    return result
