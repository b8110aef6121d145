"""WaveNet gated activation (forward + backward): numba kernels (CPU).

Same math as ``csrc/wavenet.h`` (derivation there) and the same work split as
``csrc/wavenet_cpu.cpp``: ``prange`` over rows (one example n, one gate channel g), an inner
loop over the row's contiguous time steps. Forward, with z1 = z[n, g] + bias[g] (+ cond) and
z2 = z[n, G+g] + bias[G+g] (+ cond): t = tanh(z1), s = sigmoid(z2), a = t s, and (t, s) are
stored in ts, shaped like z. Backward: dz1 = ga s (1 - t^2), dz2 = ga t s (1 - s).

Arithmetic runs in float64 for both float32 and float64 arrays (scalar code; float32 results
are then correctly rounded); outputs take the input dtype. The fastmath flags leave out
``nnan``/``ninf``: inf and NaN keep their IEEE meaning.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["gate_forward", "gate_backward"]

_FM = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(fastmath=_FM, cache=True, inline="always")
def _sigmoid(x):
    e = math.exp(-abs(x))  # never exp of a large positive number
    r = 1.0 / (1.0 + e)
    return r if x >= 0.0 else e * r


@njit(fastmath=_FM, cache=True, inline="always")
def _fwd_row(row, z, bias, cond, has_cond, a, ts):
    G = a.shape[1]
    n = row // G
    g = row - n * G
    b1 = np.float64(bias[g])
    b2 = np.float64(bias[G + g])
    for i in range(z.shape[2]):
        z1 = np.float64(z[n, g, i]) + b1
        z2 = np.float64(z[n, G + g, i]) + b2
        if has_cond:
            z1 += cond[n, g, i]
            z2 += cond[n, G + g, i]
        t = math.tanh(z1)
        s = _sigmoid(z2)
        ts[n, g, i] = t
        ts[n, G + g, i] = s
        a[n, g, i] = t * s


@njit(fastmath=_FM, cache=True, inline="always")
def _bwd_row(row, ts, ga, dz):
    G = ga.shape[1]
    n = row // G
    g = row - n * G
    for i in range(ga.shape[2]):
        t = np.float64(ts[n, g, i])
        s = np.float64(ts[n, G + g, i])
        gs = ga[n, g, i] * s
        dz[n, g, i] = gs * (1.0 - t * t)
        dz[n, G + g, i] = gs * t * (1.0 - s)


@njit(parallel=True, fastmath=_FM, cache=True)
def _fwd_parallel(z, bias, cond, has_cond, a, ts):
    for row in prange(a.shape[0] * a.shape[1]):
        _fwd_row(row, z, bias, cond, has_cond, a, ts)


@njit(fastmath=_FM, cache=True)
def _fwd_serial(z, bias, cond, has_cond, a, ts):
    for row in range(a.shape[0] * a.shape[1]):
        _fwd_row(row, z, bias, cond, has_cond, a, ts)


@njit(parallel=True, fastmath=_FM, cache=True)
def _bwd_parallel(ts, ga, dz):
    for row in prange(ga.shape[0] * ga.shape[1]):
        _bwd_row(row, ts, ga, dz)


@njit(fastmath=_FM, cache=True)
def _bwd_serial(ts, ga, dz):
    for row in range(ga.shape[0] * ga.shape[1]):
        _bwd_row(row, ts, ga, dz)


# Below this many elements the thread pool's wake-up costs more than the work (one-step
# generation calls these with L = 1).
_PARALLEL_MIN = 1 << 15


def _check(name, arr, dtype, shape):
    if arr.dtype != dtype or arr.shape != shape:
        raise ValueError(f"wavenet numba kernel: {name} must be {dtype} of shape {shape}, got "
                         f"{arr.dtype} {arr.shape}")


def gate_forward(z, bias, cond=None):
    """z (N, 2G, L), bias (2G,), cond (N, 2G, L) or None -> (a (N, G, L), ts (N, 2G, L))."""
    if z.ndim != 3 or z.shape[1] % 2 or z.dtype not in (np.float32, np.float64):
        raise ValueError(f"wavenet numba kernel: z must be float32/float64 (N, 2G, L), got "
                         f"{z.dtype} {z.shape}")
    N, G2, L = z.shape
    G = G2 // 2
    _check("bias", bias, z.dtype, (G2,))
    if cond is not None:
        _check("cond", cond, z.dtype, z.shape)
    a = np.empty((N, G, L), dtype=z.dtype)
    ts = np.empty_like(z)
    has_cond = cond is not None
    c = np.ascontiguousarray(cond) if has_cond else np.empty((0, 0, 0), dtype=z.dtype)
    run = _fwd_parallel if N * G * L >= _PARALLEL_MIN else _fwd_serial
    run(np.ascontiguousarray(z), np.ascontiguousarray(bias), c, has_cond, a, ts)
    return a, ts


def gate_backward(ts, ga):
    """ts (N, 2G, L) saved by :func:`gate_forward`, ga (N, G, L) = dL/da -> dz (N, 2G, L)."""
    if ts.ndim != 3 or ts.shape[1] % 2 or ts.dtype not in (np.float32, np.float64):
        raise ValueError(f"wavenet numba kernel: ts must be float32/float64 (N, 2G, L), got "
                         f"{ts.dtype} {ts.shape}")
    N, G2, L = ts.shape
    _check("ga", ga, ts.dtype, (N, G2 // 2, L))
    dz = np.empty_like(ts)
    run = _bwd_parallel if N * G2 * L >= 2 * _PARALLEL_MIN else _bwd_serial
    run(np.ascontiguousarray(ts), np.ascontiguousarray(ga), dz)
    return dz
