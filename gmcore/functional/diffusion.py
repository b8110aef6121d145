"""Fused diffusion steps: q_sample, the epsilon-MSE and hybrid losses, DDPM and DDIM steps.

Every op takes per-example integer timesteps ``t`` (int64, shape ``(B,)``; a Python int is
broadcast) and a :class:`gmcore.schedules.NoiseSchedule`. Its coefficients are gathered per
example inside the kernels from the schedule's packed float64 table, cast once to the input
dtype (float32 inputs use float32 coefficients; see :meth:`NoiseSchedule.table`).
Data tensors are ``(B, ...)``; the kernels see them flattened to ``(B, N)``.

Conventions (improved DDPM, Nichol & Dhariwal 2021, unless said otherwise):

* ``t = 0`` is the last denoising step: :func:`ddpm_step` adds no noise there (true select:
  the noise is not read), and no NaN arises (the posterior log variance is clipped at t = 0).
* :func:`ddim_step`: ``t_prev = -1`` means the final step to x0 (``abar_prev = 1``); ``eta = 0``
  is deterministic (the noise is not read where sigma = 0).
* ``learned_range`` model outputs are ``(B, 2C, ...)``: channels ``[:C]`` hold eps, channels
  ``[C:]`` the variance interpolation ``v`` in [-1, 1]; the log variance is
  ``(v+1)/2 * log(beta_t) + (1-v)/2 * log(posterior variance_t)`` (clipped at t = 0).

Gradients. The losses (:func:`eps_mse_loss`, :func:`hybrid_loss`) have a fused backward
w.r.t. the model output (once-differentiable: a second backward raises an error naming the op;
``GMCORE_KERNELS=diffusion=reference`` gives double backward). :func:`q_sample` is fused
forward with a differentiable backward (w.r.t. x0 and noise). The sampling ops
(:func:`predict_x0`, :func:`ddpm_step`, :func:`ddim_step`) run their fused kernels
forward-only: when grad mode is on and an input requires grad (guidance, differentiable
sampling) they run the differentiable reference math instead, so gradients are always right.

Implementations (dispatch family ``diffusion``): cpu ``cpp`` (csrc/diffusion_cpu.cpp),
``numba`` (kernels/numba/diffusion.py), ``reference``; cuda ``triton``
(kernels/triton/diffusion.py), ``cuda`` (csrc/diffusion.cu), ``reference``. Timesteps are
range-checked on the host before any kernel reads a table (on a GPU this costs one sync).
"""

from __future__ import annotations

import math

import numpy as np

from .. import autograd, backend, dispatch
from ..autograd import Function, once_differentiable
from ..schedules import NoiseSchedule
from ..tensor import Tensor
from ._util import check_reduction, reduce_loss
from ._diffusion_reference import (REFERENCE_IMPL, VAR_TYPES, ref_ddim_step, ref_ddpm_step,
                                   ref_eps_loss, ref_hybrid_loss, ref_predict_x0, ref_q_sample)

__all__ = ["q_sample", "predict_x0", "eps_mse_loss", "hybrid_loss", "ddpm_step", "ddim_step"]

FAMILY = "diffusion"
OPS = ("q_sample", "predict_x0", "ddpm_step", "ddim_step", "eps_loss_fwd", "eps_loss_bwd",
       "hybrid_fwd", "hybrid_bwd")
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---- loaders ---------------------------------------------------------------------------------

def _load_reference_cpu(op):
    return getattr(REFERENCE_IMPL, op)


def _load_reference_cuda(op):
    dispatch.require_cupy()
    return getattr(REFERENCE_IMPL, op)


def _load_numba(op):
    try:
        from gmcore.kernels.numba import diffusion as mod
    except ImportError as exc:
        raise ImportError(f"numba kernels unavailable ({exc})") from None
    return getattr(mod, op)


def _load_cpp(op):
    _C = dispatch.require_C()
    fn = getattr(_C, f"diffusion_{op}_cpu", None)
    if fn is None:
        raise RuntimeError(f"gmcore._C has no diffusion_{op}_cpu (rebuild the extension)")
    return fn


def _load_triton(op):
    dispatch.require_cupy()
    try:
        from gmcore.kernels.triton import diffusion as mod
    except ImportError as exc:
        raise ImportError(f"triton kernels unavailable ({exc})") from None
    return getattr(mod, op)


def _load_cuda(op):
    dispatch.require_cupy()
    _C = dispatch.require_C(cuda=True)
    if not hasattr(_C, f"diffusion_{op}_cuda"):
        raise RuntimeError(f"gmcore._C has no diffusion_{op}_cuda (rebuild the extension)")
    from ..kernels._diffusion_cuda import launcher
    return launcher(_C, op)


def _bind(loader, op):
    return lambda: loader(op)


# Preference order = registration order (fastest first, measured by benchmarks/bench_diffusion.py).
for _op in OPS:
    dispatch.register(FAMILY, _op, "cpu", "cpp", _bind(_load_cpp, _op))
    dispatch.register(FAMILY, _op, "cpu", "numba", _bind(_load_numba, _op))
    dispatch.register(FAMILY, _op, "cpu", "reference", _bind(_load_reference_cpu, _op))
    dispatch.register(FAMILY, _op, "cuda", "triton", _bind(_load_triton, _op))
    dispatch.register(FAMILY, _op, "cuda", "cuda", _bind(_load_cuda, _op))
    dispatch.register(FAMILY, _op, "cuda", "reference", _bind(_load_reference_cuda, _op))


# ---- argument handling ------------------------------------------------------------------------

def _check_tensor(x, fn, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a gmcore Tensor, got {type(x).__name__}")
    if x.data.dtype.kind != "f":
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{fn}: {name} must have a batch dim of size >= 1, got shape "
                         f"{tuple(x.shape)}")
    return x


def _check_like(x, ref, fn, name, ref_name, shape=None):
    _check_tensor(x, fn, name)
    want = tuple(ref.shape) if shape is None else shape
    if tuple(x.shape) != want:
        raise ValueError(f"{fn}: {name} must have shape {want} (like {ref_name}), got "
                         f"{tuple(x.shape)}")
    if x.data.dtype != ref.data.dtype:
        raise TypeError(f"{fn}: {name} dtype {x.dtype} differs from {ref_name} dtype {ref.dtype}")
    if x.device != ref.device:
        raise RuntimeError(f"{fn}: {name} is on {x.device} but {ref_name} is on {ref.device}")


def _check_schedule(schedule, fn):
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"{fn}: schedule must be a gmcore.schedules.NoiseSchedule, got "
                        f"{type(schedule).__name__}")
    return schedule


def _timesteps(t, batch, T, like, fn, name="t", low=0):
    """Validate timesteps -> contiguous int64 array (B,) on ``like``'s device."""
    xp = backend.xp_of(like.data)
    if isinstance(t, Tensor):
        arr = t.data
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{fn}: {name} must hold integers (int64), got {t.dtype}")
        if t.device != like.device:
            raise RuntimeError(f"{fn}: {name} is on {t.device} but the data is on {like.device}")
    elif isinstance(t, (bool, float)) or (isinstance(t, np.ndarray) and t.dtype.kind not in "iu"):
        raise TypeError(f"{fn}: {name} must be an int or an integer tensor, got {t!r}")
    else:
        arr = np.asarray(t)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{fn}: {name} must be an int or an integer tensor, got {t!r}")
        arr = xp.asarray(arr)
    if arr.ndim == 0:
        arr = xp.full((batch,), int(arr), dtype=np.int64)
    if arr.shape != (batch,):
        raise ValueError(f"{fn}: {name} must have shape ({batch},) (one timestep per example), "
                         f"got {tuple(arr.shape)}")
    arr = xp.ascontiguousarray(arr, dtype=np.int64)
    lo, hi = int(arr.min()), int(arr.max())  # the kernels index tables with t: never out of range
    if lo < low or hi >= T:
        extra = " (-1 means the final step to x0)" if low < 0 else ""
        raise ValueError(f"{fn}: {name} must lie in [{low}, {T - 1}]{extra}; got values in "
                         f"[{lo}, {hi}]")
    return arr


def _weights(weights, T, dtype, xp, fn):
    if weights is None:
        return xp.ones(T, dtype=dtype)
    w = xp.asarray(weights.data if isinstance(weights, Tensor) else weights)
    if w.shape != (T,):
        raise ValueError(f"{fn}: weights must hold one value per timestep, shape ({T},); got "
                         f"{tuple(w.shape)}")
    return xp.ascontiguousarray(w, dtype=dtype)


def _choose(op, x):
    if x.data.dtype not in _KERNEL_DTYPES:  # kernels cover float32/float64
        return "reference", None
    return dispatch.choose(FAMILY, op, x.device.type)


def _flat(x):
    """(B, ...) tensor -> its C-contiguous (B, N) array (a view when already contiguous)."""
    xp = backend.xp_of(x.data)
    return xp.ascontiguousarray(x.data.reshape(x.shape[0], -1))


def _needs_grad(*tensors):
    return autograd.is_grad_enabled() and any(
        isinstance(x, Tensor) and x.requires_grad for x in tensors)


def _table(schedule, x):
    return schedule.table(x.data.dtype, backend.xp_of(x.data))


def _noise_or_draw(noise, x, fn, generator):
    if noise is None:
        from ..creation import randn
        return randn(*x.shape, dtype=x.dtype, device=x.device, generator=generator)
    _check_like(noise, x, fn, "noise", "x_t")
    return noise


# ---- q_sample ---------------------------------------------------------------------------------

class QSample(Function):
    """Fused ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``; the backward (two per-example
    scalings) is written with tensor ops, so it is differentiable again."""

    @staticmethod
    def forward(ctx, x0, noise, t, tab, impl):
        ctx.t, ctx.tab = t, tab
        out = impl(_flat_arr(x0), _flat_arr(noise), t, tab)
        return out.reshape(x0.shape)

    @staticmethod
    def backward(ctx, g):
        shape = (g.shape[0],) + (1,) * (g.ndim - 1)
        tab = ctx.tab
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = g * Tensor(tab[0][ctx.t].reshape(shape))
        if ctx.needs_input_grad[1]:
            gb = g * Tensor(tab[1][ctx.t].reshape(shape))
        return ga, gb, None, None, None


def _shaped(a, shape):
    """``a`` (a fresh kernel output) reshaped in place: it stays an array that owns its data, so
    the engine stores it as a leaf's .grad without a copy."""
    try:
        a.shape = shape
        return a
    except (AttributeError, ValueError):
        return a.reshape(shape)


def _flat_arr(a):
    xp = backend.xp_of(a)
    return xp.ascontiguousarray(a.reshape(a.shape[0], -1))


def q_sample(x0, t, noise, schedule):
    """Diffuse clean data to step ``t``: ``sqrt(abar_t) * x0 + sqrt(1 - abar_t) * noise``.

    ``x0`` and ``noise`` are ``(B, ...)`` tensors of one dtype; ``t`` holds one int64 timestep
    per example. Differentiable w.r.t. ``x0`` and ``noise``.

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> s = NoiseSchedule.linear(1000)
    >>> x0, eps = gm.ones(2, 3), gm.zeros(2, 3)
    >>> xt = gm.functional.q_sample(x0, gm.tensor([0, 999]), eps, s)
    >>> [round(v, 4) for v in xt[:, 0].tolist()]
    [0.9999, 0.0064]
    """
    fn = "q_sample"
    _check_tensor(x0, fn, "x0")
    _check_like(noise, x0, fn, "noise", "x0")
    schedule = _check_schedule(schedule, fn)
    tt = _timesteps(t, x0.shape[0], schedule.num_timesteps, x0, fn)
    tab = _table(schedule, x0)
    name, impl = _choose("q_sample", x0)
    if name == "reference":
        b = x0.shape[0]
        return ref_q_sample(x0.reshape(b, -1), noise.reshape(b, -1), Tensor(tt),
                            Tensor(tab)).reshape(tuple(x0.shape))
    return QSample.apply(x0, noise, tt, tab, impl)


# ---- forward-only sampling ops ------------------------------------------------------------------

def predict_x0(x_t, eps, t, schedule, clip_x0=True):
    """The x0 prediction ``x_t / sqrt(abar_t) - sqrt(1/abar_t - 1) eps``, clamped to [-1, 1]
    when ``clip_x0``. Fused forward-only (see the module notes on gradients).

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> s = NoiseSchedule.linear(10, 0.1, 0.2)
    >>> x0 = gm.functional.predict_x0(gm.full((1, 2), 3.0), gm.zeros(1, 2), gm.tensor([0]), s)
    >>> x0.tolist()
    [[1.0, 1.0]]
    """
    fn = "predict_x0"
    _check_tensor(x_t, fn, "x_t")
    _check_like(eps, x_t, fn, "eps", "x_t")
    schedule = _check_schedule(schedule, fn)
    tt = _timesteps(t, x_t.shape[0], schedule.num_timesteps, x_t, fn)
    tab = _table(schedule, x_t)
    name, impl = _choose("predict_x0", x_t)
    if name == "reference" or _needs_grad(x_t, eps):
        b = x_t.shape[0]
        return ref_predict_x0(x_t.reshape(b, -1), eps.reshape(b, -1), Tensor(tt), Tensor(tab),
                              bool(clip_x0)).reshape(tuple(x_t.shape))
    return Tensor(impl(_flat(x_t), _flat(eps), tt, tab, bool(clip_x0)).reshape(x_t.shape))


def ddpm_step(x_t, model_out, t, noise, schedule, var_type="fixed_small", clip_x0=True,
              generator=None):
    """One ancestral DDPM step ``x_{t-1} ~ p(x_{t-1} | x_t)`` per example.

    ``model_out`` is eps ``(B, C, ...)`` (shape of ``x_t``), or for ``var_type="learned_range"``
    ``(B, 2C, ...)``: eps in channels ``[:C]``, v in ``[C:]``. ``var_type``: ``"fixed_small"``
    (posterior variance, log clipped at t=0), ``"fixed_large"`` (betas, with
    posterior_variance[1] at t=0) or ``"learned_range"``. ``noise`` (shape of ``x_t``; None:
    drawn with ``generator``) is not added where ``t == 0``. Forward-only fused kernel.

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> s = NoiseSchedule.linear(50, 1e-3, 0.05)
    >>> x = gm.randn(2, 3, 4, 4, generator=gm.Generator().manual_seed(0))
    >>> eps = gm.zeros(2, 3, 4, 4)
    >>> y = gm.functional.ddpm_step(x, eps, gm.tensor([49, 0]), gm.zeros(2, 3, 4, 4), s)
    >>> y.shape, bool(y.isfinite().all())
    (gmcore.Size([2, 3, 4, 4]), True)
    """
    fn = "ddpm_step"
    _check_tensor(x_t, fn, "x_t")
    if var_type not in VAR_TYPES:
        raise ValueError(f"{fn}: var_type must be one of {sorted(VAR_TYPES)}, got {var_type!r}")
    code = VAR_TYPES[var_type]
    if code == 2:
        if x_t.ndim < 2:
            raise ValueError(f"{fn}: learned_range needs x_t with a channel dim (B, C, ...), got "
                             f"shape {tuple(x_t.shape)}")
        want = (x_t.shape[0], 2 * x_t.shape[1]) + tuple(x_t.shape[2:])
        _check_like(model_out, x_t, fn, "model_out", "x_t with 2C channels (eps, v)", shape=want)
    else:
        _check_like(model_out, x_t, fn, "model_out", "x_t")
    schedule = _check_schedule(schedule, fn)
    tt = _timesteps(t, x_t.shape[0], schedule.num_timesteps, x_t, fn)
    noise = _noise_or_draw(noise, x_t, fn, generator)
    tab = _table(schedule, x_t)
    name, impl = _choose("ddpm_step", x_t)
    if name == "reference" or _needs_grad(x_t, model_out, noise):
        b = x_t.shape[0]
        return ref_ddpm_step(x_t.reshape(b, -1), model_out.reshape(b, -1), noise.reshape(b, -1),
                             Tensor(tt), Tensor(tab), code, bool(clip_x0)).reshape(tuple(x_t.shape))
    out = impl(_flat(x_t), _flat(model_out), _flat(noise), tt, tab, code, bool(clip_x0))
    return Tensor(out.reshape(x_t.shape))


def ddim_step(x_t, eps, t, t_prev, eta, noise, schedule, clip_x0=True, generator=None):
    """One DDIM step (Song et al. 2021) from ``t`` to ``t_prev`` per example.

    ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise`` with
    ``sigma = eta sqrt((1-abar_prev)/(1-abar_t) (1 - abar_t/abar_prev))``. ``t_prev`` (int or
    int64 ``(B,)``, each ``-1 <= t_prev <= t``) = -1 is the final step to x0 (abar_prev = 1).
    With ``clip_x0`` the x0 prediction is clamped to [-1, 1] and eps re-derived from it.
    ``eta = 0`` is deterministic: ``noise`` may be None and is never read. Forward-only kernel.

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> s = NoiseSchedule.linear(100, 1e-3, 0.05)
    >>> x = gm.full((1, 4), 0.5)
    >>> y = gm.functional.ddim_step(x, gm.zeros(1, 4), 0, -1, 0.0, None, s, clip_x0=False)
    >>> round(y[0, 0].item(), 4)  # the final step returns the x0 prediction x / sqrt(abar_0)
    0.5003
    """
    fn = "ddim_step"
    _check_tensor(x_t, fn, "x_t")
    _check_like(eps, x_t, fn, "eps", "x_t")
    schedule = _check_schedule(schedule, fn)
    eta = float(eta)
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"{fn}: eta must be a finite number >= 0, got {eta}")
    T = schedule.num_timesteps
    tt = _timesteps(t, x_t.shape[0], T, x_t, fn)
    tp = _timesteps(t_prev, x_t.shape[0], T, x_t, fn, name="t_prev", low=-1)
    if bool((tp > tt).any()):
        raise ValueError(f"{fn}: t_prev must not exceed t (DDIM steps go towards t = -1)")
    if noise is None and eta == 0:
        noise = x_t  # never read: sigma = 0 everywhere
    else:
        noise = _noise_or_draw(noise, x_t, fn, generator)
    tab = _table(schedule, x_t)
    name, impl = _choose("ddim_step", x_t)
    if name == "reference" or _needs_grad(x_t, eps, noise):
        b = x_t.shape[0]
        return ref_ddim_step(x_t.reshape(b, -1), eps.reshape(b, -1), noise.reshape(b, -1),
                             Tensor(tt), Tensor(tp), Tensor(tab), eta,
                             bool(clip_x0)).reshape(tuple(x_t.shape))
    out = impl(_flat(x_t), _flat(eps), _flat(noise), tt, tp, tab, eta, bool(clip_x0))
    return Tensor(out.reshape(x_t.shape))


# ---- losses: fused forward + fused once-differentiable backward ---------------------------------

class EpsMSELoss(Function):
    """Per-example ``w[t] mean (eps_pred - noise)^2``, reduced over the batch inside the same
    op (a separate mean would add an autograd node to a ~50 us kernel); fused forward and
    backward.

    Backward: ``d/d eps_pred = g_b * w[t_b] * 2 (eps_pred - noise) / N`` with ``g_b`` the
    incoming gradient of example b (``g / B`` for "mean", ``g`` for "sum"); the noise gets
    minus that.
    """

    @staticmethod
    def forward(ctx, pred, noise, t, w, fwd, bwd, reduction):
        ctx.save_for_backward(pred, noise, t, w)
        ctx.bwd, ctx.reduction = bwd, reduction
        per = fwd(_flat_arr(pred), _flat_arr(noise), t, w)
        if reduction == "none":
            return per
        total = per.sum()
        return total / per.shape[0] if reduction == "mean" else total

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        pred, noise, t, w = ctx.saved_arrays
        xp = backend.xp_of(g)
        b = pred.shape[0]
        if ctx.reduction != "none":
            scale = 1.0 / b if ctx.reduction == "mean" else 1.0
            g = xp.full((b,), g * scale, dtype=pred.dtype)
        gp = _shaped(ctx.bwd(_flat_arr(pred), _flat_arr(noise), t, w,
                             xp.ascontiguousarray(g, dtype=pred.dtype)), pred.shape)
        gn = -gp if ctx.needs_input_grad[1] else None
        return gp, gn, None, None, None, None, None


def eps_mse_loss(eps_pred, noise, t, weights=None, reduction="mean"):
    """The DDPM epsilon objective: ``w[t_b] * mean over the example of (eps_pred - noise)^2``,
    then reduced over the batch (``"mean"``, ``"sum"`` or ``"none"`` for the (B,) losses).

    ``weights`` (optional, shape (T,)) are per-timestep weights gathered with ``t``; without
    them ``t`` is not needed (pass any valid timesteps, e.g. the sampled ones). Fused forward
    and backward (once-differentiable) w.r.t. ``eps_pred`` (and ``noise``).

    >>> import gmcore as gm
    >>> p = gm.ones(2, 3, requires_grad=True)
    >>> loss = gm.functional.eps_mse_loss(p, gm.zeros(2, 3), gm.tensor([1, 2]))
    >>> loss.item()
    1.0
    >>> loss.backward(); [round(v, 4) for v in p.grad[0].tolist()]
    [0.3333, 0.3333, 0.3333]
    """
    fn = "eps_mse_loss"
    _check_tensor(eps_pred, fn, "eps_pred")
    _check_like(noise, eps_pred, fn, "noise", "eps_pred")
    xp = backend.xp_of(eps_pred.data)
    if weights is None:  # t only selects weights: without them every example has weight 1
        tt = xp.zeros(eps_pred.shape[0], dtype=np.int64)
        w = xp.ones(1, dtype=eps_pred.data.dtype)
    else:
        n_w = int(weights.shape[0]) if hasattr(weights, "shape") and len(weights.shape) else -1
        if n_w < 1:
            raise ValueError(f"{fn}: weights must be a 1-D sequence of per-timestep weights")
        tt = _timesteps(t, eps_pred.shape[0], n_w, eps_pred, fn)
        w = _weights(weights, n_w, eps_pred.data.dtype, xp, fn)
    name, fwd = _choose("eps_loss_fwd", eps_pred)
    if name == "reference":
        b = eps_pred.shape[0]
        per = ref_eps_loss(eps_pred.reshape(b, -1), noise.reshape(b, -1), Tensor(tt), Tensor(w))
        return reduce_loss(per, reduction, fn)
    check_reduction(reduction, fn)
    bwd = dispatch.get(FAMILY, "eps_loss_bwd", eps_pred.device.type)
    return EpsMSELoss.apply(eps_pred, noise, tt, w, fwd, bwd, reduction)


class HybridLoss(Function):
    """Per-example ``w[t] (mse + vb_weight * vb)``; fused forward and backward w.r.t. the model
    output (eps and v halves; vb has the stop-gradient on the mean, so eps learns from mse only).
    """

    @staticmethod
    def forward(ctx, out, x0, xt, noise, t, tab, w, vb_weight, fwd, bwd):
        ctx.save_for_backward(out, x0, xt, noise, t, tab, w)
        ctx.vb_weight, ctx.bwd = vb_weight, bwd
        return fwd(_flat_arr(out), _flat_arr(x0), _flat_arr(xt), _flat_arr(noise), t, tab, w,
                   vb_weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        out, x0, xt, noise, t, tab, w = ctx.saved_arrays
        xp = backend.xp_of(g)
        go = ctx.bwd(_flat_arr(out), _flat_arr(x0), _flat_arr(xt), _flat_arr(noise), t, tab, w,
                     ctx.vb_weight, xp.ascontiguousarray(g, dtype=out.dtype))
        return (_shaped(go, out.shape),) + (None,) * 9


def hybrid_loss(model_out, x0, x_t, noise, t, schedule, weights=None, vb_weight=1.0,
                reduction="mean"):
    """Improved DDPM's hybrid objective for a learned-variance model: ``L_simple + L_vlb``.

    ``model_out`` is ``(B, 2C, ...)`` (eps in channels ``[:C]``, v in ``[C:]``); ``x0`` (data in
    [-1, 1]), ``x_t`` (from :func:`q_sample`) and ``noise`` are ``(B, C, ...)``. Per example::

        loss_b = w[t_b] * (mean (eps - noise)^2 + vb_weight * vb_b)

    with ``vb_b`` in bits per dim: ``KL(q(x_{t-1}|x_t, x0) || p(x_{t-1}|x_t))`` for t > 0 and
    the discretized Gaussian decoder NLL ``-log p(x0|x_1)`` for t = 0, both with a
    stop-gradient on the model mean (only v learns from vb). Improved DDPM uses
    ``vb_weight = T / 1000`` (its RESCALED_MSE) or 1. The decoder uses improved DDPM's tanh
    approximation of the normal CDF and 1e-12 probability floor. Fused forward and backward
    (once-differentiable) w.r.t. ``model_out``; if ``x0``, ``x_t`` or ``noise`` require grad
    the differentiable reference runs instead.

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> s = NoiseSchedule.linear(100, 1e-3, 0.05)
    >>> g = gm.Generator().manual_seed(0)
    >>> x0 = gm.rand(2, 1, 2, 2, generator=g) * 2 - 1
    >>> noise = gm.randn(2, 1, 2, 2, generator=g)
    >>> t = gm.tensor([0, 50])
    >>> xt = gm.functional.q_sample(x0, t, noise, s)
    >>> out = gm.zeros(2, 2, 2, 2, requires_grad=True)
    >>> loss = gm.functional.hybrid_loss(out, x0, xt, noise, t, s)
    >>> loss.backward(); out.grad.shape
    gmcore.Size([2, 2, 2, 2])
    """
    fn = "hybrid_loss"
    _check_tensor(x0, fn, "x0")
    if x0.ndim < 2:
        raise ValueError(f"{fn}: x0 must be (B, C, ...), got shape {tuple(x0.shape)}")
    want = (x0.shape[0], 2 * x0.shape[1]) + tuple(x0.shape[2:])
    _check_like(model_out, x0, fn, "model_out", "x0 with 2C channels (eps, v)", shape=want)
    _check_like(x_t, x0, fn, "x_t", "x0")
    _check_like(noise, x0, fn, "noise", "x0")
    schedule = _check_schedule(schedule, fn)
    T = schedule.num_timesteps
    tt = _timesteps(t, x0.shape[0], T, x0, fn)
    xp = backend.xp_of(x0.data)
    w = _weights(weights, T, x0.data.dtype, xp, fn)
    vb_weight = float(vb_weight)
    tab = _table(schedule, x0)
    name, fwd = _choose("hybrid_fwd", x0)
    if name == "reference" or _needs_grad(x0, x_t, noise):
        b = x0.shape[0]
        per = ref_hybrid_loss(model_out.reshape(b, -1), x0.reshape(b, -1), x_t.reshape(b, -1),
                              noise.reshape(b, -1), Tensor(tt), Tensor(tab), Tensor(w), vb_weight)
    else:
        bwd = dispatch.get(FAMILY, "hybrid_bwd", x0.device.type)
        per = HybridLoss.apply(model_out, x0, x_t, noise, tt, tab, w, vb_weight, fwd, bwd)
    return reduce_loss(per, reduction, fn)
