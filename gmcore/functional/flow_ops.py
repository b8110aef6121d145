"""Flow building blocks besides coupling: actnorm, invertible 1x1 convolution (plain and LU),
and the 2x2 space-to-depth squeeze. Composites of engine ops (fully differentiable, any device).

Each invertible op returns ``(y, logdet)`` with ``logdet`` of shape (B,), the log |det| of the
Jacobian of one example's map; ``inverse=True`` runs the inverse map with the negated log-det.
For an input (B, C, *spatial) with ``HW = prod(spatial)`` positions (Glow, Kingma & Dhariwal 2018):

* ``actnorm``: ``y = scale * (x + loc)`` per channel; ``logdet = HW * sum(log|scale|)``.
  :func:`actnorm_init` gives the data-dependent initialisation (``loc = -mean``,
  ``scale = 1 / (std + eps)`` per channel: the first batch comes out zero-mean, unit-variance).
* ``invconv1x1``: ``y[:, :, p] = W @ x[:, :, p]`` at every position p;
  ``logdet = HW * log|det W|``.
* ``invconv1x1_lu``: the same with ``W = P L (U + diag(sign_s * exp(log_s)))``: P a fixed
  permutation, L unit lower triangular (from the strictly lower part of ``lower``), U strictly
  upper (from ``upper``); then ``logdet = HW * sum(log_s)``, O(C) instead of O(C^3).
  :func:`lu_decompose` gives the parameters of a given W.
* ``squeeze2d`` / ``unsqueeze2d``: (B, C, H, W) <-> (B, 4C, H/2, W/2), output channel
  ``c * 4 + 2 i + j`` holds input channel c at offset (i, j) of each 2x2 patch (RealNVP/Glow; the
  same order as ``pixel_unshuffle``). A permutation: log-det 0, so they return the tensor only.
"""
from __future__ import annotations

import math

import numpy as np

from .. import creation
from . import pointwise as P
from .linalg import inverse as _inverse, slogdet as _slogdet

__all__ = ["actnorm", "actnorm_init", "invconv1x1", "invconv1x1_lu", "lu_weight", "lu_decompose",
           "squeeze2d", "unsqueeze2d"]


def _tensor_cls():
    from ..tensor import Tensor
    return Tensor


def _check_nchw(x, op, min_dim=2):
    if not isinstance(x, _tensor_cls()):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    if x.ndim < min_dim:
        raise ValueError(f"{op}: expected input of shape (B, C, ...), got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{op}: expected a floating point input, got {x.dtype}")


def _per_example(ld, x):
    """A scalar log-det repeated for each example: shape (B,), differentiable."""
    return ld.reshape(1).expand(x.shape[0])


def _positions(x):
    return math.prod(x.shape[2:])


def _channel_view(v, x):
    return v.reshape((1, x.shape[1]) + (1,) * (x.ndim - 2))


# ---- actnorm ----------------------------------------------------------------------------------

def actnorm(x, loc, scale, inverse=False):
    """Per-channel affine ``y = scale * (x + loc)``; returns ``(y, logdet)``, ``logdet`` (B,).

    ``x`` is (B, C, *spatial); ``loc`` and ``scale`` are (C,). ``inverse=True`` gives
    ``x = y / scale - loc`` and ``-logdet``. ``logdet = HW * sum(log|scale|)``.

    >>> import gmcore as gm
    >>> x = gm.ones(2, 3, 4, 4)
    >>> y, ld = gm.actnorm(x, gm.zeros(3), gm.full((3,), 2.0))
    >>> y.shape, [round(v, 4) for v in ld.tolist()]
    (gmcore.Size([2, 3, 4, 4]), [33.2711, 33.2711])
    """
    _check_nchw(x, "actnorm")
    for name, v in (("loc", loc), ("scale", scale)):
        if tuple(v.shape) != (x.shape[1],):
            raise ValueError(f"actnorm: {name} must have shape ({x.shape[1]},) (one per channel "
                             f"of x {tuple(x.shape)}), got {tuple(v.shape)}")
    loc_b, scale_b = _channel_view(loc, x), _channel_view(scale, x)
    ld = P.log(P.abs(scale)).sum() * _positions(x)
    if inverse:
        return x / scale_b - loc_b, _per_example(-ld, x)
    return scale_b * (x + loc_b), _per_example(ld, x)


def actnorm_init(x, eps=1e-6):
    """Data-dependent actnorm parameters ``(loc, scale)`` from a batch (no gradient):
    ``loc = -mean``, ``scale = 1 / (std + eps)`` over every dim but the channel dim (dim 1).

    >>> import gmcore as gm
    >>> x = gm.randn(16, 3, 4, 4) * 5 + 2
    >>> loc, scale = gm.actnorm_init(x)
    >>> y, _ = gm.actnorm(x, loc, scale)
    >>> round(float(y.mean()), 5) == 0.0, round(float(y.std(correction=0)), 3)
    (True, 1.0)
    """
    _check_nchw(x, "actnorm_init")
    from ..autograd import no_grad

    dims = (0,) + tuple(range(2, x.ndim))
    with no_grad():
        x = x.detach()
        mean = x.mean(dims)
        std = x.var(dims, correction=0).sqrt()
        return -mean, 1.0 / (std + eps)


# ---- invertible 1x1 convolution ----------------------------------------------------------------

def _check_weight(w, c, op):
    if tuple(w.shape) != (c, c):
        raise ValueError(f"{op}: weight must be ({c}, {c}) for {c} input channels, got "
                         f"{tuple(w.shape)}")


def _mix(x, w):
    b, c = x.shape[0], x.shape[1]
    return (w @ x.reshape((b, c, _positions(x)))).reshape(tuple(x.shape))


def invconv1x1(x, weight, inverse=False):
    """Invertible 1x1 convolution (Glow): ``y = W x`` over channels at every position.

    ``x`` is (B, C, *spatial), ``weight`` (C, C); returns ``(y, logdet)`` with
    ``logdet = HW * log|det W|`` (B,). ``inverse=True`` applies ``W^-1`` and negates the log-det.

    >>> import gmcore as gm
    >>> w = gm.tensor([[0.0, 2.0], [1.0, 0.0]])
    >>> y, ld = gm.invconv1x1(gm.ones(1, 2, 3, 3), w)
    >>> y[0, :, 0, 0].tolist(), round(ld.item(), 4)
    ([2.0, 1.0], 6.2383)
    """
    _check_nchw(x, "invconv1x1")
    _check_weight(weight, x.shape[1], "invconv1x1")
    ld = _slogdet(weight).logabsdet * _positions(x)
    if inverse:
        return _mix(x, _inverse(weight)), _per_example(-ld, x)
    return _mix(x, weight), _per_example(ld, x)


def lu_weight(p, lower, upper, sign_s, log_s):
    """``W = P @ L @ (U + diag(sign_s * exp(log_s)))`` with L = I + strictly-lower(lower) and
    U = strictly-upper(upper): the LU parameterisation of Glow's invertible 1x1 convolution.

    >>> import gmcore as gm
    >>> c = 3
    >>> w = gm.nn.functional.lu_weight(gm.eye(c), gm.zeros(c, c), gm.zeros(c, c),
    ...                                gm.ones(c), gm.zeros(c))
    >>> w.tolist() == gm.eye(c).tolist()
    True
    """
    from .activation import tril, triu

    c = log_s.shape[0]
    eye = creation.eye(c, dtype=log_s.dtype, device=log_s.device)
    lo = tril(lower, -1) + eye
    up = triu(upper, 1) + eye * (sign_s * P.exp(log_s))  # eye * row vector = diag(vector)
    return p @ (lo @ up)


def invconv1x1_lu(x, p, lower, upper, sign_s, log_s, inverse=False):
    """LU-parameterised invertible 1x1 convolution; ``logdet = HW * sum(log_s)`` (B,).

    Parameters as :func:`lu_weight`; ``p`` (a permutation) and ``sign_s`` are fixed in Glow.

    >>> import gmcore as gm
    >>> params = gm.lu_decompose(gm.tensor([[0.0, 2.0], [1.0, 0.5]]))
    >>> y, ld = gm.invconv1x1_lu(gm.ones(1, 2, 2, 2), *params)
    >>> y[0, :, 0, 0].tolist(), round(ld.item(), 4)
    ([2.0, 1.5], 2.7726)
    """
    _check_nchw(x, "invconv1x1_lu")
    c = x.shape[1]
    if tuple(log_s.shape) != (c,) or tuple(sign_s.shape) != (c,):
        raise ValueError(f"invconv1x1_lu: sign_s and log_s must be ({c},), got "
                         f"{tuple(sign_s.shape)} and {tuple(log_s.shape)}")
    for name, m in (("p", p), ("lower", lower), ("upper", upper)):
        _check_weight(m, c, f"invconv1x1_lu ({name})")
    w = lu_weight(p, lower, upper, sign_s, log_s)
    ld = log_s.sum() * _positions(x)
    if inverse:
        return _mix(x, _inverse(w)), _per_example(-ld, x)
    return _mix(x, w), _per_example(ld, x)


def lu_decompose(weight):
    """``(p, lower, upper, sign_s, log_s)`` with ``lu_weight(...) == weight`` (partial pivoting;
    the results are new tensors on ``weight``'s device, without gradient).

    >>> import gmcore as gm
    >>> w = gm.tensor([[0.0, 2.0], [1.0, 0.5]])
    >>> w2 = gm.nn.functional.lu_weight(*gm.lu_decompose(w))
    >>> [[round(v, 6) for v in row] for row in w2.tolist()]
    [[0.0, 2.0], [1.0, 0.5]]
    """
    a = np.array(weight.detach().numpy(), dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"lu_decompose: expected a square matrix, got {a.shape}")
    n = a.shape[0]
    perm = np.arange(n)
    lower = np.eye(n)
    for k in range(n):  # Doolittle with partial pivoting: PA = LU, so A = P^T L U
        piv = k + int(np.argmax(np.abs(a[k:, k])))
        if a[piv, k] == 0:
            raise ValueError("lu_decompose: the matrix is singular (not invertible)")
        if piv != k:
            a[[k, piv]] = a[[piv, k]]
            lower[[k, piv], :k] = lower[[piv, k], :k]
            perm[[k, piv]] = perm[[piv, k]]
        lower[k + 1:, k] = a[k + 1:, k] / a[k, k]
        a[k + 1:] -= np.outer(lower[k + 1:, k], a[k])
    p = np.eye(n)[perm].T
    diag = np.diag(a)

    def t(v):
        return creation.tensor(v, dtype=weight.dtype, device=weight.device)
    return t(p), t(lower), t(np.triu(a, 1)), t(np.sign(diag)), t(np.log(np.abs(diag)))


# ---- squeeze -----------------------------------------------------------------------------------

def squeeze2d(x, factor=2):
    """Space-to-depth: (B, C, H, W) -> (B, C*f*f, H/f, W/f), channel ``c*f*f + i*f + j`` holding
    offset (i, j) of each f x f patch (RealNVP/Glow; ``pixel_unshuffle`` order). Volume-preserving.

    >>> import gmcore as gm
    >>> x = gm.arange(16.0).reshape(1, 1, 4, 4)
    >>> gm.squeeze2d(x)[0, :, 0, 0].tolist()
    [0.0, 1.0, 4.0, 5.0]
    """
    _check_nchw(x, "squeeze2d")
    if x.ndim != 4:
        raise ValueError(f"squeeze2d: expected (B, C, H, W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    f = int(factor)
    if f < 1 or h % f or w % f:
        raise ValueError(f"squeeze2d: H={h} and W={w} must be divisible by factor={factor}")
    y = x.reshape((b, c, h // f, f, w // f, f)).permute((0, 1, 3, 5, 2, 4))
    return y.reshape((b, c * f * f, h // f, w // f))


def unsqueeze2d(x, factor=2):
    """Depth-to-space, the exact inverse of :func:`squeeze2d`.

    >>> import gmcore as gm
    >>> x = gm.randn(2, 3, 4, 6)
    >>> bool((gm.unsqueeze2d(gm.squeeze2d(x)) == x).all())
    True
    """
    _check_nchw(x, "unsqueeze2d")
    if x.ndim != 4:
        raise ValueError(f"unsqueeze2d: expected (B, C, H, W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    f = int(factor)
    if f < 1 or c % (f * f):
        raise ValueError(f"unsqueeze2d: C={c} must be divisible by factor**2={f * f}")
    y = x.reshape((b, c // (f * f), f, f, h, w)).permute((0, 1, 4, 2, 5, 3))
    return y.reshape((b, c // (f * f), h * f, w * f))
