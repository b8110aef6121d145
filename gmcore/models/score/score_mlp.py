"""score-mlp: a noise-conditional score network on the 2-D toys, trained by exact, denoising or
sliced score matching, sampled by annealed Langevin dynamics (Song & Ermon 2019, "Generative
Modeling by Estimating Gradients of the Data Distribution"; Song, Garg, Shi & Ermon 2019,
"Sliced Score Matching"; Hyvarinen 2005).

The network s(x, sigma) = f(x, sigma) / sigma (Song & Ermon 2020's output scaling) is an MLP
(SiLU, smooth so that the Jacobian terms of the exact and sliced objectives have useful
gradients) whose hidden layers each add an embedding of the noise level (sinusoidal, of
``c = 1000 (log sigma_max - log sigma) / (log sigma_max - log sigma_min)``, so sigma_max -> 0
and sigma_min -> 1000, as a diffusion model embeds its timesteps).

Training, as NCSN, for every ``--loss``: each example of a batch draws one of the
``--num-sigmas`` geometric noise scales (``--sigma-max`` .. ``--sigma-min``) uniformly, is
perturbed x~ = x + sigma z, and its objective is weighted by lambda(sigma) = sigma^2. The
three losses differ only in how they match the score of the noised data at x~:

* ``dsm`` (:func:`gmcore.score.dsm_loss`): regression on the kernel's score -z / sigma;
* ``exact`` (:func:`gmcore.score.exact_score_matching_loss`): Hyvarinen's
  tr(grad_x s) + ||s||^2 / 2 at x~, the trace from two backward passes;
* ``ssm`` (:func:`gmcore.score.ssm_loss`): the same with the trace estimated from
  ``--n-projections`` random projections (Rademacher by default, variance-reduced form).

So the objectives see the same data, the same noise scales and the same weights, and their
sample quality can be compared. Samples: annealed Langevin (:func:`gmcore.score.annealed_langevin`)
over the same scales, with the final denoising step.

Figures: a score model has no likelihood (the score leaves the normalising constant unknown),
so ``nll_kind`` is "none"; the run reports the energy distance of 2000 samples to the held-out
points and, on 8gaussians, the mode coverage (as the GANs). ``gmcore train`` writes samples.png
(samples over the test points). :meth:`ScoreMLP.save_pictures` (or :func:`save_score_field`)
writes score_field.png, the learned score at the smallest sigma as arrows over the data; the
trainer's 2-D path does not call ``save_pictures`` yet, so a run folder has no score_field.png
unless it is drawn from the run (``load_run_model``, then ``save_pictures(RUN)``).

Differences from the papers: an MLP on 2-D points, not a RefineNet on images; a continuous
sigma embedding instead of per-level conditional normalisation; the exact loss is included
(the papers use it only as a reference, it costs D backward passes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import creation as gc
from ... import functional as gf
from ... import nn
from ...score.dsm import dsm_loss
from ...score.exact import exact_score_matching_loss
from ...score.langevin import annealed_langevin, geometric_sigmas
from ...score.ssm import PROJECTIONS, ssm_loss
from ..base import DataInfo, GenerativeModel
from ..registry import register

__all__ = ["ScoreMLP", "ScoreMLPConfig", "ScoreMLPSampleOptions", "ConditionalMLP"]

LOSSES = ("exact", "dsm", "ssm")


class ConditionalMLP(nn.Module):
    """An MLP ``f(x, c)`` on vectors (B, dim) conditioned on a scalar per example ``c`` (B,) (a
    diffusion timestep, or a noise level mapped to [0, 1000]): ``layers`` hidden layers of width
    ``hidden`` with SiLU, each adding a projection of the sinusoidal embedding of ``c``.

    >>> import gmcore as gm
    >>> net = ConditionalMLP(2, hidden=16, layers=2)
    >>> net(gm.randn(5, 2), gm.tensor([0.0, 1.0, 2.0, 3.0, 4.0])).shape
    gmcore.Size([5, 2])
    """

    def __init__(self, dim: int, hidden: int = 128, layers: int = 3, emb_dim: int = 32):
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(f"ConditionalMLP: hidden and layers must be >= 1, got {hidden}, {layers}")
        self.emb_dim = int(emb_dim)
        self.emb = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU())
        self.inp = nn.Linear(dim, hidden)
        self.hidden = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(layers - 1)])
        self.cond = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(layers)])
        self.out = nn.Linear(hidden, dim)

    def forward(self, x, c, y=None):
        from ..diffusion.unet import timestep_embedding

        e = self.emb(timestep_embedding(c.to(x.dtype) if c.is_floating_point() else c, self.emb_dim).to(x.dtype))
        h = gf.silu(self.inp(x) + self.cond[0](e))
        for lin, cond in zip(self.hidden, self.cond[1:]):
            h = gf.silu(lin(h) + cond(e))
        return self.out(h)


@dataclass
class ScoreMLPConfig:
    loss: str = field(default="dsm", metadata={
        "help": "score-matching objective: exact (Jacobian trace), dsm (denoising), ssm (sliced)",
        "choices": list(LOSSES)})
    hidden: int = field(default=128, metadata={"help": "MLP width", "min": 1})
    layers: int = field(default=3, metadata={"help": "hidden layers", "min": 1})
    sigma_max: float = field(default=3.0, metadata={
        "help": "largest noise scale (about the data's diameter, Song & Ermon 2020)", "min": 0.0})
    sigma_min: float = field(default=0.01, metadata={"help": "smallest noise scale", "min": 0.0})
    num_sigmas: int = field(default=10, metadata={"help": "geometric noise scales", "min": 1})
    n_projections: int = field(default=1, metadata={"help": "--loss ssm: projections per example",
                                                    "min": 1})
    projection: str = field(default="rademacher", metadata={
        "help": "--loss ssm: distribution of the projections", "choices": list(PROJECTIONS)})


@dataclass
class ScoreMLPSampleOptions:
    steps_per_sigma: int = field(default=100, metadata={
        "help": "annealed Langevin: steps at each noise scale", "min": 1})
    step_eps: float = field(default=2e-5, metadata={
        "help": "annealed Langevin: step size at the smallest scale (alpha_i = eps sigma_i^2 / "
                "sigma_min^2)", "min": 0.0})
    denoise: bool = field(default=True, metadata={
        "help": "a final noise-free step to the posterior mean (Tweedie)"})


@register("score-mlp", family="score", dataset="8gaussians",
          description="noise-conditional score MLP on the 2-D toys: --loss exact|dsm|ssm, annealed Langevin")
class ScoreMLP(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> _ = gm.manual_seed(0)
    >>> m = ScoreMLP(ScoreMLPConfig(hidden=16, layers=2, loss="ssm"), DataInfo((2,), 0, "8gaussians"))
    >>> loss, logs = m.loss((gm.randn(8, 2),))
    >>> m.sample(3, steps_per_sigma=2).shape, m.nll_kind
    (gmcore.Size([3, 2]), 'none')
    """

    Config = ScoreMLPConfig
    SampleOptions = ScoreMLPSampleOptions
    nll_kind = "none"
    # 16000 steps: at 4000 the score is under-trained (on checkerboard 36% of the samples fell
    # on white squares and the squares' weights came out uneven; the closed-form score with the
    # same sampler puts all of them on black squares), at 16000 the energy distance drops 2-6x
    train_defaults = {"lr": 1e-3, "batch_size": 256, "steps": 16000, "warmup": 100, "lr_schedule": "cosine",
                      "eval_every": 0, "ema": 0.999}

    def __init__(self, config: ScoreMLPConfig, data: DataInfo, base=None):
        super().__init__(config, data, base=base)
        c = config
        if len(data.shape) != 1 or data.num_levels != 0:
            raise ValueError(f"score-mlp models vectors of real numbers (the 2-D toys: --dataset "
                             f"8gaussians|checkerboard|moons), not {data.name or 'data'} of shape "
                             f"{tuple(data.shape)}")
        if c.loss not in LOSSES:
            raise ValueError(f"score-mlp: --loss must be one of {LOSSES}, got {c.loss!r}")
        if c.projection not in PROJECTIONS:
            raise ValueError(f"score-mlp: --projection must be one of {PROJECTIONS}, got {c.projection!r}")
        if not 0 < c.sigma_min <= c.sigma_max:
            raise ValueError(f"score-mlp: need 0 < --sigma-min <= --sigma-max, got {c.sigma_min}, {c.sigma_max}")
        if c.num_sigmas < 2 and c.sigma_min != c.sigma_max:
            raise ValueError("score-mlp: --num-sigmas 1 needs --sigma-min == --sigma-max")
        self.sigmas = geometric_sigmas(c.sigma_max, c.sigma_min, c.num_sigmas)   # descending
        self.dim = int(data.shape[0])
        self.net = ConditionalMLP(self.dim, c.hidden, c.layers)

    @property
    def _dtype(self):
        return next(self.parameters()).dtype

    def _level(self, sigma):
        """sigma (B,) -> the embedded noise level in [0, 1000] (sigma_max -> 0, sigma_min -> 1000)."""
        hi, lo = math.log(self.config.sigma_max), math.log(self.config.sigma_min)
        span = hi - lo if hi > lo else 1.0
        return (hi - sigma.log()) * (1000.0 / span)

    def score(self, x, sigma):
        """The learned score s(x, sigma) of the data noised by sigma: ``x`` (B, D), ``sigma`` (B,)."""
        sigma = sigma.to(x.dtype)
        return self.net(x, self._level(sigma)) / sigma.reshape(-1, 1)

    # ---- training ---------------------------------------------------------------------------
    def loss(self, batch):
        c = self.config
        x = batch[0].to(self._dtype)
        if c.loss == "dsm":
            loss = dsm_loss(self.score, x, self.sigmas)
            return loss, {}
        B = x.shape[0]
        levels = gc.tensor(self.sigmas.astype(np.float64), dtype=x.dtype, device=x.device)
        sigma = levels[gc.randint(0, len(self.sigmas), (B,), device=x.device)]
        x_tilde = x + sigma.reshape(-1, 1) * gc.randn(*x.shape, dtype=x.dtype, device=x.device)

        def score_fn(xt):
            return self.score(xt, sigma)
        if c.loss == "exact":
            per = exact_score_matching_loss(score_fn, x_tilde, reduction="none")
        else:
            per = ssm_loss(score_fn, x_tilde, n_projections=c.n_projections, projection=c.projection,
                           reduction="none")
        # lambda(sigma) = sigma^2, as dsm_loss weights its scales
        return (per * sigma * sigma).mean(), {}

    # ---- sampling ---------------------------------------------------------------------------
    def sample(self, n, generator=None, steps_per_sigma=100, step_eps=2e-5, denoise=True):
        """``n`` points by annealed Langevin over the training scales, started from uniform
        noise on [-sigma_max, sigma_max]^D (see :class:`ScoreMLPSampleOptions`)."""
        dev = next(self.parameters()).device
        s_max = float(self.sigmas[0])
        x0 = (gc.rand(n, self.dim, generator=generator, dtype=self._dtype, device=dev) * 2.0 - 1.0) * s_max
        return annealed_langevin(self.score, x0, self.sigmas, eps=step_eps, steps_per_sigma=steps_per_sigma,
                                 denoise=denoise, generator=generator)

    # ---- pictures ---------------------------------------------------------------------------
    FIELD_STEPS = 25

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``score_field.png``: the learned score at the smallest sigma as arrows on a grid
        over the data (the test points in grey when ``test_set`` is given)."""
        points = None
        if test_set is not None:
            points = np.asarray(test_set.arrays[0], dtype=np.float64)
        save_score_field(self, Path(out_dir) / "score_field.png", points=points)
        return {"score_field_png": "score_field.png"}


def save_score_field(model, path, points=None, bounds=(-3.0, 3.0, -3.0, 3.0), steps: int = 25,
                     sigma=None) -> None:
    """A PNG of ``model.score(x, sigma)`` (default: the smallest training sigma) as arrows on a
    ``steps`` x ``steps`` grid over ``bounds`` (each arrow's length proportional to log(1 + |s|),
    the longest one grid cell, so that the field stays readable where |s| is huge at small sigma),
    over ``points`` (N, 2) in grey."""
    from ...autograd import no_grad
    from ...plots import _figure_png, _pyplot

    if points is not None and len(points):
        from ...density2d import grid_bounds
        bounds = grid_bounds(points)
    sigma = float(model.sigmas[-1]) if sigma is None else float(sigma)
    x0, x1, y0, y1 = bounds
    gx, gy = np.meshgrid(np.linspace(x0, x1, steps), np.linspace(y0, y1, steps))
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    dev = next(model.parameters()).device
    with no_grad():
        xt = gc.tensor(grid, dtype=model._dtype, device=dev)
        s = model.score(xt, gc.full((len(grid),), sigma, dtype=model._dtype, device=dev))
        s = np.asarray(s.cpu().numpy(), dtype=np.float64)
    norm = np.linalg.norm(s, axis=1, keepdims=True)
    length = np.log1p(norm)
    spacing = min(x1 - x0, y1 - y0) / max(steps - 1, 1)
    # the longest arrow spans about one grid cell
    scaled = s / np.maximum(norm, 1e-12) * length * (0.95 * spacing / max(float(length.max()), 1e-12))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if points is not None and len(points):
        ax.scatter(points[:, 0], points[:, 1], s=2, c="0.7")
    ax.quiver(grid[:, 0], grid[:, 1], scaled[:, 0], scaled[:, 1], color="tab:blue", angles="xy",
              scale_units="xy", scale=1.0, width=0.003)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_title(f"learned score at sigma = {sigma:g} (arrow length log(1 + |s|))", fontsize=9)
    _figure_png(fig, plt, path)
