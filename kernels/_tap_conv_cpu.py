"""CPU tap convolution: direct AVX-512 kernels, or compiled column packing + BLAS GEMMs.

Implementation ``cpp`` of the ``masked_conv`` / ``causal_conv`` families (contract in
:mod:`gmcore.functional._tap_conv_reference`). Two paths:

* **direct** (float32, stride 1, an x86-64 CPU with AVX-512; ``csrc/masked_conv_direct_cpu.cpp``):
  the whole convolution in 512-bit FMA kernels on OpenMP threads, with no im2col buffer. The
  input gradient of a stride-1 convolution is itself a stride-1 convolution (of ``gy``, with
  the tap shifts negated and each tap's weight transposed), so one kernel serves both, and a
  second one sums the weight gradient. PixelCNN 7x7 mask A, N=32, 64 -> 64, 32x32, forward +
  backward on 2 cores: 43 ms, against 140-150 ms for the path below and 87 ms for torch's
  oneDNN (which multiplies the masked taps by zero); the kernels run at 420-500 GFLOP/s, near
  the two cores' 512-bit FMA peak, where the OpenBLAS in NumPy's wheels picks its AVX2 kernels.
* **packed GEMM** (everything else: float64, strides, other CPUs), described next. The
  ``numba`` implementation (``kernels/numba/masked_conv.py``) is this driver over numba
  packing kernels.

Design (measured by ``benchmarks/bench_masked_conv.py`` on a 2-core CPU): the columns of the
ACTIVE taps only are packed by a compiled kernel into a ``(T*C, nb*Ho*Wo)`` block for a chunk
of ``nb`` images (``CHUNK_BYTES`` bounds its memory), then NumPy's
matmul (multi-threaded OpenBLAS) does the arithmetic. The packing kernels are serial: between
two GEMMs OpenBLAS's workers still spin, and a parallel region then stalls (8x slower forward +
backward measured; see ``csrc/masked_conv_cpu.cpp``).

* forward      ``Y = Wt @ cols``            (O, T*C) @ (T*C, nb*L), L = Ho*Wo
* input grad   ``gcols = Wt.T @ GY``        then the compiled col2im writes gx directly
* weight grad  ``gWt += GY @ cols.T``       (columns re-packed from x; nothing is cached)

``Wt`` holds the active taps' weights, tap-major: (O, T*C). A PixelCNN 7x7 mask "A" keeps 24
of the 49 taps, so every GEMM is half the size of the dense convolution's. The GEMM's batch
is folded into the long side (one large product per chunk), which costs one transpose of the
small (O, nb, L) result into (nb, O, L).
"""
from __future__ import annotations

import numpy as np

__all__ = ["tap_conv2d_forward", "tap_conv2d_input_grad", "tap_conv2d_weight_grad",
           "PackedGemmTapConv", "check_available", "direct_applies"]

# Bytes of one chunk's column block. Few large GEMMs beat many small ones: each OpenBLAS call
# synchronises its threads, which costs most on a busy machine (7x7 mask A, N=32, 64 -> 64,
# 32x32, forward + backward on 2 shared cores: 8 MB 980-1530 ms, 32 MB 730, 64 MB 570-650,
# 128 MB 620-650). The GEMM reuses each column element O times, so a block larger than the
# cache costs little; the packing streams once.
CHUNK_BYTES = 64 << 20


def _as_taps(taps):
    taps = np.ascontiguousarray(np.asarray(taps, dtype=np.int64).reshape(-1, 2))
    if taps.shape[0] == 0:
        raise ValueError("tap convolution: taps must hold at least one (ky, kx) pair")
    return taps


def _tap_weight(w, taps):
    """(O, T*C), tap-major: row block t holds w[:, :, ky_t, kx_t]."""
    o, c = w.shape[:2]
    return np.ascontiguousarray(w[:, :, taps[:, 0], taps[:, 1]].transpose(0, 2, 1)).reshape(
        o, len(taps) * c)


def _flat_geom(geom):
    (sh, sw), (pt, pl), (dh, dw) = geom
    return int(sh), int(sw), int(pt), int(pl), int(dh), int(dw)


class PackedGemmTapConv:
    """The three contract functions over a ``pack``/``unpack`` kernel pair.

    ``pack(x, cols, taps, Ho, Wo, sh, sw, pt, pl, dh, dw)`` fills cols (T*C, N*Ho*Wo) from
    x (N, C, H, W); ``unpack(gcols, gx, taps, Ho, Wo, ...)`` overwrites gx with its adjoint.
    """

    def __init__(self, pack, unpack):
        self.pack, self.unpack = pack, unpack

    @staticmethod
    def _chunk(n, bytes_per_image):
        return max(1, min(n, CHUNK_BYTES // max(1, bytes_per_image)))

    @staticmethod
    def _gy_block(gy, n0, k, buf):
        """gy[n0:n0+k] (k, O, L) as the GEMM operand (O, k*L)."""
        o, L = gy.shape[1], gy.shape[2] * gy.shape[3]
        if k == 1:
            return gy[n0].reshape(o, L)
        out = buf[:o * k * L].reshape(o, k, L)
        np.copyto(out, gy[n0:n0 + k].reshape(k, o, L).transpose(1, 0, 2))
        return out.reshape(o, k * L)

    def tap_conv2d_forward(self, x, w, bias, taps, geom, out_hw):
        x = np.ascontiguousarray(x)
        taps = _as_taps(taps)
        n, c = x.shape[:2]
        o = w.shape[0]
        ho, wo = (int(v) for v in out_hw)
        L, K = ho * wo, len(taps) * c
        wt = _tap_weight(w, taps)
        y = np.empty((n, o, ho, wo), dtype=x.dtype)
        nb = self._chunk(n, K * L * x.itemsize)
        cols_buf = np.empty(K * nb * L, dtype=x.dtype)
        tmp = np.empty(o * nb * L, dtype=x.dtype) if nb > 1 else None
        g = _flat_geom(geom)
        for n0 in range(0, n, nb):
            k = min(nb, n - n0)
            cols = cols_buf[:K * k * L].reshape(K, k * L)
            self.pack(x[n0:n0 + k], cols, taps, ho, wo, *g)
            if k == 1:
                np.matmul(wt, cols, out=y[n0].reshape(o, L))
            else:
                r = np.matmul(wt, cols, out=tmp[:o * k * L].reshape(o, k * L))
                y[n0:n0 + k] = r.reshape(o, k, ho, wo).transpose(1, 0, 2, 3)
        if bias is not None:
            y += np.asarray(bias, dtype=x.dtype).reshape(1, o, 1, 1)
        return y

    def tap_conv2d_input_grad(self, gy, w, taps, geom, in_hw):
        gy = np.ascontiguousarray(gy)
        taps = _as_taps(taps)
        n, o, ho, wo = gy.shape
        c = w.shape[1]
        h, wd = (int(v) for v in in_hw)
        L, K = ho * wo, len(taps) * c
        wt_t = _tap_weight(w, taps).T  # (K, O) view: BLAS reads it transposed
        gx = np.empty((n, c, h, wd), dtype=gy.dtype)
        nb = self._chunk(n, K * L * gy.itemsize)
        cols_buf = np.empty(K * nb * L, dtype=gy.dtype)
        gy_buf = np.empty(o * nb * L, dtype=gy.dtype) if nb > 1 else None
        g = _flat_geom(geom)
        for n0 in range(0, n, nb):
            k = min(nb, n - n0)
            gcols = np.matmul(wt_t, self._gy_block(gy, n0, k, gy_buf),
                              out=cols_buf[:K * k * L].reshape(K, k * L))
            self.unpack(gcols, gx[n0:n0 + k], taps, ho, wo, *g)
        return gx

    def tap_conv2d_weight_grad(self, x, gy, taps, geom, kernel_hw):
        x, gy = np.ascontiguousarray(x), np.ascontiguousarray(gy)
        taps = _as_taps(taps)
        n, c = x.shape[:2]
        _, o, ho, wo = gy.shape
        kh, kw = (int(v) for v in kernel_hw)
        T = len(taps)
        L, K = ho * wo, T * c
        nb = self._chunk(n, K * L * x.itemsize)
        cols_buf = np.empty(K * nb * L, dtype=x.dtype)
        gy_buf = np.empty(o * nb * L, dtype=x.dtype) if nb > 1 else None
        gwt = np.zeros((o, K), dtype=x.dtype)
        part = np.empty((o, K), dtype=x.dtype)
        g = _flat_geom(geom)
        for n0 in range(0, n, nb):
            k = min(nb, n - n0)
            cols = cols_buf[:K * k * L].reshape(K, k * L)
            self.pack(x[n0:n0 + k], cols, taps, ho, wo, *g)
            gyb = self._gy_block(gy, n0, k, gy_buf)
            if n0 == 0:
                np.matmul(gyb, cols.T, out=gwt)
            else:
                gwt += np.matmul(gyb, cols.T, out=part)
        gw = np.zeros((o, c, kh, kw), dtype=x.dtype)
        gw[:, :, taps[:, 0], taps[:, 1]] = gwt.reshape(o, T, c).transpose(0, 2, 1)
        return gw


_impl = None
_C = None
_direct_supported = False  # this CPU and build run the direct kernels (set on first bind)

# The direct kernels serve every call they can (float32, stride 1, AVX-512). Tests switch this
# off to exercise the packed-GEMM path on the same machine.
USE_DIRECT = True


def check_available():
    """Bind the compiled kernels; RuntimeError when gmcore._C lacks them (rebuild)."""
    global _impl, _C, _direct_supported
    if _impl is None:
        from gmcore import _C as compiled
        if not hasattr(compiled, "masked_conv_pack_cpu"):
            raise RuntimeError("gmcore._C was built without the masked_conv kernels (rebuild it)")
        _impl = PackedGemmTapConv(compiled.masked_conv_pack_cpu, compiled.masked_conv_unpack_cpu)
        _C = compiled
        _direct_supported = (hasattr(compiled, "masked_conv_direct_supported")
                             and compiled.masked_conv_direct_supported())
    return _impl


def direct_applies(dtype, geom):
    """Whether the direct AVX-512 kernels run this call (else the packed-GEMM path does)."""
    check_available()
    return (USE_DIRECT and _direct_supported and np.dtype(dtype) == np.float32
            and tuple(geom[0]) == (1, 1))


def _shifts(taps, geom):
    """Per tap, the (dy, dx) at which a stride-1 output pixel reads the input."""
    _, (pt, pl), (dh, dw) = geom
    return np.ascontiguousarray(taps * np.array([dh, dw], dtype=np.int64)
                                - np.array([pt, pl], dtype=np.int64))


def tap_conv2d_forward(x, w, bias, taps, geom, out_hw):
    """See :func:`gmcore.functional._tap_conv_reference.tap_conv2d_forward`."""
    impl = check_available()
    if not direct_applies(x.dtype, geom):
        return impl.tap_conv2d_forward(x, w, bias, taps, geom, out_hw)
    taps = _as_taps(taps)
    o = w.shape[0]
    a = _tap_weight(w, taps).reshape(o, len(taps), w.shape[1])
    y = np.empty((x.shape[0], o) + tuple(int(v) for v in out_hw), dtype=np.float32)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32).reshape(o)
    _C.masked_conv_shift_forward_cpu(np.ascontiguousarray(x), a, _shifts(taps, geom), y, b)
    return y


def tap_conv2d_input_grad(gy, w, taps, geom, in_hw):
    """See :func:`gmcore.functional._tap_conv_reference.tap_conv2d_input_grad`."""
    impl = check_available()
    if not direct_applies(gy.dtype, geom):
        return impl.tap_conv2d_input_grad(gy, w, taps, geom, in_hw)
    taps = _as_taps(taps)
    # gx = the stride-1 tap convolution of gy with every shift negated and w_t transposed
    a = np.ascontiguousarray(w[:, :, taps[:, 0], taps[:, 1]].transpose(1, 2, 0))
    gx = np.empty((gy.shape[0], w.shape[1]) + tuple(int(v) for v in in_hw), dtype=np.float32)
    _C.masked_conv_shift_forward_cpu(np.ascontiguousarray(gy), a, -_shifts(taps, geom), gx)
    return gx


def tap_conv2d_weight_grad(x, gy, taps, geom, kernel_hw):
    """See :func:`gmcore.functional._tap_conv_reference.tap_conv2d_weight_grad`."""
    impl = check_available()
    if not direct_applies(x.dtype, geom):
        return impl.tap_conv2d_weight_grad(x, gy, taps, geom, kernel_hw)
    taps = _as_taps(taps)
    c, o = x.shape[1], gy.shape[1]
    gwt = np.empty((len(taps), c, o), dtype=np.float32)
    _C.masked_conv_shift_weight_grad_cpu(np.ascontiguousarray(x), np.ascontiguousarray(gy),
                                         _shifts(taps, geom), gwt)
    gw = np.zeros((o, c) + tuple(int(v) for v in kernel_hw), dtype=np.float32)
    gw[:, :, taps[:, 0], taps[:, 1]] = gwt.transpose(2, 1, 0)
    return gw
