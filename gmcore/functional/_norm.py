"""Normalisation kernels (layer_norm, group_norm, batch_norm): fused statistics in the forward,
the backward in one pass over the data.

(The ``norm`` family's module is ``_norm``: ``gmcore.functional.norm`` is the vector/matrix norm
reduction, which importing a submodule of that name would overwrite.)

The public ops live in :mod:`gmcore.nn.functional.normalization`; this module holds the
differentiable Functions, the ``reference`` twin (NumPy/CuPy through ``xp``, float64 math) and
the dispatch registrations of the ``norm`` family. Two layouts cover the three ops (see
``csrc/norm.h`` for the math and the backward's derivation):

* rows ``(R, K*S)``: one mean/rstd per row; the affine parameter of element ``(r, k, s)`` is
  channel ``(r % G) * K + k``. layer_norm is ``G = 1, S = 1``; group_norm is ``R = N*G``,
  ``K = C/G``, ``S`` = spatial size.
* channels ``(N, C, S)``: one mean/rstd per channel over ``N*S`` (batch_norm, training with the
  batch statistics or evaluation with given ones).

Every implementation takes and returns arrays with these signatures (statistics are float64):

=============== ========================================================================
op              signature
=============== ========================================================================
row_forward     ``(x2, w, b, G, K, S, eps) -> (y2, mean, rstd)``
row_backward    ``(x2, dy2, w, mean, rstd, G, K, S, need_dw, need_db) -> (dx2, dw, db)``
chan_forward    ``(x3, w, b, mean, rstd, eps, train) -> (y3, mean, var, rstd)``
chan_backward   ``(x3, dy3, w, mean, rstd, train, need_dx, need_dw, need_db) -> (dx3, dw, db)``
=============== ========================================================================

``w``/``b`` are flat (channels,) arrays or None; unwanted gradients come back as None.

=========== ====== ==========================================================
name        device where
=========== ====== ==========================================================
cpp         cpu    ``csrc/norm_cpu.cpp`` via ``gmcore._C`` (OpenMP)
reference   cpu    the ``*_reference`` functions below (NumPy)
triton      cuda   ``kernels/triton/norm.py``
cuda        cuda   ``csrc/norm.cu`` via ``gmcore._C``
reference   cuda   the ``*_reference`` functions below (CuPy)
=========== ====== ==========================================================

Gradients: the backward runs the fused kernel when it is not being recorded; with
``create_graph=True`` it is built from tensor ops instead, so double backward (WGAN-GP, score
matching) works with every implementation.
"""

from __future__ import annotations

import math

import numpy as np

from .. import autograd, backend, dispatch
from ..autograd import Function
from ..tensor import Tensor

__all__ = ["RowNorm", "ChanNorm", "row_norm", "chan_norm", "KERNEL_DTYPES", "OPS", "FAMILY"]

FAMILY = "norm"
OPS = ("row_forward", "row_backward", "chan_forward", "chan_backward")
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- the reference twin: float64 math through xp -----------------------------------------------

def _f64(a):
    return None if a is None else a.astype(np.float64)


def _stats(xd, axes, eps):
    """Two-pass mean and biased variance of float64 data over ``axes``; empty sets give NaN."""
    xp = backend.xp_of(xd)
    count = 1
    for a in axes:
        count *= xd.shape[a]
    if count == 0:
        shape = [1 if i in axes else n for i, n in enumerate(xd.shape)]
        nan = xp.full(shape, np.nan)
        return nan, nan, nan
    mean = xd.mean(axis=axes, keepdims=True)
    xc = xd - mean
    var = (xc * xc).mean(axis=axes, keepdims=True)
    return mean, var, 1.0 / xp.sqrt(var + eps)


def row_forward_reference(x2, w, b, G, K, S, eps):
    R = x2.shape[0]
    x4 = x2.astype(np.float64).reshape(R // G, G, K, S)
    mean, _, rstd = _stats(x4, (2, 3), eps)
    y = (x4 - mean) * rstd
    if w is not None:
        y = y * _f64(w).reshape(1, G, K, 1)
    if b is not None:
        y = y + _f64(b).reshape(1, G, K, 1)
    return y.reshape(x2.shape).astype(x2.dtype), mean.reshape(R), rstd.reshape(R)


def row_backward_reference(x2, dy2, w, mean, rstd, G, K, S, need_dw, need_db):
    R = x2.shape[0]
    shape = (R // G, G, K, S)
    mean, rstd = mean.reshape(R // G, G, 1, 1), rstd.reshape(R // G, G, 1, 1)
    xh = (x2.astype(np.float64).reshape(shape) - mean) * rstd
    g = dy2.astype(np.float64).reshape(shape)
    wdy = g * _f64(w).reshape(1, G, K, 1) if w is not None else g
    m = K * S
    if m:
        dx = rstd * (wdy - wdy.sum(axis=(2, 3), keepdims=True) / m
                     - xh * (wdy * xh).sum(axis=(2, 3), keepdims=True) / m)
    else:
        dx = wdy
    dw = (g * xh).sum(axis=(0, 3)).reshape(G * K).astype(x2.dtype) if need_dw else None
    db = g.sum(axis=(0, 3)).reshape(G * K).astype(x2.dtype) if need_db else None
    return dx.reshape(x2.shape).astype(x2.dtype), dw, db


def chan_forward_reference(x3, w, b, mean, rstd, eps, train):
    C = x3.shape[1]
    xd = x3.astype(np.float64)
    var = None
    if train:
        mean, var, rstd = _stats(xd, (0, 2), eps)
        mean, var, rstd = mean.reshape(C), var.reshape(C), rstd.reshape(C)
    y = (xd - mean.reshape(1, C, 1)) * rstd.reshape(1, C, 1)
    if w is not None:
        y = y * _f64(w).reshape(1, C, 1)
    if b is not None:
        y = y + _f64(b).reshape(1, C, 1)
    return y.astype(x3.dtype), mean, var, rstd


def chan_backward_reference(x3, dy3, w, mean, rstd, train, need_dx, need_dw, need_db):
    xp = backend.xp_of(x3)
    N, C, S = x3.shape
    mean, rstd = mean.reshape(1, C, 1), rstd.reshape(1, C, 1)
    xh = (x3.astype(np.float64) - mean) * rstd
    g = dy3.astype(np.float64)
    wk = _f64(w).reshape(1, C, 1) if w is not None else xp.ones((1, C, 1))
    sdy = g.sum(axis=(0, 2), keepdims=True)
    sdyxh = (g * xh).sum(axis=(0, 2), keepdims=True)
    dx = None
    if need_dx:
        dx = rstd * wk * g
        if train and N * S:
            dx = dx - rstd * wk * (sdy + xh * sdyxh) / (N * S)
        dx = dx.astype(x3.dtype)
    dw = sdyxh.reshape(C).astype(x3.dtype) if need_dw else None
    db = sdy.reshape(C).astype(x3.dtype) if need_db else None
    return dx, dw, db


_REFERENCE = {"row_forward": row_forward_reference, "row_backward": row_backward_reference,
              "chan_forward": chan_forward_reference, "chan_backward": chan_backward_reference}


# ---- loaders ------------------------------------------------------------------------------------

def _load_cpp(op):
    _C = dispatch.require_C()
    return getattr(_C, f"norm_{op}_cpu")


def _load_reference_cuda(op):
    dispatch.require_cupy()
    return _REFERENCE[op]


def _load_triton(op):
    dispatch.require_cupy()
    from ..kernels.triton import norm as tnorm  # imports triton: on first use only
    return getattr(tnorm, op)


def _load_cuda(op):
    cp = dispatch.require_cupy()
    _C = dispatch.require_C(cuda=True)
    return _cuda_launchers(cp, _C)[op]


def _ptr(a):
    return 0 if a is None else a.data.ptr


def _cuda_launchers(cp, _C):
    """The four ops over ``_C``'s pointer entry points (CuPy arrays in and out)."""
    def stream():
        return cp.cuda.get_current_stream().ptr

    def row_forward(x2, w, b, G, K, S, eps):
        R = x2.shape[0]
        y = cp.empty_like(x2)
        mean, rstd = cp.full(R, np.nan), cp.full(R, np.nan)
        _C.norm_row_forward_cuda(_ptr(x2), _ptr(w), _ptr(b), _ptr(y), _ptr(mean), _ptr(rstd),
                                 R, G, K, S, float(eps), x2.dtype.name, stream())
        return y, mean, rstd

    def row_backward(x2, dy2, w, mean, rstd, G, K, S, need_dw, need_db):
        R = x2.shape[0]
        dx = cp.empty_like(x2)
        dw = cp.zeros(G * K, x2.dtype) if need_dw else None
        db = cp.zeros(G * K, x2.dtype) if need_db else None
        _C.norm_row_backward_cuda(_ptr(x2), _ptr(dy2), _ptr(w), _ptr(mean), _ptr(rstd), _ptr(dx),
                                  _ptr(dw), _ptr(db), R, G, K, S, x2.dtype.name, stream())
        return dx, dw, db

    def chan_forward(x3, w, b, mean, rstd, eps, train):
        N, C, S = x3.shape
        y = cp.empty_like(x3)
        var = None
        if train:
            mean, var, rstd = cp.full(C, np.nan), cp.full(C, np.nan), cp.full(C, np.nan)
        _C.norm_chan_forward_cuda(_ptr(x3), _ptr(w), _ptr(b), _ptr(y), _ptr(mean), _ptr(var),
                                  _ptr(rstd), N, C, S, float(eps), bool(train), x3.dtype.name,
                                  stream())
        return y, mean, var, rstd

    def chan_backward(x3, dy3, w, mean, rstd, train, need_dx, need_dw, need_db):
        N, C, S = x3.shape
        dx = cp.empty_like(x3) if need_dx else None
        dw = cp.zeros(C, x3.dtype) if need_dw else None
        db = cp.zeros(C, x3.dtype) if need_db else None
        _C.norm_chan_backward_cuda(_ptr(x3), _ptr(dy3), _ptr(w), _ptr(mean), _ptr(rstd), _ptr(dx),
                                   _ptr(dw), _ptr(db), N, C, S, bool(train), x3.dtype.name,
                                   stream())
        return dx, dw, db

    return {"row_forward": row_forward, "row_backward": row_backward,
            "chan_forward": chan_forward, "chan_backward": chan_backward}


# Preference order = registration order (fastest first); GMCORE_KERNELS overrides.
for _op in OPS:
    dispatch.register(FAMILY, _op, "cpu", "cpp", lambda op=_op: _load_cpp(op))
    dispatch.register(FAMILY, _op, "cpu", "reference", lambda op=_op: _REFERENCE[op])
    dispatch.register(FAMILY, _op, "cuda", "triton", lambda op=_op: _load_triton(op))
    dispatch.register(FAMILY, _op, "cuda", "cuda", lambda op=_op: _load_cuda(op))
    dispatch.register(FAMILY, _op, "cuda", "reference", lambda op=_op: _load_reference_cuda(op))
del _op


# ---- the differentiable ops ---------------------------------------------------------------------

def _arr(t):
    return None if t is None else t.data


def _flat(a, xp):
    """A parameter array as the kernels take it: flat and C-contiguous (or None)."""
    return None if a is None else xp.ascontiguousarray(a.reshape(-1))


def _graph_backward(x, g, w, b, needs, dims, pdims, pshape, eps, given=None):
    """The backward from tensor ops (recorded when ``create_graph=True``).

    ``x`` and ``g`` are viewed so that ``dims`` are the statistic's dims, ``pdims`` the dims a
    parameter gradient sums over and ``pshape`` a parameter's broadcast shape. ``given`` =
    (mean, rstd) constants for batch_norm evaluation (then dx has no statistic terms).
    """
    if given is None:
        mean = x.mean(dims, keepdim=True)
        xc = x - mean
        rstd = ((xc * xc).mean(dims, keepdim=True) + eps) ** -0.5
    else:
        mean, rstd = given
        xc = x - mean
    xh = xc * rstd
    dx = dw = db = None
    if needs[0]:
        wdy = g * w.reshape(pshape) if w is not None else g
        if given is None:
            dx = rstd * (wdy - wdy.mean(dims, keepdim=True)
                         - xh * (wdy * xh).mean(dims, keepdim=True))
        else:
            dx = rstd * wdy
    if needs[1]:
        dw = (g * xh).sum(pdims).reshape(tuple(w.shape))
    if needs[2]:
        db = g.sum(pdims).reshape(tuple(b.shape))
    return dx, dw, db


class RowNorm(Function):
    """layer_norm / group_norm on the row layout: ``y = (x - mean) rstd w + b`` per row."""

    @staticmethod
    def forward(ctx, x, weight, bias, R, G, K, S, eps, fwd, bwd):
        xp = backend.xp_of(x)
        x2 = xp.ascontiguousarray(x.reshape(R, K * S))
        y, mean, rstd = fwd(x2, _flat(weight, xp), _flat(bias, xp), G, K, S, eps)
        ctx.save_for_backward(x, weight, bias)
        ctx.geom, ctx.stats, ctx.bwd = (R, G, K, S, eps), (mean, rstd), bwd
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        x, w, b = ctx.saved_tensors
        R, G, K, S, eps = ctx.geom
        needs = ctx.needs_input_grad[:3]
        if autograd.is_grad_enabled():  # create_graph=True: a differentiable backward
            shape = (R // G, G, K, S)
            dx, dw, db = _graph_backward(x.reshape(shape), g.reshape(shape), w, b, needs, (2, 3),
                                         (0, 3), (1, G, K, 1), eps)
            return (dx.reshape(tuple(x.shape)) if dx is not None else None, dw, db) + (None,) * 7
        xp = backend.xp_of(g.data)
        mean, rstd = ctx.stats
        dy2 = xp.ascontiguousarray(g.data.reshape(R, K * S))
        x2 = xp.ascontiguousarray(x.data.reshape(R, K * S))
        dx, dw, db = ctx.bwd(x2, dy2, _flat(_arr(w), xp), mean, rstd, G, K, S,
                             bool(needs[1]), bool(needs[2]))
        return (Tensor(dx.reshape(x.data.shape)) if needs[0] else None,
                Tensor(dw.reshape(w.data.shape)) if needs[1] else None,
                Tensor(db.reshape(b.data.shape)) if needs[2] else None) + (None,) * 7


class ChanNorm(Function):
    """batch_norm on the channel layout; ``stats`` (a dict) receives the batch mean and biased
    variance in training (float64 arrays) for the running-statistics update."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, rstd, train, eps, fwd, bwd, stats):
        xp = backend.xp_of(x)
        N, C = x.shape[0], x.shape[1]
        S = math.prod(x.shape[2:])
        x3 = xp.ascontiguousarray(x.reshape(N, C, S))
        y, mean, var, rstd = fwd(x3, _flat(weight, xp), _flat(bias, xp), mean, rstd, eps, train)
        stats["mean"], stats["var"] = mean, var
        ctx.save_for_backward(x, weight, bias)
        ctx.geom, ctx.stats, ctx.bwd = (N, C, S, eps, train), (mean, rstd), bwd
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        x, w, b = ctx.saved_tensors
        N, C, S, eps, train = ctx.geom
        mean, rstd = ctx.stats
        needs = ctx.needs_input_grad[:3]
        if autograd.is_grad_enabled():  # create_graph=True: a differentiable backward
            shape = (N, C, S)
            given = None
            if not train:
                dt = x.data.dtype
                given = (Tensor(mean.astype(dt).reshape(1, C, 1)),
                         Tensor(rstd.astype(dt).reshape(1, C, 1)))
            dx, dw, db = _graph_backward(x.reshape(shape), g.reshape(shape), w, b, needs, (0, 2),
                                         (0, 2), (1, C, 1), eps, given)
            return (dx.reshape(tuple(x.shape)) if dx is not None else None, dw, db) + (None,) * 7
        xp = backend.xp_of(g.data)
        dy3 = xp.ascontiguousarray(g.data.reshape(N, C, S))
        x3 = xp.ascontiguousarray(x.data.reshape(N, C, S))
        dx, dw, db = ctx.bwd(x3, dy3, _flat(_arr(w), xp), mean, rstd, train,
                             bool(needs[0]), bool(needs[1]), bool(needs[2]))
        return (Tensor(dx.reshape(x.data.shape)) if needs[0] else None,
                Tensor(dw) if needs[1] else None,
                Tensor(db) if needs[2] else None) + (None,) * 7


def _impls(layout, device):
    fwd = dispatch.get(FAMILY, f"{layout}_forward", device)
    bwd = dispatch.get(FAMILY, f"{layout}_backward", device)
    return fwd, bwd


def row_norm(x, weight, bias, R, G, K, S, eps):
    """Normalise ``x`` viewed as ``R`` rows of ``K*S`` elements, affine per channel
    ``(r % G) * K + k``; ``weight``/``bias`` hold ``G*K`` values (any shape) or are None.

    >>> import gmcore as gm
    >>> from gmcore.functional._norm import row_norm
    >>> y = row_norm(gm.tensor([[1., 2., 3.]]), None, None, 1, 1, 3, 1, 1e-5)
    >>> [round(v, 4) for v in y[0].tolist()]
    [-1.2247, 0.0, 1.2247]
    """
    fwd, bwd = _impls("row", x.device.type)
    return RowNorm.apply(x, weight, bias, int(R), int(G), int(K), int(S), float(eps), fwd, bwd)


def chan_norm(x, weight, bias, eps, running_mean=None, running_var=None, train=True):
    """batch_norm of ``(N, C, *)``: batch statistics (``train``, returned as a dict of float64
    arrays ``mean`` and biased ``var``) or the given running ones.

    >>> import gmcore as gm
    >>> from gmcore.functional._norm import chan_norm
    >>> y, st = chan_norm(gm.tensor([[1., 2.], [3., 6.]]), None, None, 1e-5)
    >>> st["mean"].tolist(), [round(v, 4) for v in y[:, 0].tolist()]
    ([2.0, 4.0], [-1.0, 1.0])
    """
    fwd, bwd = _impls("chan", x.device.type)
    mean = rstd = None
    if not train:
        xp = backend.xp_of(x.data)
        mean = xp.ascontiguousarray(running_mean.data.astype(np.float64).reshape(-1))
        rstd = 1.0 / xp.sqrt(running_var.data.astype(np.float64).reshape(-1) + float(eps))
    stats = {}
    y = ChanNorm.apply(x, weight, bias, mean, rstd, bool(train), float(eps), fwd, bwd, stats)
    return y, stats
