"""Boltzmann machine (Ackley, Hinton & Sejnowski 1985): binary units, symmetric couplings, Gibbs
sampling and the data-minus-model learning rule; exact partition function by enumeration.

The units ``s = (v, h)`` are the D visible pixels and ``--hidden H`` hidden units (0, the
default: a *fully visible* machine), every pair coupled::

    E(s) = -1/2 s^T J s - a.s          J symmetric, zero diagonal

so ``p(s) = exp(-E(s)) / Z``. ``J`` is stored as a parameter ``weight`` used through its symmetric
part with the diagonal masked out (its gradient is symmetric, so it stays symmetric).

Gibbs sampling. Unit ``i`` given the others is ``Bernoulli(sigmoid(J_i . s + a_i))``; a sweep
updates the units one after the other (every unit sees every other, so no two can move at once,
unlike an RBM's blocks). ``--chains`` persistent chains carry over between steps and live in the
checkpoint (``--resume`` continues them bit for bit).

Learning. The log-likelihood gradient is the data-minus-model rule
``dlog p(v)/dJ_ij = <s_i s_j>_data - <s_i s_j>_model``, where the data term clamps ``v`` to the
data and averages over ``p(h | v)``. With few hidden units that average is exact: the free energy
``F(v) = -log sum_h exp(-E(v, h))`` enumerates the 2^H hidden states (at most 12), and the
surrogate loss ``mean_data F(v) - mean_chains E(s~)`` (``s~`` the chains after ``--sweeps``
sweeps, detached) has exactly that rule as its gradient (Adam applies it).

Partition function. :meth:`BoltzmannMachine.exact_log_partition` enumerates all 2^(D+H) states
(at most 20 units); ``--partition auto`` (the default) uses it whenever the machine is that small,
and annealed importance sampling otherwise (as in :mod:`gmcore.models.ebm.rbm`: the base is the
per-pixel model fitted to the training data, ``p_beta* = p_A*^(1-beta) p*^beta`` on a linear
schedule of ``--ais-steps`` temperatures, one sequential sweep per temperature, ``--ais-runs``
runs, ``log_z_std`` the delta-method standard error). The test NLL is ``F(v) + log Z``: exact for
a machine of at most 20 units, an AIS estimate otherwise.

Data. The binarized 8x8 digits (64 visible units, so AIS gives their log Z); the exact path is
what the tests check everything else against, on machines of up to 20 units. With ``--hidden``
the hidden units model what pairwise visible couplings cannot.

Defaults (fully visible, 100 persistent chains, one sweep per step, Adam lr 3e-3, 2000 steps of
100): 0.415 bits/dim on the digits test split, against 0.552 for independent pixels; 8 hidden
units gave the same 0.415.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import creation as gc
from ... import functional as gf
from ... import metrics
from ...autograd import no_grad
from ...nn import Parameter
from ...nn import functional as F
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register
from .rbm import MAX_ENUMERATED_UNITS, _binary_states

__all__ = ["BoltzmannMachine", "BoltzmannMachineConfig"]

MAX_HIDDEN = 12   # the free energy enumerates 2^H hidden states per example


def _partition_fields():
    return {
        "partition": field(default="auto", metadata={
            "help": f"log Z for the test NLL: exact (enumerate, at most {MAX_ENUMERATED_UNITS} units), ais "
                    "(annealed importance sampling), or auto (exact when it can)",
            "choices": ["auto", "exact", "ais"]}),
        "ais_runs": field(default=100, metadata={"help": "AIS: independent runs M", "min": 2}),
        "ais_steps": field(default=2000, metadata={
            "help": "AIS: intermediate distributions K (linear beta schedule)", "min": 1}),
    }


@dataclass
class BoltzmannMachineConfig:
    hidden: int = field(default=0, metadata={
        "help": f"hidden units (0: fully visible; at most {MAX_HIDDEN})", "min": 0})
    sweeps: int = field(default=1, metadata={"help": "Gibbs sweeps of the chains per step", "min": 1})
    chains: int = field(default=100, metadata={"help": "persistent Gibbs chains", "min": 1})
    init_std: float = field(default=0.01, metadata={"help": "std of the initial couplings", "min": 0.0})
    partition: str = _partition_fields()["partition"]
    ais_runs: int = _partition_fields()["ais_runs"]
    ais_steps: int = _partition_fields()["ais_steps"]


@dataclass
class BoltzmannMachineEvalOptions:
    partition: str = _partition_fields()["partition"]
    ais_runs: int = _partition_fields()["ais_runs"]
    ais_steps: int = _partition_fields()["ais_steps"]


@dataclass
class BoltzmannMachineSampleOptions:
    gibbs_steps: int = field(default=500, metadata={"help": "Gibbs sweeps per sample chain", "min": 0})


@register("boltzmann-machine", family="ebm", dataset="digits",
          description="Boltzmann machine: fully visible or with hidden units, Gibbs sampling, exact log Z "
                      "by enumeration (AIS beyond 20 units)")
class BoltzmannMachine(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = BoltzmannMachine(BoltzmannMachine.Config(hidden=2), DataInfo((1, 2, 2), 2))
    >>> x = (gm.rand(5, 1, 2, 2) > 0.5).float()
    >>> loss, logs = m.loss((x,))
    >>> m.nll((x,)).shape, m.nll_kind
    (gmcore.Size([5]), 'exact (enumeration of 2^6 states)')
    """

    Config = BoltzmannMachineConfig
    SampleOptions = BoltzmannMachineSampleOptions
    EvalOptions = BoltzmannMachineEvalOptions
    # an evaluation on digits runs AIS: only at the end by default
    train_defaults = {"steps": 2000, "batch_size": 100, "lr": 3e-3, "eval_every": 0}

    @classmethod
    def dataset_options(cls, config) -> dict:
        return {"binarize": "threshold"}

    def __init__(self, config: BoltzmannMachineConfig, data: DataInfo):
        super().__init__(config, data)
        if data.num_levels != 2:
            raise ValueError(f"boltzmann-machine models binary data; {data.name or 'the data'} has "
                             f"{data.num_levels or 'continuous'} levels (gmcore train binarizes "
                             "digits/mnist)")
        if config.hidden > MAX_HIDDEN:
            raise ValueError(f"--hidden {config.hidden}: at most {MAX_HIDDEN} hidden units (the free energy "
                             f"enumerates their 2^H states)")
        self.D, self.H = data.dims, config.hidden
        n = self.D + self.H
        g = gc.randn(n, n) * config.init_std
        self.weight = Parameter((g + g.t()) * (0.5 ** 0.5))
        self.bias = Parameter(gc.zeros(n))
        self.register_buffer("offdiag", 1.0 - gc.eye(n))
        self.register_buffer("base_bias", gc.zeros(self.D))
        self.register_buffer("chains", gc.zeros(config.chains, n))
        self.register_buffer("chains_ready", gc.zeros(()))
        self._log_z_cache = None

    # ---- fitted pieces ---------------------------------------------------------------------
    def prepare(self, train_set) -> None:
        """Before the first step: fit the per-pixel base (AIS) and start the visible biases there."""
        x = np.asarray(train_set.arrays[0], dtype=np.float64).reshape(len(train_set), -1)
        self.fit_base((x > 0).astype(np.float64))

    def fit_base(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        p = (x.sum(0) + 1.0) / (len(x) + 2.0)
        logit = (np.log(p) - np.log1p(-p)).astype(self.bias.data.dtype)
        with no_grad():
            self.base_bias.data[...] = logit
            self.bias.data[:self.D] = logit

    # ---- energies ----------------------------------------------------------------------------
    def coupling(self) -> Tensor:
        """``J``: the weight's symmetric part, zero diagonal."""
        return (self.weight + self.weight.t()) * 0.5 * self.offdiag

    def energy(self, s: Tensor) -> Tensor:
        """``E(s)`` (B,) for states (B, D + H)."""
        return -0.5 * ((s @ self.coupling()) * s).sum(1) - s @ self.bias

    def free_energy(self, v: Tensor) -> Tensor:
        """``F(v) = -log sum_h exp(-E(v, h))`` (B,) for flat visibles (B, D); H = 0: ``E(v)``."""
        if self.H == 0:
            return self.energy(v)
        J, D = self.coupling(), self.D
        hs = next(_binary_states(self.H, v.dtype, v.device, chunk_bits=MAX_HIDDEN))   # (2^H, H)
        jvv, jvh, jhh = J[:D, :D], J[:D, D:], J[D:, D:]
        own = 0.5 * ((v @ jvv) * v).sum(1) + v @ self.bias[:D]                        # (B,)
        h_own = 0.5 * ((hs @ jhh) * hs).sum(1) + hs @ self.bias[D:]                    # (2^H,)
        joint = (v @ jvh) @ hs.t() + h_own                                             # (B, 2^H)
        return -(own + joint.logsumexp(1))

    def _log_unnorm(self, s: Tensor, beta: float) -> Tensor:
        """AIS's ``log p_beta*(s) = beta (-E(s)) + (1 - beta) a_A . v`` (base hiddens free)."""
        return -beta * self.energy(s) + (1.0 - beta) * (s[:, :self.D] @ self.base_bias)

    # ---- Gibbs sampling ------------------------------------------------------------------------
    def sweep(self, s: Tensor, generator=None, beta: float = 1.0, sweeps: int = 1) -> Tensor:
        """``sweeps`` sequential Gibbs sweeps over every unit of the states ``s`` (B, D + H), at
        inverse temperature ``beta`` towards the base (AIS; 1: the model). Returns new states."""
        with no_grad():
            J = self.coupling().detach().data
            bias = beta * self.bias.detach().data
            bias[:self.D] += (1.0 - beta) * self.base_bias.data
            out = s.detach().data.copy()
            n = out.shape[1]
            for _ in range(sweeps):
                u = gc.rand(out.shape[0], n, generator=generator, device=s.device, dtype=s.dtype)
                # u < sigmoid(a) exactly when logit(u) < a: the logits once per sweep, no overflow
                logit_u = (u.log() - (-u).log1p()).data
                for i in range(n):   # J[i, i] = 0: unit i's input leaves itself out
                    a = beta * (out @ J[:, i]) + bias[i]
                    out[:, i] = logit_u[:, i] < a
        return gc.tensor(out, device=s.device)

    def _base_draw(self, n: int, generator=None) -> Tensor:
        """States from the base: visibles by the per-pixel model, hiddens uniform."""
        dev, dt = self.weight.device, self.weight.dtype
        u = gc.rand(n, self.D + self.H, generator=generator, device=dev, dtype=dt)
        p = gf.cat([self.base_bias.sigmoid(), gc.full((self.H,), 0.5, device=dev, dtype=dt)], 0)
        return (u < p).to(dt)

    # ---- training ------------------------------------------------------------------------------
    def _flat(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.dtype.is_floating_point \
                or tuple(x.shape[1:]) != tuple(self.data.shape):
            got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"boltzmann-machine expects float binary images of shape "
                             f"(B, {', '.join(map(str, self.data.shape))}), got {got}")
        return x.reshape(x.shape[0], self.D)

    def loss(self, batch):
        v = self._flat(batch[0])
        with no_grad():
            if not self.chains_ready.item():
                self.chains.data[...] = self._base_draw(self.config.chains).data
                self.chains_ready.data[...] = 1
            neg = self.sweep(self.chains, sweeps=self.config.sweeps)
            if self.training:
                self.chains.data[...] = neg.data
        gap = self.free_energy(v).mean() - self.energy(neg.detach()).mean()
        return gap, {}

    # ---- partition function --------------------------------------------------------------------
    @property
    def units(self) -> int:
        return self.D + self.H

    def exact_log_partition(self) -> float:
        """``log Z`` by enumerating all 2^(D+H) states (at most 20 units)."""
        if self.units > MAX_ENUMERATED_UNITS:
            raise ValueError(f"exact log Z enumerates 2^{self.units} states; at most {MAX_ENUMERATED_UNITS} "
                             "units (use --partition ais)")
        with no_grad():
            states = _binary_states(self.units, self.weight.dtype, self.weight.device)
            parts = [-self.energy(s) for s in states]
            return float(gf.cat(parts, 0).logsumexp(0).item())

    def base_log_partition(self) -> float:
        return float(F.softplus(self.base_bias).sum().item()) + self.H * math.log(2.0)

    def ais_log_partition(self, generator=None, runs: int | None = None, steps: int | None = None):
        """Annealed importance sampling: ``(log Z, its standard error)`` (module docstring)."""
        runs = int(runs or self.config.ais_runs)
        steps = int(steps or self.config.ais_steps)
        if runs < 2 or steps < 1:
            raise ValueError(f"AIS needs at least 2 runs and 1 step, got runs={runs}, steps={steps}")
        with no_grad():
            s = self._base_draw(runs, generator)
            log_w = np.zeros(runs)
            prev = 0.0
            for k in range(1, steps + 1):
                beta = k / steps
                log_w += (self._log_unnorm(s, beta) - self._log_unnorm(s, prev)).numpy()
                if k < steps:
                    s = self.sweep(s, generator, beta)
                prev = beta
        w = np.exp(log_w - log_w.max())
        std_err = float(w.std(ddof=1) / (math.sqrt(runs) * w.mean()))
        return float(self.base_log_partition() + log_w.max() + math.log(w.mean())), std_err

    def _method(self) -> str:
        p = self.config.partition
        return ("exact" if self.units <= MAX_ENUMERATED_UNITS else "ais") if p == "auto" else p

    def log_partition(self, generator=None) -> tuple[float, float]:
        """``(log Z, its standard error)`` for the current weights, computed once and cached."""
        c = self.config
        key = (hashlib.sha256(self.weight.detach().numpy().tobytes() + self.bias.detach().numpy().tobytes()
                              + self.base_bias.numpy().tobytes()).hexdigest(),
               self._method(), c.ais_runs, c.ais_steps)
        if self._log_z_cache is None or self._log_z_cache[0] != key:
            if key[1] == "exact":
                result = (self.exact_log_partition(), 0.0)
            else:
                result = self.ais_log_partition(generator)
            self._log_z_cache = (key, *result)
        return self._log_z_cache[1], self._log_z_cache[2]

    # ---- the model interface -------------------------------------------------------------------
    def nll(self, batch, generator=None) -> Tensor:
        """``F(v) + log Z`` in nats per example."""
        v = self._flat(batch[0])
        return self.free_energy(v) + self.log_partition(generator)[0]

    @property
    def nll_kind(self) -> str:
        c = self.config
        if self._method() == "exact":
            return f"exact (enumeration of 2^{self.units} states)"
        what = f"AIS estimate of log Z ({c.ais_runs} runs, {c.ais_steps} linear temperatures)"
        if self._log_z_cache is not None and self._log_z_cache[0][1] == "ais":
            se = self._log_z_cache[2]
            what += (f": log Z = {self._log_z_cache[1]:.3f} +- {se:.3f} nats (standard error), "
                     f"+- {se / (self.D * metrics.LN2):.4f} bits/dim")
        return what

    def sample(self, n, generator=None, gibbs_steps: int = 500) -> Tensor:
        s = self.sweep(self._base_draw(n, generator), generator, sweeps=gibbs_steps) if gibbs_steps else \
            self._base_draw(n, generator)
        return s[:, :self.D].reshape(n, *self.data.shape)

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``couplings.png``: each visible unit's couplings to the other pixels (and with hidden
        units, ``filters.png``: each hidden unit's couplings to the pixels); ``log Z`` figures."""
        from ...plots import save_image_grid

        J = self.coupling().detach().numpy()
        res = {}
        shown = {"couplings.png": J[:self.D, :self.D]}
        if self.H:
            shown["filters.png"] = J[:self.D, self.D:].T
        for name, w in shown.items():
            lo, hi = w.min(1, keepdims=True), w.max(1, keepdims=True)
            save_image_grid(((w - lo) / np.maximum(hi - lo, 1e-12)).reshape(len(w), *self.data.shape),
                            Path(out_dir) / name)
            res[name.split(".")[0]] = name
        log_z, se = self.log_partition(generator)
        res.update(log_z=log_z, log_z_std=se, log_z_method=self._method())
        if self._method() == "ais":
            c = self.config
            res.update(ais_runs=c.ais_runs, ais_steps=c.ais_steps,
                       log_z_std_bits_per_dim=se / (self.D * metrics.LN2))
        return res
