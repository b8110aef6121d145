"""Langevin dynamics with a score: plain (a fixed step) and annealed over decreasing noise scales
(Song & Ermon 2019, "Generative Modeling by Estimating Gradients of the Data Distribution",
Algorithm 1), with the final denoising step of Song & Ermon 2020 ("Improved Techniques for
Training Score-Based Generative Models") and Jolicoeur-Martineau et al. 2021 ("Adversarial score
matching and improved sampling for image generation"), and the geometric noise scales NCSN uses.

One Langevin step with step size alpha and score s = grad_x log p(x):

    x <- x + (alpha / 2) s(x) + sqrt(alpha) z,   z ~ N(0, I).

The samplers run under ``no_grad`` with Tensor operations only, so the same code draws on the
CPU (NumPy) and on a GPU (CuPy): ``x0`` decides the device and dtype.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import creation as gc
from ..autograd import no_grad
from ..progress import Bar
from ..tensor import Tensor

__all__ = ["geometric_sigmas", "langevin", "annealed_langevin"]


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> np.ndarray:
    """``n`` noise scales from ``sigma_max`` down to ``sigma_min`` in geometric progression (a
    constant ratio sigma_i / sigma_{i+1}; NCSN's choice), as a float64 NumPy array, descending.

    >>> geometric_sigmas(1.0, 0.01, 3).round(6).tolist()
    [1.0, 0.1, 0.01]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"geometric_sigmas: n must be an int >= 1, got {n!r}")
    hi, lo = float(sigma_max), float(sigma_min)
    if not (math.isfinite(hi) and math.isfinite(lo) and 0 < lo <= hi):
        raise ValueError(f"geometric_sigmas: need 0 < sigma_min <= sigma_max (finite), got "
                         f"sigma_max={sigma_max!r}, sigma_min={sigma_min!r}")
    if n == 1:
        if lo != hi:
            raise ValueError("geometric_sigmas: one scale needs sigma_max == sigma_min")
        return np.array([hi])
    out = np.exp(np.linspace(math.log(hi), math.log(lo), int(n)))
    out[0], out[-1] = hi, lo          # the ends exactly as given (no exp(log()) round-off)
    return out


def _start(x0, fn) -> Tensor:
    if isinstance(x0, Tensor):
        x = x0.detach()
    else:
        try:
            x = gc.tensor(np.asarray(x0))
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: x0 must be a Tensor or an array, got {type(x0).__name__}") from None
    if not x.is_floating_point():
        raise TypeError(f"{fn}: x0 must be floating point, got {x.dtype}")
    return x


def _positive(v, name, fn) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{fn}: {name} must be a finite number > 0, got {v!r}")
    return float(v)


def _count(v, name, fn, minimum=1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {v!r}")
    return int(v)


def _check_score(s, x, fn):
    if not isinstance(s, Tensor) or tuple(s.shape) != tuple(x.shape):
        raise ValueError(f"{fn}: score_fn must return a Tensor shaped like x {tuple(x.shape)}, got "
                         f"{tuple(getattr(s, 'shape', ())) or type(s).__name__}")
    return s


def langevin(score_fn, x0, step_size, n_steps, generator=None, callback=None):
    """Unadjusted Langevin dynamics: ``n_steps`` steps of
    ``x <- x + step_size / 2 * score_fn(x) + sqrt(step_size) * z`` from ``x0``, under no_grad.

    ``callback(i, x)`` (optional) sees the chain after each step i = 1 .. n_steps. Returns the
    final x (a Tensor on x0's device, in its dtype). For a small step and many steps the chain's
    law approaches p (with an O(step_size) bias: no Metropolis correction).

    >>> import gmcore as gm
    >>> x = langevin(lambda x: -(x - 3.0), gm.zeros(4000), 0.1, 200, generator=gm.Generator().manual_seed(0))
    >>> round(float(x.mean()), 1), round(float(x.std()), 1)    # N(3, 1)
    (3.0, 1.0)
    """
    fn = "langevin"
    if not callable(score_fn):
        raise TypeError(f"{fn}: score_fn must be callable as score_fn(x)")
    x = _start(x0, fn)
    alpha = _positive(step_size, "step_size", fn)
    n = _count(n_steps, "n_steps", fn, minimum=0)
    noise_scale = math.sqrt(alpha)
    with no_grad():
        for i in range(n):
            s = _check_score(score_fn(x), x, fn)
            z = gc.randn(*x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x + s * (alpha / 2) + z * noise_scale
            if callback is not None:
                callback(i + 1, x)
    return x


def annealed_langevin(score_fn, x0, sigmas, eps=2e-5, steps_per_sigma=100, denoise=True,
                      generator=None, progress=None, return_chain=False):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), under no_grad.

    For each noise scale sigma_i of ``sigmas`` (descending), ``steps_per_sigma`` T Langevin steps
    with the noise-conditional score ``score_fn(x, sigma)`` (``sigma`` a (B,) Tensor filled with
    sigma_i, in x's dtype) and the step

        alpha_i = eps * sigma_i^2 / sigma_L^2       (sigma_L = sigmas[-1], the smallest),

    i.e. ``x <- x + alpha_i / 2 * s(x, sigma_i) + sqrt(alpha_i) z``. With ``denoise`` (Song &
    Ermon 2020; Jolicoeur-Martineau et al. 2021) one last noise-free step moves x to the
    posterior mean under the smallest noise (Tweedie's formula):
    ``x <- x + sigma_L^2 s(x, sigma_L)``.

    ``progress(i, n)`` is called after each of the n = L * T Langevin steps; with
    ``return_chain`` the result is ``(x, chain)``, ``chain`` the list of x0 and of x after each
    noise scale (L + 1 tensors; the denoised x is not in it). The defaults are Song & Ermon
    2019's (eps 2e-5, T 100).

    >>> import gmcore as gm
    >>> sig = geometric_sigmas(1.0, 0.01, 10)
    >>> score = lambda x, s: -x / (1.0 + s.reshape(-1, 1) ** 2)  # data N(0, 1) noised by s
    >>> x = annealed_langevin(score, gm.rand(2000, 1), sig, eps=5e-5, steps_per_sigma=100,
    ...                       generator=gm.Generator().manual_seed(0))
    >>> round(float(x.std()), 1)
    1.0
    """
    fn = "annealed_langevin"
    if not callable(score_fn):
        raise TypeError(f"{fn}: score_fn must be callable as score_fn(x, sigma)")
    x = _start(x0, fn)
    levels = np.asarray(sigmas.detach().cpu().numpy() if isinstance(sigmas, Tensor) else sigmas,
                        dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0 or not np.all(np.isfinite(levels)) or np.any(levels <= 0):
        raise ValueError(f"{fn}: sigmas must be a non-empty 1-D list of finite noise scales > 0, "
                         f"got {levels.tolist()}")
    eps = _positive(eps, "eps", fn)
    T = _count(steps_per_sigma, "steps_per_sigma", fn)
    B = x.shape[0] if x.ndim else 1
    sigma_L = float(levels[-1])
    chain = [x] if return_chain else None
    n_total, done = len(levels) * T, 0
    if progress is None:   # gmcore.progress's bar, drawn only under show_progress()
        progress = Bar(n_total, "langevin")
    with no_grad():
        for sigma in levels:
            sig = gc.full((B,), float(sigma), dtype=x.dtype, device=x.device)
            alpha = eps * (float(sigma) / sigma_L) ** 2
            noise_scale = math.sqrt(alpha)
            for _ in range(T):
                s = _check_score(score_fn(x, sig), x, fn)
                z = gc.randn(*x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = x + s * (alpha / 2) + z * noise_scale
                done += 1
                if progress is not None:
                    progress(done, n_total)
            if return_chain:
                chain.append(x)
        if denoise:
            sig = gc.full((B,), sigma_L, dtype=x.dtype, device=x.device)
            x = x + _check_score(score_fn(x, sig), x, fn) * sigma_L ** 2
    if isinstance(progress, Bar):
        progress.close()
    return (x, chain) if return_chain else x
