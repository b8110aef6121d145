"""Score distillation sampling (Poole, Jain, Barron & Mildenhall 2022, "DreamFusion: Text-to-3D
using 2D Diffusion"): a frozen diffusion model as the prior that pulls rendered images towards
its conditional distribution.

For an image x = g(theta) in the diffusion's space, a timestep t ~ U[t_min, t_max] and noise
eps ~ N(0, I), with x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps, the SDS gradient is

    grad_theta = w(t) (eps_hat(x_t; y, t) - eps) dx/dtheta,

the U-Net's Jacobian left out. The surrogate ``((w(t) (eps_hat - eps)).detach() * x).sum()``
has exactly that gradient (:func:`sds_surrogate`). w(t) is ``1 - abar_t`` (sigma_t^2, as
DreamFusion) or 1.
"""
from __future__ import annotations

import numpy as np

from .. import creation as gc
from ..autograd import no_grad
from ..tensor import Tensor

__all__ = ["DiffusionPrior", "sds_surrogate", "SDS"]


class DiffusionPrior:
    """A trained diffusion run's network as ``eps_hat(x_t, t)``, conditioned on a class label
    (a class-conditional ``ddpm`` run) or a prompt (a ``glide-core`` run), with classifier-free
    guidance of weight ``guidance`` in ddpm's convention, ``(1 + w) eps(x, y) - w eps(x)``
    (DreamFusion's scale omega is ``1 + w``). The network is frozen: never trained, and its
    parameters take no gradient.
    """

    def __init__(self, model, label: int | None = None, prompt: str | None = None, guidance: float = 0.0):
        for attr in ("denoiser", "diffusion", "to_diffusion"):
            if not hasattr(model, attr):
                raise ValueError(f"score distillation needs a diffusion run (ddpm, glide-core); "
                                 f"{type(model).__name__} has no {attr}")
        if tuple(model.diffusion_shape) != tuple(model.data.shape):
            raise ValueError(f"score distillation needs a run that diffuses its images directly; this "
                             f"{type(model).__name__} diffuses {tuple(model.diffusion_shape)} for images "
                             f"{tuple(model.data.shape)}")
        if (label is None) == (prompt is None):
            raise ValueError("give what to dream of: a class label or a prompt (one of them)")
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        self.model, self.label, self.prompt, self.guidance = model, label, prompt, float(guidance)
        self.diffusion = model.diffusion
        self.alphas_cumprod = np.asarray(model.diffusion.schedule.alphas_cumprod, dtype=np.float64)
        self.num_timesteps = len(self.alphas_cumprod)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        if label is not None:
            n_cls = int(getattr(model, "num_classes", 0) or 0)
            if not n_cls:
                raise ValueError(f"--class needs a class-conditional run (gmcore train ddpm --class-cond) "
                                 f"or a glide-core run; this {type(model).__name__} run has no class labels")
            if not 0 <= label < n_cls:
                raise ValueError(f"--class must be in [0, {n_cls - 1}], got {label}")
        elif not hasattr(model, "tokens"):
            raise ValueError(f"--prompt needs a text-conditional run (glide-core); this "
                             f"{type(model).__name__} run takes class labels: use --class")
        else:
            model.tokens([prompt])          # an unknown word is an error now, naming it
        self._cond = {}

    def condition(self, n: int):
        """What the model's ``denoiser`` takes for ``n`` examples: ddpm's labels, or glide-core's
        caption tokens (for ``--class K``: digit K's training captions in turn), made once per n."""
        if n not in self._cond:
            m = self.model
            if self.prompt is not None:
                self._cond[n] = m.tokens([self.prompt] * n)
            else:       # the models' own hook: ddpm gives the labels, glide-core captions of the digit
                self._cond[n] = m._sample_labels(n, int(self.label), self.guidance)
        return self._cond[n]

    def eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        """eps_hat(x_t; y, t) for x_t (B, C, H, W) in the diffusion's space and timesteps t (B,)."""
        with no_grad():
            model_fn = self.model.denoiser(self.condition(x_t.shape[0]), self.guidance)
            eps, _ = self.diffusion.model_eps(model_fn, x_t, t)
        return eps.detach()


def sds_surrogate(x: Tensor, eps_hat: Tensor, noise: Tensor, weight: Tensor) -> Tensor:
    """A scalar whose gradient with respect to ``x`` (B, ...) is ``weight[b] * (eps_hat - noise)``,
    and so, through x = g(theta), the SDS gradient with respect to theta.

    >>> import gmcore as gm
    >>> x = gm.zeros(1, 2, requires_grad=True)
    >>> sds_surrogate(x, gm.tensor([[1.0, 2.0]]), gm.tensor([[0.5, 0.5]]), gm.tensor([2.0])).backward()
    >>> x.grad.tolist()
    [[1.0, 3.0]]
    """
    w = weight.reshape(-1, *([1] * (len(x.shape) - 1)))
    target = (w * (eps_hat - noise)).detach()
    return (target * x).sum()


class SDS:
    """The SDS objective of a :class:`DiffusionPrior`: ``loss(x)`` draws t ~ U{t_min T .. t_max T}
    and eps per example and returns (the surrogate, logs); ``x`` (B, C, H, W) is in the
    diffusion's space [-1, 1]. ``weighting``: "sigma2" (w = 1 - abar_t, DreamFusion) or "uniform".
    """

    def __init__(self, prior: DiffusionPrior, t_min: float = 0.02, t_max: float = 0.98,
                 weighting: str = "sigma2"):
        if not 0.0 <= t_min < t_max <= 1.0:
            raise ValueError(f"SDS: need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
        if weighting not in ("sigma2", "uniform"):
            raise ValueError(f"SDS: weighting must be sigma2 or uniform, got {weighting!r}")
        self.prior, self.weighting = prior, weighting
        T = prior.num_timesteps
        self.t_lo = min(int(round(t_min * (T - 1))), T - 1)
        self.t_hi = max(int(round(t_max * (T - 1))), self.t_lo)

    def weight(self, t: np.ndarray) -> np.ndarray:
        """w(t) for integer timesteps t."""
        if self.weighting == "uniform":
            return np.ones(len(t))
        return 1.0 - self.prior.alphas_cumprod[t]

    def noised(self, x: Tensor, t: np.ndarray, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x + sqrt(1 - abar_t) noise, x detached (the prior is not
        differentiated)."""
        a = self.prior.alphas_cumprod[t].reshape(-1, *([1] * (len(x.shape) - 1)))
        like = x.detach()
        return like * gc.tensor(np.sqrt(a), device=x.device).to(x.dtype) + \
            noise * gc.tensor(np.sqrt(1.0 - a), device=x.device).to(x.dtype)

    def loss(self, x: Tensor, t=None, noise: Tensor | None = None, generator=None):
        """(surrogate, logs) for images ``x``; ``t`` (B integer timesteps) and ``noise`` are drawn
        from ``generator`` unless given."""
        B = x.shape[0]
        if t is None:
            t = gc.randint(self.t_lo, self.t_hi + 1, (B,), generator=generator).cpu().numpy()
        t = np.asarray(t.detach().cpu().numpy() if isinstance(t, Tensor) else t, dtype=np.int64).reshape(B)
        if noise is None:
            # drawn on the host from a host generator, so a seed gives the same run on any device
            noise = gc.randn(*x.shape, generator=generator).to(x.device).to(x.dtype)
        eps_hat = self.prior.eps(self.noised(x, t, noise), gc.tensor(t, device=x.device).long())
        weight = gc.tensor(self.weight(t), device=x.device).to(x.dtype)
        surrogate = sds_surrogate(x, eps_hat, noise, weight)
        resid = float(((eps_hat - noise) ** 2).mean().item())
        return surrogate, {"eps_mse": resid, "t_mean": float(t.mean())}
