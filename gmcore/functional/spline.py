"""Monotonic rational-quadratic spline with linear tails (Durkan, Bekasov, Murray & Papamakarios,
"Neural Spline Flows", 2019): the element-wise bijection of NSF's coupling and autoregressive
layers.

The map
-------
On ``[-B, B]`` (``B = tail_bound``) the spline has ``K`` bins. From unconstrained parameters of
each element (the conditioner network's outputs):

* bin widths ``w = min_w + (1 - K min_w) softmax(widths)`` scaled to ``2B``; the knots
  ``x_0 = -B < x_1 < ... < x_K = B`` are their cumulative sums (the end knots are set exactly);
* bin heights likewise give ``y_0 = -B < ... < y_K = B``;
* derivatives at the ``K - 1`` interior knots ``d = min_d + softplus(derivatives + c)`` with
  ``c = log(exp(1 - min_d) - 1)``, so a zero parameter means slope 1 (all-zero parameters give
  the identity: a zero-initialised network starts the flow at the identity). The boundary
  derivatives are 1, matching the identity tails: the map is C1 across ``+-B``.

In bin k, with ``theta = (x - x_k) / w_k`` in [0, 1] and ``s_k = h_k / w_k``::

    y = y_k + h_k (s_k theta^2 + d_k theta (1 - theta)) / (s_k + (d_k + d_{k+1} - 2 s_k) theta (1 - theta))
    dy/dx = s_k^2 (d_{k+1} theta^2 + 2 s_k theta (1 - theta) + d_k (1 - theta)^2) / denominator^2

Outside ``[-B, B]`` the map is the identity (log-derivative 0). The inverse solves the quadratic
``a theta^2 + b theta + c = 0`` for theta in the stable form ``theta = 2c / (-b - sqrt(b^2 - 4ac))``
(no cancellation: ``-b`` and ``-sqrt(.)`` have the same sign, and ``b = h_k d_k > 0`` at
``theta = 0``).

The definition (the ``reference`` implementation) is written with tensor ops (softmax, cumsum,
gather, where ...), so the gradients in every input, and gradients of gradients, come from the
engine; the ``spline`` kernel family (``csrc/spline.h``, listed at the end of this file) computes
the same map and all four gradients in one pass each, and hands a recorded backward
(``create_graph=True``) back to the tensor ops. The bin lookup is
:func:`gmcore.searchsorted` (batched over the elements, by counting: the knot rows are short).
Points outside the interval are clamped into it before the spline math and then replaced by the
identity with a true select, so the unused branch is always finite (no NaN leaks into gradients).
"""
from __future__ import annotations

import math

from .. import backend, dispatch
from ..autograd import Function, is_grad_enabled
from .activation import softmax
from .indexing import gather
from .pointwise import clamp, log, softplus, sqrt, where
from .reduction import cumsum
from .shape import pad
from .sorting import searchsorted

__all__ = ["rational_quadratic_spline", "spline_params_per_dim"]


def spline_params_per_dim(num_bins: int) -> int:
    """Unconstrained parameters per element for ``num_bins`` bins: K widths, K heights and
    K - 1 interior derivatives (``3K - 1``).

    >>> spline_params_per_dim(8)
    23
    """
    return 3 * int(num_bins) - 1


def _knots(unnormalized, min_size, bound):
    """Knot positions (*, K+1) from -bound to bound and bin sizes (*, K) from unconstrained
    sizes (*, K): softmax, a floor of ``min_size`` per bin (as a fraction of the interval)."""
    k = unnormalized.shape[-1]
    frac = min_size + (1.0 - min_size * k) * softmax(unnormalized, -1)
    inner = cumsum(frac, -1)[..., :-1] * (2.0 * bound) - bound     # the K - 1 interior knots
    knots = pad(pad(inner, (1, 0), value=-bound), (0, 1), value=bound)
    return knots, knots[..., 1:] - knots[..., :-1]


def _check(inputs, widths, heights, derivatives, tail_bound, min_bin_width, min_bin_height,
           min_derivative):
    from ..tensor import Tensor

    op = "rational_quadratic_spline"
    for name, t in (("inputs", inputs), ("widths", widths), ("heights", heights),
                    ("derivatives", derivatives)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{op}: {name} must be floating point, got {t.dtype}")
    k = widths.shape[-1] if widths.ndim else 0
    want = tuple(inputs.shape)
    for name, t, last in (("widths", widths, k), ("heights", heights, k),
                          ("derivatives", derivatives, k - 1)):
        if t.ndim != inputs.ndim + 1 or tuple(t.shape[:-1]) != want or t.shape[-1] != last:
            raise ValueError(
                f"{op}: for inputs of shape {want} and K = {k} bins, widths and heights must have "
                f"shape {want + (k,)} and derivatives {want + (k - 1,)} (the K - 1 interior knots); "
                f"got {name} of shape {tuple(t.shape)}")
    if k < 1:
        raise ValueError(f"{op}: need at least one bin, got widths of shape {tuple(widths.shape)}")
    if not tail_bound > 0:
        raise ValueError(f"{op}: tail_bound must be > 0, got {tail_bound}")
    for name, m in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if not 0 <= m * k < 1:
            raise ValueError(f"{op}: {name} * num_bins must lie in [0, 1), got {m} * {k}")
    if not 0 < min_derivative < 1:
        raise ValueError(f"{op}: min_derivative must lie in (0, 1), got {min_derivative}")


def rational_quadratic_spline(inputs, widths, heights, derivatives, inverse=False, tail_bound=3.0,
                              min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
    """Element-wise monotonic rational-quadratic spline on ``[-tail_bound, tail_bound]``, identity
    outside; returns ``(outputs, logabsdet)``, both of ``inputs``' shape (the log-derivative of
    each element's map: sum it over an example's elements for the flow's log-determinant).

    ``widths``, ``heights``: unconstrained bin widths and heights, shape ``inputs.shape + (K,)``;
    ``derivatives``: unconstrained derivatives at the K - 1 interior knots, shape
    ``inputs.shape + (K - 1,)`` (all zeros: the identity). ``inverse=True`` applies the inverse
    map and returns its log-derivative (minus the forward one at the matching point). The module
    docstring has the exact definitions.

    Precision: a round trip loses about ``eps * |y| / slope``, since ``y`` is stored in the input's
    dtype; with float32 and N(0, 1) parameters the worst of 300 draws was 3e-5 (most stay below
    1e-6). Use float64 where a round trip must be exact.

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> x = gm.tensor([-5.0, -1.0, 0.3, 2.0])
    >>> w, h, d = gm.randn(4, 5), gm.randn(4, 5), gm.randn(4, 4)
    >>> y, ld = gm.nn.functional.rational_quadratic_spline(x, w, h, d)
    >>> x2, ld2 = gm.nn.functional.rational_quadratic_spline(y, w, h, d, inverse=True)
    >>> bool(((x2 - x).abs() < 1e-5).all()), bool(((ld + ld2).abs() < 1e-5).all())
    (True, True)
    >>> y[0].item(), ld[0].item()          # the tails are the identity
    (-5.0, 0.0)
    """
    _check(inputs, widths, heights, derivatives, tail_bound, min_bin_width, min_bin_height,
           min_derivative)
    opts = (bool(inverse), float(tail_bound), float(min_bin_width), float(min_bin_height),
            float(min_derivative))
    name, impl = dispatch.choose("spline", "rq", inputs.device.type)
    dtypes = {t.data.dtype.name for t in (inputs, widths, heights, derivatives)}
    if (name == "reference" or len(dtypes) != 1 or dtypes.pop() not in _KERNEL_DTYPES
            or inputs.numel() == 0 or widths.shape[-1] > _MAX_BINS):
        return _spline_tensor_ops(inputs, widths, heights, derivatives, *opts)
    return RationalQuadraticSpline.apply(inputs, widths, heights, derivatives, opts, impl)


def _spline_tensor_ops(inputs, widths, heights, derivatives, inverse, tail_bound, min_bin_width,
                       min_bin_height, min_derivative):
    """The definition as tensor ops (the ``reference`` implementation; differentiable to any
    order)."""
    bound = float(tail_bound)
    inside = (inputs >= -bound) & (inputs <= bound)
    v = clamp(inputs, -bound, bound)        # keeps the (discarded) spline branch finite outside

    x_knots, w = _knots(widths, min_bin_width, bound)
    y_knots, h = _knots(heights, min_bin_height, bound)
    # slope 1 at zero input: softplus(c) = 1 - min_derivative
    offset = math.log(math.expm1(1.0 - min_derivative))
    inner_d = min_derivative + softplus(derivatives + offset)
    d = pad(pad(inner_d, (1, 0), value=1.0), (0, 1), value=1.0)       # (*, K+1), ends = 1

    # Bin of each element: the number of interior knots at or below it (0 .. K-1).
    knots = y_knots if inverse else x_knots
    idx = searchsorted(knots[..., 1:-1].detach(), v.detach()[..., None], right=True)

    def pick(t):
        return gather(t, -1, idx)[..., 0]

    x_k, w_k, y_k, h_k = pick(x_knots), pick(w), pick(y_knots), pick(h)
    d_k, d_k1 = pick(d), pick(d[..., 1:])
    s_k = h_k / w_k
    curv = d_k + d_k1 - 2.0 * s_k

    if inverse:
        dy = v - y_k
        a = h_k * (s_k - d_k) + dy * curv
        b = h_k * d_k - dy * curv
        c = -s_k * dy
        disc = clamp(b * b - 4.0 * a * c, min=0.0)    # >= 0 for a monotone bin; rounding aside
        theta = (2.0 * c) / (-b - sqrt(disc))
        out = theta * w_k + x_k
    else:
        theta = (v - x_k) / w_k
        out = y_k + h_k * (s_k * theta * theta + d_k * theta * (1.0 - theta)) / (
            s_k + curv * theta * (1.0 - theta))

    t1 = theta * (1.0 - theta)
    denom = s_k + curv * t1
    deriv_num = s_k * s_k * (d_k1 * theta * theta + 2.0 * s_k * t1 + d_k * (1.0 - theta) ** 2)
    logdet = log(deriv_num) - 2.0 * log(denom)
    if inverse:
        logdet = -logdet
    return where(inside, out, inputs), where(inside, logdet, 0.0 * logdet)


# ---- the fused kernel family ``spline`` ----------------------------------------------------------
#
# Implementations take C-contiguous arrays of one dtype (float32/float64): x (n,), widths and
# heights (n, K), derivatives (n, K-1), and the options (inverse, tail_bound, min_bin_width,
# min_bin_height, min_derivative):
#
#     forward(x, W, H, D, *opts)          -> (y, logdet)            each (n,)
#     backward(x, W, H, D, gy, gl, *opts) -> (gx, gW, gH, gD)
#
# =========== ====== =========================================================================
# name        device where
# =========== ====== =========================================================================
# cpp         cpu    ``csrc/spline_cpu.cpp`` via ``gmcore._C`` (OpenMP; math in csrc/spline.h,
#                    where the backward is derived)
# reference   cpu    the tensor-op definition above (double backward works)
# cuda        cuda   ``csrc/spline.cu`` via ``gmcore._C`` (one thread per element)
# reference   cuda   the same tensor ops on CuPy
# =========== ====== =========================================================================
#
# No Triton twin: one thread per element with a short loop over the K bins has nothing to tile,
# and the CUDA kernel runs the very math the CPU tests check.

def _load_cpp():
    _C = dispatch.require_C()
    if not hasattr(_C, "spline_forward_cpu"):
        raise RuntimeError("gmcore._C was built without the spline kernels (rebuild it)")
    return _C.spline_forward_cpu, _C.spline_backward_cpu


def _load_cuda():
    cp = dispatch.require_cupy()
    _C = dispatch.require_C(cuda=True)
    if not hasattr(_C, "spline_forward_cuda"):
        raise RuntimeError("gmcore._C was built without the spline CUDA kernels (rebuild it)")

    def forward(x, W, H, D, *opts):
        with x.device:
            y, ld = cp.empty_like(x), cp.empty_like(x)
            _C.spline_forward_cuda(x.data.ptr, W.data.ptr, H.data.ptr, D.data.ptr, y.data.ptr,
                                   ld.data.ptr, x.shape[0], W.shape[1], *opts, x.dtype.name,
                                   cp.cuda.get_current_stream().ptr)
        return y, ld

    def backward(x, W, H, D, gy, gl, *opts):
        with x.device:
            gx, gW, gH, gD = (cp.empty_like(a) for a in (x, W, H, D))
            _C.spline_backward_cuda(x.data.ptr, W.data.ptr, H.data.ptr, D.data.ptr, gy.data.ptr,
                                    gl.data.ptr, gx.data.ptr, gW.data.ptr, gH.data.ptr,
                                    gD.data.ptr, x.shape[0], W.shape[1], *opts, x.dtype.name,
                                    cp.cuda.get_current_stream().ptr)
        return gx, gW, gH, gD

    return forward, backward


def _load_reference():
    return None  # the reference is the tensor-op definition itself (_spline_tensor_ops)


def _load_reference_cuda():
    dispatch.require_cupy()
    return None


dispatch.register("spline", "rq", "cpu", "cpp", _load_cpp)
dispatch.register("spline", "rq", "cpu", "reference", _load_reference)
dispatch.register("spline", "rq", "cuda", "cuda", _load_cuda)
dispatch.register("spline", "rq", "cuda", "reference", _load_reference_cuda)

_KERNEL_DTYPES = ("float32", "float64")
_MAX_BINS = 64  # csrc/spline.h kMaxBins


def _flat(t, n, cols=None):
    """The kernels' layout: (n,) per element, or (n, cols) parameters per element."""
    return backend.xp_of(t).ascontiguousarray(t.reshape((n,) if cols is None else (n, cols)))


class RationalQuadraticSpline(Function):
    """The fused spline: one kernel pass forward, one for all four gradients. When the backward
    itself is recorded (``create_graph=True``) it is rebuilt from the tensor-op definition, so
    gradients of gradients stay available."""

    @staticmethod
    def forward(ctx, x, W, H, D, opts, impl):
        k, n = W.shape[-1], x.size
        y, ld = impl[0](_flat(x, n), _flat(W, n, k), _flat(H, n, k), _flat(D, n, k - 1), *opts)
        ctx.opts, ctx.impl = opts, impl
        ctx.save_for_backward(x, W, H, D)
        return y.reshape(x.shape), ld.reshape(x.shape)

    @staticmethod
    def backward(ctx, gy, gl):
        x, W, H, D = ctx.saved_tensors
        if is_grad_enabled():  # create_graph=True: differentiate the tensor-op definition
            return _recorded_backward(ctx, (x, W, H, D), gy, gl)
        xa, Wa, Ha, Da = (t.data for t in (x, W, H, D))
        k, n = Wa.shape[-1], xa.size
        grads = ctx.impl[1](_flat(xa, n), _flat(Wa, n, k), _flat(Ha, n, k), _flat(Da, n, k - 1),
                            _flat(gy.data.astype(xa.dtype, copy=False), n),
                            _flat(gl.data.astype(xa.dtype, copy=False), n), *ctx.opts)
        from ..tensor import Tensor
        return tuple(Tensor(g.reshape(t.shape)) if need else None for g, t, need
                     in zip(grads, (x, W, H, D), ctx.needs_input_grad)) + (None, None)


def _recorded_backward(ctx, inputs, gy, gl):
    """Gradients as recorded tensor ops: the tensor-op spline on the saved inputs, differentiated
    with ``create_graph=True``."""
    from ..autograd import grad as autograd_grad

    inverse, bound, min_w, min_h, min_d = ctx.opts
    needs = ctx.needs_input_grad[:4]
    wanted = [t for t, need in zip(inputs, needs) if need]
    y, ld = _spline_tensor_ops(*inputs, inverse, bound, min_w, min_h, min_d)
    got = iter(autograd_grad([y, ld], wanted, [gy, gl], create_graph=True, allow_unused=True))
    grads = []
    for t, need in zip(inputs, needs):
        g = next(got) if need else None
        grads.append(g if g is not None or not need else t * 0.0)  # unused: a zero gradient
    return tuple(grads) + (None, None)
