"""Arithmetic: ``add sub mul div pow neg matmul`` with broadcasting and PyTorch type promotion,
and the bit shifts ``bitwise_left_shift``/``bitwise_right_shift`` (``<<``, ``>>``).

Backward formulas are written with tensor ops so that they are themselves differentiable.
"""
from ..autograd import Function
from ._util import promote, promote_float, reduce_grad, shape_of

__all__ = ["add", "sub", "mul", "div", "true_divide", "neg", "pow", "matmul",
           "floor_divide", "remainder", "bitwise_left_shift", "bitwise_right_shift"]


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b = promote(a, b)
        ctx.shapes = shape_of(a), shape_of(b)
        try:
            return a + b
        except ValueError as e:  # NumPy's broadcast error -> PyTorch's message
            _raise_shape_error("add", a, b, e)

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return reduce_grad(g, sa), reduce_grad(g, sb)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b = promote(a, b)
        if getattr(a, "dtype", None) == bool and getattr(b, "dtype", a.dtype) == bool:
            raise RuntimeError("subtraction of two bool tensors is not supported; to invert a "
                               "mask use ~mask or logical_not()")
        ctx.shapes = shape_of(a), shape_of(b)
        try:
            return a - b
        except ValueError as e:  # NumPy's broadcast error -> PyTorch's message
            _raise_shape_error("sub", a, b, e)

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return reduce_grad(g, sa), (reduce_grad(-g, sb) if ctx.needs_input_grad[1] else None)


# Mul, Div and Pow save the operands as given, not their promoted casts: a cast copy would be
# a constant to the graph and the second derivative through it would be lost.

class Mul(Function):
    @staticmethod
    def forward(ctx, a0, b0):
        a, b = promote(a0, b0)
        ctx.shapes = shape_of(a), shape_of(b)
        ctx.save_for_backward(a0, b0)
        try:
            return a * b
        except ValueError as e:  # NumPy's broadcast error -> PyTorch's message
            _raise_shape_error("mul", a, b, e)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        ga = reduce_grad(g * b, sa) if ctx.needs_input_grad[0] else None
        gb = reduce_grad(g * a, sb) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    @staticmethod
    def forward(ctx, a0, b0):
        a, b = promote_float(a0, b0)
        ctx.shapes = shape_of(a), shape_of(b)
        ctx.save_for_backward(a0, b0)
        try:
            return a / b
        except ValueError as e:  # NumPy's broadcast error -> PyTorch's message
            _raise_shape_error("div", a, b, e)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        ga = reduce_grad(g / b, sa) if ctx.needs_input_grad[0] else None
        gb = reduce_grad(-g * a / (b * b), sb) if ctx.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Function):
    @staticmethod
    def forward(ctx, a0, b0):
        a, b = promote(a0, b0)
        ctx.shapes = shape_of(a), shape_of(b)
        dt = a.dtype if hasattr(a, "dtype") else b.dtype
        if dt.kind in "iu" and hasattr(b, "dtype") and (b < 0).any():
            raise ValueError("integers to negative integer powers are not allowed")
        try:
            out = a ** b
        except ValueError as e:  # NumPy's broadcast error -> PyTorch's message
            _raise_shape_error("pow", a, b, e)
        ctx.save_for_backward(a0, b0, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        sa, sb = ctx.shapes
        ga = gb = None
        if ctx.needs_input_grad[0]:
            if sb is None:  # scalar exponent: the common x ** 2
                ga = g * b * a ** (b - 1) if b != 0 else g * 0
            else:
                # b == 0 contributes nothing (PyTorch), also where a == 0 would give 0 * inf
                from .pointwise import where
                ga = reduce_grad(where(b == 0, g * 0, g * b * a ** (b - 1)), sa)
        if ctx.needs_input_grad[1]:
            # d/db a^b = a^b log a; 0 where a == 0 (the limit for b > 0), as PyTorch
            from .pointwise import where, log
            a_t = a if sa is not None else out * 0 + a
            safe = where(a_t == 0, a_t * 0 + 1, a_t)
            gb = reduce_grad(where(a_t == 0, g * 0, g * out * log(safe)), sb)
        return ga, gb


class FloorDivide(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b = promote(a, b)
        _check_integer_divisor(a, b, "floor_divide")
        xp = _xp(a, b)
        try:
            return xp.floor_divide(a, b)
        except ValueError as e:  # NumPy's broadcast error -> PyTorch's message
            _raise_shape_error("floor_divide", a, b, e)

    @staticmethod
    def backward(ctx, g):
        return g * 0 if ctx.needs_input_grad[0] else None, None


class Remainder(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b = promote(a, b)
        _check_integer_divisor(a, b, "remainder")
        ctx.shapes = shape_of(a), shape_of(b)
        ctx.save_for_backward(a, b)
        try:
            return _xp(a, b).remainder(a, b)
        except ValueError as e:  # NumPy's broadcast error -> PyTorch's message
            _raise_shape_error("remainder", a, b, e)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        ga = reduce_grad(g, sa) if ctx.needs_input_grad[0] else None
        gb = reduce_grad(-g * (a / b).floor(), sb) if ctx.needs_input_grad[1] else None
        return ga, gb


class _Shift(Function):
    """``a << b`` or ``a >> b`` on integers (no gradient), with PyTorch's answers where C's
    shift is undefined: a shift by a negative amount or by the bit width or more gives 0, or
    (right shift of a negative signed value) -1, the sign filling every bit."""

    @staticmethod
    def forward(ctx, a, b, left):
        op = "bitwise_left_shift" if left else "bitwise_right_shift"
        a, b = promote(a, b)
        arr = a if hasattr(a, "dtype") and hasattr(a, "ndim") else b
        dt = arr.dtype
        if dt.kind not in "iu":
            raise TypeError(f"{op}(): only integer tensors can be shifted, got {dt} operands")
        xp = _xp(a, b)
        # a Python number operand wraps into the tensor's dtype, as torch does (256 -> 0)
        a = a if hasattr(a, "dtype") else xp.asarray(a).astype(dt)
        b = b if hasattr(b, "dtype") else xp.asarray(b).astype(dt)
        width = dt.itemsize * 8
        ok = (b >= 0) & (b < width)
        s = xp.where(ok, b, 0).astype(dt)  # a defined shift amount everywhere
        try:
            out = xp.left_shift(a, s) if left else xp.right_shift(a, s)
        except ValueError as e:  # NumPy's broadcast error -> PyTorch's message
            _raise_shape_error(op, a, b, e)
        if left or dt.kind == "u":
            fill = xp.zeros((), dtype=dt)
        else:
            fill = xp.right_shift(a, dt.type(width - 1))  # 0 or -1 by sign
        return xp.asarray(xp.where(ok, out, fill).astype(dt, copy=False))

    @staticmethod
    def backward(ctx, g):
        return None, None, None


def _raise_shape_error(op, a, b, error):
    """Raise PyTorch's message naming the dimension at fault when a and b do not broadcast;
    any other ValueError is raised unchanged. Runs only on the failure path (no cost)."""
    sa, sb = shape_of(a), shape_of(b)
    if sa is not None and sb is not None:
        for i in range(1, min(len(sa), len(sb)) + 1):
            da, db = sa[-i], sb[-i]
            if da != db and da != 1 and db != 1:
                raise RuntimeError(
                    f"{op}: the size of tensor a ({da}) must match the size of tensor b ({db}) "
                    f"at non-singleton dimension {max(len(sa), len(sb)) - i} (shapes "
                    f"{tuple(sa)} and {tuple(sb)} do not broadcast)") from None
    raise error


def _check_integer_divisor(a, b, op):
    """Integer division by zero raises (NumPy would quietly return 0), as PyTorch does."""
    dt = getattr(a, "dtype", None) or getattr(b, "dtype", None)
    if dt is not None and dt.kind in "iub" and bool((b == 0).any() if hasattr(b, "any")
                                                    else b == 0):
        raise ZeroDivisionError(f"{op}: integer division by zero")


def _xp(a, b):
    from ..backend import xp_of
    return xp_of(a if hasattr(a, "dtype") and hasattr(a, "ndim") else b)


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise RuntimeError("matmul: both arguments need at least one dimension "
                               f"(got shapes {a.shape} and {b.shape})")
        ka = a.shape[-1]
        kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if ka != kb:
            raise RuntimeError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be "
                               f"multiplied ({ka} != {kb})")
        ctx.save_for_backward(a, b)  # as given: see the note above Mul
        a, b = promote(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        # treat vectors as matrices, then undo: a (n,) -> (1, n); b (n,) -> (n, 1)
        a2 = a.unsqueeze(0) if a.ndim == 1 else a
        b2 = b.unsqueeze(-1) if b.ndim == 1 else b
        g2 = g
        if b.ndim == 1:
            g2 = g2.unsqueeze(-1)
        if a.ndim == 1:
            g2 = g2.unsqueeze(-2)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = reduce_grad(g2 @ b2.mT, tuple(a2.shape)).reshape(tuple(a.shape))
        if ctx.needs_input_grad[1]:
            gb = reduce_grad(a2.mT @ g2, tuple(b2.shape)).reshape(tuple(b.shape))
        return ga, gb


def add(input, other, *, alpha=1):
    """``input + alpha * other`` with broadcasting."""
    return Add.apply(input, other if alpha == 1 else other * alpha)


def sub(input, other, *, alpha=1):
    """``input - alpha * other`` with broadcasting."""
    return Sub.apply(input, other if alpha == 1 else other * alpha)


def mul(input, other):
    """Elementwise product with broadcasting."""
    return Mul.apply(input, other)


def div(input, other):
    """True division (integer inputs give the default float dtype)."""
    return Div.apply(input, other)


true_divide = div


def neg(input):
    return Neg.apply(input)


def pow(input, exponent):
    """``input ** exponent``; either may be a tensor or a Python number."""
    return Pow.apply(input, exponent)


def floor_divide(input, other):
    """Floor of the quotient (gradient zero, as PyTorch)."""
    return FloorDivide.apply(input, other)


def remainder(input, other):
    """Python-style modulus (sign of the divisor)."""
    return Remainder.apply(input, other)


def matmul(input, other):
    """Matrix product with NumPy's rules: vectors, matrices, and broadcast batches.

    >>> import gmcore as gm
    >>> gm.matmul(gm.ones(5, 2, 3), gm.ones(3, 4)).shape
    gmcore.Size([5, 2, 4])
    """
    return MatMul.apply(input, other)


def _check_shift_operands(a, b, op):
    from ..tensor import Tensor
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}(): expected at least one Tensor argument, got "
                        f"{type(a).__name__} and {type(b).__name__}")
    for v in (a, b):
        if isinstance(v, float) or (not isinstance(v, (Tensor, int)) and
                                    not hasattr(v, "dtype")):
            raise TypeError(f"{op}(): only integer tensors and ints can be shifted, got "
                            f"{type(v).__name__}")


def bitwise_left_shift(input, other):
    """``input << other`` on integer tensors (broadcast; numbers allowed on either side).

    Shifting by a negative amount or by the bit width or more gives 0, as PyTorch.

    >>> import gmcore as gm
    >>> gm.bitwise_left_shift(gm.tensor([1, 3], dtype=gm.uint8), 2).tolist()
    [4, 12]
    >>> (gm.tensor([200], dtype=gm.uint8) << 1).tolist()  # wraps in the dtype's width
    [144]
    """
    _check_shift_operands(input, other, "bitwise_left_shift")
    return _Shift.apply(input, other, True)


def bitwise_right_shift(input, other):
    """``input >> other`` on integer tensors: arithmetic (sign-filling) for signed dtypes.

    >>> import gmcore as gm
    >>> (gm.tensor([-16, 16]) >> 2).tolist()
    [-4, 4]
    """
    _check_shift_operands(input, other, "bitwise_right_shift")
    return _Shift.apply(input, other, False)
