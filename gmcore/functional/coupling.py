"""Affine / additive coupling (NICE, RealNVP, Glow): forward, inverse and per-example log-det.

The op
------
``affine_coupling(x_b, log_scale_raw, shift, scale_fn="exp", inverse=False) -> (y_b, logdet)``.
``x_b`` is the transformed half of a coupling layer (or any tensor), shape ``(B, ...)``;
``log_scale_raw`` and ``shift`` come from the network that reads the other half, same shape.
With ``r = log_scale_raw`` the scale ``s`` and its log are, exactly:

============ ========================= ============================ ===========================
scale_fn     s                         log s                        why
============ ========================= ============================ ===========================
``exp``      ``exp(r)``                ``r``                        RealNVP; unbounded, simplest
``sigmoid``  ``sigmoid(r + 2)``        ``logsigmoid(r + 2)``        Glow's code: s in (0, 1) so a
                                                                    layer only contracts (stable
                                                                    early training); the +2 makes
                                                                    a zero-initialised network
                                                                    start near identity
                                                                    (s = 0.88)
``tanh``     ``exp(tanh(r))``          ``tanh(r)``                  bounded log-scale, s in
                                                                    [1/e, e]: no blow-ups, yet
                                                                    s = 1 at r = 0 (identity)
============ ========================= ============================ ===========================

forward: ``y = x * s + shift``, ``logdet = sum(log s)`` over every non-batch dim, shape (B,);
inverse: ``x = (y - shift) / s`` (computed as ``(y - shift) * (1/s)`` with ``1/s = exp(-r)``,
``1 + exp(-(r + 2))`` or ``exp(-tanh(r))``), ``logdet = -sum(log s)``.

Additive coupling (NICE) is the shift-only case: pass ``log_scale_raw=None``; then ``s = 1``,
``y = x + shift`` (inverse ``y - shift``) and ``logdet`` is zeros. It is a plain add, so it runs
through the engine's own ops (no kernel: there is nothing to fuse). ``shift=None`` means zero
shift (scale-only coupling).

Implementations (``coupling`` kernel family; all take C-contiguous (B, N) float32/float64
arrays; ``fn`` is 0 = exp, 1 = sigmoid, 2 = tanh)::

    forward(x, r, b, fn, inverse)          -> (y, logdet[B])
    backward(a, r, g, g_logdet, fn, inverse) -> (d_in, d_r, d_shift or None)

where ``a`` is the op's input ``x`` for the forward direction and its *output* ``x`` for the
inverse (the factor each needs to differentiate ``s``); ``d_shift`` is None in the forward
direction, where it equals ``g`` (passed on without a copy: one array less to write). Backward derivation, with
``dlog s/dr`` = 1 | ``sigmoid(-(r + 2))`` | ``1 - tanh(r)^2`` and ``ds/dr = s dlog s/dr``:

* forward, ``y = x s + b``:  ``d_x = g s``, ``d_b = g``, ``d_r = (g x s + g_ld) dlog s/dr``;
* inverse, ``x = (y - b)/s``: ``d_y = g / s``, ``d_b = -g / s``,
  ``d_r = -(g x + g_ld) dlog s/dr``  (as ``d(1/s)/dr = -(1/s) dlog s/dr``).

=========== ====== ====================================================================
name        device where
=========== ====== ====================================================================
numba       cpu    ``kernels/numba/coupling.py``
cpp         cpu    ``csrc/coupling_cpu.cpp`` via ``gmcore._C`` (OpenMP; math in coupling.h)
reference   cpu    :func:`affine_coupling_forward_reference` below (NumPy), and the op as
                   differentiable tensor ops (double backward works)
triton      cuda   ``kernels/triton/coupling.py``
cuda        cuda   ``csrc/coupling.cu`` via ``gmcore._C``
reference   cuda   the same reference on CuPy
=========== ====== ====================================================================

The compiled kernels compute in the input's precision, except that the CPU ones accumulate
the per-example log-det in float64 (cheap, and it keeps B x 3072-term sums exact to float32).
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend, dispatch
from ..autograd import Function, once_differentiable

__all__ = ["affine_coupling", "additive_coupling", "affine_coupling_forward_reference",
           "affine_coupling_backward_reference", "SCALE_FNS"]

SCALE_FNS = {"exp": 0, "sigmoid": 1, "tanh": 2}
_SIGMOID_OFFSET = 2.0  # Glow's sigmoid(h + 2)
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- the specification on arrays (NumPy or CuPy; float64-capable) ----------------------------

def _scale_parts(xp, r, fn):
    """``(s, 1/s, log s, dlog s/dr)`` for raw ``r`` under scale function code ``fn``."""
    if fn == 0:
        return xp.exp(r), xp.exp(-r), r, xp.ones_like(r)
    if fn == 1:
        z = r + _SIGMOID_OFFSET
        e = xp.exp(-xp.abs(z))            # in (0, 1]: no overflow on either side
        pos = z >= 0
        s = backend.where(pos, 1 / (1 + e), e / (1 + e))
        s_neg = backend.where(pos, e / (1 + e), 1 / (1 + e))     # sigmoid(-z) = 1 - s, exactly
        log_s = xp.minimum(z, 0) - xp.log1p(e)
        with np.errstate(divide="ignore", over="ignore"):  # 1/s = inf where s underflows
            inv_s = 1 + xp.exp(-z)
        return s, inv_s, log_s, s_neg
    t = xp.tanh(r)
    v = xp.exp(-2 * xp.abs(r))  # 1 - t^2 = 4v / (1 + v)^2: no cancellation once t rounds to 1
    return xp.exp(t), xp.exp(-t), t, 4 * v / ((1 + v) * (1 + v))


def _rows(a):
    b = a.shape[0]
    return a.reshape(b, math.prod(a.shape[1:]))


def affine_coupling_forward_reference(x, r, b, fn, inverse):
    """Reference of the ``forward`` kernel: (B, N) arrays -> ``(y, logdet)``; see module doc."""
    xp = backend.xp_of(x)
    s, inv_s, log_s, _ = _scale_parts(xp, r, fn)
    y = (x - b) * inv_s if inverse else x * s + b
    ld = log_s.sum(axis=1, dtype=x.dtype)
    return y, (-ld if inverse else ld)


def affine_coupling_backward_reference(a, r, g, g_ld, fn, inverse):
    """Reference of the ``backward`` kernel -> ``(d_in, d_r, d_shift)``; see module doc."""
    xp = backend.xp_of(a)
    s, inv_s, _, dlog = _scale_parts(xp, r, fn)
    gl = g_ld[:, None]
    if inverse:
        d_in = g * inv_s
        return d_in, -(g * a + gl) * dlog, -d_in
    return g * s, (g * a * s + gl) * dlog, None  # d_shift = g: callers pass g on


# ---- loaders and registration -----------------------------------------------------------------

def _load_reference_cuda():
    dispatch.require_cupy()
    return affine_coupling_forward_reference, affine_coupling_backward_reference


def _load_numba():
    try:
        from gmcore.kernels.numba import coupling as k
    except ImportError as exc:
        raise ImportError(f"numba is not installed or failed to import ({exc})") from None
    return k.coupling_forward, k.coupling_backward


def _load_cpp():
    _C = dispatch.require_C()
    if not hasattr(_C, "coupling_forward_cpu"):
        raise RuntimeError("gmcore._C was built without the coupling kernels (rebuild it)")
    return _C.coupling_forward_cpu, _C.coupling_backward_cpu


def _load_triton():
    dispatch.require_cupy()
    try:
        from gmcore.kernels.triton import coupling as k
    except ImportError as exc:
        raise ImportError(f"triton is not installed or failed to import ({exc})") from None
    return k.coupling_forward, k.coupling_backward


def _load_cuda():
    cp = dispatch.require_cupy()
    _C = dispatch.require_C(cuda=True)
    if not hasattr(_C, "coupling_forward_cuda"):
        raise RuntimeError("gmcore._C was built without the coupling CUDA kernels (rebuild it)")

    def forward(x, r, b, fn, inverse):
        bsz, n = x.shape
        with x.device:
            y = cp.empty_like(x)
            ld = cp.empty(bsz, dtype=x.dtype)
            stream = cp.cuda.get_current_stream().ptr
            _C.coupling_forward_cuda(x.data.ptr, r.data.ptr, b.data.ptr, y.data.ptr, ld.data.ptr,
                                     bsz, n, int(fn), bool(inverse), x.dtype.name, stream)
        return y, ld

    def backward(a, r, g, g_ld, fn, inverse):
        bsz, n = a.shape
        with a.device:
            d_in, d_r = cp.empty_like(a), cp.empty_like(a)
            d_b = cp.empty_like(a) if inverse else None  # forward: d_shift = g
            stream = cp.cuda.get_current_stream().ptr
            _C.coupling_backward_cuda(a.data.ptr, r.data.ptr, g.data.ptr, g_ld.data.ptr,
                                      d_in.data.ptr, d_r.data.ptr,
                                      0 if d_b is None else d_b.data.ptr, bsz, n, int(fn),
                                      bool(inverse), a.dtype.name, stream)
        return d_in, d_r, d_b

    return forward, backward


# one op name ("affine"): a kernel pair (forward, backward) per implementation, registered in
# preference order (measured on the 2-core CPU: cpp ahead of numba; see bench_coupling.py)
dispatch.register("coupling", "affine", "cpu", "cpp", _load_cpp)
dispatch.register("coupling", "affine", "cpu", "numba", _load_numba)
dispatch.register("coupling", "affine", "cpu", "reference",
                  lambda: (affine_coupling_forward_reference, affine_coupling_backward_reference))
dispatch.register("coupling", "affine", "cuda", "triton", _load_triton)
dispatch.register("coupling", "affine", "cuda", "cuda", _load_cuda)
dispatch.register("coupling", "affine", "cuda", "reference", _load_reference_cuda)


# ---- the fused Function --------------------------------------------------------------------

def _c2d(a):
    xp = backend.xp_of(a)
    return xp.ascontiguousarray(_rows(a))


class AffineCoupling(Function):
    """Fused affine coupling: one kernel pass forward, one pass for all three gradients."""

    @staticmethod
    def forward(ctx, x, r, b, fn, inverse, impl):
        xp = backend.xp_of(x)
        fwd, _ = impl
        if b is None:
            b = xp.zeros_like(x)
        y2, ld = fwd(_c2d(x), _c2d(r), _c2d(b), fn, inverse)
        y = y2.reshape(x.shape)
        ctx.fn, ctx.inverse, ctx.impl = fn, inverse, impl
        # the factor backward needs: the input x (forward) or the output x (inverse)
        ctx.save_for_backward(y if inverse else x, r)
        return y, ld

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_ld):
        a, r = ctx.saved_arrays
        _, bwd = ctx.impl
        xp = backend.xp_of(a)
        g_ld = xp.ascontiguousarray(g_ld)
        g2 = _c2d(g_y)
        d_in, d_r, d_b = bwd(_c2d(a), _c2d(r), g2, g_ld, ctx.fn, ctx.inverse)
        if d_b is None:  # forward direction: d_shift = g_y
            d_b = g2
        shape = a.shape
        need = ctx.needs_input_grad
        return (d_in.reshape(shape) if need[0] else None, d_r.reshape(shape) if need[1] else None,
                d_b.reshape(shape) if need[2] else None, None, None, None)


# ---- the differentiable reference (tensor ops: double backward works) --------------------------

def _coupling_tensor_ops(x, r, b, fn, inverse):
    from . import pointwise as P

    if fn == 0:
        log_s = r
        scale = (-r).exp() if inverse else r.exp()
    elif fn == 1:
        z = r + _SIGMOID_OFFSET
        log_s = P.logsigmoid(z)
        scale = 1 + (-z).exp() if inverse else P.sigmoid(z)
    else:
        log_s = P.tanh(r)
        scale = (-log_s).exp() if inverse else log_s.exp()
    if inverse:
        y = (x if b is None else x - b) * scale
    else:
        y = x * scale if b is None else x * scale + b
    ld = log_s.reshape((x.shape[0], math.prod(x.shape[1:]))).sum(1)
    return y, (-ld if inverse else ld)


# ---- the public ops ---------------------------------------------------------------------------

def _check(name, t, x, Tensor):
    if not isinstance(t, Tensor):
        raise TypeError(f"affine_coupling: {name} must be a Tensor or None, got {type(t).__name__}")
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"affine_coupling: {name} has shape {tuple(t.shape)} but x_b has shape "
                         f"{tuple(x.shape)}; they must match (the coupling network's output "
                         "for each element of x_b)")
    if t.data.dtype.kind != "f":
        raise TypeError(f"affine_coupling: {name} must be floating point, got {t.dtype}")


def _zeros_logdet(x):
    xp = x._xp()
    from ..tensor import Tensor

    with backend.device_context(x.device):
        return Tensor(xp.zeros(x.shape[0], dtype=x.data.dtype))


def affine_coupling(x_b, log_scale_raw, shift, scale_fn="exp", inverse=False):
    """Affine coupling transform of ``x_b`` with its per-example log-determinant.

    ``y = x_b * s + shift`` and ``logdet = sum(log s)`` over all non-batch dims (shape (B,)),
    where ``s`` is ``exp(r)`` (``scale_fn="exp"``), ``sigmoid(r + 2)`` (``"sigmoid"``, Glow's
    choice) or ``exp(tanh(r))`` (``"tanh"``) of ``r = log_scale_raw``. ``inverse=True`` maps
    back: ``x = (y - shift) / s`` with ``logdet = -sum(log s)``. ``log_scale_raw=None`` is
    additive (NICE) coupling (``s = 1``, zero log-det); ``shift=None`` is a zero shift.
    ``log_scale_raw`` and ``shift`` must have ``x_b``'s shape; mixed float dtypes are promoted.
    The module docstring has the exact definitions and the backward derivation.

    >>> import gmcore as gm
    >>> x = gm.tensor([[1.0, 2.0]])
    >>> y, ld = gm.affine_coupling(x, gm.tensor([[0.0, 0.6931472]]), gm.tensor([[1.0, 0.0]]))
    >>> [round(v, 4) for v in y.tolist()[0]], round(ld.item(), 4)
    ([2.0, 4.0], 0.6931)
    >>> x2, ld2 = gm.affine_coupling(y, gm.tensor([[0.0, 0.6931472]]), gm.tensor([[1.0, 0.0]]),
    ...                              inverse=True)
    >>> [round(v, 4) for v in x2.tolist()[0]], round(ld2.item(), 4)
    ([1.0, 2.0], -0.6931)
    """
    from ..tensor import Tensor
    from .._dtype import result_type

    if not isinstance(x_b, Tensor):
        raise TypeError(f"affine_coupling: x_b must be a Tensor, got {type(x_b).__name__}")
    if x_b.ndim < 1:
        raise ValueError("affine_coupling: x_b must have a batch dim (shape (B, ...)), got a 0-d "
                         "tensor")
    if not x_b.dtype.is_floating_point:
        raise TypeError(f"affine_coupling: x_b must be floating point, got {x_b.dtype}")
    if scale_fn not in SCALE_FNS:
        raise ValueError(f"affine_coupling: scale_fn must be one of {sorted(SCALE_FNS)}, "
                         f"got {scale_fn!r}")
    for name, t in (("log_scale_raw", log_scale_raw), ("shift", shift)):
        if t is not None:
            _check(name, t, x_b, Tensor)
    present = [t.data.dtype for t in (x_b, log_scale_raw, shift) if t is not None]
    if any(d != present[0] for d in present):  # mixed float dtypes: promote (torch's rule)
        dtype = result_type(*[t.data for t in (x_b, log_scale_raw, shift) if t is not None])
        x_b, log_scale_raw, shift = (t if t is None or t.dtype == dtype else t.to(dtype)
                                     for t in (x_b, log_scale_raw, shift))
    inverse = bool(inverse)

    if log_scale_raw is None:  # additive (NICE): a plain add, zero log-det
        if shift is None:
            y = x_b.clone()
        else:
            y = x_b - shift if inverse else x_b + shift
        return y, _zeros_logdet(x_b)

    fn = SCALE_FNS[scale_fn]
    dev = x_b.device.type
    name, impl = dispatch.choose("coupling", "affine", dev)
    if name == "reference" or x_b.data.dtype not in _KERNEL_DTYPES or x_b.shape[0] == 0:
        return _coupling_tensor_ops(x_b, log_scale_raw, shift, fn, inverse)
    return AffineCoupling.apply(x_b, log_scale_raw, shift, fn, inverse, impl)


def additive_coupling(x_b, shift, inverse=False):
    """NICE's additive coupling: ``affine_coupling(x_b, None, shift, inverse=inverse)``.

    >>> import gmcore as gm
    >>> y, ld = gm.additive_coupling(gm.tensor([[1.0, 2.0]]), gm.tensor([[0.5, -1.0]]))
    >>> y.tolist(), ld.tolist()
    ([[1.5, 1.0]], [0.0])
    """
    return affine_coupling(x_b, None, shift, inverse=inverse)
