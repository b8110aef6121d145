"""Normalising and masking ops: ``softmax``, ``log_softmax``, ``dropout``, ``triu``/``tril``, the
clipping activations ``hardtanh``, ``relu6``, ``softsign``, and ``celu``, ``hardswish``, ``mish``.

(The elementwise activations ``sigmoid relu gelu silu softplus ...`` are in ``pointwise``.)
"""
import numpy as np

from ..autograd import Function, is_grad_enabled
from ..backend import xp_of
from ..tensor import Tensor
from .pointwise import _as_array, elu, sigmoid, softplus, tanh, where
from . import _activation_kernels as _act
from .. import backend

__all__ = ["softmax", "log_softmax", "dropout", "triu", "tril", "hardtanh", "relu6", "softsign",
           "celu", "hardswish", "mish"]


# softmax / log_softmax live in softmax.py (their kernel family); re-exported here so that
# ``from gmcore.functional.activation import softmax`` keeps working.
from .softmax import Softmax, LogSoftmax, softmax, log_softmax  # noqa: E402,F401


# ---- dropout ----------------------------------------------------------------------------------

def dropout(input, p=0.5, training=True, generator=None):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1/(1-p).

    Returns ``input`` itself when ``training`` is False or ``p == 0``, and zeros when ``p == 1``.
    ``generator`` (a ``gmcore.Generator`` on the input's device) makes the mask reproducible.

    >>> import gmcore as gm
    >>> x = gm.ones(1000)
    >>> y = gm.dropout(x, 0.5, generator=gm.Generator().manual_seed(0))
    >>> sorted(set(y.tolist()))
    [0.0, 2.0]
    >>> gm.dropout(x, 0.5, training=False) is x
    True
    """
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p!r}")
    if not isinstance(input, Tensor):
        raise TypeError(f"dropout(): input must be a Tensor, not {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"dropout(): expected a floating point input, got {input.dtype}")
    if not training or p == 0 or input.numel() == 0:
        return input
    if p == 1:
        return input * 0.0  # as PyTorch: zeros that stay in the graph (NaN * 0 stays NaN)
    from ..random import _generator_for
    dt = input.data.dtype
    u = _generator_for(generator, input.device).uniform(input.data.shape, 0.0, 1.0, dt)
    # P(u >= p) = 1 - p for u uniform on [0, 1); the scale is a constant of the graph
    scale = backend.where(u >= p, dt.type(1.0 / (1.0 - p)), dt.type(0)).astype(dt, copy=False)
    return input * Tensor(scale)


# ---- triangular masks -------------------------------------------------------------------------

def _triangle(name, pick):
    def forward(ctx, x, diagonal):
        if x.ndim < 2:
            raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions, got shape "
                               f"{tuple(x.shape)}")
        ctx.k = diagonal
        return getattr(xp_of(x), name)(x, diagonal)  # on the last two dims, batched

    def backward(ctx, g):
        return pick(g, ctx.k), None

    return type(name.capitalize(), (Function,), {"forward": staticmethod(forward),
                                                 "backward": staticmethod(backward),
                                                 "__module__": __name__})


def _check_diagonal(diagonal, op):
    if isinstance(diagonal, bool) or not isinstance(diagonal, (int, np.integer)):
        raise TypeError(f"{op}(): diagonal must be an int, got {type(diagonal).__name__}")
    return int(diagonal)


def triu(input, diagonal=0):
    """Upper triangle of the last two dims (elements below ``diagonal`` set to 0).

    >>> import gmcore as gm
    >>> gm.triu(gm.ones(3, 3)).tolist()
    [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
    """
    return Triu.apply(input, _check_diagonal(diagonal, "triu"))


def tril(input, diagonal=0):
    """Lower triangle of the last two dims (elements above ``diagonal`` set to 0).

    >>> import gmcore as gm
    >>> gm.tril(gm.ones(2, 3), diagonal=1).tolist()
    [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    """
    return Tril.apply(input, _check_diagonal(diagonal, "tril"))


Triu = _triangle("triu", triu)
Tril = _triangle("tril", tril)


# ---- clipping activations ---------------------------------------------------------------------

class Hardtanh(Function):
    @staticmethod
    def forward(ctx, x, min_val, max_val):
        ctx.bounds = min_val, max_val
        ctx.save_for_backward(x)
        xp = xp_of(x)
        return _as_array(xp, xp.clip(x, min_val, max_val)).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        lo, hi = ctx.bounds
        # open interval, unlike clamp: PyTorch's hardtanh_backward passes g where lo < x < hi
        return where((x > lo) & (x < hi), g, 0), None, None


def hardtanh(input, min_val=-1.0, max_val=1.0):
    """``clamp(x, min_val, max_val)`` with gradient only strictly inside the interval.

    >>> import gmcore as gm
    >>> gm.hardtanh(gm.tensor([-3.0, 0.5, 3.0])).tolist()
    [-1.0, 0.5, 1.0]
    """
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val "
                         f"({max_val})")
    if not input.is_floating_point():
        raise TypeError(f"hardtanh(): expected a floating point input, got {input.dtype}")
    return Hardtanh.apply(input, min_val, max_val)


def relu6(input):
    """``min(max(x, 0), 6)``.

    >>> import gmcore as gm
    >>> gm.relu6(gm.tensor([-1.0, 3.0, 9.0])).tolist()
    [0.0, 3.0, 6.0]
    """
    return hardtanh(input, 0.0, 6.0)


def softsign(input):
    """``x / (1 + |x|)``."""
    return input / (1 + input.abs())


# ---- celu, hardswish, mish ------------------------------------------------------------------

def _check_float(input, op):
    if not input.is_floating_point():
        raise TypeError(f"{op}(): expected a floating point input, got {input.dtype}")


def celu(input, alpha=1.0):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))`` (Barron 2017).

    >>> import gmcore as gm
    >>> gm.celu(gm.tensor([1.0, 0.0]), alpha=2.0).tolist()
    [1.0, 0.0]
    """
    if alpha == 0:
        raise ValueError("celu: alpha must be non-zero (it divides the input)")
    _check_float(input, "celu")
    # alpha * elu(x / alpha) on the negative side; x itself (not alpha * x / alpha) above 0
    return where(input > 0, input, alpha * elu(input / alpha))


class Hardswish(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        xp = xp_of(x)
        return _as_array(xp, x * xp.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        # PyTorch's hardswish_backward: 0 up to -3, x/3 + 1/2 on (-3, 3), 1 from 3 on
        return where(x <= -3, g * 0, where(x < 3, g * (x / 3 + 0.5), g))


def hardswish(input):
    """``x * relu6(x + 3) / 6`` (Howard et al. 2019, MobileNetV3); torch's gradient at the kinks.

    >>> import gmcore as gm
    >>> gm.hardswish(gm.tensor([-4.0, 0.0, 3.0, 4.0])).tolist()
    [-0.0, 0.0, 3.0, 4.0]
    """
    _check_float(input, "hardswish")
    return Hardswish.apply(input)


class Mish(Function):
    """One fused pass each way (the ``activation`` kernel family); the recorded backward
    (create_graph=True) is built from tensor ops: mish'(x) = t + x (1 - t^2) sigmoid(x),
    t = tanh(softplus(x))."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _act.forward("mish", x)

    @staticmethod
    def backward(ctx, g):
        if not is_grad_enabled():
            x, = ctx.saved_arrays
            return Tensor(_act.backward("mish", g.data, x))
        x, = ctx.saved_tensors
        t = tanh(softplus(x))
        return g * (t + x * (1 - t * t) * sigmoid(x))


def mish(input):
    """``x * tanh(softplus(x))`` (Misra 2019), computed without overflow.

    >>> import gmcore as gm
    >>> gm.mish(gm.tensor([0.0, 100.0, -1e4])).tolist()
    [0.0, 100.0, -0.0]
    """
    _check_float(input, "mish")
    return Mish.apply(input)
