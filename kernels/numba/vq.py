"""Vector quantization on the CPU with numba: nearest codebook row, EMA cluster statistics.

Nearest code (the math of ``csrc/vq.h``): score(z, c) = ||c||^2 + sum_d z_d * (-2 c_d), i.e. the
squared distance minus the row's own ||z||^2 (the same for every code, so the argmin is
unchanged). The launcher computes the norms and the codebook scaled by -2 (exact) once; each
parallel work item takes four rows and streams the codebook, keeping running minima in scalars
(strict ``<`` in increasing index, so ties keep the lowest index; NaN never wins). A row with a NaN
or +-inf gets -1, as does a row no code's score beats +inf for; a code with a NaN or inf is never
chosen (its scores are NaN or +inf): the rules of ``csrc/vq.h``. Extra memory: K*D + K; never N x K. (A GEMM-style register-blocked tile, as in the C++
kernel, did not stay in registers under numba: 4-10x slower than this form.)

EMA statistics: ``counts[c] = #{i: idx_i = c}``, ``sums[c] = sum of z_i over those rows``, in the
dtype of ``z``; parallel over feature columns so each sum is accumulated by one thread in row
order (deterministic).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["vq_nearest", "vq_ema_stats"]

# contract: FMAs; reassoc: lets the dot products along D vectorise.  No nnan/ninf: NaN scores
# must lose every comparison.
_FLAGS = {"contract", "nsz", "arcp", "reassoc"}


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _score(z, i, w2, c, cn):
    s = z.dtype.type(0)
    for dd in range(z.shape[1]):
        s += z[i, dd] * w2[c, dd]
    return s + cn[c]


@njit(cache=True, inline="always")
def _row_finite(z, i):
    # |NaN| < inf and |inf| < inf are false; the kernel's _FLAGS (inlined into it) keep them so
    for dd in range(z.shape[1]):
        if not np.abs(z[i, dd]) < np.inf:
            return False
    return True


@njit(parallel=True, cache=True, fastmath=_FLAGS)
def _nearest_kernel(z, w2, cn, out):
    # four rows share each load of a code row (w2 = -2 codebook); one pass over the codebook per
    # four rows, running minima in scalars; strict < in increasing code order keeps ties low.
    n, d = z.shape
    k = w2.shape[0]
    blocks = (n + 3) // 4
    for b in prange(blocks):
        i0 = b * 4
        if i0 + 4 <= n:
            b0 = b1 = b2 = b3 = z.dtype.type(np.inf)
            k0 = k1 = k2 = k3 = -1  # stays -1 when no score beats +inf
            for c in range(k):
                s0 = s1 = s2 = s3 = z.dtype.type(0)
                for dd in range(d):
                    wv = w2[c, dd]
                    s0 += z[i0, dd] * wv
                    s1 += z[i0 + 1, dd] * wv
                    s2 += z[i0 + 2, dd] * wv
                    s3 += z[i0 + 3, dd] * wv
                cc = cn[c]
                s0 += cc
                s1 += cc
                s2 += cc
                s3 += cc
                if s0 < b0:
                    b0, k0 = s0, c
                if s1 < b1:
                    b1, k1 = s1, c
                if s2 < b2:
                    b2, k2 = s2, c
                if s3 < b3:
                    b3, k3 = s3, c
            out[i0], out[i0 + 1], out[i0 + 2], out[i0 + 3] = k0, k1, k2, k3
            for i in range(i0, i0 + 4):
                if not _row_finite(z, i):
                    out[i] = -1
        else:
            for i in range(i0, n):
                bv = z.dtype.type(np.inf)
                bk = -1
                for c in range(k):
                    s = _score(z, i, w2, c, cn)
                    if s < bv:
                        bv, bk = s, c
                out[i] = bk if _row_finite(z, i) else -1


@njit(parallel=True, cache=True)
def _ema_stats_kernel(z, idx, counts, sums):
    n, d = z.shape
    k = counts.shape[0]
    exact = np.zeros(k, dtype=np.int64)  # float32 counts stop being exact at 2^24
    for i in range(n):
        exact[idx[i]] += 1
    for c in range(k):
        counts[c] = exact[c]
    cols = 16
    chunks = (d + cols - 1) // cols
    for cc in prange(chunks):
        j0 = cc * cols
        j1 = min(d, j0 + cols)
        for i in range(n):
            c = idx[i]
            for j in range(j0, j1):
                sums[c, j] += z[i, j]


def vq_nearest(z, codebook):
    """int64 (N,) index of the nearest row of ``codebook`` (K, D) for each row of ``z`` (N, D)."""
    out = np.empty(z.shape[0], dtype=np.int64)
    if z.shape[0] == 0:
        return out
    codebook = np.ascontiguousarray(codebook)
    cn = np.einsum("kd,kd->k", codebook, codebook)
    _nearest_kernel(np.ascontiguousarray(z), codebook * -2, cn, out)
    return out


def vq_ema_stats(z, indices, num_codes):
    """(counts (K,), sums (K, D)) of the rows of ``z`` grouped by ``indices``, in z's dtype."""
    counts = np.zeros(num_codes, dtype=z.dtype)
    sums = np.zeros((num_codes, z.shape[1]), dtype=z.dtype)
    _ema_stats_kernel(np.ascontiguousarray(z), np.ascontiguousarray(indices, dtype=np.int64), counts, sums)
    return counts, sums
