"""Vector quantization in Triton: nearest codebook row, EMA cluster statistics.

Nearest code: a program owns ``BLOCK_N`` rows and streams the codebook in tiles of ``BLOCK_K``
codes. Per tile it forms the (BLOCK_N, BLOCK_K) block of ``z.c`` (``tl.dot`` in IEEE float32 --
not TF32, whose 10-bit mantissa would change the winners -- or a broadcast-multiply-sum for
float64), the scores ``||c||^2 - 2 z.c`` with the norms precomputed by ``_cnorm_kernel``, and
folds the tile's minimum (``tl.argmin`` with ties to the left) into a running (best, index) with a
strict ``<``: ties go to the lowest index across tiles too. NaN scores are replaced by +inf (they
never win, so a code with a NaN or inf is never chosen); the running index starts at -1 and stays
there when no score beats +inf, and a row with a NaN or +-inf (one pass over the row block before
the codebook loop) gets -1: the rules of ``csrc/vq.h``. Only the tile exists: no N x K matrix.

EMA statistics: atomic adds of ones into ``counts`` and of the rows into ``sums``; atomics make
the float summation order (and so the last bits) vary between runs.

Launchers take NumPy arrays under ``TRITON_INTERPRET=1`` and CuPy arrays on a GPU.
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from ...backend import xp_of
from .._launch import cdiv, tl_arg

__all__ = ["vq_nearest", "vq_ema_stats", "SM90_KERNELS"]


@triton.jit
def _cnorm_kernel(c_ptr, cn_ptr, K, D, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    codes = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = codes < K
    acc = tl.zeros([BLOCK_K], dtype=c_ptr.dtype.element_ty)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        m = kmask[:, None] & (cols[None, :] < D)
        c = tl.load(c_ptr + codes[:, None].to(tl.int64) * D + cols[None, :], mask=m, other=0.0)
        acc += tl.sum(c * c, axis=1)
    tl.store(cn_ptr + codes, acc, mask=kmask)


@triton.jit
def _nearest_kernel(z_ptr, c_ptr, cn_ptr, out_ptr, N, K, D, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    BLOCK_D: tl.constexpr, USE_DOT: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    dt = z_ptr.dtype.element_ty
    best = tl.full([BLOCK_N], float("inf"), dt)
    best_k = tl.full([BLOCK_N], -1, tl.int64)
    # rows with a NaN or +-inf have no nearest code: count their non-finite entries first
    nonfinite = tl.zeros([BLOCK_N], dtype=tl.int32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        zt = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + cols[None, :],
                     mask=rmask[:, None] & (cols[None, :] < D), other=0.0)
        nonfinite += tl.sum(tl.where(tl.abs(zt) < float("inf"), 0, 1), axis=1)
    for k0 in range(0, K, BLOCK_K):
        codes = k0 + tl.arange(0, BLOCK_K)
        kmask = codes < K
        dots = tl.zeros([BLOCK_N, BLOCK_K], dtype=dt)
        for d0 in range(0, D, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            dmask = cols < D
            zt = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + cols[None, :],
                         mask=rmask[:, None] & dmask[None, :], other=0.0)
            ct = tl.load(c_ptr + codes[:, None].to(tl.int64) * D + cols[None, :],
                         mask=kmask[:, None] & dmask[None, :], other=0.0)
            if USE_DOT:
                dots += tl.dot(zt, tl.trans(ct), input_precision="ieee")
            else:
                dots += tl.sum(zt[:, None, :] * ct[None, :, :], axis=2)
        cn = tl.load(cn_ptr + codes, mask=kmask, other=0.0)
        score = cn[None, :] - 2.0 * dots
        score = tl.where(kmask[None, :] & (score == score), score, float("inf"))
        tile_min = tl.min(score, axis=1)
        tile_arg = tl.argmin(score, axis=1, tie_break_left=True).to(tl.int64) + k0
        win = tile_min < best
        best = tl.where(win, tile_min, best)
        best_k = tl.where(win, tile_arg, best_k)
    best_k = tl.where(nonfinite == 0, best_k, -1)
    tl.store(out_ptr + rows, best_k, mask=rmask)


@triton.jit
def _ema_stats_kernel(z_ptr, idx_ptr, counts_ptr, sums_ptr, N, D, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    idx = tl.load(idx_ptr + rows, mask=rmask, other=0)
    ones = tl.full([BLOCK_N], 1.0, counts_ptr.dtype.element_ty)
    tl.atomic_add(counts_ptr + idx, ones, mask=rmask)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        m = rmask[:, None] & (cols[None, :] < D)
        v = tl.load(z_ptr + rows[:, None].to(tl.int64) * D + cols[None, :], mask=m, other=0.0)
        tl.atomic_add(sums_ptr + idx[:, None] * D + cols[None, :], v, mask=m)


def _block_d(d):
    return max(16, min(64, triton.next_power_of_2(max(int(d), 1))))


def vq_nearest(z, codebook):
    """int64 (N,) index of the nearest row of ``codebook`` (K, D) for each row of ``z`` (N, D)."""
    xp = xp_of(z)
    n, d = z.shape
    k = codebook.shape[0]
    out = xp.zeros(n, dtype=xp.int64)
    if n == 0:
        return out
    z = xp.ascontiguousarray(z)
    codebook = xp.ascontiguousarray(codebook)
    cn = xp.empty(k, dtype=z.dtype)
    bd = _block_d(d)
    _cnorm_kernel[(cdiv(k, 64),)](tl_arg(codebook), tl_arg(cn), int(k), int(d), BLOCK_K=64, BLOCK_D=bd)
    if z.dtype == np.float32:
        bn, bk, use_dot = 64, 64, True
    else:  # float64: no tensor-core dot; a broadcast product in smaller tiles
        bn, bk, bd, use_dot = 32, 32, 16, False
    _nearest_kernel[(cdiv(n, bn),)](tl_arg(z), tl_arg(codebook), tl_arg(cn), tl_arg(out), int(n), int(k), int(d),
                                    BLOCK_N=bn, BLOCK_K=bk, BLOCK_D=bd, USE_DOT=use_dot)
    return out


def vq_ema_stats(z, indices, num_codes):
    """(counts (K,), sums (K, D)) of the rows of ``z`` grouped by int64 ``indices``, in z's dtype."""
    xp = xp_of(z)
    n, d = z.shape
    counts = xp.zeros(num_codes, dtype=z.dtype)
    sums = xp.zeros((num_codes, d), dtype=z.dtype)
    if n == 0:
        return counts, sums
    bn = 128
    _ema_stats_kernel[(cdiv(n, bn),)](tl_arg(xp.ascontiguousarray(z)), tl_arg(xp.ascontiguousarray(indices)),
                                      tl_arg(counts), tl_arg(sums), int(n), int(d), BLOCK_N=bn,
                                      BLOCK_D=_block_d(d))
    return counts, sums


_SIG_NEAREST = {"z_ptr": "*{t}", "c_ptr": "*{t}", "cn_ptr": "*{t}", "out_ptr": "*i64", "N": "i32", "K": "i32",
                "D": "i32"}
_SIG_EMA = {"z_ptr": "*{t}", "idx_ptr": "*i64", "counts_ptr": "*{t}", "sums_ptr": "*{t}", "N": "i32", "D": "i32"}


def _sig(template, t):
    return {k: v.format(t=t) for k, v in template.items()}


SM90_KERNELS = [
    (_cnorm_kernel, {"c_ptr": "*fp32", "cn_ptr": "*fp32", "K": "i32", "D": "i32"}, {"BLOCK_K": 64, "BLOCK_D": 64}),
    (_nearest_kernel, _sig(_SIG_NEAREST, "fp32"), {"BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_D": 64, "USE_DOT": True}),
    (_nearest_kernel, _sig(_SIG_NEAREST, "fp64"), {"BLOCK_N": 32, "BLOCK_K": 32, "BLOCK_D": 16, "USE_DOT": False}),
    (_ema_stats_kernel, _sig(_SIG_EMA, "fp32"), {"BLOCK_N": 128, "BLOCK_D": 64}),
    (_ema_stats_kernel, _sig(_SIG_EMA, "fp64"), {"BLOCK_N": 128, "BLOCK_D": 64}),
]
