"""Energy network trained by contrastive divergence with short-run Langevin MCMC and a replay
buffer (Du & Mordatch 2019, "Implicit Generation and Generalization in Energy-Based Models").

A network ``E_theta(x)`` defines ``p(x) = exp(-E(x)) / Z``: an MLP on the 2-D toys, a small
convolutional net (SiLU) on images. The maximum-likelihood gradient is again data minus model,
``E_data[dE/dtheta] - E_model[dE/dtheta]``; the surrogate loss::

    loss = mean E(x+) - mean E(x-)  +  alpha (mean E(x+)^2 + mean E(x-)^2)

has it as gradient (``x-`` detached), plus Du & Mordatch's penalty that keeps energies near 0.
The negatives ``x-`` come from ``--langevin-steps`` K steps of Langevin dynamics on
``exp(-E / T)`` (:func:`gmcore.score.langevin.langevin` with the score ``-grad_x E / T``; T = 1
is Langevin on the model itself, Du & Mordatch's image settings amount to T << 1) started from
the *replay buffer*: ``--buffer-size`` past negatives, of which each step draws a batch, restarts a
``--reinit`` share from uniform noise over the data's box, and writes the chains' ends back.
The buffer is a model buffer, so it is in the checkpoint and ``--resume`` is exact.

Likelihood. On the 2-D toys ``Z`` is a midpoint sum of ``exp(-E)`` over a 200 x 200 grid on the
data's box (widened by a quarter of its size on every side; the mass outside is left out, so
``nll_kind`` says "grid estimate of Z"), and ``density.png`` is the energy landscape
``exp(-E) / Z``. On images there is no likelihood (``nll_kind`` "none"): the samples are judged
by digits-FID. Samples: ``--sample-steps`` Langevin steps from uniform noise.

What differs from the paper: no spectral normalization, no ensemble; SiLU nets.

Defaults on 8gaussians (MLP of 128, 20 Langevin steps of 0.01 at T = 1, alpha 0.05, Adam lr 2e-3,
2000 steps of 128) were picked among three trials: 8/8 modes, 77% of the samples within 3 std of a
mode, test NLL 0.621 nats (grid Z; the GMM baseline 0.374). With alpha 0.1 and lr 1e-3 (1000
steps) it learned only the ring; with alpha 0.01 and lr 3e-3 the modes collapsed to spikes. Some
chains restarted from noise in the box's corners, where the energy is flat, never leave them.
On digits the image defaults are a first setting, not tuned: 300 steps give digits-FID 42.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from ... import creation as gc
from ... import functional as gf
from ... import nn
from ...autograd import enable_grad, grad, no_grad
from ...score.langevin import langevin
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register

__all__ = ["EBM", "EBMConfig"]

GRID = 200


@dataclass
class EBMConfig:
    hidden: int = field(default=128, metadata={"help": "units per hidden layer (2-D), channels (images)",
                                               "min": 1})
    langevin_steps: int = field(default=20, metadata={"help": "Langevin steps per negative batch", "min": 1})
    step_size: float = field(default=0.01, metadata={"help": "Langevin step size alpha", "min": 0.0})
    temperature: float = field(default=1.0, metadata={
        "help": "Langevin runs on exp(-E / T): 1 samples the model; smaller is Du & Mordatch's "
                "low-noise image setting", "min": 0.0})
    buffer_size: int = field(default=10000, metadata={"help": "replay buffer entries", "min": 1})
    reinit: float = field(default=0.05, metadata={"help": "share of chains restarted from noise",
                                                  "min": 0.0, "max": 1.0})
    alpha: float = field(default=0.05, metadata={"help": "weight of the energy-magnitude penalty",
                                                "min": 0.0})
    sample_steps: int = field(default=500, metadata={"help": "Langevin steps from noise per sample",
                                                     "min": 0})


@dataclass
class EBMSampleOptions:
    init: str = field(default="buffer", metadata={
        "help": "where the sampling chains start: the replay buffer (the training chains' ends) or "
                "uniform noise over the data's box", "choices": ["buffer", "noise"]})


@register("ebm", family="ebm", dataset="8gaussians",
          description="energy network: contrastive divergence with short-run Langevin and a replay buffer")
class EBM(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = EBM(EBM.Config(hidden=8, buffer_size=16, langevin_steps=2), DataInfo((2,), 0, "8gaussians"))
    >>> loss, logs = m.loss((gm.randn(4, 2),))
    >>> m.sample(3, generator=gm.Generator().manual_seed(0)).shape
    gmcore.Size([3, 2])
    """

    Config = EBMConfig
    SampleOptions = EBMSampleOptions
    train_defaults = {"steps": 2000, "batch_size": 128, "lr": 2e-3,
                      # images: about 1 s a step on 2 busy cores; 300 steps give digits-FID 42
                      "image": {"steps": 300, "batch_size": 64, "lr": 1e-4}}
    # images: Du & Mordatch's gradient step 10 and noise std 0.005, i.e. alpha = 0.005^2 and
    # T = alpha / (2 * 10)
    config_defaults = {"image": {"hidden": 64, "step_size": 2.5e-5, "temperature": 1.25e-6,
                                 "langevin_steps": 40, "sample_steps": 100}}

    def __init__(self, config: EBMConfig, data: DataInfo):
        super().__init__(config, data)
        self.points = len(data.shape) == 1
        if self.points and data.num_levels:
            raise ValueError("ebm on vectors models continuous points (the 2-D toys)")
        if not self.points and len(data.shape) != 3:
            raise ValueError(f"ebm models 2-D points or images (C, H, W); got shape {tuple(data.shape)}")
        h = config.hidden
        if self.points:
            d = data.shape[0]
            self.net = nn.Sequential(nn.Linear(d, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(),
                                     nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 1))
        else:
            c, hh, ww = data.shape
            self.net = nn.Sequential(
                nn.Conv2d(c, h, 3, padding=1), nn.SiLU(),
                nn.Conv2d(h, h, 3, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(h, h, 3, stride=2, padding=1), nn.SiLU(), nn.Flatten(),
                nn.Linear(h * ((hh + 3) // 4) * ((ww + 3) // 4), 1))
        self.register_buffer("buffer", gc.zeros(config.buffer_size, *data.shape))
        self.register_buffer("buffer_ready", gc.zeros(()))
        # the data's box: uniform restarts and the 2-D grid for Z (prepare() fits it)
        lo, hi = (-4.0, 4.0) if self.points else (0.0, 1.0)
        self.register_buffer("box", gc.tensor([lo, hi]))
        self._log_z_cache = None

    def prepare(self, train_set) -> None:
        """Before the first step: the 2-D data's box (images keep [0, 1])."""
        if self.points:
            x = np.asarray(train_set.arrays[0], dtype=np.float64)
            lo, hi = float(x.min()), float(x.max())
            pad = 0.25 * (hi - lo)
            self.box.data[...] = np.array([lo - pad, hi + pad], dtype=self.box.data.dtype)

    # ---- energy and Langevin -------------------------------------------------------------------
    def energy(self, x: Tensor) -> Tensor:
        """``E(x)`` (B,)."""
        return self.net(x).reshape(x.shape[0])

    def _check(self, x):
        if not isinstance(x, Tensor) or not x.dtype.is_floating_point \
                or tuple(x.shape[1:]) != tuple(self.data.shape):
            got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"ebm expects float data of shape (B, {', '.join(map(str, self.data.shape))}), "
                             f"got {got}")
        return x

    def _score(self, x: Tensor) -> Tensor:
        """``-grad_x E(x) / T`` (the network's parameters collect no gradient)."""
        with enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = grad(self.energy(xg).sum(), xg)
        return g * (-1.0 / self.config.temperature)

    def _noise(self, n: int, generator=None) -> Tensor:
        lo, hi = (float(v) for v in self.box.tolist())
        dev, dt = self.buffer.device, self.net[0].weight.dtype
        return gc.rand(n, *self.data.shape, generator=generator, device=dev, dtype=dt) * (hi - lo) + lo

    def langevin(self, x0: Tensor, steps: int, generator=None) -> Tensor:
        """``steps`` Langevin steps on ``exp(-E / T)`` from ``x0`` (no gradient to the network)."""
        return langevin(self._score, x0, self.config.step_size, steps, generator=generator)

    # ---- training --------------------------------------------------------------------------------
    def loss(self, batch):
        pos = self._check(batch[0])
        c, n = self.config, pos.shape[0]
        with no_grad():
            if not self.buffer_ready.item():
                self.buffer.data[...] = self._noise(c.buffer_size).data
                self.buffer_ready.data[...] = 1
            idx = gc.randint(0, c.buffer_size, (n,), device=pos.device)
            start = self.buffer[idx]
            fresh = (gc.rand(n, device=pos.device) < c.reinit).reshape(n, *([1] * len(self.data.shape)))
            start = gf.where(fresh, self._noise(n), start.to(pos.dtype))
        neg = self.langevin(start, c.langevin_steps).detach()
        if self.training:
            self.buffer.data[idx.data] = neg.data
        e_pos, e_neg = self.energy(pos), self.energy(neg)
        loss = e_pos.mean() - e_neg.mean() + c.alpha * ((e_pos ** 2).mean() + (e_neg ** 2).mean())
        return loss, {"e_pos": float(e_pos.mean().item()), "e_neg": float(e_neg.mean().item())}

    # ---- the model interface -------------------------------------------------------------------
    @property
    def nll_kind(self) -> str:
        if not self.points:
            return "none"
        lo, hi = (float(v) for v in self.box.tolist())
        return (f"grid estimate of Z ({GRID}x{GRID} midpoint sum of exp(-E) over [{lo:.2f}, {hi:.2f}]^2; "
                "mass outside left out)")

    def log_partition(self) -> float:
        """2-D: ``log Z`` by a midpoint sum over the data's box, cached for the current weights."""
        if not self.points or self.data.shape[0] != 2:
            raise NotImplementedError("ebm has a likelihood only on 2-D points (Z by a grid)")
        key = hashlib.sha256(b"".join(np.ascontiguousarray(p.detach().numpy()).tobytes()
                                      for p in self.parameters()) + self.box.numpy().tobytes()).hexdigest()
        if self._log_z_cache is None or self._log_z_cache[0] != key:
            lo, hi = (float(v) for v in self.box.tolist())
            step = (hi - lo) / GRID
            g = lo + (np.arange(GRID) + 0.5) * step
            pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
            dt = self.net[0].weight.dtype
            with no_grad():
                neg_e = -self.energy(gc.tensor(pts, dtype=dt, device=self.box.device)).detach().numpy()
            top = neg_e.max()
            self._log_z_cache = (key, float(top + math.log(np.exp(neg_e - top).sum() * step * step)))
        return self._log_z_cache[1]

    def nll(self, batch, generator=None) -> Tensor:
        """2-D points: ``E(x) + log Z`` (Z on a grid) in nats."""
        x = self._check(batch[0])
        log_z = self.log_partition()
        return self.energy(x) + log_z

    def sample(self, n, generator=None, init: str = "buffer") -> Tensor:
        if init == "buffer" and self.buffer_ready.item():
            idx = gc.randint(0, self.config.buffer_size, (n,), generator=generator, device=self.buffer.device)
            x0 = self.buffer[idx].to(self.net[0].weight.dtype)
        else:
            x0 = self._noise(n, generator)
        x = self.langevin(x0, self.config.sample_steps, generator)
        if not self.points:
            x = x.clamp(0.0, 1.0)
        return x.detach()
