"""The discretized logistic mixture likelihood, written once as the specification.

Everything here works on (B, C, N) data and (B, P, N) parameters (N = H*W pixels or T time
steps; :mod:`gmcore.functional.dlml` reshapes the public shapes to these). The kernels in
``kernels/numba/dlml.py``, ``kernels/triton/dlml.py`` and ``csrc/dlml.h`` compute the same
function and are tested against :func:`dlml_nll_tensor` in float64.

Parameter layout (channel axis of ``params``), K mixture components, C data channels::

    [0, K)                       mixture logits
    K + c*S + [0, K)             means of channel c            S = 3K if C == 3 else 2K
    K + c*S + K + [0, K)         log-scales of channel c       (clamped below at -7)
    K + q*S + 2K + [0, K)        tanh-coefficient q (C == 3 only)

The coefficient of channel c on an earlier channel j < c is slot q = c(c-1)/2 + j:
q=0 is green-on-red, q=1 blue-on-red, q=2 blue-on-green. This is PixelCNN++'s layout
(``openai/pixel-cnn``: the last axis split into K logits, then per channel [means, log-scales,
coefficients]) with the channel axis first; for C = 1 (grey images, WaveNet audio) there are
no coefficients: [logits | means | log-scales], 3K channels.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend

__all__ = ["LOG_SCALE_MIN", "params_per_component", "layout", "tail_threshold", "bin_constants",
           "dlml_nll_tensor", "dlml_forward_reference", "sample_reference"]

LOG_SCALE_MIN = -7.0

# PixelCNN++ falls back to the bin-midpoint density when the bin's probability is <= 1e-5 at
# 256 bins; the threshold scales with the bin width 2/(num_bins-1): 1e-5 * 255/(num_bins-1).
_TAIL_AT_256 = 1e-5


def params_per_component(C: int) -> int:
    """Channels of ``params`` per mixture component: 1 + 2C + C(C-1)/2 (10 for RGB, 3 for grey)."""
    return 1 + 2 * C + C * (C - 1) // 2


def layout(C: int, K: int):
    """Channel offsets ``(means[c], log_scales[c], coeffs[q])`` of the parameter layout above."""
    S = 3 * K if C == 3 else 2 * K
    means = [K + c * S for c in range(C)]
    log_scales = [K + c * S + K for c in range(C)]
    coeffs = [K + q * S + 2 * K for q in range(C * (C - 1) // 2)]
    return means, log_scales, coeffs


def tail_threshold(num_bins: int) -> float:
    """Bin probability at or below which the midpoint approximation is used.

    ``1e-5 * 255 / (num_bins - 1)``: PixelCNN++'s 1e-5 at 256 bins, scaled with the bin width
    (3.9e-8 at 65536 bins, where a fixed 1e-5 would send most likely bins to the fallback).
    """
    return _TAIL_AT_256 * 255.0 / (num_bins - 1)


def bin_constants(num_bins: int):
    """``(h, log_thr, log_half_bins)``: bin half-width, log tail threshold, log((num_bins-1)/2).

    Bin i (value -1 + 2i/(num_bins-1)) covers [x-h, x+h] with h = 1/(num_bins-1); the first
    bin extends to -inf, the last to +inf. A value is in the first bin when x < -1 + h and in
    the last when x > 1 - h (PixelCNN++'s -0.999 / 0.999 at 256 bins). The midpoint fallback
    is log pdf(x) + log(2h) = log pdf(x) - log((num_bins-1)/2) (PixelCNN++'s log(127.5)).
    """
    h = 1.0 / (num_bins - 1)
    return h, math.log(tail_threshold(num_bins)), math.log((num_bins - 1) / 2.0)


def _log_bin_prob(x, mu, log_scale, num_bins):
    """log P(bin of x) under Logistic(mu, exp(log_scale)) with gmcore Tensor ops.

    Interior bins use the exact, cancellation-free identity
        sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(b - a)),
    so log P = logsigmoid(a) + logsigmoid(-b) + log(-expm1(-(a - b))), a - b = 2h/scale.
    Every branch is evaluated on inputs that keep it finite (the unselected branches of a
    ``where`` still get gradients, so a NaN there would leak into the selected one).
    """
    from .. import functional as F  # the Tensor ops (late: this module loads with functional)

    h, log_thr, log_half_bins = bin_constants(num_bins)
    thr = math.exp(log_thr)
    centered = x - mu
    inv = (-log_scale).exp()
    a = inv * (centered + h)
    b = inv * (centered - h)
    first = x.data < -1.0 + h
    last = x.data > 1.0 - h
    log_first = F.logsigmoid(a)           # log sigmoid(a): the first bin, (-inf, x+h]
    log_last = F.logsigmoid(-b)           # log (1 - sigmoid(b)): the last bin, [x-h, inf)
    d = inv * (2.0 * h)                   # a - b > 0
    # P <= d/4 (the logistic density is at most 1/4 per unit of a): d <= 4 thr is a tail bin
    # for sure, and keeps log(-expm1(-d)) away from log(0) where the scale underflows.
    wide = d.data > 4.0 * thr
    d_safe = F.where(wide, d, 1.0)
    log_delta = log_first + log_last + (-(-d_safe).expm1()).log()
    u = inv * centered
    log_mid = u - log_scale + 2.0 * F.logsigmoid(-u) - log_half_bins  # log pdf(x) + log(2h)
    interior = wide & (log_delta.data > log_thr)
    return F.where(first, log_first, F.where(last, log_last, F.where(interior, log_delta, log_mid)))


def dlml_nll_tensor(x, params, num_bins):
    """Per-position negative log-likelihood (B, N) of x (B, C, N) under params (B, P, N).

    Written with differentiable gmcore Tensor ops: gradients of any order, on any device.
    """
    from .. import functional as F

    C = x.shape[1]
    K = params.shape[1] // params_per_component(C)
    means, log_scales, coeffs = layout(C, K)
    logits = params[:, :K]
    total = None
    for c in range(C):
        mu = params[:, means[c]:means[c] + K]
        for j in range(c):
            q = c * (c - 1) // 2 + j
            mu = mu + params[:, coeffs[q]:coeffs[q] + K].tanh() * x[:, j:j + 1]
        ls = F.clamp(params[:, log_scales[c]:log_scales[c] + K], min=LOG_SCALE_MIN)
        term = _log_bin_prob(x[:, c:c + 1], mu, ls, num_bins)
        total = term if total is None else total + term
    return F.logsumexp(logits, 1) - F.logsumexp(logits + total, 1)


def dlml_forward_reference(x3, p3, num_bins, want_grad):
    """The kernel contract on raw arrays, computed by :func:`dlml_nll_tensor` and autodiff.

    Returns ``(nll (B, N), grad)`` with ``grad`` = d nll.sum() / d params (B, P, N), or None.
    """
    from ..autograd import enable_grad, grad, no_grad
    from ..tensor import Tensor

    x = Tensor(x3)
    if not want_grad:
        with no_grad():
            return dlml_nll_tensor(x, Tensor(p3), num_bins).data, None
    p = Tensor(p3, requires_grad=True)
    with enable_grad():
        nll = dlml_nll_tensor(x, p, num_bins)
        (g,) = grad(nll.sum(), [p])
    return nll.data, g.data


# ---- sampling ---------------------------------------------------------------------------------

def sample_reference(p3, C, num_bins, gen):
    """Draw x (B, C, N) on the bin grid from params (B, P, N) with generator ``gen``.

    Component k by Gumbel-max over the logits (one k per position, shared by the channels);
    then channel by channel: y = mu + s * logit(u), the mean of channel c shifted by the
    coefficients times the already drawn (quantized) earlier channels, and y rounded to the
    nearest grid value and clipped to [-1, 1]. Rounding the continuous draw is exact: bin i
    collects [v_i - h, v_i + h), the edge bins everything beyond, which is the likelihood's
    definition of the bins.
    """
    xp = backend.xp_of(p3)
    B, P, N = p3.shape
    K = P // params_per_component(C)
    means, log_scales, coeffs = layout(C, K)
    dt = p3.dtype
    tiny = np.finfo(dt).tiny
    u = gen.uniform((B, K, N), 0.0, 1.0, dt)
    gumbel = -xp.log(-xp.log(xp.maximum(u, tiny)) + tiny)  # u in [0, 1): keep both logs finite
    k = xp.argmax(p3[:, :K] + gumbel, axis=1)[:, None, :]  # (B, 1, N)

    def pick(off):
        return xp.take_along_axis(p3[:, off:off + K], k, axis=1)[:, 0]

    levels = num_bins - 1
    out = xp.empty((B, C, N), dtype=dt)
    for c in range(C):
        mu = pick(means[c])
        for j in range(c):
            q = c * (c - 1) // 2 + j
            mu = mu + xp.tanh(pick(coeffs[q])) * out[:, j]
        scale = xp.exp(xp.maximum(pick(log_scales[c]), LOG_SCALE_MIN))
        v = gen.uniform((B, N), 0.0, 1.0, dt)
        v = xp.clip(v, tiny, 1.0 - np.finfo(dt).eps)  # logit(v) finite
        y = mu + scale * (xp.log(v) - xp.log1p(-v))
        i = xp.clip(xp.rint((y + 1.0) * (levels / 2.0)), 0, levels)
        out[:, c] = (i * (2.0 / levels) - 1.0).astype(dt)
    return out
