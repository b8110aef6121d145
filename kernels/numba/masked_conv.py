"""Tap convolution (families ``masked_conv`` / ``causal_conv``): numba packing kernels (CPU).

The same design as ``csrc/masked_conv_cpu.cpp``: ``pack`` writes the columns of the ACTIVE taps
into a ``(T*C, N*Ho*Wo)`` block (row t*C + c = tap t of channel c for every output position),
``unpack`` is its adjoint (col2im: each (n, c) input plane in turn receives every tap's column
rows). Both are serial on purpose, as the C++ ones (the reason and the measurement are in
``csrc/masked_conv_cpu.cpp``: OpenBLAS's spinning workers stall a parallel region run between
two GEMMs, 3x slower here with numba's threads). The GEMMs and the batch chunking run in
:class:`gmcore.kernels._tap_conv_cpu.PackedGemmTapConv` through NumPy's BLAS (numba's
``np.dot`` would need scipy). Pure data movement: the dtype of the arrays is kept exactly.
"""

from __future__ import annotations

from numba import njit

from gmcore.kernels._tap_conv_cpu import PackedGemmTapConv

__all__ = ["tap_conv2d_forward", "tap_conv2d_input_grad", "tap_conv2d_weight_grad", "pack",
           "unpack"]


@njit(cache=True, inline="always")
def _valid_outputs(out, size, stride, off):
    """Output columns [lo, hi) whose input column ox*stride + off lies in [0, size)."""
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    hi = 0 if size - 1 - off < 0 else (size - 1 - off) // stride + 1
    lo = min(lo, out)
    hi = max(lo, min(hi, out))
    return lo, hi


@njit(cache=True)
def _pack(x, cols, taps, Ho, Wo, sh, sw, pt, pl, dh, dw):
    N, C, H, W = x.shape
    T = taps.shape[0]
    L = Ho * Wo
    for item in range(T * C * N):
        t = item // (C * N)
        c = (item // N) % C
        n = item % N
        ky = taps[t, 0]
        kx = taps[t, 1]
        off = kx * dw - pl
        lo, hi = _valid_outputs(Wo, W, sw, off)
        row = cols[t * C + c]
        base = n * L
        for oy in range(Ho):
            d0 = base + oy * Wo
            iy = oy * sh - pt + ky * dh
            if iy < 0 or iy >= H:
                row[d0:d0 + Wo] = 0
                continue
            # slices, not per-element indices: numba then copies without the negative-index
            # wraparound check that blocks vectorisation
            row[d0:d0 + lo] = 0
            if hi > lo and sw == 1:
                row[d0 + lo:d0 + hi] = x[n, c, iy, lo + off:hi + off]
            elif hi > lo:
                row[d0 + lo:d0 + hi] = x[n, c, iy, lo * sw + off:(hi - 1) * sw + off + 1:sw]
            row[d0 + hi:d0 + Wo] = 0


@njit(cache=True)
def _unpack(gcols, gx, taps, Ho, Wo, sh, sw, pt, pl, dh, dw):
    N, C, H, W = gx.shape
    T = taps.shape[0]
    L = Ho * Wo
    for item in range(N * C):
        n = item // C
        c = item % C
        plane = gx[n, c]
        plane[:, :] = 0
        for t in range(T):
            ky = taps[t, 0]
            kx = taps[t, 1]
            off = kx * dw - pl
            lo, hi = _valid_outputs(Wo, W, sw, off)
            row = gcols[t * C + c]
            base = n * L
            for oy in range(Ho):
                iy = oy * sh - pt + ky * dh
                if iy < 0 or iy >= H or hi <= lo:
                    continue
                s0 = base + oy * Wo
                # one tap never reaches an input position twice: += is the scatter-add
                if sw == 1:
                    dst = plane[iy, lo + off:hi + off]
                else:
                    dst = plane[iy, lo * sw + off:(hi - 1) * sw + off + 1:sw]
                src = row[s0 + lo:s0 + hi]
                for q in range(hi - lo):
                    dst[q] += src[q]


def pack(x, cols, taps, Ho, Wo, sh, sw, pt, pl, dh, dw):
    """x (N, C, H, W) -> cols (T*C, N*Ho*Wo), in place."""
    _pack(x, cols, taps, Ho, Wo, sh, sw, pt, pl, dh, dw)


def unpack(gcols, gx, taps, Ho, Wo, sh, sw, pt, pl, dh, dw):
    """gcols (T*C, N*Ho*Wo) -> gx (N, C, H, W), overwritten."""
    _unpack(gcols, gx, taps, Ho, Wo, sh, sw, pt, pl, dh, dw)


_impl = PackedGemmTapConv(pack, unpack)
tap_conv2d_forward = _impl.tap_conv2d_forward
tap_conv2d_input_grad = _impl.tap_conv2d_input_grad
tap_conv2d_weight_grad = _impl.tap_conv2d_weight_grad
