"""Helpers shared by the op files: operand preparation, dim normalisation, gradient reduction."""
import numpy as np

from .._dtype import get_default_dtype, result_type
from ..tensor import Tensor


def promote(a, b):
    """Cast raw operands (arrays or Python scalars) to their PyTorch result dtype."""
    if type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype:
        return a, b
    rt = result_type(a, b).np
    return _cast(a, rt), _cast(b, rt)


def promote_float(a, b):
    """As ``promote``, but integer/bool results become the default float (true division)."""
    a, b = promote(a, b)
    dt = a.dtype if hasattr(a, "dtype") else b.dtype
    if dt.kind != "f":
        f = get_default_dtype().np
        a, b = _cast(a, f), _cast(b, f)
    return a, b


def to_float(a):
    """Integer/bool arrays become the default float dtype (for exp, log, ... on int input)."""
    return a if a.dtype.kind == "f" else a.astype(get_default_dtype().np)


def _cast(x, dtype):
    if hasattr(x, "dtype") and hasattr(x, "ndim"):
        return x if x.dtype == dtype else x.astype(dtype)
    if type(x) is int and np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        if not info.min <= x <= info.max:
            # PyTorch wraps an out-of-range Python int into the tensor's integer dtype (uint8:
            # -1 -> 255, 300 -> 44); NumPy 2 raises OverflowError instead.
            if not -2 ** 63 <= x < 2 ** 64:
                raise OverflowError(f"Python integer {x} does not fit a 64-bit integer")
            return np.uint64(x % 2 ** 64).astype(dtype)
    return x  # Python scalar: NumPy/CuPy treat it as weakly typed


def shape_of(x):
    """Shape of a raw operand; None for Python scalars (they need no gradient)."""
    return getattr(x, "shape", None)


def reduce_grad(g, shape):
    """Sum a broadcast gradient back to ``shape`` (None when the operand was a scalar)."""
    if shape is None:
        return None
    return g if tuple(g.shape) == tuple(shape) else g.sum_to_size(shape)


def normalize_dim(dim, ndim, name="dim"):
    """Wrap a possibly negative dim into [0, ndim); clear error when out of range."""
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{name} {dim} is out of range for a tensor with {ndim} dimension(s) "
                         f"(expected in [{-n}, {n - 1}])")
    return dim % n


def normalize_dims(dim, ndim):
    """None -> all dims; int or sequence -> sorted tuple of wrapped dims (no repeats)."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (int, np.integer)):
        return (normalize_dim(int(dim), ndim),)
    dims = tuple(sorted(normalize_dim(int(d), ndim) for d in dim))
    if len(set(dims)) != len(dims):
        raise RuntimeError(f"dim {tuple(dim)} appears more than once in the list of dims")
    return dims


def as_tensor_operand(x, like):
    """Wrap raw arrays/scalars given where a tensor is expected (on ``like``'s device)."""
    if isinstance(x, Tensor):
        return x
    return Tensor(like._xp().asarray(x))


def reduce_loss(loss, reduction, op):
    """Apply ``reduction`` ('mean' | 'sum' | 'none') to an elementwise loss tensor."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: {reduction!r} is not a valid value for reduction "
                     "(expected 'mean', 'sum' or 'none')")


def check_reduction(reduction, op, allowed=("mean", "sum", "none")):
    if reduction not in allowed:
        raise ValueError(f"{op}: {reduction!r} is not a valid value for reduction (expected "
                         + ", ".join(repr(a) for a in allowed) + ")")
