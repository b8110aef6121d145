"""Discretized logistic mixture likelihood (PixelCNN++, WaveNet): NLL, fused gradient, sampling.

Implementations of the ``dlml`` kernel family. Every one takes C-contiguous ``x3`` (B, C, N)
and ``p3`` (B, P, N) of one float dtype (float32 or float64), ``num_bins`` and ``want_grad``,
and returns ``(nll, grad)``: the per-position negative log-likelihood (B, N) and, when asked,
d nll.sum() / d p3 (B, P, N) computed in the same pass (else None):

=========== ====== ===============================================================
name        device where
=========== ====== ===============================================================
cpp         cpu    ``csrc/dlml_cpu.cpp`` via ``gmcore._C`` (OpenMP)
numba       cpu    ``kernels/numba/dlml.py``
reference   cpu    :func:`~gmcore.functional._dlml_reference.dlml_forward_reference`
triton      cuda   ``kernels/triton/dlml.py``
cuda        cuda   ``csrc/dlml.cu`` via ``gmcore._C``
reference   cuda   the same reference on CuPy
=========== ====== ===============================================================

The compiled ones share their per-element math (``csrc/dlml.h``). Precision: float64 inputs
run float64 everywhere; for float32, ``cpp`` uses vectorisable polynomial exp/log (a few ulp
from libm), ``triton`` float32 with Kahan-corrected expm1/log1p, ``numba`` float64 internally.
Dispatch order on the CPU (cpp, then numba) is measured by ``benchmarks/bench_dlml.py``:
cpp is ~7x faster than numba at the PixelCNN++ size. The parameter layout and
the bin rules are documented in :mod:`gmcore.functional._dlml_reference` and in
:func:`discretized_logistic_mixture_nll`. The kernels do not check the data: the op checks it
(x in [-1, 1], on the bin grid) once, before dispatch, for every implementation alike.
"""

from __future__ import annotations

import numpy as np

from .. import backend, dispatch
from ..autograd import Function, no_grad, once_differentiable
from ..tensor import Tensor
from ._util import check_reduction
from ._dlml_reference import (dlml_forward_reference, dlml_nll_tensor, params_per_component,
                              sample_reference)

__all__ = ["discretized_logistic_mixture_nll", "sample_discretized_logistic_mixture",
           "DiscretizedLogisticMixtureNLL"]

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- implementations ------------------------------------------------------------------------

def _load_numba():
    try:
        from gmcore.kernels.numba import dlml as k
    except ImportError as exc:
        raise ImportError(f"numba kernels unavailable ({exc})") from None
    return k.dlml_forward


def _load_cpp():
    _C = dispatch.require_C()
    if not hasattr(_C, "dlml_forward_cpu"):
        raise RuntimeError("gmcore._C was built without the dlml kernels (rebuild it)")
    return _C.dlml_forward_cpu


def _load_triton():
    dispatch.require_cupy()
    try:
        from gmcore.kernels.triton import dlml as k
    except ImportError as exc:
        raise ImportError(f"triton kernels unavailable ({exc})") from None
    return k.dlml_forward


def _load_cuda():
    cp = dispatch.require_cupy()
    _C = dispatch.require_C(cuda=True)
    if not hasattr(_C, "dlml_forward_cuda"):
        raise RuntimeError("gmcore._C was built without the dlml kernels (rebuild it)")

    def dlml_forward_cuda(x3, p3, num_bins, want_grad):
        B, C, N = x3.shape
        P = p3.shape[1]
        K = P // params_per_component(C)
        with p3.device:
            nll = cp.empty((B, N), dtype=p3.dtype)
            grad = cp.empty_like(p3) if want_grad else None
            stream = cp.cuda.get_current_stream().ptr
            _C.dlml_forward_cuda(x3.data.ptr, p3.data.ptr, nll.data.ptr,
                                 0 if grad is None else grad.data.ptr,
                                 B, C, K, N, int(num_bins), p3.dtype.name, stream)
        return nll, grad

    return dlml_forward_cuda


def _load_reference_cuda():
    dispatch.require_cupy()
    return dlml_forward_reference


# Preference order = registration order (measured by benchmarks/bench_dlml.py: cpp first).
dispatch.register("dlml", "forward", "cpu", "cpp", _load_cpp)
dispatch.register("dlml", "forward", "cpu", "numba", _load_numba)
dispatch.register("dlml", "forward", "cpu", "reference", lambda: dlml_forward_reference)
dispatch.register("dlml", "forward", "cuda", "triton", _load_triton)
dispatch.register("dlml", "forward", "cuda", "cuda", _load_cuda)
dispatch.register("dlml", "forward", "cuda", "reference", _load_reference_cuda)


# ---- argument checks --------------------------------------------------------------------------

def _check_num_bins(num_bins):
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
        raise ValueError(f"discretized_logistic_mixture: num_bins must be an int >= 2, got {num_bins!r}")
    return int(num_bins)


def _check_args(x, params, num_bins, reduction):
    """Validate; return (B, C, N, K) of the (B, C, N) / (B, P, N) views."""
    name = "discretized_logistic_mixture_nll"
    for arg, what in ((x, "x"), (params, "params")):
        if not isinstance(arg, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(arg).__name__}")
    if not params.is_floating_point():
        raise TypeError(f"{name}: params must be floating point, got {params.dtype}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: x must be floating point data in [-1, 1], got {x.dtype}")
    check_reduction(reduction, name)
    _check_num_bins(num_bins)
    if x.ndim == 4:
        B, C, H, W = x.shape
        if C not in (1, 3):
            raise ValueError(f"{name}: images must have 1 or 3 channels, got x of shape {tuple(x.shape)}")
        if params.ndim != 4 or params.shape[0] != B or tuple(params.shape[2:]) != (H, W):
            raise ValueError(f"{name}: params must be (B, K*{params_per_component(C)}, H, W) = "
                             f"({B}, K*{params_per_component(C)}, {H}, {W}) for x of shape "
                             f"{tuple(x.shape)}, got {tuple(params.shape)}")
        N = H * W
    elif x.ndim == 2:
        B, N = x.shape
        C = 1
        if params.ndim != 3 or params.shape[0] != B or params.shape[2] != N:
            raise ValueError(f"{name}: params must be (B, 3K, T) = ({B}, 3K, {N}) for sequence "
                             f"data x of shape {tuple(x.shape)}, got {tuple(params.shape)}")
    else:
        raise ValueError(f"{name}: x must be (B, C, H, W) images or (B, T) sequences, "
                         f"got shape {tuple(x.shape)}")
    per = params_per_component(C)
    P = params.shape[1]
    if P == 0 or P % per:
        raise ValueError(f"{name}: params has {P} channels; with C={C} data channels it needs "
                         f"K*{per} (K mixture components)")
    return B, C, N, P // per


def _grid_tolerance(dtype, num_bins):
    """Allowed distance of x from the bin grid, in bins, or None where ``dtype`` cannot resolve it.

    Data on the grid carries the rounding of its dtype (relative eps, times (num_bins-1)/2 bins
    per unit of x) plus that of the check's own arithmetic: 16 eps of slack and 1e-3 bins floor
    (a 1/num_bins-instead-of-1/(num_bins-1) scaling is up to half a bin off at the top).
    float16 data at 256 bins is only known to ~2 bins: then only the range is checked.
    """
    tol = 1e-3 + 16.0 * float(np.finfo(dtype).eps) * (num_bins - 1) / 2.0
    return tol if tol < 0.25 else None


def _check_data(x, num_bins):
    """Raise ValueError unless the array x lies in [-1, 1] on the grid -1 + 2i/(num_bins-1).

    A finite NLL for x = 5 (or x scaled with the wrong number of levels) would be a silent wrong
    result: every kernel clamps such x into an edge bin or takes the bin centred on it. One
    min/max pass and one pass for the distance to the grid cost about 2% of the fused op on the
    CPU at the sizes of benchmarks/bench_dlml.py; on CUDA the three numbers come back in one
    device sync (the reason ``validate`` can be turned off).
    """
    name = "discretized_logistic_mixture_nll"
    if x.size == 0:
        return
    xp = backend.xp_of(x)
    eps = float(np.finfo(x.dtype).eps)
    tol = _grid_tolerance(x.dtype, num_bins)
    half = (num_bins - 1) / 2.0
    ct = np.float64 if x.dtype == np.float64 else np.float32
    stats = [x.min(), x.max()]
    if tol is not None:
        with np.errstate(invalid="ignore"):  # inf - inf: the range check below names it
            t = x.astype(ct) * ct(half)      # grid index i of x = -1 + i / half, off the grid by
            t += ct(half)                    # |t - rint(t)| bins
            t -= xp.rint(t)
            stats.append(xp.abs(t, out=t).max())
    got = [float(v) for v in xp.stack([xp.asarray(v, dtype=np.float64) for v in stats]).tolist()]
    lo, hi = got[0], got[1]
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError(f"{name}: x contains NaN; the data must lie in [-1, 1] on the grid "
                         f"-1 + 2i/(num_bins-1) (num_bins={num_bins})")
    slack = 16.0 * eps  # x = 2 * (i / (L-1)) - 1 in float32 may pass +-1 by an ulp or two
    if lo < -1.0 - slack or hi > 1.0 + slack:
        raise ValueError(f"{name}: x must lie in [-1, 1] (the data scaled to -1 + 2i/(num_bins-1)), "
                         f"got values in [{lo:.6g}, {hi:.6g}]")
    if tol is not None and got[2] > tol:
        flat = x.reshape(-1).astype(ct)
        t = (flat + 1) * ct(half)
        worst = int(xp.abs(t - xp.rint(t)).argmax())
        raise ValueError(f"{name}: x must lie on the grid -1 + 2i/(num_bins-1) of num_bins={num_bins} "
                         f"values; x = {float(flat[worst]):.9g} is {got[2]:.3g} of a bin off it "
                         f"(data with another number of levels, or scaled by 1/num_bins?)")


# ---- the differentiable op --------------------------------------------------------------------

class DiscretizedLogisticMixtureNLL(Function):
    """Per-example NLL (B,) through a fused kernel; first-order only.

    Forward runs the dispatched kernel on the (B, C, N) / (B, P, N) views; when params need a
    gradient the kernel also returns d nll / d params in the same pass (it needs the same
    intermediates: the per-component log-probabilities and the mixture responsibilities), and
    backward only scales it by the incoming per-example gradient. Backward is
    ``once_differentiable``: select the ``reference`` implementation for higher orders.
    x is data and gets no gradient.
    """

    @staticmethod
    def forward(ctx, x, params, num_bins, impl):
        xp = backend.xp_of(params)
        B, P = params.shape[0], params.shape[1]
        C = 1 if x.ndim == 2 else x.shape[1]
        x3 = xp.ascontiguousarray(x.reshape(B, C, -1), dtype=params.dtype)
        p3 = xp.ascontiguousarray(params.reshape(B, P, -1))
        nll, grad = impl(x3, p3, num_bins, bool(ctx.needs_input_grad[1]))
        ctx.params_shape = params.shape
        ctx.save_for_backward(grad)
        return nll.sum(axis=1, dtype=np.float64).astype(params.dtype) if xp is np else nll.sum(axis=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (grad,) = ctx.saved_arrays
        if grad is None:
            return None, None, None, None
        gp = grad * g.astype(grad.dtype, copy=False)[:, None, None]
        return None, gp.reshape(ctx.params_shape), None, None


def discretized_logistic_mixture_nll(x, params, num_bins=256, reduction="none", validate=True):
    """Negative log-likelihood (nats) of data under a mixture of discretized logistics.

    ``x``: images (B, C, H, W) with C = 1 or 3, or sequences (B, T), values in [-1, 1] on the
    grid -1 + 2i/(num_bins-1). ``params``: (B, K*(1+2C+C(C-1)/2), H, W) for images (10K
    channels for RGB, 3K for grey), (B, 3K, T) for sequences (WaveNet), laid out along the
    channel axis as::

        [0, K)                    logits of the K components
        K + c*S + [0, K)          means of data channel c            (S = 3K for RGB, 2K else)
        K + c*S + K + [0, K)      log-scales of channel c, clamped below at -7
        K + q*S + 2K + [0, K)     RGB only: tanh-coefficient slot q; channel c's mean is
                                  mean_c + sum_{j<c} tanh(coeff_{c(c-1)/2+j}) * x_j
                                  (q=0: green on red, q=1: blue on red, q=2: blue on green)

    i.e. PixelCNN++'s layout with channels first. The earlier channels x_j are the true data.

    Bins: bin of x is [x - h, x + h], h = 1/(num_bins-1); the first bin (x < -1 + h) extends
    to -inf (log-sigmoid of the upper edge), the last (x > 1 - h) to +inf (log of one minus
    the sigmoid of the lower edge). An interior bin whose probability is at most
    ``1e-5 * 255/(num_bins-1)`` (PixelCNN++'s 1e-5 at 256 bins, scaled with the bin width)
    takes the midpoint value log pdf(x) - log((num_bins-1)/2). No value or gradient is inf or
    NaN for finite parameters up to +-1e4, log-scales at the clamp, or data at both edges.

    ``validate=True`` (the default) checks the data first and raises a ValueError naming the
    allowed range and the offending min/max when x leaves [-1, 1], or naming the value when x is
    off the grid by more than its dtype's rounding (data scaled with the wrong number of levels);
    NaN data is refused too. The check costs about 2% of the op on the CPU, but on CUDA it is one
    device sync: a training loop may pass ``validate=False`` once its data has passed (the
    models check their first training batch and every evaluation batch).

    Returns the NLL per example (B,) (summed over channels and positions) for
    ``reduction="none"``, or its sum / mean over the batch. Only ``params`` gets a gradient
    (``x`` is data). The fused kernels are first-order only; ``GMCORE_KERNELS=dlml=reference``
    selects the fully differentiable reference.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> x = gm.full((2, 3, 4, 4), 1 / 255)             # mid-grey RGB (level 128 of 0..255)
    >>> params = gm.zeros(2, 10 * 5, 4, 4)             # K = 5 components
    >>> nll = F.discretized_logistic_mixture_nll(x, params)
    >>> tuple(nll.shape), round(nll[0].item() / (3 * 16), 4)  # nats per sub-pixel
    ((2,), 6.2344)
    >>> F.discretized_logistic_mixture_nll(gm.full((2, 3, 4, 4), 5.0), params)
    Traceback (most recent call last):
        ...
    ValueError: discretized_logistic_mixture_nll: x must lie in [-1, 1] (...), got values in [5, 5]
    """
    _, C, _, _ = _check_args(x, params, num_bins, reduction)
    num_bins = int(num_bins)
    dt = params.data.dtype
    device = params.device
    if x.device != device:
        raise RuntimeError(f"discretized_logistic_mixture_nll: x is on {x.device} but params on {device}")
    if validate:  # before dispatch: every implementation sees the same checked data
        _check_data(x.data, num_bins)
    if dt in _KERNEL_DTYPES:
        name, impl = dispatch.choose("dlml", "forward", device.type)
    else:  # kernels cover float32/float64; other float dtypes run the reference math
        name, impl = "reference", None
    if name == "reference":
        B, P = params.shape[0], params.shape[1]
        x3 = x.detach().reshape(B, C, -1).to(params.dtype)
        out = dlml_nll_tensor(x3, params.reshape(B, P, -1), num_bins).sum(-1)
    else:
        out = DiscretizedLogisticMixtureNLL.apply(x.detach(), params, num_bins, impl)
    if reduction == "sum":
        return out.sum()
    if reduction == "mean":
        return out.mean()
    return out


def _infer_channels(params, channels):
    if params.ndim == 3:
        if channels not in (None, 1):
            raise ValueError("sample_discretized_logistic_mixture: sequence params (B, 3K, T) "
                             f"have one channel, got channels={channels!r}")
        return 1
    if params.ndim != 4:
        raise ValueError("sample_discretized_logistic_mixture: params must be (B, P, H, W) or "
                         f"(B, 3K, T), got shape {tuple(params.shape)}")
    P = params.shape[1]
    if channels is None:
        fits = [c for c in (1, 3) if P % params_per_component(c) == 0 and P > 0]
        if len(fits) != 1:
            raise ValueError(f"sample_discretized_logistic_mixture: cannot tell the channel count "
                             f"from {P} parameter channels; pass channels=1 or channels=3")
        return fits[0]
    if channels not in (1, 3) or P == 0 or P % params_per_component(channels):
        raise ValueError(f"sample_discretized_logistic_mixture: params with {P} channels do not "
                         f"fit channels={channels!r} (need K*{params_per_component(channels) if channels in (1, 3) else '?'})")
    return channels


def sample_discretized_logistic_mixture(params, num_bins=256, generator=None, channels=None):
    """Draw data from the mixture given by ``params``, on the bin grid.

    Images: params (B, P, H, W) -> x (B, C, H, W), C inferred from P (10K -> 3, 3K -> 1) or
    given by ``channels`` when P fits both (e.g. 30). Sequences: params (B, 3K, T) -> (B, T).
    Per position, a component is chosen by Gumbel-max over the logits, then each channel in
    order is drawn from its logistic (inverse CDF) with the mean shifted by the coefficients
    times the earlier channels' drawn values, and rounded to the grid -1 + 2i/(num_bins-1).
    Not differentiable. Same layout as :func:`discretized_logistic_mixture_nll`.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> g = gm.Generator().manual_seed(0)
    >>> x = F.sample_discretized_logistic_mixture(gm.zeros(1, 30, 8), 256, generator=g)
    >>> tuple(x.shape), bool(((x + 1) * 127.5).round().sub((x + 1) * 127.5).abs().max() < 1e-4)
    ((1, 8), True)
    """
    from ..random import _generator_for

    if not isinstance(params, Tensor):
        raise TypeError(f"sample_discretized_logistic_mixture: params must be a Tensor, got "
                        f"{type(params).__name__}")
    if not params.is_floating_point():
        raise TypeError(f"sample_discretized_logistic_mixture: params must be floating point, got {params.dtype}")
    num_bins = _check_num_bins(num_bins)
    C = _infer_channels(params, channels)
    gen = _generator_for(generator, params.device)
    p = params.data
    B, P = p.shape[0], p.shape[1]
    xp = backend.xp_of(p)
    with no_grad(), backend.device_context(params.device):
        out = sample_reference(xp.ascontiguousarray(p.reshape(B, P, -1)), C, num_bins, gen)
    shape = (B,) + tuple(p.shape[2:]) if params.ndim == 3 else (B, C) + tuple(p.shape[2:])
    return Tensor(out.reshape(shape))

