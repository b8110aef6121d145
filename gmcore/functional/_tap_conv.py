"""Glue shared by the ``masked_conv`` and ``causal_conv`` kernel families.

Both families run one kernel, the *tap convolution* (contract in
:mod:`gmcore.functional._tap_conv_reference`): each implementation is a module exposing
``tap_conv2d_forward``, ``tap_conv2d_input_grad`` and ``tap_conv2d_weight_grad``.

=========== ====== ================================================================
name        device where
=========== ====== ================================================================
cpp         cpu    ``gmcore.kernels._tap_conv_cpu`` (``csrc/masked_conv_cpu.cpp``
                   packing kernels + BLAS GEMM through NumPy)
numba       cpu    ``kernels/numba/masked_conv.py`` (same design, numba packing kernels)
reference   cpu    ``gmcore.functional._tap_conv_reference`` (NumPy im2col over the taps)
triton      cuda   ``kernels/triton/masked_conv.py`` (implicit GEMM)
cuda        cuda   ``gmcore.kernels._masked_conv_cuda`` (``csrc/masked_conv.cu``)
reference   cuda   the same reference on CuPy
=========== ====== ================================================================

When dispatch picks ``reference`` the public ops are computed with differentiable Tensor
ops (``conv2d`` / ``conv_transpose2d`` on ``weight * mask``), so gradients of any order exist;
otherwise two fused ``Function``s run the implementation, with a once-differentiable backward:

* ``TapConv2d``          y = tapconv(x, w) + b    backward: gx = input_grad, gw = weight_grad
* ``TapConvTranspose2d`` z = tapconv^T(x, w) + b  backward: gx = forward, gw = weight_grad
                                                  (roles of x and gy swapped)
"""
from __future__ import annotations

import numpy as np

from .. import backend, dispatch
from ..autograd import Function, once_differentiable

__all__ = ["TapConv2d", "TapConvTranspose2d", "register_tap_conv", "KERNEL_DTYPES"]

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- loaders (return the implementation MODULE) ----------------------------------------------

def _load_reference():
    from . import _tap_conv_reference
    return _tap_conv_reference


def _load_reference_cuda():
    dispatch.require_cupy()
    return _load_reference()


def _load_cpp():
    dispatch.require_C()
    from ..kernels import _tap_conv_cpu  # raises RuntimeError when _C lacks the masked_conv kernels
    _tap_conv_cpu.check_available()
    return _tap_conv_cpu


def _load_numba():
    try:
        from gmcore.kernels.numba import masked_conv
    except ImportError as exc:
        raise ImportError(f"numba kernels unavailable ({exc})") from None
    return masked_conv


def _load_triton():
    dispatch.require_cupy()
    try:
        from gmcore.kernels.triton import masked_conv
    except ImportError as exc:
        raise ImportError(f"triton kernels unavailable ({exc})") from None
    return masked_conv


def _load_cuda():
    dispatch.require_cupy()
    dispatch.require_C(cuda=True)
    try:
        from ..kernels import _masked_conv_cuda
    except ImportError as exc:
        raise ImportError(f"CUDA tap-convolution module unavailable ({exc})") from None
    return _masked_conv_cuda


# CPU preference order measured by benchmarks/bench_masked_conv.py (see the report there).
CPU_ORDER = (("cpp", _load_cpp), ("numba", _load_numba), ("reference", _load_reference))
CUDA_ORDER = (("triton", _load_triton), ("cuda", _load_cuda), ("reference", _load_reference_cuda))


def _load_im2col_cuda():
    dispatch.require_cupy()
    return None  # plain conv2d keeps its im2col + cuBLAS path


def _load_im2col_cpu():
    return None  # plain conv2d keeps its im2col + BLAS path


# Plain F.conv2d (groups=1) may run on the tap kernels with every tap active (op "conv2d").
# CPU: cpp first; nn.functional._conv_kernels takes it only where its direct AVX-512 kernels
# apply (float32, stride 1): 1.1-3.4x faster than im2col + OpenBLAS forward + backward
# (benchmarks/bench_masked_conv.py, plain conv rows); elsewhere the packed-GEMM tap path is no
# faster than im2col, so im2col stays. CUDA: im2col + cuBLAS stays first until a GPU
# measurement shows the implicit GEMM faster (none yet).
CONV2D_CPU_ORDER = (("cpp", _load_cpp), ("reference", _load_im2col_cpu))
CONV2D_CUDA_ORDER = (("reference", _load_im2col_cuda), ("triton", _load_triton), ("cuda", _load_cuda))


def register_tap_conv(family: str) -> None:
    """Register every implementation of op ``tap_conv2d`` for ``family``, fastest first."""
    for name, loader in CPU_ORDER:
        dispatch.register(family, "tap_conv2d", "cpu", name, loader)
    for name, loader in CUDA_ORDER:
        dispatch.register(family, "tap_conv2d", "cuda", name, loader)
    if family == "masked_conv":
        for name, loader in CONV2D_CPU_ORDER:
            dispatch.register(family, "conv2d", "cpu", name, loader)
        for name, loader in CONV2D_CUDA_ORDER:
            dispatch.register(family, "conv2d", "cuda", name, loader)


# ---- the fused Functions ------------------------------------------------------------------------

def _contig(a):
    return backend.xp_of(a).ascontiguousarray(a)


class TapConv2d(Function):
    """``y = tapconv(x, w * mask) + bias`` through an implementation module; first-order only.

    ``mask`` is None (the taps say everything) or a raw (O, C, KH, KW) 0/1 array for a mask
    that also cuts channels at some tap (the RGB centre tap): the weight is multiplied by it
    before the kernel and its gradient after (the contract leaves that to the caller).
    """

    @staticmethod
    def forward(ctx, x, w, bias, impl, taps, geom, out_hw, mask):
        x = _contig(x)
        w_eff = _contig(w if mask is None else w * mask)
        y = impl.tap_conv2d_forward(x, w_eff, None if bias is None else _contig(bias),
                                    taps, geom, out_hw)
        ctx.impl, ctx.taps, ctx.geom, ctx.mask = impl, taps, geom, mask
        ctx.in_hw, ctx.kernel_hw = tuple(x.shape[2:]), tuple(w.shape[2:])
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, w_eff)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, w_eff = ctx.saved_arrays
        gy = _contig(gy.astype(x.dtype, copy=False))
        need = ctx.needs_input_grad
        gx = gw = gb = None
        if need[0]:
            gx = ctx.impl.tap_conv2d_input_grad(gy, w_eff, ctx.taps, ctx.geom, ctx.in_hw)
        if need[1]:
            gw = ctx.impl.tap_conv2d_weight_grad(x, gy, ctx.taps, ctx.geom, ctx.kernel_hw)
            if ctx.mask is not None:
                gw = gw * ctx.mask
        if ctx.has_bias and need[2]:
            gb = gy.sum(axis=(0, 2, 3))
        return gx, gw, gb, None, None, None, None, None


class TapConvTranspose2d(Function):
    """``z = tapconv^T(x, w) + bias``: the input-gradient map of a tap convolution whose input
    is ``out_hw`` large, with the PyTorch transposed-conv weight layout (C_in, C_out, KH, KW)
    read as the convolution's (O, C, KH, KW). First-order only."""

    @staticmethod
    def forward(ctx, x, w, bias, impl, taps, geom, out_hw):
        x, w = _contig(x), _contig(w)
        z = impl.tap_conv2d_input_grad(x, w, taps, geom, out_hw)
        if bias is not None:
            z += bias.reshape(1, -1, 1, 1)
        ctx.impl, ctx.taps, ctx.geom = impl, taps, geom
        ctx.in_hw, ctx.kernel_hw = tuple(x.shape[2:]), tuple(w.shape[2:])
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, w)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, gz):
        x, w = ctx.saved_arrays
        gz = _contig(gz.astype(x.dtype, copy=False))
        need = ctx.needs_input_grad
        gx = gw = gb = None
        if need[0]:
            gx = ctx.impl.tap_conv2d_forward(gz, w, None, ctx.taps, ctx.geom, ctx.in_hw)
        if need[1]:
            # <tapconv^T(x), gz> = <x, tapconv(gz)>: the weight gradient with gz as the input
            gw = ctx.impl.tap_conv2d_weight_grad(gz, x, ctx.taps, ctx.geom, ctx.kernel_hw)
        if ctx.has_bias and need[2]:
            gb = gz.sum(axis=(0, 2, 3))
        return gx, gw, gb, None, None, None, None


def all_taps(kh, kw):
    """Every tap of a (kh, kw) kernel, row-major, as the contract's int64 (T, 2) array."""
    ky, kx = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    return np.stack([ky.ravel(), kx.ravel()], axis=1).astype(np.int64)


# ---- argument checks shared by the public ops -------------------------------------------------

def _fmt(shape):
    return "[" + ", ".join(str(s) for s in shape) + "]"


def check_args(op, input, weight, bias, nd, transposed=False):
    """Types, ranks, dtypes, devices, channel counts and bias shape; clear errors naming op."""
    from ..tensor import Tensor

    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is None and name == "bias":
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: expected a floating point {name}, got {t.dtype}")
    if input.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"{op}: expected a {nd + 2}D (batched) or {nd + 1}D (unbatched) input, "
                         f"got input of size {_fmt(input.shape)}")
    if weight.ndim != nd + 2:
        raise ValueError(f"{op}: expected a {nd + 2}D weight, got weight of size "
                         f"{_fmt(weight.shape)}")
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != input.dtype):
        raise TypeError(f"{op}: input ({input.dtype}), weight ({weight.dtype})"
                        + (f" and bias ({bias.dtype})" if bias is not None else "")
                        + " must have the same dtype")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != input.device:
            raise RuntimeError(f"{op}: input is on {input.device} but {name} is on {t.device}")
    c = input.shape[-nd - 1]
    if transposed:
        if c != weight.shape[0]:
            raise ValueError(f"{op}: weight of size {_fmt(weight.shape)} (C_in, C_out, kH, kW) "
                             f"expects input with {weight.shape[0]} channels, got input of size "
                             f"{_fmt(input.shape)}")
        o = weight.shape[1]
    else:
        if c != weight.shape[1]:
            raise ValueError(f"{op}: weight of size {_fmt(weight.shape)} expects input with "
                             f"{weight.shape[1]} channels, got input of size "
                             f"{_fmt(input.shape)}")
        o = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"{op}: expected bias of size [{o}] (one per output channel), got "
                         f"{_fmt(bias.shape)}")
    if any(s == 0 for s in weight.shape):
        raise ValueError(f"{op}: weight of size {_fmt(weight.shape)} has a zero dimension")


def choose_impl(family, tensor):
    """``(name, module)`` for ``family`` on the tensor's device; other float dtypes than
    float32/float64 run the reference (Tensor-op) path."""
    if tensor.data.dtype not in KERNEL_DTYPES:
        return "reference", None
    return dispatch.choose(family, "tap_conv2d", tensor.device.type)
