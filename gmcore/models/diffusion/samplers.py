"""Samplers of a :class:`~.gaussian_diffusion.GaussianDiffusion`, driven by a model function
``model_fn(x_t, t)`` alone: ancestral DDPM (full or respaced), DDIM (and its inversion) and PNDM.

Every sampler takes ``generator`` (reproducible draws), ``progress(i, n)`` (called after each of
the n steps), ``clip_x0`` (clamp the x0 prediction to [-1, 1], on by default), a classifier
guidance hook ``cond_fn(x_t, t) -> grad_x log p(y | x_t)`` with ``guidance_scale`` (Dhariwal &
Nichol 2021, "Diffusion Models Beat GANs", Algorithms 1 and 2), and ``return_chain`` (also return
the list ``[x_T, ..., x_0]`` of every step, for a denoising strip). Classifier-free guidance is
the caller's: close it over ``model_fn``. ``cond_fn`` gets a detached ``x_t`` (on the original
timesteps ``t``) with grad mode on, and returns the gradient, e.g. for a noisy classifier
``logits = clf(x_t, t)``::

    def cond_fn(x, t):
        x = x.requires_grad_()
        logp = logits_fn(x, t).log_softmax(1)[range(len(y)), y].sum()
        return gm.autograd.grad(logp, x)[0]

Shortened samplers visit the timesteps of :func:`spaced_timesteps`; the network always gets the
*original* timestep values (as it was trained on them).

>>> import gmcore as gm
>>> from gmcore.schedules import NoiseSchedule
>>> from gmcore.models.diffusion.gaussian_diffusion import GaussianDiffusion
>>> d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-3, 0.05))
>>> target = gm.full((2, 1, 4, 4), 0.25)            # a point mass: the true eps is known
>>> oracle = lambda x, t: d.eps_from_x0(x, t, target)
>>> x = ddim(d, oracle, (2, 1, 4, 4), steps=10, generator=gm.Generator().manual_seed(0))
>>> round(float((x - target).abs().max()), 5)
0.0
"""
from __future__ import annotations

import numpy as np

from ... import autograd
from ... import creation as gc
from ... import functional as gf
from ...progress import Bar
from ...schedules import NoiseSchedule
from .gaussian_diffusion import GaussianDiffusion, _row

__all__ = ["spaced_timesteps", "respace", "ddpm", "ddim", "ddim_invert", "pndm", "sample",
           "sdedit", "SPACINGS", "SAMPLERS"]

SPACINGS = ("leading", "trailing", "linspace")
SAMPLERS = ("ddpm", "ddim", "pndm")


# ---- timesteps -------------------------------------------------------------------------------

def spaced_timesteps(T: int, steps: int, spacing: str = "trailing") -> np.ndarray:
    """The ``steps`` timesteps in ``[0, T)`` a shortened sampler visits, ascending int64.

    As diffusers' ``timestep_spacing`` (and Lin et al. 2024, "Common Diffusion Noise Schedules
    and Sample Steps are Flawed", Table 2):

    * ``"leading"``: ``arange(0, steps) * (T // steps)`` (DDIM's original code; no
      ``steps_offset``: diffusers' ``steps_offset=1``, as Stable Diffusion, would add 1). It
      never visits the last timestep: it starts at ``(steps - 1) * (T // steps)``.
    * ``"trailing"``: ``round(arange(T, 0, -T / steps)) - 1``: starts at ``T - 1``, ends at
      ``round(T / steps) - 1``. The default: the first step starts from pure noise.
    * ``"linspace"``: ``round(linspace(0, T - 1, steps))``: both ends (improved DDPM's
      respacing of a single section).

    ``steps = T`` gives ``0 .. T - 1`` for each.

    >>> spaced_timesteps(1000, 4, "leading").tolist()
    [0, 250, 500, 750]
    >>> spaced_timesteps(1000, 4, "trailing").tolist()
    [249, 499, 749, 999]
    >>> spaced_timesteps(1000, 4, "linspace").tolist()
    [0, 333, 666, 999]
    """
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"spaced_timesteps: T must be an int >= 1, got {T!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
        raise ValueError(f"spaced_timesteps: steps must be an int in [1, {T}], got {steps!r}")
    if spacing == "leading":
        ts = np.arange(0, steps) * (T // steps)
    elif spacing == "trailing":
        # T - arange(steps) * T / steps is arange(T, 0, -T / steps) with exactly `steps` entries
        ts = np.round(T - np.arange(steps) * (T / steps)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, steps))
    else:
        raise ValueError(f"spaced_timesteps: spacing must be one of {SPACINGS}, got {spacing!r}")
    ts = np.sort(ts.astype(np.int64))
    assert len(np.unique(ts)) == steps and ts[0] >= 0 and ts[-1] < T, ts
    return ts


def respace(schedule: NoiseSchedule, timesteps) -> NoiseSchedule:
    """The schedule of a process that visits only ``timesteps`` (ascending) of ``schedule``
    (improved DDPM, sec. 4): the kept alpha-bars are unchanged and the new betas are
    ``1 - abar[k_i] / abar[k_{i-1}]`` (``abar[k_{-1}] = 1``). Index i of the new schedule is
    timestep ``timesteps[i]`` of the original.

    >>> s = NoiseSchedule.linear(10, 0.1, 0.2)
    >>> r = respace(s, [1, 5, 9])
    >>> bool(np.allclose(r.alphas_cumprod, s.alphas_cumprod[[1, 5, 9]]))
    True
    """
    ts = np.asarray(timesteps, dtype=np.int64)
    if ts.ndim != 1 or ts.size < 2 or np.any(np.diff(ts) <= 0) or ts[0] < 0 \
            or ts[-1] >= schedule.num_timesteps:
        raise ValueError(f"respace: timesteps must be >= 2 increasing values in "
                         f"[0, {schedule.num_timesteps}), got {ts.tolist()}")
    abar = schedule.alphas_cumprod[ts]
    prev = np.append(1.0, abar[:-1])
    return NoiseSchedule(1.0 - abar / prev, name=f"{schedule.name}-respaced{ts.size}")


def _timesteps(diffusion, steps, spacing, timesteps):
    """The ascending timesteps to visit: explicit ``timesteps``, or ``steps`` spaced ones."""
    T = diffusion.num_timesteps
    if timesteps is not None:
        ts = np.asarray(timesteps, dtype=np.int64).reshape(-1)
        if ts.size == 0 or np.any(np.diff(ts) <= 0) or ts[0] < 0 or ts[-1] >= T:
            raise ValueError(f"timesteps must be increasing values in [0, {T}), got "
                             f"{ts.tolist()}")
        return ts
    return spaced_timesteps(T, T if steps in (None, 0) else steps, spacing)


# ---- shared pieces -------------------------------------------------------------------------------

def _check_diffusion(diffusion, fn):
    if not isinstance(diffusion, GaussianDiffusion):
        raise TypeError(f"{fn}: diffusion must be a GaussianDiffusion, got "
                        f"{type(diffusion).__name__}")


def _start(shape, x_T, device, dtype, generator, fn):
    if x_T is not None:
        return x_T.detach()
    if shape is None:
        raise ValueError(f"{fn}: give the sample shape (B, C, H, W) or the starting x_T")
    return gc.randn(*shape, dtype=dtype, device=device, generator=generator)


def _tvec(value, x):
    return gc.full((x.shape[0],), int(value), dtype="int64", device=x.device)


def _grad(cond_fn, x, t, scale):
    """``scale * cond_fn(x, t)``, with grad mode on (the classifier needs it) on a detached x."""
    with autograd.enable_grad():
        g = cond_fn(x.detach(), t)
    if tuple(g.shape) != tuple(x.shape):
        raise ValueError(f"cond_fn must return the gradient w.r.t. x_t, shape {tuple(x.shape)}; "
                         f"got {tuple(g.shape)}")
    return g.detach() * float(scale)


def _guided_eps(diffusion, model_fn, x, t, cond_fn, scale):
    """eps at (x, t) on the original schedule; classifier guidance shifts it by
    ``-sqrt(1 - abar_t) * scale * grad log p(y | x_t)`` (Dhariwal & Nichol, Algorithm 2)."""
    eps, _ = diffusion.model_eps(model_fn, x, t)
    if cond_fn is not None:
        eps = eps - _row(diffusion.schedule, "sqrt_one_minus_alphas_cumprod", t, x) * \
            _grad(cond_fn, x, t, scale)
    return eps


class _Loop:
    """Bookkeeping shared by the samplers: progress calls and the chain."""

    def __init__(self, x, n, progress, return_chain):
        # no callback given: gmcore.progress's bar (drawn only under show_progress())
        self.n, self.progress = n, progress if progress is not None else Bar(n, "denoising")
        self.chain = [x] if return_chain else None

    def step(self, i, x):
        if self.chain is not None:
            self.chain.append(x)
        self.progress(i + 1, self.n)

    def result(self, x):
        if isinstance(self.progress, Bar):
            self.progress.close()
        return (x, self.chain) if self.chain is not None else x


# ---- DDPM -------------------------------------------------------------------------------------

def ddpm(diffusion, model_fn, shape=None, steps=None, spacing="trailing", timesteps=None,
         x_T=None, clip_x0=True, cond_fn=None, guidance_scale=1.0, generator=None,
         progress=None, return_chain=False, device="cpu", dtype="float32"):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): ``x_{t-1} ~ p(x_{t-1} | x_t)`` from
    ``x_T ~ N(0, I)`` (or the given ``x_T``) down to x0, with the process's variances (fixed
    small / large, or learned).

    ``steps`` < T (or explicit ascending ``timesteps``) respaces the process (improved DDPM,
    sec. 4, :func:`respace`): the new betas come from the kept alpha-bars and the fixed or
    learned variances are those of the respaced process; the network gets the original
    timesteps. Classifier guidance shifts each mean by ``scale * sigma_t^2 * grad`` (Dhariwal &
    Nichol, Algorithm 1).

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> from gmcore.models.diffusion.gaussian_diffusion import GaussianDiffusion
    >>> d = GaussianDiffusion(NoiseSchedule.linear(20, 1e-3, 0.3))
    >>> x, chain = ddpm(d, lambda x, t: gm.zeros(*x.shape), (1, 1, 2, 2), return_chain=True)
    >>> x.shape, len(chain)
    (gmcore.Size([1, 1, 2, 2]), 21)
    """
    _check_diffusion(diffusion, "ddpm")
    ts = _timesteps(diffusion, steps, spacing, timesteps)
    full = ts.size == diffusion.num_timesteps
    if not full and ts.size < 2:
        raise ValueError("ddpm: a respaced process needs at least 2 steps")
    sched = diffusion.schedule if full else respace(diffusion.schedule, ts)
    x = _start(shape, x_T, device, dtype, generator, "ddpm")
    loop = _Loop(x, ts.size, progress, return_chain)
    with autograd.no_grad():
        for k, i in enumerate(reversed(range(ts.size))):
            t_idx, t_model = _tvec(i, x), _tvec(ts[i], x)
            eps, v = diffusion.model_eps(model_fn, x, t_idx, schedule=sched, t_model=t_model)
            out = eps if v is None else gf.cat([eps, v], 1)
            x_new = gf.ddpm_step(x, out, t_idx, None, sched, diffusion.var_type,
                                 clip_x0=clip_x0, generator=generator)
            if cond_fn is not None:
                var = diffusion.p_logvar(t_idx, x, v, schedule=sched).exp()
                x_new = x_new + var * _grad(cond_fn, x, t_model, guidance_scale)
            x = x_new
            loop.step(k, x)
    return loop.result(x)


# ---- DDIM -------------------------------------------------------------------------------------

def ddim(diffusion, model_fn, shape=None, steps=50, eta=0.0, spacing="trailing",
         timesteps=None, x_T=None, clip_x0=True, cond_fn=None, guidance_scale=1.0,
         generator=None, progress=None, return_chain=False, device="cpu", dtype="float32"):
    """DDIM (Song, Meng & Ermon 2021, eq. 12) over the spaced timesteps, from the first (largest)
    down to x0 (the last step goes to ``t_prev = -1``, abar = 1)::

        x_prev = sqrt(abar_prev) x0_pred + sqrt(1 - abar_prev - sigma^2) eps + sigma z
        sigma  = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)

    ``eta = 0`` is deterministic (the probability-flow ODE's discretization), ``eta = 1`` the
    DDPM posterior variance. Classifier guidance shifts eps (Dhariwal & Nichol, Algorithm 2).
    A learned variance is ignored (DDIM sets its own).

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> from gmcore.models.diffusion.gaussian_diffusion import GaussianDiffusion
    >>> d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-3, 0.05))
    >>> x = ddim(d, lambda x, t: gm.zeros(*x.shape), (1, 1, 2, 2), steps=5)
    >>> x.shape
    gmcore.Size([1, 1, 2, 2])
    """
    _check_diffusion(diffusion, "ddim")
    ts = _timesteps(diffusion, steps, spacing, timesteps)
    x = _start(shape, x_T, device, dtype, generator, "ddim")
    loop = _Loop(x, ts.size, progress, return_chain)
    with autograd.no_grad():
        for k, i in enumerate(reversed(range(ts.size))):
            t = _tvec(ts[i], x)
            t_prev = int(ts[i - 1]) if i > 0 else -1
            eps = _guided_eps(diffusion, model_fn, x, t, cond_fn, guidance_scale)
            x = gf.ddim_step(x, eps, t, t_prev, eta, None, diffusion.schedule, clip_x0=clip_x0,
                             generator=generator)
            loop.step(k, x)
    return loop.result(x)


def ddim_invert(diffusion, model_fn, x0, steps=50, spacing="trailing", timesteps=None,
                iterations=0, progress=None, return_chain=False):
    """The deterministic DDIM map run backwards, x0 -> x_T (Song et al. 2021, sec. 4.3): for each
    spaced step from ``t_prev`` (``-1``: the data) up to ``t``::

        eps    = eps_theta(x_{t_prev}, t)
        x_t    = sqrt(abar_t) (x_{t_prev} - sqrt(1 - abar_prev) eps) / sqrt(abar_prev)
                 + sqrt(1 - abar_t) eps

    the eta = 0 step solved for x_t with eps taken at the current point (the network evaluated
    at the step's upper timestep, as diffusers' ``DDIMInverseScheduler``). So
    ``ddim(..., x_T=ddim_invert(x0), eta=0, clip_x0=False)`` with the same steps returns x0 up to
    the change of eps across each step (an error O(1 / steps); exact where eps does not change
    along the path). ``iterations`` > 0 refines each step by fixed-point iteration on
    ``x_t = F(x_t)``, the formula above with ``eps = eps_theta(x_t, t)`` (one network pass
    each): the exact inverse of the decoding step when it converges (eps Lipschitz in x_t with
    a small enough constant).

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> from gmcore.models.diffusion.gaussian_diffusion import GaussianDiffusion
    >>> d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-3, 0.05))
    >>> fn = lambda x, t: 0.1 * x
    >>> x0 = gm.full((1, 1, 2, 2), 0.5)
    >>> back = ddim(d, fn, x_T=ddim_invert(d, fn, x0, steps=20), steps=20, clip_x0=False)
    >>> float((back - x0).abs().max()) < 1e-2
    True
    >>> xT = ddim_invert(d, fn, x0, steps=20, iterations=3)
    >>> back = ddim(d, fn, x_T=xT, steps=20, clip_x0=False)
    >>> float((back - x0).abs().max()) < 1e-5
    True
    """
    _check_diffusion(diffusion, "ddim_invert")
    ts = _timesteps(diffusion, steps, spacing, timesteps)
    sched = diffusion.schedule
    x = x0.detach()
    loop = _Loop(x, ts.size, progress, return_chain)
    with autograd.no_grad():
        for k in range(ts.size):
            t = _tvec(ts[k], x)
            tp = _tvec(ts[k - 1], x) if k > 0 else None  # None: t_prev = -1, abar_prev = 1
            a_t = _row(sched, "sqrt_alphas_cumprod", t, x)
            s_t = _row(sched, "sqrt_one_minus_alphas_cumprod", t, x)

            def up(eps, x_prev=x, tp=tp, a_t=a_t, s_t=s_t):
                x0_pred = x_prev if tp is None else diffusion.x0_from_eps(x_prev, tp, eps)
                return a_t * x0_pred + s_t * eps

            x_next = up(diffusion.model_eps(model_fn, x, t)[0])
            for _ in range(int(iterations)):
                x_next = up(diffusion.model_eps(model_fn, x_next, t)[0])
            x = x_next
            loop.step(k, x)
    return loop.result(x)


# ---- PNDM -------------------------------------------------------------------------------------

def pndm(diffusion, model_fn, shape=None, steps=50, spacing="trailing", timesteps=None,
         x_T=None, clip_x0=True, cond_fn=None, guidance_scale=1.0, generator=None,
         progress=None, return_chain=False, device="cpu", dtype="float32"):
    """PNDM (Liu, Ren, Lin & Zhao 2022, "Pseudo Numerical Methods for Diffusion Models on
    Manifolds", eqs. 12-13): the transfer ``phi(x_t, e, t, t')`` is the deterministic DDIM step
    (:func:`gmcore.functional.ddim_step`, eta 0) and the eps fed to it comes from a numerical
    method over the spaced timesteps (step delta: from t to the next kept t', t' = -1 at the end).

    The first 3 steps use the pseudo 4th-order Runge-Kutta method (4 network passes each, the
    half step at the integer timestep ``m = (t + t') // 2``)::

        e1 = eps(x_t, t)                x1 = phi(x_t, e1, t, m)
        e2 = eps(x1, m)                 x2 = phi(x_t, e2, t, m)
        e3 = eps(x2, m)                 x3 = phi(x_t, e3, t, t')
        e4 = eps(x3, t')                e' = (e1 + 2 e2 + 2 e3 + e4) / 6

    then the pseudo linear multistep (PLMS, one pass per step) over the stored ``e_t`` (the
    e1 of each step)::

        e' = (55 e_t - 59 e_{t+1} + 37 e_{t+2} - 9 e_{t+3}) / 24

    and ``x_{t'} = phi(x_t, e', t, t')``. In runs of <= 3 steps the warm-start step that ends
    at t' = -1 (x0) is a plain DDIM step (the network cannot be evaluated at t' = -1).
    Classifier guidance shifts every eps as :func:`ddim` does.

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> from gmcore.models.diffusion.gaussian_diffusion import GaussianDiffusion
    >>> d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-3, 0.05))
    >>> x = pndm(d, lambda x, t: gm.zeros(*x.shape), (1, 1, 2, 2), steps=6)
    >>> x.shape
    gmcore.Size([1, 1, 2, 2])
    """
    _check_diffusion(diffusion, "pndm")
    ts = _timesteps(diffusion, steps, spacing, timesteps)
    x = _start(shape, x_T, device, dtype, generator, "pndm")
    loop = _Loop(x, ts.size, progress, return_chain)
    sched = diffusion.schedule

    def eps_at(xx, t):
        return _guided_eps(diffusion, model_fn, xx, _tvec(t, xx), cond_fn, guidance_scale)

    def phi(xx, e, t, t_next):  # the DDIM transfer from t to t_next
        return gf.ddim_step(xx, e, _tvec(t, xx), t_next, 0.0, None, sched, clip_x0=clip_x0)

    history = []  # e_t of the previous steps, newest last
    with autograd.no_grad():
        for k, i in enumerate(reversed(range(ts.size))):
            t = int(ts[i])
            t_next = int(ts[i - 1]) if i > 0 else -1
            if k < 3 and t_next < 0:
                # a warm-start step that ends at x0 (runs of <= 3 steps): eps cannot be
                # evaluated at t' = -1, so this one is a plain DDIM step
                e_prime = eps_at(x, t)
                history.append(e_prime)
            elif k < 3:
                m = (t + t_next) // 2
                e1 = eps_at(x, t)
                x1 = phi(x, e1, t, m)
                e2 = eps_at(x1, m)
                x2 = phi(x, e2, t, m)
                e3 = eps_at(x2, m)
                x3 = phi(x, e3, t, t_next)
                e4 = eps_at(x3, t_next)
                e_prime = (e1 + 2.0 * e2 + 2.0 * e3 + e4) / 6.0
                history.append(e1)
            else:
                e = eps_at(x, t)
                e_prime = (55.0 * e - 59.0 * history[-1] + 37.0 * history[-2]
                           - 9.0 * history[-3]) / 24.0
                history = history[-2:] + [e]
            x = phi(x, e_prime, t, t_next)
            loop.step(k, x)
    return loop.result(x)


# ---- one entry point ---------------------------------------------------------------------------

def sample(diffusion, model_fn, shape=None, sampler="ddim", steps=None, eta=0.0,
           spacing="trailing", **kwargs):
    """Dispatch to :func:`ddpm`, :func:`ddim` or :func:`pndm` by name (``steps`` None or 0:
    all T; ``eta`` is DDIM's only). Other keywords go to the sampler.

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> from gmcore.models.diffusion.gaussian_diffusion import GaussianDiffusion
    >>> d = GaussianDiffusion(NoiseSchedule.linear(10, 1e-3, 0.3))
    >>> sample(d, lambda x, t: gm.zeros(*x.shape), (1, 1, 2, 2), "pndm", steps=5).shape
    gmcore.Size([1, 1, 2, 2])
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sample: sampler must be one of {SAMPLERS}, got {sampler!r}")
    steps = diffusion.num_timesteps if steps in (None, 0) else steps
    if sampler == "ddpm":
        if eta not in (0, 0.0, 1, 1.0):
            raise ValueError("sample: eta is a DDIM option (ddpm is the eta = 1 process)")
        return ddpm(diffusion, model_fn, shape, steps=steps, spacing=spacing, **kwargs)
    if sampler == "ddim":
        return ddim(diffusion, model_fn, shape, steps=steps, eta=eta, spacing=spacing, **kwargs)
    if eta != 0:
        raise ValueError("sample: eta is a DDIM option (pndm is deterministic)")
    return pndm(diffusion, model_fn, shape, steps=steps, spacing=spacing, **kwargs)


def sdedit(diffusion, model_fn, x0, strength, sampler="ddim", steps=None, eta=0.0,
           spacing="trailing", generator=None, **kwargs):
    """SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic
    Differential Equations"): diffuse ``x0`` (in [-1, 1]) to the largest kept timestep
    ``t0 <= strength * T - 1`` with ``q(x_t0 | x0)`` and denoise it from there with ``sampler``
    over the kept timesteps ``<= t0`` (of ``steps`` spaced over the whole T, all T when None).

    >>> import gmcore as gm
    >>> from gmcore.schedules import NoiseSchedule
    >>> from gmcore.models.diffusion.gaussian_diffusion import GaussianDiffusion
    >>> d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-3, 0.05))
    >>> x0 = gm.zeros(1, 1, 2, 2)
    >>> sdedit(d, lambda x, t: gm.zeros(*x.shape), x0, 0.5, steps=10).shape
    gmcore.Size([1, 1, 2, 2])
    """
    if not 0 < float(strength) <= 1:
        raise ValueError(f"sdedit: strength must be in (0, 1], got {strength}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sdedit: sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler != "ddim" and eta not in (0, 0.0) and not (sampler == "ddpm" and eta == 1):
        raise ValueError(f"sdedit: eta is a DDIM option, not {sampler}'s")
    T = diffusion.num_timesteps
    ts = spaced_timesteps(T, T if steps in (None, 0) else steps, spacing)
    kept = ts[ts <= round(float(strength) * T) - 1]
    if kept.size == 0:
        raise ValueError(f"sdedit: strength {strength} keeps no timestep of the {ts.size} "
                         f"spaced ones (the smallest is {int(ts[0])})")
    noise = gc.randn(*x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
    x_t = diffusion.q_sample(x0.detach(), _tvec(kept[-1], x0), noise)
    if sampler == "ddpm" and kept.size < 2 and kept[0] != 0:
        raise ValueError("sdedit: a respaced ddpm run needs at least 2 kept timesteps")
    opts = dict(timesteps=kept, x_T=x_t, generator=generator, **kwargs)
    if sampler == "ddim":
        opts["eta"] = eta

    return {"ddpm": ddpm, "ddim": ddim, "pndm": pndm}[sampler](diffusion, model_fn, **opts)
