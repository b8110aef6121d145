"""Argument helpers shared by the nn ops: int-or-tuple arguments, reductions, tensor checks."""
from ...functional._util import check_reduction, reduce_loss  # noqa: F401  (used by the losses)
from ...tensor import Tensor


def ntuple(value, n, name, op, minimum=None):
    """``3`` -> ``(3, 3)``; a tuple/list of length ``n`` passes; anything else is a clear error."""
    if isinstance(value, (tuple, list)):
        if len(value) == 1 and n > 1:
            value = tuple(value) * n
        if len(value) != n:
            raise ValueError(f"{op}: {name} must be an int or a tuple of {n} ints, got {value!r}")
        out = tuple(value)
    else:
        out = (value,) * n
    try:
        out = tuple(int(v) for v in out)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be an int or a tuple of {n} ints, got "
                        f"{value!r}") from None
    if minimum is not None and any(v < minimum for v in out):
        raise ValueError(f"{op}: {name} must be >= {minimum} (got {value!r})")
    return out


def check_tensor(x, name, op):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")


def check_float(x, name, op):
    check_tensor(x, name, op)
    if not x.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating point {name}, got {x.dtype}")
