"""The ideal denoiser of a finite data set: the exact ``E[x0 | x_t]`` when the data distribution
is the N given points (the optimum every denoising loss is minimised by on that data; Karras
et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", sec. 3).

Under ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with ``x0`` uniform over the points
``a_1 .. a_N``, the posterior over the points is a softmax,

    p(i | x_t)  proportional to  exp(-||x_t - sqrt(abar_t) a_i||^2 / (2 (1 - abar_t))),

and the ideal x0 prediction is ``sum_i p(i | x_t) a_i``. As a ``model_fn`` (it returns the eps
that prediction implies) it drives every sampler of :mod:`.samplers`, which then reproduce
training points: it is what a perfect model of the training data would do, so it measures the
ceiling of a figure that depends on the data rather than on the network (SDEdit's class
retention: ``benchmarks/sdedit_ceiling.py``).

>>> import gmcore as gm
>>> from gmcore.schedules import NoiseSchedule
>>> from gmcore.models.diffusion.gaussian_diffusion import GaussianDiffusion
>>> from gmcore.models.diffusion import samplers
>>> d = GaussianDiffusion(NoiseSchedule.linear(100, 1e-3, 0.05))
>>> points = gm.tensor([[[[-1.0, 1.0]]], [[[1.0, -1.0]]]])        # two 1x1x2 "images"
>>> ideal = EmpiricalDenoiser(d, points)
>>> x = samplers.ddim(d, ideal, (8, 1, 1, 2), steps=20, generator=gm.Generator().manual_seed(2))
>>> sorted(set(tuple(round(v, 3) for v in row) for row in x.reshape(8, 2).tolist()))
[(-1.0, 1.0), (1.0, -1.0)]
"""
from __future__ import annotations

from ...tensor import Tensor
from .gaussian_diffusion import _row

__all__ = ["EmpiricalDenoiser"]


class EmpiricalDenoiser:
    """``model_fn(x_t, t) -> eps`` of the ideal denoiser of ``data`` (N, *shape), points in the
    diffusion's space ([-1, 1] for images), under ``diffusion``'s forward process."""

    def __init__(self, diffusion, data: Tensor):
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"EmpiricalDenoiser: data must be (N, *shape) with N >= 1, got {tuple(data.shape)}")
        self.diffusion = diffusion
        self.shape = tuple(data.shape[1:])
        self.points = data.detach().reshape(data.shape[0], -1)            # (N, D)
        self.half_sq_norms = 0.5 * (self.points * self.points).sum(1)      # (N,)

    def posterior(self, x_t: Tensor, t) -> Tensor:
        """``p(i | x_t)``: (B, N) weights over the points, each row summing to 1."""
        if tuple(x_t.shape[1:]) != self.shape:
            raise ValueError(f"EmpiricalDenoiser: x_t must be (B, {', '.join(map(str, self.shape))}), "
                             f"got {tuple(x_t.shape)}")
        x = x_t.reshape(x_t.shape[0], -1)
        scale = _row(self.diffusion.schedule, "sqrt_alphas_cumprod", t, x)          # (B, 1)
        var = _row(self.diffusion.schedule, "one_minus_alphas_cumprod", t, x)     # (B, 1)
        # -||x - s a||^2 / 2v = (s x.a - s^2 ||a||^2 / 2) / v + (a term constant in i)
        logits = (scale * (x @ self.points.T) - (scale * scale) * self.half_sq_norms) / var
        return logits.softmax(1)

    def x0(self, x_t: Tensor, t) -> Tensor:
        """The ideal prediction ``E[x0 | x_t]``, shaped as ``x_t``."""
        return (self.posterior(x_t, t) @ self.points).reshape(x_t.shape)

    def __call__(self, x_t: Tensor, t) -> Tensor:
        return self.diffusion.eps_from_x0(x_t, t, self.x0(x_t, t))
