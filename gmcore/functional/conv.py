"""Plain 2-D convolutions on the CPU: compiled im2col/col2im, and stride 2 as phase planes.

``gmcore.nn.functional.conv``'s three linear maps (forward, input gradient = transposed
convolution, weight gradient) call :func:`conv2d_raw`, :func:`conv_transpose_raw` and
:func:`conv_weight_raw` here. :func:`route` picks, per call, one of:

* ``"phase"`` (float32, stride 2, dilation 1, even kernel sizes, where masked_conv's direct
  AVX-512 tap kernels run). A stride-2 convolution reads input row ``2*oy + ky``; with
  ``ky = 2u + a`` (``a`` the phase) that is row ``oy + u`` of phase plane ``a``. After a
  space-to-depth copy of the padded input, ``xs[n, 4c + 2a + b, i, j] =
  x_pad[n, c, 2i + a, 2j + b]``, the convolution is a stride-1 ``(ceil(kh/2), ceil(kw/2))``
  convolution of ``xs`` with ``ws[o, 4c + 2a + b, u, v] = w[o, c, 2u + a, 2v + b]`` (0 where
  ``2u + a >= kh``)::

      y = conv1(s2d(x), ws)    gx = crop(d2s(conv1^T(gy, ws)))    gw = gather(wgrad1(s2d(x), gy))

  A 4x4 kernel becomes 2x2 over 4C channels with no zero taps (DCGAN's convs); a 3x3 one has
  7 of 16 (phase, tap) pairs zero, so odd kernels take "cols" (unmeasured on AVX-512). The
  stride-1 maps run on the direct kernels (``csrc/masked_conv_direct_cpu.cpp``), which have no
  stride-2 form of their own.
* ``"cols"`` (float32/float64, groups 1, everywhere else on the CPU): the im2col layout of
  ``_conv_kernels`` built and scattered back by compiled loops (``csrc/conv_cpu.cpp``: no
  padded buffer, no transposes), BLAS GEMMs through NumPy, and the weight gradient's GEMM in
  the orientation OpenBLAS runs fastest (see :func:`cols_conv_weight`).
* ``None``: ``gmcore.nn.functional._conv_kernels`` (NumPy im2col + BLAS, the reference; also
  groups > 1, 1x1 kernels, CuPy arrays, and stride 1 where the direct tap kernels apply).

=========== ====== =====================================================================
name        device where
=========== ====== =====================================================================
cpp         cpu    this module: the "phase" and "cols" routes (``gmcore._C``)
reference   cpu    ``_conv_kernels`` (NumPy im2col + BLAS)
reference   cuda   ``_conv_kernels`` on CuPy (im2col + cuBLAS)
=========== ====== =====================================================================

Measured on an AVX2-only 2-core machine (no direct kernels there), the phase route over the
packed-GEMM tap path was slower than "cols", so it is not taken there (:data:`USE_PACKED`).
Every map's adjoints are the other two, so gradients of every order use the same kernels.
``GMCORE_KERNELS=conv=reference`` selects ``_conv_kernels`` everywhere.
"""
from __future__ import annotations

import numpy as np

from .. import dispatch

__all__ = ["route", "applies", "conv2d_raw", "conv_transpose_raw", "conv_weight_raw", "columns",
           "space_to_depth", "depth_to_space", "phase_weight", "phase_weight_adjoint", "USE_PACKED"]

FAMILY = "conv"

# Take the phase route for every float32 stride-2 convolution, also where only the packed-GEMM
# tap path runs (no AVX-512) and for odd kernels: off, as it measured slower than "cols" on an
# AVX2 machine; tests switch it on to check the decomposition on any CPU.
USE_PACKED = False


# ---- the phase decomposition (NumPy arrays) ----------------------------------------------------

def _phase_dims(kernel_hw, out_hw):
    (kh, kw), (ho, wo) = kernel_hw, out_hw
    u, v = -(-kh // 2), -(-kw // 2)
    return u, v, ho + u - 1, wo + v - 1  # phase kernel (U, V) and phase plane size (Hs, Ws)


def space_to_depth(x, pads, hs, ws):
    """``xs[n, 4c + 2a + b, i, j] = x_pad[n, c, 2i + a, 2j + b]`` for i < hs, j < ws (0 outside)."""
    n, c, h, w = x.shape
    pt, pl = pads
    xp_ = np.zeros((n, c, 2 * hs, 2 * ws), dtype=x.dtype)
    hv, wv = max(0, min(h, 2 * hs - pt)), max(0, min(w, 2 * ws - pl))
    xp_[:, :, pt:pt + hv, pl:pl + wv] = x[:, :, :hv, :wv]
    xs = xp_.reshape(n, c, hs, 2, ws, 2).transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(xs).reshape(n, 4 * c, hs, ws)


def depth_to_space(gs, pads, in_hw):
    """The adjoint of :func:`space_to_depth`: ``(N, 4C, Hs, Ws) -> (N, C, H, W)``."""
    n, c4, hs, ws = gs.shape
    c, (pt, pl), (h, w) = c4 // 4, pads, in_hw
    g = gs.reshape(n, c, 2, 2, hs, ws).transpose(0, 1, 4, 2, 5, 3).reshape(n, c, 2 * hs, 2 * ws)
    out = np.zeros((n, c, h, w), dtype=gs.dtype)
    hv, wv = max(0, min(h, 2 * hs - pt)), max(0, min(w, 2 * ws - pl))
    out[:, :, :hv, :wv] = g[:, :, pt:pt + hv, pl:pl + wv]
    return out


def phase_weight(w):
    """``ws[o, 4c + 2a + b, u, v] = w[o, c, 2u + a, 2v + b]`` (0 past the kernel)."""
    o, c, kh, kw = w.shape
    u, v = -(-kh // 2), -(-kw // 2)
    wp = np.zeros((o, c, 2 * u, 2 * v), dtype=w.dtype)
    wp[:, :, :kh, :kw] = w
    return np.ascontiguousarray(wp.reshape(o, c, u, 2, v, 2).transpose(0, 1, 3, 5, 2, 4)).reshape(
        o, 4 * c, u, v)


def phase_weight_adjoint(gws, kernel_hw):
    """The adjoint of :func:`phase_weight`: ``(O, 4C, U, V) -> (O, C, kh, kw)``."""
    o, c4, u, v = gws.shape
    kh, kw = kernel_hw
    g = gws.reshape(o, c4 // 4, 2, 2, u, v).transpose(0, 1, 4, 2, 5, 3).reshape(
        o, c4 // 4, 2 * u, 2 * v)
    return np.ascontiguousarray(g[:, :, :kh, :kw])


# ---- the implementation: stride-2 maps through a stride-1 tap implementation ------------------

_STRIDE1 = ((1, 1), (0, 0), (1, 1))


def _taps(u, v):
    from ._tap_conv import all_taps
    return all_taps(u, v)


def _tap_impl():
    """masked_conv's CPU tap implementation (module), or None where dispatch picks none."""
    try:
        name, impl = dispatch.choose("masked_conv", "conv2d", "cpu")
    except dispatch.KernelUnavailable:
        return None
    return None if name == "reference" else impl


def _cpp():
    """gmcore._C when dispatch picks this family's cpp implementation on the CPU, else None."""
    try:
        name, impl = dispatch.choose(FAMILY, "conv2d", "cpu")
    except dispatch.KernelUnavailable:
        return None
    return impl if name == "cpp" else None


def route(x, geom, kernel_hw):
    """How this convolution runs: ``"phase"`` (stride 2 over the direct tap kernels),
    ``"cols"`` (compiled im2col/col2im + BLAS) or ``None`` (``_conv_kernels``: the reference,
    and the stride-1 direct tap kernels where they apply)."""
    (sh, sw), pads, (dh, dw), groups = geom
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64) or groups != 1:
        return None
    if _cpp() is None:
        return None
    if x.dtype == np.float32 and (sh, sw) == (2, 2) and (dh, dw) == (1, 1):
        impl = _tap_impl()
        # even kernels only: an odd one computes zero (phase, tap) pairs (3x3: 16/9 of the
        # arithmetic), which only a measurement on an AVX-512 machine could show worth it
        even = kernel_hw[0] % 2 == 0 and kernel_hw[1] % 2 == 0
        if impl is not None and (USE_PACKED or (even and impl.direct_applies(np.float32, _STRIDE1))):
            return "phase"
    if _im2col()._tap_kernel(x, groups, (sh, sw)) is not None:
        return None  # stride 1 on the direct AVX-512 tap kernels
    if tuple(kernel_hw) == (1, 1) and (sh, sw) == (1, 1) and pads == (0, 0, 0, 0):
        return None  # 1x1: _conv_kernels needs no im2col at all
    return "cols"


def applies(x, geom, kernel_hw):
    """Whether the phase route serves this convolution."""
    return route(x, geom, kernel_hw) == "phase"


def phase_conv2d(x, w, geom, out_hw):
    (_, (pt, _, pl, _), _, _) = geom
    u, v, hs, ws = _phase_dims(w.shape[2:], out_hw)
    xs = space_to_depth(np.ascontiguousarray(x), (pt, pl), hs, ws)
    return _tap_impl().tap_conv2d_forward(xs, phase_weight(w), None, _taps(u, v), _STRIDE1,
                                          tuple(out_hw))


def phase_conv_transpose(g, w, geom, in_hw):
    (_, (pt, _, pl, _), _, _) = geom
    u, v, hs, ws = _phase_dims(w.shape[2:], g.shape[2:])
    gs = _tap_impl().tap_conv2d_input_grad(np.ascontiguousarray(g), phase_weight(w), _taps(u, v),
                                           _STRIDE1, (hs, ws))
    return depth_to_space(gs, (pt, pl), tuple(in_hw))


def phase_conv_weight(x, gy, geom, w_shape):
    (_, (pt, _, pl, _), _, _) = geom
    kernel_hw = tuple(w_shape[2:])
    u, v, hs, ws = _phase_dims(kernel_hw, gy.shape[2:])
    xs = space_to_depth(np.ascontiguousarray(x), (pt, pl), hs, ws)
    gws = _tap_impl().tap_conv2d_weight_grad(xs, np.ascontiguousarray(gy), _taps(u, v),
                                             _STRIDE1, (u, v))
    return phase_weight_adjoint(gws, kernel_hw)


# ---- compiled im2col / col2im + BLAS (csrc/conv_cpu.cpp) ---------------------------------------

def _geom8(geom, kh, kw):
    (sh, sw), (pt, _, pl, _), (dh, dw), _ = geom
    return (int(kh), int(kw), int(sh), int(sw), int(pt), int(pl), int(dh), int(dw))


def columns(x, kh, kw, geom, out_hw):
    """``(C*kh*kw, N*Ho*Wo)`` columns of x, the layout of ``_conv_kernels._im2col``."""
    n, c = x.shape[:2]
    ho, wo = (int(v) for v in out_hw)
    # a (K, N*L) view of a flat buffer, as _conv_kernels' reshaped columns (tests watch .base)
    cols = np.empty(c * kh * kw * n * ho * wo, dtype=x.dtype).reshape(c * kh * kw, n * ho * wo)
    _cpp().conv_im2col_cpu(np.ascontiguousarray(x), cols, ho, wo, _geom8(geom, kh, kw))
    return cols


def cols_conv2d(x, w, geom, out_hw):
    o, _, kh, kw = w.shape
    n, ho, wo = x.shape[0], int(out_hw[0]), int(out_hw[1])
    cols = columns(x, kh, kw, geom, out_hw)
    # (N*L, K) @ (K, O) rather than (O, K) @ (K, N*L): the same products, 1.3-3x faster through
    # OpenBLAS on the AVX2 2-core machine (DCGAN and 4x4 stride-2 shapes); either way one
    # transposing copy of the small output follows
    y = np.matmul(cols.T, w.reshape(o, -1).T)  # (N*L, O)
    return np.ascontiguousarray(y.reshape(n, ho * wo, o).transpose(0, 2, 1)).reshape(
        n, o, ho, wo), cols


def cols_conv_transpose(g, w, geom, in_hw):
    n, o, ho, wo = g.shape
    _, c, kh, kw = w.shape
    gt = np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(o, n * ho * wo)
    cols = np.matmul(w.reshape(o, c * kh * kw).T, gt)  # (K, N*L)
    gx = np.empty((n, c) + tuple(int(v) for v in in_hw), dtype=g.dtype)
    _cpp().conv_col2im_cpu(cols, gx, ho, wo, _geom8(geom, kh, kw))
    return gx


def cols_conv_weight(x, gy, geom, w_shape, cols=None):
    """The GEMM as (K, N*L) @ (N*L, O), then the small (K, O) result transposed: OpenBLAS runs
    this 2-4x faster than (O, N*L) @ (N*L, K) (a long reduction with a transposed right
    operand; AVX2 2-core machine, 4x4 stride-2 weight gradients of 32x64x32x32: 60-85 ms
    against 150-540 ms)."""
    o, c, kh, kw = w_shape
    n, _, ho, wo = gy.shape
    if cols is None:
        cols = columns(x, kh, kw, geom, (ho, wo))
    gt = np.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(o, n * ho * wo)
    gw_t = np.matmul(cols.reshape(c * kh * kw, n * ho * wo), gt.T)  # (K, O)
    return np.ascontiguousarray(gw_t.T).reshape(w_shape)


# ---- what nn.functional.conv calls --------------------------------------------------------------

def _im2col():
    from ..nn.functional import _conv_kernels
    return _conv_kernels


def conv2d_raw(x, w, geom, out_hw=None, return_cols=False):
    """``y = conv(x, w)``; ``(y, cols)`` with ``return_cols`` (cols None on the phase route)."""
    k = _im2col()
    how = route(x, geom, w.shape[2:])
    if how is None:
        return k.conv2d_raw(x, w, geom, out_hw, return_cols)
    (sh, sw), (pt, pb, pl, pr), (dh, dw), _ = geom
    if out_hw is None:
        out_hw = (k.out_size(x.shape[2], w.shape[2], sh, pt + pb, dh),
                  k.out_size(x.shape[3], w.shape[3], sw, pl + pr, dw))
    if how == "phase":
        y, cols = phase_conv2d(x, w, geom, out_hw), None
    else:
        y, cols = cols_conv2d(x, w, geom, out_hw)
    return (y, cols) if return_cols else y


def conv_transpose_raw(g, w, geom, out_hw):
    """``z = conv^T(g, w)`` onto an input of size ``out_hw``."""
    how = route(g, geom, w.shape[2:])
    if how == "phase":
        return phase_conv_transpose(g, w, geom, out_hw)
    if how == "cols":
        return cols_conv_transpose(g, w, geom, out_hw)
    return _im2col().conv_transpose_raw(g, w, geom, out_hw)


def conv_weight_raw(x, gy, geom, w_shape, cols=None):
    """``gw = d<conv(x, w), gy>/dw``; ``cols``: the columns ``conv2d_raw`` returned, or None."""
    how = route(x, geom, w_shape[2:])
    if how == "phase" and cols is None:
        return phase_conv_weight(x, gy, geom, w_shape)
    if how is not None:
        return cols_conv_weight(x, gy, geom, w_shape, cols)
    return _im2col().conv_weight_raw(x, gy, geom, w_shape, cols)


# ---- registration -----------------------------------------------------------------------------

def _load_cpp():
    _C = dispatch.require_C()
    if not hasattr(_C, "conv_im2col_cpu"):
        raise RuntimeError("gmcore._C was built without the conv kernels (rebuild it)")
    return _C


def _load_reference_cuda():
    dispatch.require_cupy()
    return None  # _conv_kernels' im2col + cuBLAS


# One op name for the three maps (forward, input grad, weight grad): they always run together.
dispatch.register(FAMILY, "conv2d", "cpu", "cpp", _load_cpp)
dispatch.register(FAMILY, "conv2d", "cpu", "reference", lambda: None)
dispatch.register(FAMILY, "conv2d", "cuda", "reference", _load_reference_cuda)
