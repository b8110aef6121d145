"""Elementwise math: ``exp log sqrt ... tanh sigmoid softplus relu gelu silu``, rounding,
``clamp``, ``maximum``/``minimum``, ``where``, ``nan_to_num``, ``lerp``, ``erf``.

Comparisons and logical ops (no gradient) live in ``_compare`` and are re-exported here.

Conventions, as PyTorch:
  * integer/bool inputs to float functions (exp, log, sigmoid ...) give the default float dtype;
    rounding, abs, sign, relu and square keep integer dtypes;
  * gradients at kinks: abs'(0) = 0, relu'(0) = 0, clamp passes the gradient on the closed
    interval [min, max], maximum/minimum split it half-half at ties; floor, ceil, round, trunc
    and sign have zero gradient;
  * every backward is written with tensor ops (mostly from the saved *output*), so gradients of
    gradients work; branch selection uses ``where``, never a mask multiply, so an inf in the
    branch not taken cannot turn into NaN.
"""
import math

import numpy as np

from .._dtype import result_type
from .. import backend
from ..autograd import Function, is_grad_enabled
from ..backend import xp_of
from ..tensor import Tensor
from . import _activation_kernels as _act
from . import _special
from ._compare import *  # noqa: F401,F403
from ._compare import __all__ as _compare_all
from ._util import _cast, reduce_grad, shape_of, to_float

__all__ = ["exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "abs", "sign", "sin", "cos", "tanh",
           "sigmoid", "logsigmoid", "softplus", "relu", "leaky_relu", "elu", "gelu", "silu",
           "square", "reciprocal", "floor", "ceil", "round", "trunc", "erf", "erfc",
           "clamp", "clip", "maximum", "minimum", "where", "nan_to_num", "lerp", "addcmul",
           "addcdiv", "tan", "sinh", "cosh", "asinh", "acosh", "atanh", "log2", "exp2",
           "arcsinh", "arccosh", "arctanh"] + list(_compare_all)

_SQRT1_2 = 1 / math.sqrt(2.0)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_TWO_OVER_SQRTPI = 2 / math.sqrt(math.pi)
_GELU_K = math.sqrt(2 / math.pi)  # tanh approximation: 0.5 x (1 + tanh(K (x + C x^3)))
_GELU_C = 0.044715
_LN2 = math.log(2.0)


def _as_array(xp, y):
    """NumPy ufuncs return scalars for 0-d input; keep arrays so saved outputs stay linked."""
    return xp.asarray(y) if isinstance(y, np.generic) else y


def _check_input(x, op):
    if not (hasattr(x, "dtype") and hasattr(x, "ndim")):
        raise TypeError(f"{op}(): argument 'input' must be a Tensor, not {type(x).__name__}")


def _zeros(g):
    """Gradient of a piecewise-constant op (floor, sign ...): zeros, not ``g * 0`` (inf * 0)."""
    return Tensor(g._xp().zeros_like(g.data))


def _unary(name, compute, grad, save="output", floatify=True):
    """A ``Function`` class for ``y = compute(xp, x)`` with ``dx = grad(g, saved)``.

    ``save`` says what ``grad`` receives: the forward ``"input"`` or ``"output"`` (as a tensor
    linked into the graph, so the backward is itself differentiable) or ``None``.
    """
    def forward(ctx, x):
        _check_input(x, name.lower())
        if floatify:
            x = to_float(x)
        xp = xp_of(x)
        with np.errstate(all="ignore"):  # log(0) = -inf, sqrt(-1) = nan: silent, as PyTorch
            y = _as_array(xp, compute(xp, x))
        if save is not None:
            ctx.save_for_backward(x if save == "input" else y)
        return y

    def backward(ctx, g):
        if save is None:
            return grad(g, None)
        saved, = ctx.saved_tensors
        return grad(g, saved)

    return type(name, (Function,), {"forward": staticmethod(forward),
                                    "backward": staticmethod(backward), "__module__": __name__})


def _keep_int(fn):
    """Rounding of an integer array is the identity (NumPy would return floats)."""
    return lambda xp, x: x.copy() if x.dtype.kind in "biu" else fn(xp, x)


def _sigmoid_array(xp, x):
    # exp(-|x|) never overflows; pick 1/(1+e) or e/(1+e) by sign
    e = xp.exp(-xp.abs(x))
    r = 1 / (1 + e)
    return backend.where(x >= 0, r, e * r)


# ---- unary ops ----------------------------------------------------------------------------

Exp = _unary("Exp", lambda xp, x: xp.exp(x), lambda g, y: g * y)
Log = _unary("Log", lambda xp, x: xp.log(x), lambda g, x: g / x, save="input")
Log1p = _unary("Log1p", lambda xp, x: xp.log1p(x), lambda g, x: g / (x + 1), save="input")
Expm1 = _unary("Expm1", lambda xp, x: xp.expm1(x), lambda g, y: g * (y + 1))
Sqrt = _unary("Sqrt", lambda xp, x: xp.sqrt(x), lambda g, y: g / (2 * y))
Rsqrt = _unary("Rsqrt", lambda xp, x: 1 / xp.sqrt(x), lambda g, y: g * (-0.5 * y * y * y))
Abs = _unary("Abs", lambda xp, x: xp.abs(x), lambda g, x: g * sign(x), save="input",
             floatify=False)
Sign = _unary("Sign", lambda xp, x: xp.sign(x), lambda g, _: _zeros(g), save=None,
              floatify=False)
Sin = _unary("Sin", lambda xp, x: xp.sin(x), lambda g, x: g * cos(x), save="input")
Cos = _unary("Cos", lambda xp, x: xp.cos(x), lambda g, x: -g * sin(x), save="input")
Tanh = _unary("Tanh", lambda xp, x: xp.tanh(x), lambda g, y: g * (1 - y * y))
Sigmoid = _unary("Sigmoid", _sigmoid_array, lambda g, y: g * y * (1 - y))
# log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)); its derivative is sigmoid(-x)
LogSigmoid = _unary("LogSigmoid",
                    lambda xp, x: xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x))),
                    lambda g, x: g * sigmoid(-x), save="input")
Relu = _unary("Relu", lambda xp, x: xp.maximum(x, 0), lambda g, y: where(y > 0, g, 0),
              floatify=False)
Square = _unary("Square", lambda xp, x: x * x, lambda g, x: g * (2 * x), save="input",
                floatify=False)
Reciprocal = _unary("Reciprocal", lambda xp, x: 1 / x, lambda g, y: g * (-y * y))
Floor = _unary("Floor", _keep_int(lambda xp, x: xp.floor(x)), lambda g, _: _zeros(g),
               save=None, floatify=False)
Ceil = _unary("Ceil", _keep_int(lambda xp, x: xp.ceil(x)), lambda g, _: _zeros(g),
              save=None, floatify=False)
Trunc = _unary("Trunc", _keep_int(lambda xp, x: xp.trunc(x)), lambda g, _: _zeros(g),
               save=None, floatify=False)
Erf = _unary("Erf", lambda xp, x: _special.erf(x),
             lambda g, x: g * (_TWO_OVER_SQRTPI * exp(-x * x)), save="input")
Erfc = _unary("Erfc", lambda xp, x: _special.erfc(x),
              lambda g, x: g * (-_TWO_OVER_SQRTPI * exp(-x * x)), save="input")

Tan = _unary("Tan", lambda xp, x: xp.tan(x), lambda g, y: g * (1 + y * y))
Sinh = _unary("Sinh", lambda xp, x: xp.sinh(x), lambda g, x: g * cosh(x), save="input")
Cosh = _unary("Cosh", lambda xp, x: xp.cosh(x), lambda g, x: g * sinh(x), save="input")
# the inverse hyperbolics use PyTorch's derivative formulas: at acosh(1) and atanh(+-1) the
# gradient is inf, and acosh below 1 / atanh beyond +-1 give NaN values and NaN gradients
Asinh = _unary("Asinh", lambda xp, x: xp.arcsinh(x), lambda g, x: g * rsqrt(x * x + 1),
               save="input")
Acosh = _unary("Acosh", lambda xp, x: xp.arccosh(x), lambda g, x: g * rsqrt(x * x - 1),
               save="input")
Atanh = _unary("Atanh", lambda xp, x: xp.arctanh(x), lambda g, x: g / (1 - x * x),
               save="input")
# NumPy's log2/exp2 are exact on powers of two (log2(8) == 3, exp2(3) == 8)
Log2 = _unary("Log2", lambda xp, x: xp.log2(x), lambda g, x: g / (x * _LN2), save="input")
Exp2 = _unary("Exp2", lambda xp, x: xp.exp2(x), lambda g, y: g * (y * _LN2))


class Round(Function):
    @staticmethod
    def forward(ctx, x, decimals=0):
        _check_input(x, "round")
        if x.dtype.kind in "biu" and decimals >= 0:
            return x.copy()
        # NumPy rounds half to even, as PyTorch does
        return _as_array(xp_of(x), xp_of(x).round(x, decimals))

    @staticmethod
    def backward(ctx, g):
        return _zeros(g)


# ---- activations with fused kernels (the ``activation`` family, _activation_kernels) ----------
# Forward runs the dispatched kernel (one pass). Backward runs the fused kernel when it is not
# being recorded; with create_graph=True it is built from tensor ops (below), so gradients of
# gradients work whichever implementation ran the forward.

def _fused_backward(ctx, g, a=0.0, b=0.0):
    """The not-recorded backward: one kernel pass over (g, x)."""
    x, = ctx.saved_arrays
    return Tensor(_act.backward(ctx.op, g.data, x, a, b))


def _activation_forward(ctx, x, name, op, a=0.0, b=0.0):
    _check_input(x, name)
    x = to_float(x)
    ctx.op = op
    ctx.save_for_backward(x)
    return _act.forward(op, x, a, b)


class Silu(Function):
    @staticmethod
    def forward(ctx, x):
        return _activation_forward(ctx, x, "silu", "silu")

    @staticmethod
    def backward(ctx, g):
        if not is_grad_enabled():
            return _fused_backward(ctx, g)
        x, = ctx.saved_tensors
        s = sigmoid(x)  # silu'(x) = s (1 + x (1 - s))
        return g * (s * (1 + x * (1 - s)))


class Softplus(Function):
    @staticmethod
    def forward(ctx, x, beta=1.0, threshold=20.0):
        ctx.beta, ctx.threshold = beta, threshold
        return _activation_forward(ctx, x, "softplus", "softplus", beta, threshold)

    @staticmethod
    def backward(ctx, g):
        if not is_grad_enabled():
            return _fused_backward(ctx, g, ctx.beta, ctx.threshold)
        x, = ctx.saved_tensors
        bx = x * ctx.beta
        return where(bx > ctx.threshold, g, g * sigmoid(bx))


class LeakyRelu(Function):
    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        ctx.slope = negative_slope
        return _activation_forward(ctx, x, "leaky_relu", "leaky_relu", negative_slope)

    @staticmethod
    def backward(ctx, g):
        if not is_grad_enabled():
            return _fused_backward(ctx, g, ctx.slope)
        x, = ctx.saved_tensors
        return where(x > 0, g, g * ctx.slope)


class Elu(Function):
    @staticmethod
    def forward(ctx, x, alpha=1.0):
        ctx.alpha = alpha
        return _activation_forward(ctx, x, "elu", "elu", alpha)

    @staticmethod
    def backward(ctx, g):
        if not is_grad_enabled():
            return _fused_backward(ctx, g, ctx.alpha)
        x, = ctx.saved_tensors
        # for x <= 0: d/dx alpha (exp(x) - 1) = alpha exp(x); exp of min(x, 0) cannot overflow
        return where(x > 0, g, g * (ctx.alpha * exp(minimum(x, 0.0))))


class Gelu(Function):
    @staticmethod
    def forward(ctx, x, approximate="none"):
        return _activation_forward(ctx, x, "gelu", "gelu_tanh" if approximate == "tanh" else "gelu")

    @staticmethod
    def backward(ctx, g):
        if not is_grad_enabled():
            return _fused_backward(ctx, g)
        x, = ctx.saved_tensors
        if ctx.op == "gelu_tanh":
            x2 = x * x
            t = tanh(_GELU_K * (x + _GELU_C * x2 * x))
            dt = _GELU_K * (1 + 3 * _GELU_C * x2)
            return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dt)
        # gelu'(x) = Phi(x) + x phi(x)
        cdf = 0.5 * erfc(-x * _SQRT1_2)
        pdf = exp(-0.5 * x * x) * _INV_SQRT_2PI
        return g * (cdf + x * pdf)


class ConcatElu(Function):
    """``elu(cat([x, -x], 1))`` in one pass; backward ``g1 elu'(x) - g2 elu'(-x)``."""

    @staticmethod
    def forward(ctx, x, alpha=1.0):
        _check_input(x, "concat_elu")
        x = to_float(x)
        ctx.alpha = alpha
        ctx.save_for_backward(x)
        return _act.concat_elu_forward(x, alpha)

    @staticmethod
    def backward(ctx, g):
        if not is_grad_enabled():
            x, = ctx.saved_arrays
            return Tensor(_act.concat_elu_backward(g.data, x, ctx.alpha))
        x, = ctx.saved_tensors
        c = x.shape[1]
        ae = ctx.alpha * exp(-abs(x))  # alpha exp(v) for whichever of v = x, -x is <= 0
        g1, g2 = g[:, :c], g[:, c:]
        return where(x > 0, g1, g1 * ae) - where(x < 0, g2, g2 * ae)


def exp(input):
    """``e ** input`` elementwise (integer input gives the default float dtype).

    >>> import gmcore as gm
    >>> gm.exp(gm.tensor([0.0, 1.0])).tolist()
    [1.0, 2.7182819843292236]
    """
    return Exp.apply(input)


def log(input):
    """Natural logarithm (``log(0) = -inf``, negative input gives NaN).

    >>> import gmcore as gm
    >>> gm.log(gm.tensor([1.0])).tolist()
    [0.0]
    """
    return Log.apply(input)


def log1p(input):
    """``log(1 + input)``, accurate for small inputs."""
    return Log1p.apply(input)


def expm1(input):
    """``exp(input) - 1``, accurate for small inputs."""
    return Expm1.apply(input)


def sqrt(input):
    """Square root (gradient ``inf`` at 0, as PyTorch).

    >>> import gmcore as gm
    >>> gm.sqrt(gm.tensor([4.0, 9.0])).tolist()
    [2.0, 3.0]
    """
    return Sqrt.apply(input)


def rsqrt(input):
    """``1 / sqrt(input)``."""
    return Rsqrt.apply(input)


def abs(input):
    """Absolute value; gradient ``sign(x)`` (0 at 0). Integer dtypes are kept.

    >>> import gmcore as gm
    >>> gm.abs(gm.tensor([-2, 3])).tolist()
    [2, 3]
    """
    return Abs.apply(input)


def sign(input):
    """-1, 0 or 1 by sign (zero gradient)."""
    return Sign.apply(input)


def sin(input):
    """Sine (radians)."""
    return Sin.apply(input)


def cos(input):
    """Cosine (radians)."""
    return Cos.apply(input)


def tanh(input):
    """Hyperbolic tangent; backward ``g * (1 - y^2)`` from the saved output."""
    return Tanh.apply(input)


def sigmoid(input):
    """Logistic ``1 / (1 + exp(-x))``, overflow-free for any finite input.

    >>> import gmcore as gm
    >>> gm.sigmoid(gm.tensor([-1e4, 0.0, 1e4])).tolist()
    [0.0, 0.5, 1.0]
    """
    return Sigmoid.apply(input)


def logsigmoid(input):
    """``log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))``, stable for large ``|x|``.

    >>> import gmcore as gm
    >>> gm.logsigmoid(gm.tensor([-1e4, 0.0])).tolist()
    [-10000.0, -0.6931471824645996]
    """
    return LogSigmoid.apply(input)


def softplus(input, beta=1.0, threshold=20.0):
    """``log(1 + exp(beta x)) / beta``; linear where ``beta x > threshold`` (PyTorch's rule).

    >>> import gmcore as gm
    >>> gm.softplus(gm.tensor([0.0, 100.0])).tolist()
    [0.6931471824645996, 100.0]
    """
    if beta == 0:
        raise ValueError("softplus: beta must be non-zero")
    return Softplus.apply(input, beta=beta, threshold=threshold)


def relu(input):
    """``max(x, 0)``; gradient 0 at 0 (as PyTorch). Integer dtypes are kept.

    >>> import gmcore as gm
    >>> gm.relu(gm.tensor([-1.0, 0.0, 2.0])).tolist()
    [0.0, 0.0, 2.0]
    """
    return Relu.apply(input)


def leaky_relu(input, negative_slope=0.01):
    """``x`` where ``x > 0``, else ``negative_slope * x``.

    >>> import gmcore as gm
    >>> gm.leaky_relu(gm.tensor([-2.0, 3.0]), 0.25).tolist()
    [-0.5, 3.0]
    """
    return LeakyRelu.apply(input, negative_slope=negative_slope)


def elu(input, alpha=1.0):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``.

    >>> import gmcore as gm
    >>> [f"{v:.4f}" for v in gm.elu(gm.tensor([-1.0, 2.0])).tolist()]
    ['-0.6321', '2.0000']
    """
    return Elu.apply(input, alpha=alpha)


def gelu(input, approximate="none"):
    """Gaussian error linear unit ``x * Phi(x)``; ``approximate='tanh'`` uses the tanh formula.

    >>> import gmcore as gm
    >>> f"{gm.gelu(gm.tensor([1.0], dtype=gm.float64)).item():.6f}"
    '0.841345'
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(input, approximate=approximate)


def silu(input):
    """``x * sigmoid(x)`` (swish), forward and backward one fused pass each.

    >>> import gmcore as gm
    >>> [f"{v:.4f}" for v in gm.silu(gm.tensor([-1.0, 0.0, 2.0])).tolist()]
    ['-0.2689', '0.0000', '1.7616']
    """
    return Silu.apply(input)


def concat_elu(input, alpha=1.0):
    """``elu(cat([x, -x], dim=1), alpha)`` (PixelCNN++'s nonlinearity), one fused pass each way.

    ``input`` is (B, C, ...); the result is (B, 2C, ...). Exported as
    ``gmcore.nn.functional.concat_elu``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> [f"{v:.4f}" for v in F.concat_elu(gm.tensor([[1.0], [-1.0]])).reshape(-1).tolist()]
    ['1.0000', '-0.6321', '-0.6321', '1.0000']
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"concat_elu(): input must be a Tensor, not {type(input).__name__}")
    if input.ndim < 2:
        raise ValueError(f"concat_elu(): input must have at least 2 dims (batch, channels, ...), "
                         f"got shape {tuple(input.shape)}")
    return ConcatElu.apply(input, alpha=alpha)


def square(input):
    """``input * input`` (integer dtypes kept)."""
    return Square.apply(input)


def reciprocal(input):
    """``1 / input`` (integer input gives the default float dtype)."""
    return Reciprocal.apply(input)


def floor(input):
    """Largest integer <= x (zero gradient; integer dtypes kept)."""
    return Floor.apply(input)


def ceil(input):
    """Smallest integer >= x (zero gradient; integer dtypes kept)."""
    return Ceil.apply(input)


def round(input, *, decimals=0):
    """Round half to even, to ``decimals`` places (zero gradient).

    >>> import gmcore as gm
    >>> gm.round(gm.tensor([0.5, 1.5, 2.5])).tolist()
    [0.0, 2.0, 2.0]
    """
    return Round.apply(input, decimals=int(decimals))


def trunc(input):
    """Round towards zero (zero gradient)."""
    return Trunc.apply(input)


def erf(input):
    """Error function ``2/sqrt(pi) * integral_0^x exp(-t^2) dt`` (Cody's approximation, ~1e-16).

    >>> import gmcore as gm
    >>> f"{gm.erf(gm.tensor([1.0], dtype=gm.float64)).item():.12f}"
    '0.842700792950'
    """
    return Erf.apply(input)


def erfc(input):
    """Complementary error function ``1 - erf(x)``, accurate in the tail."""
    return Erfc.apply(input)


def tan(input):
    """Tangent (radians); gradient ``1 + tan(x)^2`` from the saved output.

    >>> import gmcore as gm
    >>> gm.tan(gm.tensor([0.0])).tolist()
    [0.0]
    """
    return Tan.apply(input)


def sinh(input):
    """Hyperbolic sine."""
    return Sinh.apply(input)


def cosh(input):
    """Hyperbolic cosine."""
    return Cosh.apply(input)


def asinh(input):
    """Inverse hyperbolic sine.

    >>> import gmcore as gm
    >>> gm.asinh(gm.tensor([0.0])).tolist()
    [0.0]
    """
    return Asinh.apply(input)


def acosh(input):
    """Inverse hyperbolic cosine: NaN for ``x < 1`` (as PyTorch), gradient inf at 1.

    >>> import gmcore as gm
    >>> gm.acosh(gm.tensor([1.0, 0.5])).tolist()
    [0.0, nan]
    """
    return Acosh.apply(input)


def atanh(input):
    """Inverse hyperbolic tangent: ``+-inf`` at ``+-1``, NaN beyond.

    >>> import gmcore as gm
    >>> gm.atanh(gm.tensor([-1.0, 0.0, 1.0])).tolist()
    [-inf, 0.0, inf]
    """
    return Atanh.apply(input)


arcsinh, arccosh, arctanh = asinh, acosh, atanh  # NumPy's names, as torch aliases them


def log2(input):
    """Base-2 logarithm (exact on powers of two).

    >>> import gmcore as gm
    >>> gm.log2(gm.tensor([1.0, 8.0, 0.5])).tolist()
    [0.0, 3.0, -1.0]
    """
    return Log2.apply(input)


def exp2(input):
    """``2 ** input`` elementwise (exact on integers; integer input gives the default float).

    >>> import gmcore as gm
    >>> gm.exp2(gm.tensor([0, 3, -1])).tolist()
    [1.0, 8.0, 0.5]
    """
    return Exp2.apply(input)


# ---- clamp, maximum/minimum, where --------------------------------------------------------

class Clamp(Function):
    @staticmethod
    def forward(ctx, x, lo, hi):
        rt = result_type(*[v for v in (x, lo, hi) if v is not None]).np
        x, lo, hi = [None if v is None else _cast(v, rt) for v in (x, lo, hi)]
        xp = xp_of(x)
        out = x
        if lo is not None:
            out = xp.maximum(out, lo)  # NaN in x propagates, as PyTorch
        if hi is not None:
            out = xp.minimum(out, hi)
        ctx.shapes = shape_of(x), shape_of(lo), shape_of(hi)
        ctx.save_for_backward(x, lo, hi)
        return _as_array(xp, out).astype(rt, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, lo, hi = ctx.saved_tensors
        sx, slo, shi = ctx.shapes
        need = ctx.needs_input_grad
        gx = glo = ghi = None
        if need[0]:  # closed interval: the bounds themselves pass the gradient
            inside = None if lo is None else x >= lo
            if hi is not None:
                inside = x <= hi if inside is None else inside & (x <= hi)
            gx = reduce_grad(where(inside, g, 0), sx)
        if need[1]:  # min wins where x < min, unless min > max (then max wins)
            m = x < lo
            if hi is not None:
                m = m & (lo < hi)
            glo = reduce_grad(where(m, g, 0), slo)
        if need[2]:
            m = x > hi
            if lo is not None:
                m = m | (hi < lo)
            ghi = reduce_grad(where(m, g, 0), shi)
        return gx, glo, ghi


def clamp(input, min=None, max=None):
    """Limit to ``[min, max]``; each bound is None, a number or a (broadcastable) tensor.

    Where ``min > max`` the result is ``max``, as PyTorch. The input's gradient passes where
    ``min <= x <= max``.

    >>> import gmcore as gm
    >>> gm.clamp(gm.tensor([-2.0, 0.5, 3.0]), -1, 1).tolist()
    [-1.0, 0.5, 1.0]
    """
    if min is None and max is None:
        raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
    for name, b in (("min", min), ("max", max)):
        if b is not None and not isinstance(b, (Tensor, int, float, np.number)):
            raise TypeError(f"clamp: {name} must be None, a number or a Tensor, "
                            f"got {type(b).__name__}")
    return Clamp.apply(input, min, max)


clip = clamp


def _extremum(name, pick, loses):
    """maximum/minimum: ``loses(a, b)`` is where ``a`` gets no gradient; ties split it."""
    def forward(ctx, a, b):
        rt = result_type(a, b).np
        a, b = _cast(a, rt), _cast(b, rt)
        xp = xp_of(a if shape_of(a) is not None else b)
        ctx.shapes = shape_of(a), shape_of(b)
        ctx.save_for_backward(a, b)
        return _as_array(xp, getattr(xp, pick)(a, b)).astype(rt, copy=False)

    def backward(ctx, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        half = None
        ga = gb = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            half = where(a == b, g / 2, g)
        if ctx.needs_input_grad[0]:
            ga = reduce_grad(where(loses(a, b), 0, half), sa)
        if ctx.needs_input_grad[1]:
            gb = reduce_grad(where(loses(b, a), 0, half), sb)
        return ga, gb

    return type(name, (Function,), {"forward": staticmethod(forward),
                                    "backward": staticmethod(backward), "__module__": __name__})


Maximum = _extremum("Maximum", "maximum", lambda a, b: a < b)
Minimum = _extremum("Minimum", "minimum", lambda a, b: a > b)


def _check_binary(a, b, op):
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}(): expected at least one Tensor argument, got "
                        f"{type(a).__name__} and {type(b).__name__}")


def maximum(input, other):
    """Elementwise maximum with broadcasting (NaN propagates; ties split the gradient).

    >>> import gmcore as gm
    >>> gm.maximum(gm.tensor([1.0, 5.0]), gm.tensor([3.0, 2.0])).tolist()
    [3.0, 5.0]
    """
    _check_binary(input, other, "maximum")
    return Maximum.apply(input, other)


def minimum(input, other):
    """Elementwise minimum with broadcasting (NaN propagates; ties split the gradient)."""
    _check_binary(input, other, "minimum")
    return Minimum.apply(input, other)


class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        rt = result_type(a, b).np
        a, b = _cast(a, rt), _cast(b, rt)
        xp = xp_of(cond)
        ctx.shapes = shape_of(a), shape_of(b)
        ctx.save_for_backward(cond)
        return _as_array(xp, backend.where(cond, a, b)).astype(rt, copy=False)

    @staticmethod
    def backward(ctx, g):
        cond, = ctx.saved_tensors
        sa, sb = ctx.shapes
        ga = reduce_grad(where(cond, g, 0), sa) if ctx.needs_input_grad[1] else None
        gb = reduce_grad(where(cond, 0, g), sb) if ctx.needs_input_grad[2] else None
        return None, ga, gb


def where(condition, input=None, other=None):
    """``input`` where ``condition`` is True, else ``other`` (broadcast; tensors or numbers).

    ``where(condition)`` alone returns the indices of the True elements, one tensor per dim.

    >>> import gmcore as gm
    >>> x = gm.tensor([-1.0, 2.0])
    >>> gm.where(x > 0, x, 0.0).tolist()
    [0.0, 2.0]
    """
    like = next((t for t in (condition, input, other) if isinstance(t, Tensor)), None)
    if like is None:
        raise TypeError("where(): expected at least one Tensor argument")
    if not isinstance(condition, Tensor):
        condition = Tensor(like._xp().asarray(condition))
    if condition.data.dtype != np.bool_:
        raise TypeError(f"where(): expected condition to be a bool tensor, got {condition.dtype}"
                        " (compare it, e.g. mask != 0)")
    if input is None and other is None:
        return tuple(Tensor(i) for i in condition._xp().nonzero(condition.data))
    if input is None or other is None:
        raise TypeError("where(): give both input and other, or neither")
    return Where.apply(condition, input, other)


# ---- nan_to_num, lerp, addcmul --------------------------------------------------------------

class NanToNum(Function):
    @staticmethod
    def forward(ctx, x, nan=0.0, posinf=None, neginf=None):
        ctx.save_for_backward(x)
        if x.dtype.kind != "f":
            return x.copy()
        return xp_of(x).nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return where(x.isfinite(), g, 0)


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):
    """Replace NaN by ``nan`` and +-inf by ``posinf``/``neginf`` (default: the dtype's extremes).

    >>> import gmcore as gm
    >>> gm.nan_to_num(gm.tensor([float('nan'), 1.0]), nan=-1.0).tolist()
    [-1.0, 1.0]
    """
    return NanToNum.apply(input, nan=nan, posinf=posinf, neginf=neginf)


def lerp(input, end, weight):
    """``input + weight * (end - input)``; ``weight`` is a number or a tensor.

    >>> import gmcore as gm
    >>> gm.lerp(gm.zeros(2), gm.ones(2), 0.25).tolist()
    [0.25, 0.25]
    """
    return input + weight * (end - input)


def addcmul(input, tensor1, tensor2, *, value=1):
    """``input + value * tensor1 * tensor2``."""
    return input + value * tensor1 * tensor2 if value != 1 else input + tensor1 * tensor2


def addcdiv(input, tensor1, tensor2, *, value=1):
    """``input + value * tensor1 / tensor2``."""
    return input + value * tensor1 / tensor2 if value != 1 else input + tensor1 / tensor2
