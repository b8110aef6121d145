"""The ``activation`` kernel family: pointwise activations, forward and backward in one pass each.

Ops (names as the kernels take them; ``a``, ``b`` are the op's scalars):

============ =========================== ===================================================
op           forward                     scalars
============ =========================== ===================================================
gelu         ``x Phi(x)``                -
gelu_tanh    ``x sigmoid(2 K (x+Cx^3))`` - (the same function as ``0.5 x (1 + tanh(...))``)
silu         ``x sigmoid(x)``            -
elu          ``x`` or ``a expm1(x)``     a = alpha
leaky_relu   ``x`` or ``a x``            a = negative_slope
softplus     ``log1p(exp(a x)) / a``     a = beta, b = threshold (linear where ``a x > b``)
mish         ``x tanh(softplus(x))``     -
============ =========================== ===================================================

plus ``concat_elu``: ``elu(cat([x, -x], 1))`` of a (B, C, ...) array, and its backward.

Implementations (every one takes and returns arrays):

=========== ====== ==================================================================
name        device where
=========== ====== ==================================================================
cpp         cpu    ``csrc/activation_cpu.cpp`` via ``gmcore._C`` (OpenMP, float32/64)
reference   cpu    the ``*_reference`` functions below (NumPy)
reference   cuda   the same functions (CuPy)
=========== ====== ==================================================================

There is no Triton or CUDA twin: these ops are memory-bound elementwise maps, which CuPy's
fused elementwise reference already runs at bandwidth on a GPU. The per-element math of the
compiled kernel sits in ``csrc/activation.h`` (host/device), ready for a ``.cu`` twin.

The ops that use these kernels (``gelu``, ``silu`` ... in ``pointwise``, ``mish`` in
``activation``) run the fused backward only when the backward is not being recorded; with
``create_graph=True`` they build it from tensor ops, so gradients of gradients keep working.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend, dispatch
from . import _special

__all__ = ["OPS", "forward", "backward", "concat_elu_forward", "concat_elu_backward",
           "forward_reference", "backward_reference", "concat_elu_forward_reference",
           "concat_elu_backward_reference"]

OPS = ("gelu", "gelu_tanh", "silu", "elu", "leaky_relu", "softplus", "mish")

_SQRT1_2 = 1 / math.sqrt(2.0)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_GELU_K = math.sqrt(2 / math.pi)
_GELU_C = 0.044715


# ---- the reference math: arrays in, arrays out (NumPy or CuPy) --------------------------------

def _sigmoid_parts(xp, z):
    """``e = exp(-|z|)`` in (0, 1], ``r = 1 / (1 + e)`` and ``sigmoid(z)`` (never overflows)."""
    e = xp.exp(-xp.abs(z))
    r = 1 / (1 + e)
    return e, r, backend.where(z >= 0, r, e * r)


def _mish_parts(xp, x):
    """``e = exp(-|x|)``, ``t = tanh(softplus(x))`` and its denominator (csrc/activation.h)."""
    e = xp.exp(-xp.abs(x))
    pos = x >= 0
    num = backend.where(pos, 1 + 2 * e, e * (e + 2))
    den = backend.where(pos, 1 + 2 * e * (1 + e), e * (e + 2) + 2)
    return e, pos, num / den, den


def _forward_math(xp, op, x, a, b):
    if op == "gelu":  # Phi(x) = erfc(-x / sqrt2) / 2: no cancellation as x -> -inf
        return 0.5 * x * _special.erfc(-x * _SQRT1_2)
    if op == "gelu_tanh":  # 0.5 (1 + tanh u) = sigmoid(2u)
        return x * _sigmoid_parts(xp, 2 * _GELU_K * (x + _GELU_C * x * x * x))[2]
    if op == "silu":
        return x * _sigmoid_parts(xp, x)[2]
    if op == "elu":  # expm1 of min(x, 0): the branch not taken cannot overflow
        return backend.where(x > 0, x, a * xp.expm1(xp.minimum(x, 0)))
    if op == "leaky_relu":
        return backend.where(x > 0, x, x * a)
    if op == "softplus":
        z = x * a
        smooth = (xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))) / a
        return backend.where(z > b, x, smooth)
    if op == "mish":
        return x * _mish_parts(xp, x)[2]
    raise ValueError(f"activation: unknown op {op!r} (expected one of {', '.join(OPS)})")


def _backward_math(xp, op, g, x, a, b):
    if op == "gelu":  # Phi(x) + x phi(x)
        cdf = 0.5 * _special.erfc(-x * _SQRT1_2)
        return g * (cdf + x * (xp.exp(-0.5 * x * x) * _INV_SQRT_2PI))
    if op == "gelu_tanh":  # s + x s (1 - s) 2u'; the second term is 0 where s (1 - s) is
        x2 = x * x
        e, r, s = _sigmoid_parts(xp, 2 * _GELU_K * (x + _GELU_C * x2 * x))
        ss = e * r * r
        second = backend.where(ss == 0, 0.0, x * ss * (2 * _GELU_K * (1 + 3 * _GELU_C * x2)))
        return g * (s + second)
    if op == "silu":
        e, r, s = _sigmoid_parts(xp, x)
        return g * (s + x * (e * r * r))
    if op == "elu":
        return backend.where(x > 0, g, g * (a * xp.exp(xp.minimum(x, 0))))
    if op == "leaky_relu":
        return backend.where(x > 0, g, g * a)
    if op == "softplus":
        z = x * a
        return backend.where(z > b, g, g * _sigmoid_parts(xp, z)[2])
    if op == "mish":  # t + x (1 - t^2) sigmoid(x)
        e, pos, t, den = _mish_parts(xp, x)
        q = 4 * e * (1 + e) / (den * den)
        return g * (t + x * backend.where(pos, q * e, q))
    raise ValueError(f"activation: unknown op {op!r} (expected one of {', '.join(OPS)})")


def _quiet(xp):
    return np.errstate(all="ignore") if xp is np else _Null()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def forward_reference(op, x, a=0.0, b=0.0):
    """``op(x)`` elementwise in ``x``'s dtype: the specification the kernels are tested against."""
    xp = backend.xp_of(x)
    with _quiet(xp):
        y = _forward_math(xp, op, x, a, b)
    return xp.asarray(y).astype(x.dtype, copy=False)


def backward_reference(op, g, x, a=0.0, b=0.0):
    """``g * op'(x)`` elementwise, in ``x``'s dtype."""
    xp = backend.xp_of(x)
    with _quiet(xp):
        dx = _backward_math(xp, op, g, x, a, b)
    return xp.asarray(dx).astype(x.dtype, copy=False)


def concat_elu_forward_reference(x, alpha=1.0):
    """``elu(cat([x, -x], 1))`` of a (B, C, ...) array."""
    xp = backend.xp_of(x)
    return forward_reference("elu", xp.concatenate([x, -x], axis=1), alpha)


def concat_elu_backward_reference(g, x, alpha=1.0):
    """``g1 elu'(x) - g2 elu'(-x)`` with ``g1, g2`` the channel halves of ``g``."""
    c = x.shape[1]
    return (backward_reference("elu", g[:, :c], x, alpha)
            - backward_reference("elu", g[:, c:], -x, alpha))


# ---- registrations ------------------------------------------------------------------------------

def _load_cpp():
    _C = dispatch.require_C()
    return {"forward": _C.activation_forward_cpu, "backward": _C.activation_backward_cpu,
            "concat_elu_forward": _C.concat_elu_forward_cpu,
            "concat_elu_backward": _C.concat_elu_backward_cpu}


_REFERENCE = {"forward": forward_reference, "backward": backward_reference,
              "concat_elu_forward": concat_elu_forward_reference,
              "concat_elu_backward": concat_elu_backward_reference}


def _cpp(op):
    return lambda: _load_cpp()[op]


def _reference_cuda(op):
    def load():
        dispatch.require_cupy()
        return _REFERENCE[op]
    return load


# Preference order = registration order (fastest first); GMCORE_KERNELS overrides.
for _op in _REFERENCE:
    dispatch.register("activation", _op, "cpu", "cpp", _cpp(_op))
    dispatch.register("activation", _op, "cpu", "reference", lambda op=_op: _REFERENCE[op])
    dispatch.register("activation", _op, "cuda", "reference", _reference_cuda(_op))
del _op

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- what the ops call ------------------------------------------------------------------------

def _choose(kernel, x):
    """(name, implementation): the dispatched one for float32/float64, else the reference."""
    if x.dtype in _KERNEL_DTYPES:
        return dispatch.choose("activation", kernel, backend.device_of(x).type)
    return "reference", _REFERENCE[kernel]


def _impl(kernel, x):
    return _choose(kernel, x)[1]


def _contiguous(x):
    return x if x.flags.c_contiguous else backend.xp_of(x).ascontiguousarray(x)


def forward(op, x, a=0.0, b=0.0):
    """``op(x)`` through the dispatched kernel (``x`` float; a new array of ``x``'s shape)."""
    return _impl("forward", x)(op, _contiguous(x), a, b)


def _broadcast_scalar(g):
    """A stride-0 view of one value (the gradient of ``y.sum()``): that value, not a copy."""
    return g.size > 1 and not any(g.strides)


def backward(op, g, x, a=0.0, b=0.0):
    """``g * op'(x)`` through the dispatched kernel."""
    name, impl = _choose("backward", x)
    g = g.astype(x.dtype, copy=False)
    if name == "cpp" and _broadcast_scalar(g):
        g = g.reshape(-1)[:1]  # the compiled kernel broadcasts a one-element grad
    return impl(op, _contiguous(g), _contiguous(x), a, b)


def concat_elu_forward(x, alpha=1.0):
    return _impl("concat_elu_forward", x)(_contiguous(x), alpha)


def concat_elu_backward(g, x, alpha=1.0):
    return _impl("concat_elu_backward", x)(_contiguous(g.astype(x.dtype, copy=False)),
                                           _contiguous(x), alpha)
