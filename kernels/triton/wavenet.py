"""WaveNet gated activation (forward + backward) in Triton.

A program owns ``BLOCK`` consecutive elements of the flattened gate output a (N, G, L)
(grid: cdiv(N*G*L, BLOCK)); element (n, g, t) reads z at rows g (filter half) and G+g (gate
half) of example n, so consecutive lanes read consecutive time steps: coalesced. The math is
``csrc/wavenet.h`` (derivation there): t = tanh(z1), s = sigmoid(z2), a = t s with
z = conv + bias (+ cond); backward dz1 = ga s (1 - t^2), dz2 = ga t s (1 - s).

``tl`` has exp and log but no tanh/expm1: tanh|x| = -m / (2 + m) with m = expm1(-2|x|), and
expm1 from exp/log with Kahan's correction (``(u - 1) * x / log(u)``, a few ulps), so float64
stays float64-accurate and there is no cancellation near 0. sigmoid uses e = exp(-|x|) only.
Offsets are int64 (sizes may pass 2^31).

Launchers take NumPy arrays under ``TRITON_INTERPRET=1`` and CuPy arrays on a GPU.
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from ._math import sigmoid, tanh
from ...backend import xp_of
from .._launch import cdiv, interpreting, tl_arg

__all__ = ["gate_forward", "gate_backward", "SM90_KERNELS"]


@triton.jit
def _gate_forward_kernel(z_ptr, b_ptr, c_ptr, a_ptr, ts_ptr, G, L, total,
                         HAS_COND: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    row = offs // L  # int64 throughout: offs is int64 and leads every product
    i = offs - row * L
    n = row // G
    g = row - n * G
    o1 = (n * 2 * G + g) * L + i
    o2 = ((n * 2 + 1) * G + g) * L + i
    z1 = tl.load(z_ptr + o1, mask=mask, other=0.0) + tl.load(b_ptr + g, mask=mask, other=0.0)
    z2 = tl.load(z_ptr + o2, mask=mask, other=0.0) + tl.load(b_ptr + g + G, mask=mask, other=0.0)
    if HAS_COND:
        z1 += tl.load(c_ptr + o1, mask=mask, other=0.0)
        z2 += tl.load(c_ptr + o2, mask=mask, other=0.0)
    t = tanh(z1)
    s = sigmoid(z2)
    tl.store(ts_ptr + o1, t, mask=mask)
    tl.store(ts_ptr + o2, s, mask=mask)
    tl.store(a_ptr + offs, t * s, mask=mask)


@triton.jit
def _gate_backward_kernel(ts_ptr, ga_ptr, dz_ptr, G, L, total, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    row = offs // L  # int64 throughout: offs is int64 and leads every product
    i = offs - row * L
    n = row // G
    g = row - n * G
    o1 = (n * 2 * G + g) * L + i
    o2 = ((n * 2 + 1) * G + g) * L + i
    t = tl.load(ts_ptr + o1, mask=mask, other=0.0)
    s = tl.load(ts_ptr + o2, mask=mask, other=0.0)
    gs = tl.load(ga_ptr + offs, mask=mask, other=0.0) * s
    tl.store(dz_ptr + o1, gs * (1.0 - t * t), mask=mask)
    tl.store(dz_ptr + o2, gs * t * (1.0 - s), mask=mask)


def _block(total):
    # the interpreter pays per program: few, wide programs; on a GPU 1024 lanes per program
    if interpreting():
        return min(8192, triton.next_power_of_2(max(int(total), 1)))
    return 1024


def gate_forward(z, bias, cond=None, block=None):
    """z (N, 2G, L), bias (2G,), cond (N, 2G, L) or None -> (a (N, G, L), ts (N, 2G, L)).

    NumPy arrays under the interpreter, CuPy arrays on a GPU (current stream of the device).
    """
    xp = xp_of(z)
    if z.ndim != 3 or z.shape[1] % 2 or z.dtype not in (np.float32, np.float64):
        raise ValueError(f"wavenet triton kernel: z must be float32/float64 (N, 2G, L), got "
                         f"{z.dtype} {tuple(z.shape)}")
    N, G2, L = (int(s) for s in z.shape)
    G = G2 // 2
    if bias.dtype != z.dtype or tuple(bias.shape) != (G2,):
        raise ValueError(f"wavenet triton kernel: bias must be {z.dtype} of shape ({G2},)")
    if cond is not None and (cond.dtype != z.dtype or tuple(cond.shape) != tuple(z.shape)):
        raise ValueError("wavenet triton kernel: cond must match z's dtype and shape")
    a = xp.empty((N, G, L), dtype=z.dtype)
    ts = xp.empty_like(z)
    total = N * G * L
    if total == 0:
        return a, ts
    block = block or _block(total)
    zc = xp.ascontiguousarray(z)
    cc = xp.ascontiguousarray(cond) if cond is not None else zc  # unused pointer without cond
    _gate_forward_kernel[(cdiv(total, block),)](
        tl_arg(zc), tl_arg(xp.ascontiguousarray(bias)), tl_arg(cc), tl_arg(a), tl_arg(ts),
        G, L, total, HAS_COND=cond is not None, BLOCK=block)
    return a, ts


def gate_backward(ts, ga, block=None):
    """ts (N, 2G, L) saved by :func:`gate_forward`, ga (N, G, L) = dL/da -> dz (N, 2G, L)."""
    xp = xp_of(ts)
    if ts.ndim != 3 or ts.shape[1] % 2 or ts.dtype not in (np.float32, np.float64):
        raise ValueError(f"wavenet triton kernel: ts must be float32/float64 (N, 2G, L), got "
                         f"{ts.dtype} {tuple(ts.shape)}")
    N, G2, L = (int(s) for s in ts.shape)
    G = G2 // 2
    if ga.dtype != ts.dtype or tuple(ga.shape) != (N, G, L):
        raise ValueError(f"wavenet triton kernel: ga must be {ts.dtype} of shape ({N}, {G}, {L})")
    dz = xp.empty_like(ts)
    total = N * G * L
    if total == 0:
        return dz
    block = block or _block(total)
    _gate_backward_kernel[(cdiv(total, block),)](
        tl_arg(xp.ascontiguousarray(ts)), tl_arg(xp.ascontiguousarray(ga)), tl_arg(dz),
        G, L, total, BLOCK=block)
    return dz


def _fwd_sig(dt):
    return {"z_ptr": f"*{dt}", "b_ptr": f"*{dt}", "c_ptr": f"*{dt}", "a_ptr": f"*{dt}",
            "ts_ptr": f"*{dt}", "G": "i32", "L": "i32", "total": "i64"}


def _bwd_sig(dt):
    return {"ts_ptr": f"*{dt}", "ga_ptr": f"*{dt}", "dz_ptr": f"*{dt}", "G": "i32", "L": "i32",
            "total": "i64"}


SM90_KERNELS = [
    (_gate_forward_kernel, _fwd_sig("fp32"), {"HAS_COND": True, "BLOCK": 1024}),
    (_gate_forward_kernel, _fwd_sig("fp32"), {"HAS_COND": False, "BLOCK": 1024}),
    (_gate_forward_kernel, _fwd_sig("fp64"), {"HAS_COND": True, "BLOCK": 1024}),
    (_gate_backward_kernel, _bwd_sig("fp32"), {"BLOCK": 1024}),
    (_gate_backward_kernel, _bwd_sig("fp64"), {"BLOCK": 1024}),
]
