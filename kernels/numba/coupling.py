"""Affine coupling kernels for the CPU (numba): forward with per-example log-det, fused backward.

Launchers take C-contiguous (B, N) float32/float64 arrays and return new arrays; ``fn`` is the
scale-function code (0 exp, 1 sigmoid(r + 2), 2 exp(tanh r)); the math and the backward
derivation are in ``gmcore/functional/coupling.py``.

Work is split into (row, chunk) tasks so that a few long rows still use every core; each task
writes its partial log-det sum (float64) and the launcher adds the chunks of a row in a fixed
order (deterministic). ``one`` is passed as a typed scalar so every constant in the element math
has the input's precision (a float64 literal would widen float32 math to float64).
``error_model="numpy"``: 1/0 gives inf as IEEE says (1/s where s underflows), not an exception.
"""
import math

import numpy as np
from numba import njit, prange

__all__ = ["coupling_forward", "coupling_backward", "CHUNK", "PARALLEL_MIN"]

CHUNK = 4096  # elements per task: big enough to amortise scheduling, small enough to balance
PARALLEL_MIN = 32768  # below this many elements the serial kernels run
_JIT = dict(cache=True, error_model="numpy", fastmath={"nsz", "arcp", "contract", "reassoc"})


@njit(inline="always", **{k: v for k, v in _JIT.items() if k != "cache"})
def _parts(r, fn, one):
    """(s, 1/s, log s, dlog s/dr) of raw r; true branches keep inf/NaN semantics exact."""
    if fn == 0:
        return math.exp(r), math.exp(-r), r, one
    if fn == 1:
        z = r + (one + one)
        e = math.exp(-abs(z))
        d = one / (one + e)
        if z >= 0:
            return d, one + e, -math.log1p(e), e * d
        return e * d, (one + e) / e, z - math.log1p(e), d
    t = math.tanh(r)
    v = math.exp(-(one + one) * abs(r))  # 1 - t^2 = 4v / (1 + v)^2: no cancellation as |t| -> 1
    return math.exp(t), math.exp(-t), t, (one + one) * (one + one) * v / ((one + v) * (one + v))


_INLINE = {k: v for k, v in _JIT.items() if k != "cache"}


@njit(inline="always", **_INLINE)
def _forward_task(x, r, b, y, partial, fn, inverse, one, chunk, nch, task):
    i = task // nch
    lo = (task - i * nch) * chunk
    hi = min(lo + chunk, x.shape[1])
    acc = 0.0
    if inverse:
        for j in range(lo, hi):
            s, inv, ls, _ = _parts(r[i, j], fn, one)
            y[i, j] = (x[i, j] - b[i, j]) * inv
            acc += ls
        partial[i, task - i * nch] = -acc
    else:
        for j in range(lo, hi):
            s, inv, ls, _ = _parts(r[i, j], fn, one)
            y[i, j] = x[i, j] * s + b[i, j]
            acc += ls
        partial[i, task - i * nch] = acc


@njit(inline="always", **_INLINE)
def _backward_task(a, r, g, gld, d_in, d_r, d_b, fn, inverse, one, chunk, nch, task):
    i = task // nch
    lo = (task - i * nch) * chunk
    hi = min(lo + chunk, a.shape[1])
    gl = gld[i]
    if inverse:
        for j in range(lo, hi):
            s, inv, ls, dl = _parts(r[i, j], fn, one)
            gj = g[i, j]
            dx = gj * inv
            d_in[i, j] = dx
            d_b[i, j] = -dx
            d_r[i, j] = -(gj * a[i, j] + gl) * dl
    else:
        for j in range(lo, hi):
            s, inv, ls, dl = _parts(r[i, j], fn, one)
            gj = g[i, j]
            gs = gj * s
            d_in[i, j] = gs
            d_r[i, j] = (gs * a[i, j] + gl) * dl  # d_shift = g: not written


# parallel kernels for large inputs; serial twins for small ones, where waking the thread pool
# costs more than the work (and on a busy machine can cost a whole scheduler time slice)
@njit(parallel=True, **_JIT)
def _forward_par(x, r, b, y, partial, fn, inverse, one, chunk):
    nch = partial.shape[1]
    for task in prange(x.shape[0] * nch):
        _forward_task(x, r, b, y, partial, fn, inverse, one, chunk, nch, task)


@njit(**_JIT)
def _forward_ser(x, r, b, y, partial, fn, inverse, one, chunk):
    nch = partial.shape[1]
    for task in range(x.shape[0] * nch):
        _forward_task(x, r, b, y, partial, fn, inverse, one, chunk, nch, task)


@njit(parallel=True, **_JIT)
def _backward_par(a, r, g, gld, d_in, d_r, d_b, fn, inverse, one, chunk):
    nch = max(1, (a.shape[1] + chunk - 1) // chunk)
    for task in prange(a.shape[0] * nch):
        _backward_task(a, r, g, gld, d_in, d_r, d_b, fn, inverse, one, chunk, nch, task)


@njit(**_JIT)
def _backward_ser(a, r, g, gld, d_in, d_r, d_b, fn, inverse, one, chunk):
    nch = max(1, (a.shape[1] + chunk - 1) // chunk)
    for task in range(a.shape[0] * nch):
        _backward_task(a, r, g, gld, d_in, d_r, d_b, fn, inverse, one, chunk, nch, task)


def _check(name, arr, like=None):
    if arr.dtype not in (np.float32, np.float64) or not arr.flags.c_contiguous:
        raise ValueError(f"coupling (numba): {name} must be a C-contiguous float32/float64 array")
    if like is not None and (arr.shape != like.shape or arr.dtype != like.dtype):
        raise ValueError(f"coupling (numba): {name} has shape {arr.shape} {arr.dtype}, expected "
                         f"{like.shape} {like.dtype}")


def coupling_forward(x, r, b, fn, inverse):
    """(B, N) arrays -> ``(y, logdet[B])``."""
    _check("x", x)
    _check("r", r, x)
    _check("b", b, x)
    rows, n = x.shape
    nch = max(1, -(-n // CHUNK))
    y = np.empty_like(x)
    partial = np.empty((rows, nch), np.float64)
    kernel = _forward_par if x.size >= PARALLEL_MIN else _forward_ser
    kernel(x, r, b, y, partial, int(fn), bool(inverse), x.dtype.type(1), CHUNK)
    return y, partial.sum(axis=1).astype(x.dtype)


def coupling_backward(a, r, g, gld, fn, inverse):
    """-> ``(d_in, d_r, d_shift)``; ``a`` is the op's input (forward) or output (inverse);
    ``d_shift`` is None in the forward direction (it is ``g`` itself)."""
    _check("a", a)
    _check("r", r, a)
    _check("g", g, a)
    if gld.shape != (a.shape[0],):
        raise ValueError(f"coupling (numba): g_logdet must have shape ({a.shape[0]},), "
                         f"got {gld.shape}")
    gld = np.ascontiguousarray(gld, dtype=a.dtype)
    d_in, d_r = np.empty_like(a), np.empty_like(a)
    d_b = np.empty_like(a) if inverse else np.empty((0, 0), a.dtype)  # forward: d_shift = g
    kernel = _backward_par if a.size >= PARALLEL_MIN else _backward_ser
    kernel(a, r, g, gld, d_in, d_r, d_b, int(fn), bool(inverse), a.dtype.type(1), CHUNK)
    return d_in, d_r, (d_b if inverse else None)
