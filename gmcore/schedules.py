"""Diffusion noise schedules: every coefficient of the forward process, precomputed in float64.

A :class:`NoiseSchedule` holds the discrete schedule of a DDPM with ``T`` steps (timesteps
``t = 0 .. T-1``; step ``t`` adds noise with variance ``betas[t]``), following Ho et al. 2020
("Denoising Diffusion Probabilistic Models") and the tables of improved DDPM (Nichol &
Dhariwal 2021, ``gaussian_diffusion.py``):

================================== ======================================================
attribute (float64 NumPy, (T,))     formula
================================== ======================================================
``betas``                          the schedule
``alphas``                         ``1 - betas``
``alphas_cumprod``                 ``prod_{s <= t} alphas[s]``  (alpha-bar)
``alphas_cumprod_prev``            ``alphas_cumprod[t - 1]``, 1 at ``t = 0``
``alphas_cumprod_next``            ``alphas_cumprod[t + 1]``, 0 at ``t = T - 1``
``one_minus_alphas_cumprod``       ``1 - alphas_cumprod`` (as ``-expm1(sum log alphas)``)
``sqrt_alphas_cumprod``            ``sqrt(alpha-bar)``
``sqrt_one_minus_alphas_cumprod``  ``sqrt(1 - alpha-bar)``
``log_one_minus_alphas_cumprod``   ``log(1 - alpha-bar)``
``sqrt_recip_alphas_cumprod``      ``1 / sqrt(alpha-bar)``
``sqrt_recipm1_alphas_cumprod``    ``sqrt(1 / alpha-bar - 1)``
``posterior_variance``             ``betas * (1 - alpha-bar_prev) / (1 - alpha-bar)``; 0 at t=0
``posterior_log_variance_clipped`` ``log(posterior_variance)`` with the t=0 entry (log 0)
                                   replaced by ``log(posterior_variance[1])``, as improved DDPM
``posterior_mean_coef1``           ``betas * sqrt(alpha-bar_prev) / (1 - alpha-bar)``  (x0)
``posterior_mean_coef2``           ``(1 - alpha-bar_prev) * sqrt(alphas) / (1 - alpha-bar)`` (x_t)
================================== ======================================================

so ``q(x_{t-1} | x_t, x0) = N(coef1[t] x0 + coef2[t] x_t, posterior_variance[t])``.

The fused diffusion kernels (:mod:`gmcore.functional.diffusion`) read the coefficients from one
packed ``(len(ROWS), T)`` table, :meth:`NoiseSchedule.table`, cast once to the input's dtype
(float32 inputs gather float32 coefficients that were computed in float64) and cached per
device and dtype.

>>> from gmcore.schedules import NoiseSchedule
>>> s = NoiseSchedule.linear(1000)
>>> s.num_timesteps, round(float(s.betas[-1]), 4)
(1000, 0.02)
>>> round(float(s.alphas_cumprod[-1]), 6)
4e-05
>>> bool(s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1])
True
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["NoiseSchedule", "ROWS"]

# Rows of the packed coefficient table the kernels read (``table[row, t]``). The kernels in
# kernels/numba, kernels/triton and csrc/diffusion.h hard-code these indices: keep in sync.
ROWS = (
    "sqrt_alphas_cumprod",             # 0  q_sample: x0 coefficient
    "sqrt_one_minus_alphas_cumprod",   # 1  q_sample: noise coefficient
    "sqrt_recip_alphas_cumprod",       # 2  x0 from (x_t, eps)
    "sqrt_recipm1_alphas_cumprod",     # 3
    "posterior_mean_coef1",            # 4  posterior mean: x0 coefficient
    "posterior_mean_coef2",            # 5  posterior mean: x_t coefficient
    "posterior_log_variance_clipped",  # 6  fixed_small log variance; learned_range minimum
    "log_betas",                       # 7  learned_range maximum
    "fixed_large_log_variance",        # 8  fixed_large log variance
    "alphas_cumprod",                  # 9  DDIM
    "one_minus_alphas_cumprod",        # 10 DDIM (kept separately: 1 - a loses digits in float32)
)


class NoiseSchedule:
    """The discrete forward process of a DDPM, from its ``betas`` (float64, all in (0, 1]).

    Build one with :meth:`linear`, :meth:`cosine` or :meth:`sigmoid`, or from any betas.

    >>> import numpy as np
    >>> s = NoiseSchedule(np.full(4, 0.1))
    >>> [round(float(a), 4) for a in s.alphas_cumprod]
    [0.9, 0.81, 0.729, 0.6561]
    """

    def __init__(self, betas, name: str = "custom"):
        b = np.array(betas, dtype=np.float64).reshape(-1)
        if b.size < 2:
            raise ValueError(f"NoiseSchedule: need at least 2 timesteps, got {b.size}")
        if not np.all(np.isfinite(b)) or np.any(b <= 0) or np.any(b > 1):
            raise ValueError("NoiseSchedule: betas must be finite and lie in (0, 1]")
        self.name = name
        self.num_timesteps = int(b.size)
        self.betas = b
        self.alphas = 1.0 - b
        # cumulative product through logs: 1 - alpha-bar = -expm1(sum log alpha) keeps its
        # relative precision when alpha-bar is close to 1 (the first steps)
        with np.errstate(divide="ignore"):  # a beta of exactly 1 gives log 0 = -inf: alpha-bar 0
            log_acp = np.cumsum(np.log1p(-b))
        self.alphas_cumprod = np.exp(log_acp)
        self.one_minus_alphas_cumprod = -np.expm1(log_acp)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        one_m_prev = np.append(0.0, self.one_minus_alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)

        acp, omacp = self.alphas_cumprod, self.one_minus_alphas_cumprod
        self.sqrt_alphas_cumprod = np.sqrt(acp)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(omacp)
        self.log_one_minus_alphas_cumprod = np.log(omacp)
        with np.errstate(divide="ignore"):  # alpha-bar = 0 (a beta of 1): the x0 terms are inf
            self.sqrt_recip_alphas_cumprod = 1.0 / np.sqrt(acp)
            self.sqrt_recipm1_alphas_cumprod = np.sqrt(omacp / acp)

        self.posterior_variance = b * one_m_prev / omacp  # exactly 0 at t = 0
        # log 0 at t = 0: clipped to the t = 1 value (improved DDPM), so no -inf reaches a kernel
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = np.log(np.append(pv[1], pv[1:]))
        self.posterior_mean_coef1 = b * np.sqrt(self.alphas_cumprod_prev) / omacp
        self.posterior_mean_coef2 = one_m_prev * np.sqrt(self.alphas) / omacp
        self.log_betas = np.log(b)
        # "fixed_large": variance betas[t], with the t=0 entry replaced by posterior_variance[1]
        # (improved DDPM: a better decoder log-likelihood at t=0)
        self.fixed_large_log_variance = np.log(np.append(pv[1], b[1:]))
        self._tables: dict = {}

    # ---- constructors --------------------------------------------------------------------

    @classmethod
    def linear(cls, T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """Ho et al. 2020: ``betas = linspace(beta_start, beta_end, T)``.

        The defaults are DDPM's for T = 1000. (Improved DDPM rescales them by ``1000 / T`` for
        other T; pass ``beta_start=1e-4 * 1000 / T, beta_end=0.02 * 1000 / T`` to do the same.)

        >>> NoiseSchedule.linear(3, 0.1, 0.3).betas.tolist()
        [0.1, 0.2, 0.3]
        """
        T = _check_T(T)
        if not 0 < beta_start <= beta_end <= 1:
            raise ValueError(f"NoiseSchedule.linear: need 0 < beta_start <= beta_end <= 1, "
                             f"got {beta_start}, {beta_end}")
        return cls(np.linspace(beta_start, beta_end, T, dtype=np.float64), name="linear")

    @classmethod
    def cosine(cls, T: int, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Nichol & Dhariwal 2021 (improved DDPM, eq. 17): ``alpha-bar(u) = f(u) / f(0)`` with
        ``f(u) = cos((u + s) / (1 + s) * pi / 2) ** 2`` on ``u = t / T``, and
        ``betas[t] = min(1 - alpha-bar((t + 1) / T) / alpha-bar(t / T), max_beta)``.

        >>> s = NoiseSchedule.cosine(1000)
        >>> round(float(s.betas[0]), 6), float(s.betas[-1])
        (4.1e-05, 0.999)
        """
        T = _check_T(T)
        if not s >= 0 or not 0 < max_beta <= 1:
            raise ValueError(f"NoiseSchedule.cosine: need s >= 0 and 0 < max_beta <= 1, "
                             f"got s={s}, max_beta={max_beta}")

        def f(u):
            return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        return cls(_betas_from_alpha_bar(f, T, max_beta), name="cosine")

    @classmethod
    def sigmoid(cls, T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                max_beta: float = 0.999) -> "NoiseSchedule":
        """The sigmoid schedule of Chen 2023 ("On the Importance of Noise Scheduling for
        Diffusion Models", arXiv:2301.10972, Algorithm 1), in continuous time ``u in [0, 1]``::

            v(z)         = 1 / (1 + exp(-z / tau))
            alpha-bar(u) = (v(end) - v(start + u * (end - start))) / (v(end) - v(start))

        so ``alpha-bar(0) = 1`` and ``alpha-bar(1) = 0``; discretized as :meth:`cosine` does,
        ``betas[t] = min(1 - alpha-bar((t + 1) / T) / alpha-bar(t / T), max_beta)``. Smaller
        ``tau`` and a wider ``[start, end]`` push the noise towards the ends of the process.

        >>> s = NoiseSchedule.sigmoid(1000)
        >>> bool(np.all(np.diff(s.alphas_cumprod) < 0)), float(s.betas[-1])
        (True, 0.999)
        """
        T = _check_T(T)
        if not start < end or not tau > 0 or not 0 < max_beta <= 1:
            raise ValueError(f"NoiseSchedule.sigmoid: need start < end, tau > 0 and "
                             f"0 < max_beta <= 1, got start={start}, end={end}, tau={tau}, "
                             f"max_beta={max_beta}")

        def v(z):
            return 1.0 / (1.0 + np.exp(-z / tau))

        v_start, v_end = v(start), v(end)

        def f(u):
            return (v_end - v(start + u * (end - start))) / (v_end - v_start)

        return cls(_betas_from_alpha_bar(f, T, max_beta), name="sigmoid")

    # ---- the packed table the kernels read ---------------------------------------------------

    def table(self, dtype=np.float64, xp=np):
        """The ``(len(ROWS), T)`` coefficient table (rows in :data:`ROWS` order), C-contiguous,
        in ``dtype`` on ``xp``'s device (``xp`` is numpy or cupy); cached.

        The values are computed in float64 and cast once: float32 kernels gather float32
        coefficients.

        >>> NoiseSchedule.linear(10).table(np.float32).shape
        (11, 10)
        """
        dtype = np.dtype(dtype)
        key = (xp.__name__, _current_device(xp), dtype.str)
        tab = self._tables.get(key)
        if tab is None:
            host = np.ascontiguousarray(np.stack([getattr(self, r) for r in ROWS]).astype(dtype))
            tab = host if xp is np else xp.asarray(host)
            self._tables[key] = tab
        return tab

    def __len__(self):
        return self.num_timesteps

    def __repr__(self):
        return (f"NoiseSchedule({self.name}, T={self.num_timesteps}, "
                f"beta=[{self.betas[0]:.3g} .. {self.betas[-1]:.3g}])")


def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 2:
        raise ValueError(f"NoiseSchedule: the number of timesteps T must be an int >= 2, got {T!r}")
    return int(T)


def _betas_from_alpha_bar(alpha_bar, T: int, max_beta: float) -> np.ndarray:
    """``betas[t] = min(1 - alpha_bar((t+1)/T) / alpha_bar(t/T), max_beta)`` (improved DDPM)."""
    u = np.arange(T + 1, dtype=np.float64) / T
    ab = alpha_bar(u)
    ab = ab / ab[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        betas = 1.0 - ab[1:] / ab[:-1]
    betas = np.where(np.isfinite(betas), betas, 1.0)  # alpha-bar reached 0: the last beta is 1
    return np.clip(betas, 0.0, max_beta)


def _current_device(xp):
    if xp is np:
        return -1
    return int(xp.cuda.Device().id)
