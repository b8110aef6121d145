"""Restricted Boltzmann machine: CD-k and persistent CD, annealed importance sampling for log Z.

An RBM is a bipartite Markov random field over visible units ``v`` (D) and hidden units ``h``
(H, binary) with energy (Smolensky 1986; Hinton 2002)::

    Bernoulli-Bernoulli:  E(v, h) = -b.v - c.h - v^T W h                       v in {0, 1}^D
    Gaussian-Bernoulli:   E(v, h) = sum_i (v_i - b_i)^2 / (2 s_i^2) - c.h - (v / s)^T W h

(the Gaussian form of Hinton's practical guide, 2010, with each pixel's std ``s_i`` fixed to the
training data's, dequantization included, as the guide advises; a learned ``s`` diverged in a trial).
Summing out ``h`` gives the free energy ``F(v) = -log sum_h exp(-E(v, h))``::

    F(v) = -b.v - sum_j softplus(c_j + v^T W_j)                       (Bernoulli)
    F(v) = sum_i (v_i - b_i)^2 / (2 s_i^2) - sum_j softplus(c_j + (v / s)^T W_j)     (Gaussian)

and ``p(v) = exp(-F(v)) / Z``. Both conditionals factorize, so block Gibbs sampling alternates
``h ~ sigmoid(c + (v / s)^T W)`` and ``v ~ Bernoulli(sigmoid(b + W h))`` (or ``N(b + s W h, s^2)``).

Learning. The log-likelihood gradient is the *data-minus-model* rule
``dlog p(v)/dW = <v h^T>_data - <v h^T>_model`` (``h`` replaced by ``p(h | v)``; likewise for the
biases). It is implemented as a surrogate loss whose gradient is exactly that rule::

    loss = mean_data F(v) - mean_chains F(v~)        v~ detached: the negative samples

so autograd and the loop's optimizer (Adam by default) apply it (``dF/dW = -v p(h|v)^T``). The
negative samples ``v~`` come from ``--cd-k`` Gibbs sweeps started at the batch (CD-k, Hinton
2002) or, with ``--persistent``, from ``--chains`` chains that carry over between steps (PCD,
Tieleman 2008); the chains are a buffer of the model, so they are in the checkpoint and
``--resume`` continues them bit for bit. The logged ``loss`` is that free-energy gap, not a
likelihood; ``recon`` is the one-step reconstruction error of the batch.

Partition function. ``Z`` sums over 2^(D+H) states; :meth:`RBM.exact_log_partition` sums out
the visibles analytically and enumerates the 2^H hidden states (or sums out the hiddens and
enumerates the visibles when D is smaller; Bernoulli only), for at most 20 units.
:meth:`RBM.ais_log_partition` is annealed importance sampling (Neal 2001; Salakhutdinov &
Murray 2008): the base ``p_A`` is the visible-bias-only model fitted to the training data
(Bernoulli: the per-pixel mean; Gaussian: per-pixel mean, with the model's std), ``Z_A`` known; the
``--ais-steps`` K intermediate distributions ``p_k(v) ~ p_A*(v)^(1-beta_k) p_B*(v)^beta_k`` follow a
linear schedule of ``beta`` from 0 to 1 (the paper used a piecewise one); each of ``--ais-runs``
M runs draws ``v_0 ~ p_A``, accumulates ``log w += log p_k*(v) - log p_{k-1}*(v)`` and moves ``v``
by one Gibbs sweep that leaves ``p_k`` invariant. ``Z_B / Z_A`` is estimated by the mean of the
``w``; ``log_z_std`` is the delta-method standard error of ``log Z``, ``std(w) / (sqrt(M) mean(w))``.
The AIS estimate of ``Z`` is unbiased, so that of ``log Z`` tends to be low (Jensen): the NLL
it gives is, if anything, slightly optimistic.

Likelihood. ``nll(x) = F(x) + log Z`` with ``log Z`` from AIS (or exact, ``--partition exact``),
computed once per set of weights and cached; ``nll_kind`` gives ``log Z`` with its standard
error in nats and in bits/dim, and ``save_pictures`` writes ``log_z``, ``log_z_std`` (and the
AIS settings) into ``metrics.json``. Gaussian-Bernoulli RBMs (``--visible gaussian``) model the
17-level digits as a density on uniformly dequantized pixels ``(level + u) / 17``; their NLL is
the dequantization bound (:func:`gmcore.metrics.dequantization_nats`, one draw of ``u``).

Samples are the visibles after ``--gibbs-steps`` sweeps of chains started from the base
model; ``save_pictures`` writes ``filters.png``, each hidden unit's weights as an image.

What differs from the papers: Adam instead of SGD with momentum; a linear beta schedule; no
weight decay or sparsity target unless the loop's ``--weight-decay`` is given.

Defaults (200 hidden units, CD-1, Adam lr 3e-3, 6000 steps of 100) were picked on the digits
test split among 100-500 hidden units, CD-1 and PCD-1, 3000 and 6000 steps: 0.379 bits/dim
(PCD-1 with 100 units: 0.391); AIS with 50000 temperatures moved log Z by less than 0.01 nats.
Gaussian visibles need ``--persistent --lr 1e-3``: with CD-1 the chains never visit the far
states the model drifts to (8.3 bits/dim in a trial). The 17-level digits are mostly 0 or 16, a
poor match for Gaussians: 3.19 bits/dim, against 3.38 for the per-pixel Gaussian base and 2.42
for the per-pixel categorical baseline.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from ... import creation as gc
from ... import metrics
from ...autograd import no_grad
from ...nn import Parameter
from ...nn import functional as F
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register

__all__ = ["RBM", "RBMConfig", "RBMSampleOptions", "RBMEvalOptions"]

MAX_ENUMERATED_UNITS = 20
_LOG_2PI = math.log(2.0 * math.pi)


def _ais_fields():
    return {
        "partition": field(default="ais", metadata={
            "help": "log Z for the test NLL: ais (annealed importance sampling) or exact (enumeration; "
                    f"at most {MAX_ENUMERATED_UNITS} hidden units, or visibles)",
            "choices": ["ais", "exact"]}),
        "ais_runs": field(default=100, metadata={"help": "AIS: independent runs M", "min": 2}),
        "ais_steps": field(default=10000, metadata={
            "help": "AIS: intermediate distributions K (linear beta schedule)", "min": 1}),
    }


@dataclass
class RBMConfig:
    hidden: int = field(default=200, metadata={"help": "hidden units H", "min": 1})
    visible: str = field(default="bernoulli", metadata={
        "help": "bernoulli (binarized digits) or gaussian (17-level digits, dequantized; each "
                "pixel's std fixed to the data's)", "choices": ["bernoulli", "gaussian"]})
    cd_k: int = field(default=1, metadata={"help": "Gibbs sweeps per negative phase (CD-k / PCD-k)",
                                           "min": 1})
    persistent: bool = field(default=False, metadata={
        "help": "persistent CD: negative chains carry over between steps (else start at the batch)"})
    chains: int = field(default=100, metadata={"help": "persistent chains", "min": 1})
    init_std: float = field(default=0.01, metadata={"help": "std of the initial weights", "min": 0.0})
    partition: str = _ais_fields()["partition"]
    ais_runs: int = _ais_fields()["ais_runs"]
    ais_steps: int = _ais_fields()["ais_steps"]


@dataclass
class RBMEvalOptions:
    partition: str = _ais_fields()["partition"]
    ais_runs: int = _ais_fields()["ais_runs"]
    ais_steps: int = _ais_fields()["ais_steps"]


@dataclass
class RBMSampleOptions:
    gibbs_steps: int = field(default=1000, metadata={"help": "Gibbs sweeps per sample chain", "min": 0})
    mean: bool = field(default=False, metadata={
        "help": "return E[v | h] of the last sweep (smooth pictures) instead of a draw of v"})


@register("rbm", family="ebm", dataset="digits",
          description="RBM: Bernoulli or Gaussian visibles, CD-k / persistent CD, AIS estimate of log Z")
class RBM(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = RBM(RBM.Config(hidden=4, ais_steps=50, ais_runs=8), DataInfo((1, 3, 3), 2))
    >>> x = (gm.rand(5, 1, 3, 3) > 0.5).float()
    >>> loss, logs = m.loss((x,))
    >>> m.nll((x,), generator=gm.Generator().manual_seed(0)).shape
    gmcore.Size([5])
    >>> abs(m.exact_log_partition() - m.ais_log_partition(gm.Generator().manual_seed(0))[0]) < 0.1
    True
    """

    Config = RBMConfig
    SampleOptions = RBMSampleOptions
    EvalOptions = RBMEvalOptions
    # an evaluation runs AIS (about 10 s): only at the end by default
    train_defaults = {"steps": 6000, "batch_size": 100, "lr": 3e-3, "eval_every": 0}

    @classmethod
    def dataset_options(cls, config) -> dict:
        return {"binarize": "threshold"} if config.visible == "bernoulli" else {}

    def __init__(self, config: RBMConfig, data: DataInfo):
        super().__init__(config, data)
        self.gaussian = config.visible == "gaussian"
        if data.num_levels < 2:
            raise ValueError(f"rbm models discrete pixels (num_levels >= 2); {data.name or 'the data'} "
                             "is continuous")
        if not self.gaussian and data.num_levels != 2:
            raise ValueError(f"rbm --visible bernoulli expects binary data but {data.name or 'the data'} "
                             f"has {data.num_levels} levels (gmcore train binarizes digits/mnist itself; "
                             "--visible gaussian models the levels)")
        if self.gaussian and data.num_levels == 2:
            raise ValueError("rbm --visible gaussian models multi-level pixels; this data is binary "
                             "(use --visible bernoulli)")
        d, h = data.dims, config.hidden
        self.D, self.H = d, h
        self.W = Parameter(gc.randn(d, h) * config.init_std)
        self.b = Parameter(gc.zeros(d))     # visible biases (the Gaussian's means)
        self.c = Parameter(gc.zeros(h))     # hidden biases
        # The AIS base model (visible biases fitted to the data; prepare() sets them): Bernoulli
        # logits, or Gaussian means; and the Gaussian's fixed per-pixel log std (model and base).
        self.register_buffer("base_bias", gc.zeros(d))
        self.register_buffer("log_sigma", gc.zeros(d))
        # Persistent chains (in the checkpoint, so that --resume continues them exactly).
        self.register_buffer("chains", gc.zeros(config.chains, d))
        self.register_buffer("chains_ready", gc.zeros(()))
        self._log_z_cache = None   # (weights digest, settings, log Z, its std error)

    # ---- fitted pieces ---------------------------------------------------------------------
    def prepare(self, train_set) -> None:
        """Before the first step (not on resume): fit the AIS base model to the training data and
        start the visible biases there (Hinton's guide: ``b_i = log p_i / (1 - p_i)``)."""
        x = np.asarray(train_set.arrays[0], dtype=np.float64).reshape(len(train_set), -1)
        self.fit_base(self._scaled(x))

    def _scaled(self, levels: np.ndarray) -> np.ndarray:
        """Data set arrays (uint8 levels, or 0/1 when binarized) -> the model's pixel values."""
        if self.gaussian:  # dequantized centres (level + 1/2) / K; the spread is in fit_base
            return (levels + 0.5) / self.data.num_levels
        return (levels > 0).astype(np.float64)

    def fit_base(self, x: np.ndarray) -> None:
        """Fit the independent base model to pixel values ``x`` (N, D) and start ``b`` there."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        dt = self.b.data.dtype
        with no_grad():
            if self.gaussian:
                # + the variance of the uniform dequantization noise, (1/K)^2 / 12
                var = x.var(0) + 1.0 / (12.0 * self.data.num_levels ** 2)
                self.base_bias.data[...] = x.mean(0).astype(dt)
                self.b.data[...] = x.mean(0).astype(dt)
                self.log_sigma.data[...] = (0.5 * np.log(var)).astype(dt)
            else:
                p = (x.sum(0) + 1.0) / (len(x) + 2.0)   # add-one smoothing: no infinite logits
                logit = np.log(p) - np.log1p(-p)
                self.base_bias.data[...] = logit.astype(dt)
                self.b.data[...] = logit.astype(dt)

    # ---- energies and conditionals ----------------------------------------------------------
    def _flat(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.dtype.is_floating_point \
                or tuple(x.shape[1:]) != tuple(self.data.shape):
            got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"rbm expects float images of shape (B, {', '.join(map(str, self.data.shape))})"
                             f" in [0, 1], got {got}")
        return x.reshape(x.shape[0], self.D)

    def _inv_var(self) -> Tensor:
        return (-2.0 * self.log_sigma).exp()

    def _hidden_input(self, v: Tensor) -> Tensor:
        """``c + (v / s)^T W`` (B, H): the hidden units' total input (s = 1: Bernoulli)."""
        return self.c + (v * (-self.log_sigma).exp() if self.gaussian else v) @ self.W

    def free_energy(self, v: Tensor) -> Tensor:
        """``F(v)`` (B,) for flat visibles (B, D): ``p(v) = exp(-F(v)) / Z``."""
        soft = F.softplus(self._hidden_input(v)).sum(1)
        if self.gaussian:
            return (0.5 * (v - self.b) ** 2 * self._inv_var()).sum(1) - soft
        return -(v @ self.b) - soft

    def _log_unnorm(self, v: Tensor, beta: float) -> Tensor:
        """``log p_beta*(v) = (1 - beta) log p_A*(v) + beta (-F(v))``: AIS's intermediate
        distributions (the base's hidden units are free: a factor 2^H at beta = 0)."""
        soft = F.softplus(beta * self._hidden_input(v)).sum(1)
        if self.gaussian:
            base = -(0.5 * (v - self.base_bias) ** 2 * self._inv_var()).sum(1)
            model = -(0.5 * (v - self.b) ** 2 * self._inv_var()).sum(1)
        else:
            base, model = v @ self.base_bias, v @ self.b
        return (1.0 - beta) * base + beta * model + soft

    def _sample_h(self, v: Tensor, beta: float = 1.0, generator=None) -> Tensor:
        p = (beta * self._hidden_input(v)).sigmoid()
        u = gc.rand(*p.shape, generator=generator, device=p.device, dtype=p.dtype)
        return (u < p).to(p.dtype)

    def _v_given_h(self, h: Tensor, beta: float = 1.0, generator=None, mean=False) -> Tensor:
        """A draw of ``v ~ p_beta(v | h)`` (or its mean); at beta = 1 the model's conditional."""
        wh = h @ self.W.t()
        if self.gaussian:
            # base and model share the std s: p_beta(v | h) = N((1 - beta) b_A + beta (b + s W h), s^2)
            sigma = self.log_sigma.exp()
            mu = (1.0 - beta) * self.base_bias + beta * (self.b + sigma * wh)
            if mean:
                return mu
            eps = gc.randn(h.shape[0], self.D, generator=generator, device=h.device, dtype=h.dtype)
            return mu + eps * sigma
        p = ((1.0 - beta) * self.base_bias + beta * (self.b + wh)).sigmoid()
        if mean:
            return p
        u = gc.rand(*p.shape, generator=generator, device=p.device, dtype=p.dtype)
        return (u < p).to(p.dtype)

    def gibbs(self, v: Tensor, steps: int, generator=None, beta: float = 1.0) -> Tensor:
        """``steps`` block Gibbs sweeps (h | v, then v | h) from flat visibles ``v``."""
        for _ in range(steps):
            v = self._v_given_h(self._sample_h(v, beta, generator), beta, generator)
        return v

    def _base_draw(self, n: int, generator=None) -> Tensor:
        """``n`` draws of the base model p_A (the start of AIS runs and sample chains)."""
        dev, dt = self.W.device, self.W.dtype
        if self.gaussian:
            eps = gc.randn(n, self.D, generator=generator, device=dev, dtype=dt)
            return self.base_bias + eps * self.log_sigma.exp()
        u = gc.rand(n, self.D, generator=generator, device=dev, dtype=dt)
        return (u < self.base_bias.sigmoid()).to(dt)

    # ---- training ----------------------------------------------------------------------------
    def _train_input(self, x: Tensor) -> Tensor:
        v = self._flat(x)
        if self.gaussian:   # a fresh dequantization every step (levels + u) / K
            k = self.data.num_levels
            u = gc.rand(*v.shape, device=v.device, dtype=v.dtype)
            v = ((v * (k - 1)).round() + u) / k
        return v

    def loss(self, batch):
        v = self._train_input(batch[0])
        c = self.config
        with no_grad():
            if c.persistent:
                if not self.chains_ready.item():
                    self.chains.data[...] = self._base_draw(c.chains).data
                    self.chains_ready.data[...] = 1
                neg = self.gibbs(self.chains, c.cd_k)
                if self.training:
                    self.chains.data[...] = neg.data
            else:
                neg = self.gibbs(v, c.cd_k)
            recon = self._v_given_h(self._sample_h(v), mean=True)
            recon_err = float(((recon - v) ** 2).sum(1).mean().item())
        gap = self.free_energy(v).mean() - self.free_energy(neg.detach()).mean()
        return gap, {"recon": recon_err}

    # ---- partition function -------------------------------------------------------------------
    def exact_log_partition(self) -> float:
        """``log Z`` by enumeration: of the 2^H hidden states (visibles summed out), or for a
        Bernoulli RBM with fewer visibles, of the 2^D visible states. At most 20 units."""
        enum_v = not self.gaussian and self.D < self.H
        n = self.D if enum_v else self.H
        if n > MAX_ENUMERATED_UNITS:
            raise ValueError(f"exact log Z enumerates 2^{n} states; at most {MAX_ENUMERATED_UNITS} units "
                             f"(this RBM has {self.H} hidden and {self.D} visible): use --partition ais")
        total = []
        with no_grad():
            for states in _binary_states(n, self.W.dtype, self.W.device):
                if enum_v:
                    total.append(-self.free_energy(states))
                else:
                    total.append(self._log_joint_h(states))
            from ... import functional as gf
            return float(gf.cat(total, 0).logsumexp(0).item())

    def _log_joint_h(self, h: Tensor) -> Tensor:
        """``log sum_v exp(-E(v, h))`` (B,) for hidden states (B, H)."""
        wh = h @ self.W.t()
        if self.gaussian:   # the Gaussian integral over v: its mean moves from b to b + s W h
            top = self.b + self.log_sigma.exp() * wh
            quad = (0.5 * (top ** 2 - self.b ** 2) * self._inv_var()).sum(1)
            const = float((self.log_sigma.sum() + 0.5 * self.D * _LOG_2PI).item())
            return h @ self.c + quad + const
        return h @ self.c + F.softplus(self.b + wh).sum(1)

    def base_log_partition(self) -> float:
        """``log Z_A`` of the AIS base (with its H free hidden units)."""
        if self.gaussian:
            z = (self.log_sigma.sum() + 0.5 * self.D * _LOG_2PI).item()
        else:
            z = F.softplus(self.base_bias).sum().item()
        return float(z) + self.H * math.log(2.0)

    def ais_log_partition(self, generator=None, runs: int | None = None, steps: int | None = None):
        """Annealed importance sampling (module docstring): ``(log Z, standard error of log Z)``.

        Draws from ``generator`` (None: gmcore's global one); ``runs`` / ``steps`` default to the
        config's ``ais_runs`` / ``ais_steps``."""
        runs = int(runs or self.config.ais_runs)
        steps = int(steps or self.config.ais_steps)
        if runs < 2 or steps < 1:
            raise ValueError(f"AIS needs at least 2 runs and 1 step, got runs={runs}, steps={steps}")
        with no_grad():
            v = self._base_draw(runs, generator)
            log_w = gc.zeros(runs, device=v.device, dtype=v.dtype)
            prev = 0.0
            for k in range(1, steps + 1):
                beta = k / steps
                log_w = log_w + self._log_unnorm(v, beta) - self._log_unnorm(v, prev)
                if k < steps:   # the last state's move would not change the weight
                    v = self.gibbs(v, 1, generator, beta)
                prev = beta
            lw = np.asarray(log_w.numpy() if hasattr(log_w, "numpy") else log_w, dtype=np.float64)
        top = lw.max()
        w = np.exp(lw - top)
        log_ratio = top + math.log(w.mean())
        std_err = float(w.std(ddof=1) / (math.sqrt(runs) * w.mean()))
        return float(self.base_log_partition() + log_ratio), std_err

    # ---- the model interface ----------------------------------------------------------------
    def _digest(self) -> str:
        h = hashlib.sha256()
        for p in (self.W, self.b, self.c, self.base_bias, self.log_sigma):
            h.update(np.ascontiguousarray(p.detach().numpy()).tobytes())
        return h.hexdigest()

    def log_partition(self, generator=None) -> tuple[float, float]:
        """``(log Z, its standard error)`` by the config's ``partition`` method, cached for the
        current weights and settings (an evaluation computes it once, on its first batch)."""
        c = self.config
        settings = (c.partition, c.ais_runs, c.ais_steps)
        key = self._digest()
        if self._log_z_cache is None or self._log_z_cache[:2] != (key, settings):
            if c.partition == "exact":
                lz, se = self.exact_log_partition(), 0.0
            else:
                lz, se = self.ais_log_partition(generator)
            self._log_z_cache = (key, settings, lz, se)
        return self._log_z_cache[2], self._log_z_cache[3]

    def nll(self, batch, generator=None) -> Tensor:
        """``F(x) + log Z`` in nats per example (Gaussian: at one dequantized draw, plus the
        dequantization term)."""
        v = self._flat(batch[0])
        log_z, _ = self.log_partition(generator)
        if not self.gaussian:
            return self.free_energy(v) + log_z
        k = self.data.num_levels
        u = gc.rand(*v.shape, generator=generator, device=v.device, dtype=v.dtype)
        y = ((v * (k - 1)).round() + u) / k
        return self.free_energy(y) + log_z + metrics.dequantization_nats(self.D, k)

    @property
    def nll_kind(self) -> str:
        c = self.config
        what = "exact log Z (enumeration)" if c.partition == "exact" else \
            f"AIS estimate of log Z ({c.ais_runs} runs, {c.ais_steps} linear temperatures)"
        if self.gaussian:
            what += "; dequantization bound"
        if self._log_z_cache is not None and self._log_z_cache[1][0] == "ais":
            lz, se = self._log_z_cache[2], self._log_z_cache[3]
            what += (f": log Z = {lz:.3f} +- {se:.3f} nats (standard error), "
                     f"+- {se / (self.D * metrics.LN2):.4f} bits/dim")
        return what

    def sample(self, n, generator=None, gibbs_steps: int = 1000, mean: bool = False) -> Tensor:
        with no_grad():
            v = self.gibbs(self._base_draw(n, generator), gibbs_steps, generator)
            if mean:
                v = self._v_given_h(self._sample_h(v, 1.0, generator), mean=True)
            if self.gaussian:
                v = v.clamp(0.0, 1.0)
        return v.reshape(n, *self.data.shape)

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``filters.png`` (each hidden unit's weights as an image, scaled to its own range) and
        the run's ``log Z`` figures for ``metrics.json``."""
        from pathlib import Path

        from ...plots import save_image_grid

        w = self.W.detach().numpy().T[:100]                       # (H', D)
        lo, hi = w.min(1, keepdims=True), w.max(1, keepdims=True)
        w = (w - lo) / np.maximum(hi - lo, 1e-12)
        save_image_grid(w.reshape(len(w), *self.data.shape), Path(out_dir) / "filters.png")
        log_z, se = self.log_partition(generator)
        c = self.config
        res = {"filters": "filters.png", "log_z": log_z, "log_z_std": se, "log_z_method": c.partition}
        if c.partition == "ais":
            res.update(ais_runs=c.ais_runs, ais_steps=c.ais_steps,
                       log_z_std_bits_per_dim=se / (self.D * metrics.LN2))
        return res


def _binary_states(n: int, dtype, device, chunk_bits: int = 14):
    """Every state of ``n`` binary units, (2^n, n) in chunks of at most 2^chunk_bits rows."""
    low = min(n, chunk_bits)
    base = ((np.arange(2 ** low)[:, None] >> np.arange(low)) & 1).astype(np.float64)
    for hi in range(2 ** (n - low)):
        high = np.broadcast_to((hi >> np.arange(n - low)) & 1, (len(base), n - low))
        yield gc.tensor(np.concatenate([base, high], 1), dtype=dtype, device=device)
