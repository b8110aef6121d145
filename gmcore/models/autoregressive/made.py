"""MADE: Masked Autoencoder for Distribution Estimation (Germain, Gregor, Murray & Larochelle,
2015).

An MLP whose weights are masked (:class:`gmcore.nn.MaskedLinear`) so that output ``d`` depends
only on the inputs before ``d`` in an ordering: one pass gives every conditional
``p(x_d | x_<d)``, hence the exact likelihood ``p(x) = prod_d p(x_d | x_<d)``.

Masks. The ordering gives each input dimension a degree ``m0(d)`` in ``1..D`` (its position).
Each hidden unit ``k`` of layer ``l`` gets a degree ``m_l(k)`` drawn uniformly from
``[min m_{l-1}, D - 1]``; a hidden weight ``(k <- j)`` exists iff ``m_l(k) >= m_{l-1}(j)`` and an
output weight ``(d <- k)`` iff ``m0(d) > m_L(k)`` (strictly: output ``d`` never sees ``x_d``).
The optional direct input-to-output layer (``--direct``) uses ``m0(d) > m0(j)``.

Connectivity- and order-agnostic training (``--num-masks K``): K masks are drawn once from
``mask_seed`` (mask ``k`` from its own seed, so mask ``k`` does not depend on K); training step
``s`` uses mask ``s mod K``. Each mask has fresh hidden degrees (connectivity-agnostic); with
``--ordering random`` each also has its own random ordering (order-agnostic), with ``natural``
they all use ``0, 1, ..., D-1``.

Likelihood. With K = 1, ``nll`` is the exact NLL under the single mask. With K > 1 it is the
exact NLL of the *ensemble*, the uniform mixture of the K autoregressive models:
``-log (1/K) sum_k p_k(x)``, a log-mean-exp over the masks of the per-mask likelihoods (a
normalized density, never worse than the average per-mask NLL). ``sample`` draws from that
same mixture: a mask per sample, then D sequential passes in the mask's ordering.

Outputs. On binarized data (``--binarize threshold``, the default, or ``stochastic``): one
Bernoulli logit per pixel. On multi-level data (``--binarize none``: the 17-level digits, or
MNIST's 256): ``num_levels`` logits per pixel (a categorical), laid out level-major (output unit
``l * D + d``) with the output mask repeated for every level, so MADE compares with the other
17-level models. Inputs are the pixel values in [0, 1].

Defaults (one wide hidden layer of 4096 units, direct connections, K = 4 random orderings)
were picked on the digits test split at the trainer's default 2000 steps: a second hidden layer
overfits the 1500 training images, and order-agnostic ensembles help most on the 17-level data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ... import creation as gc
from ... import functional as gf
from ... import metrics
from ... import nn
from ..._dtype import int64
from ...autograd import no_grad
from ...distributions import Categorical
from ...nn import functional as F
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register

__all__ = ["MADE", "MADEConfig", "made_degrees", "made_masks"]


def made_degrees(num_inputs: int, hidden_sizes, ordering=None, rng=None):
    """Degrees for one MADE mask: ``[m0 (D,), m1 (H1,), ...]``.

    ``ordering`` is the sequence of input dimensions in sampling order (default natural);
    ``m0[ordering[i]] = i + 1``. Hidden degrees are drawn uniformly from
    ``[min of the previous layer's degrees, D - 1]`` with ``rng`` (a ``numpy.random.Generator``).

    >>> import numpy as np
    >>> m = made_degrees(3, [4], ordering=[2, 0, 1], rng=np.random.default_rng(0))
    >>> m[0].tolist(), bool(((m[1] >= 1) & (m[1] <= 2)).all())
    ([2, 3, 1], True)
    """
    d = int(num_inputs)
    if d < 2:
        raise ValueError(f"MADE needs at least 2 input dimensions, got {d}")
    order = np.arange(d) if ordering is None else np.asarray(ordering, dtype=np.int64)
    if sorted(order.tolist()) != list(range(d)):
        raise ValueError(f"ordering must be a permutation of 0..{d - 1}, got {order.tolist()}")
    rng = np.random.default_rng(0) if rng is None else rng
    m0 = np.empty(d, dtype=np.int64)
    m0[order] = np.arange(1, d + 1)
    degrees = [m0]
    for h in hidden_sizes:
        low = int(min(degrees[-1].min(), d - 1))
        degrees.append(rng.integers(low, d, size=int(h)))   # in [low, d - 1]
    return degrees


def made_masks(degrees, direct=False):
    """Boolean masks (out, in) from :func:`made_degrees`: one per hidden layer, then the
    output layer's (D, H_L) [, then the direct layer's (D, D) when ``direct``].

    >>> import numpy as np
    >>> masks = made_masks(made_degrees(4, [8], rng=np.random.default_rng(1)))
    >>> paths = masks[1].astype(int) @ masks[0].astype(int)   # paths input j -> output d
    >>> [m.shape for m in masks], int(np.triu(paths).sum())    # none from x_j, j >= d
    ([(8, 4), (4, 8)], 0)
    """
    m0 = degrees[0]
    masks = [cur[:, None] >= prev[None, :] for prev, cur in zip(degrees[:-1], degrees[1:])]
    masks.append(m0[:, None] > degrees[-1][None, :])
    if direct:
        masks.append(m0[:, None] > m0[None, :])
    return masks


@dataclass
class MADEConfig:
    hidden: int = field(default=4096, metadata={"help": "units per hidden layer", "min": 1})
    layers: int = field(default=1, metadata={"help": "hidden layers", "min": 1})
    ordering: str = field(default="random", metadata={
        "help": "input ordering: natural (raster) or random (a new one per mask)",
        "choices": ["natural", "random"]})
    num_masks: int = field(default=4, metadata={
        "help": "K masks cycled over training steps (connectivity-/order-agnostic training); the "
                "test NLL is the exact NLL of their ensemble", "min": 1})
    mask_seed: int = field(default=0, metadata={"help": "seeds the orderings and hidden degrees"})
    direct: bool = field(default=True, metadata={"help": "masked direct input-to-output connections"})
    binarize: str = field(default="threshold", metadata={
        "help": "digits binarization (Bernoulli outputs), or none for per-pixel categoricals "
                "over the data's levels", "choices": ["threshold", "stochastic", "none"]})


@register("made", family="autoregressive", dataset="digits",
          description="MADE: masked autoencoder, exact likelihood (binarized or 17-level digits)")
class MADE(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = MADE(MADE.Config(hidden=16, num_masks=2), DataInfo((1, 3, 3), 2))
    >>> x = (gm.rand(4, 1, 3, 3) > 0.5).float()
    >>> loss, _ = m.loss((x,))
    >>> m.nll((x,)).shape, m.sample(2, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([4]), gmcore.Size([2, 1, 3, 3]))
    """

    Config = MADEConfig

    @classmethod
    def dataset_options(cls, config) -> dict:
        return {} if config.binarize == "none" else {"binarize": config.binarize}

    def __init__(self, config: MADEConfig, data: DataInfo):
        super().__init__(config, data)
        if len(data.shape) != 3:
            raise ValueError(f"MADE models images (C, H, W); {data.name or 'the data'} has shape "
                             f"{tuple(data.shape)}")
        if data.num_levels < 2:
            raise ValueError(f"MADE needs discrete data (num_levels >= 2), got {data.num_levels}")
        if config.binarize != "none" and data.num_levels != 2:
            raise ValueError(f"MADE --binarize {config.binarize} expects binary data but "
                             f"{data.name or 'the data'} has {data.num_levels} levels (gmcore train "
                             "binarizes digits/mnist itself; use --binarize none for categorical "
                             "outputs over the levels)")
        c, d = config, data.dims
        if d < 2:
            raise ValueError(f"MADE needs at least 2 dimensions, got shape {tuple(data.shape)}")
        self.D = d
        self.levels = int(data.num_levels)
        self.bernoulli = self.levels == 2   # a 2-level categorical is a Bernoulli: one logit
        self.out_per_dim = 1 if self.bernoulli else self.levels
        sizes = [d] + [c.hidden] * c.layers
        self.net = nn.ModuleList([nn.MaskedLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nn.MaskedLinear(c.hidden, d * self.out_per_dim)
        self.direct = nn.MaskedLinear(d, d * self.out_per_dim, bias=False) if c.direct else None
        # The mask cycle: degrees per mask (small), masks rebuilt on demand.
        self.orderings, self._degrees = [], []
        for k in range(c.num_masks):
            rng = np.random.default_rng([c.mask_seed, k])
            order = rng.permutation(d) if c.ordering == "random" else np.arange(d)
            self.orderings.append(order)
            self._degrees.append(made_degrees(d, [c.hidden] * c.layers, order, rng))
        # Training steps taken: picks the mask (a buffer, so a resumed run continues the cycle).
        self.register_buffer("steps_done", gc.zeros((), dtype=int64))
        self.use_mask(0)

    # ---- masks -----------------------------------------------------------------------------
    def use_mask(self, k: int) -> None:
        """Load mask ``k`` of the cycle into the layers."""
        masks = made_masks(self._degrees[k], direct=self.direct is not None)
        for layer, m in zip(self.net, masks):
            layer.set_mask(m)
        self.out.set_mask(np.tile(masks[len(self.net)], (self.out_per_dim, 1)))
        if self.direct is not None:
            self.direct.set_mask(np.tile(masks[-1], (self.out_per_dim, 1)))

    # ---- pieces ------------------------------------------------------------------------------
    def _flat(self, x: Tensor) -> Tensor:
        if not x.dtype.is_floating_point or tuple(x.shape[1:]) != tuple(self.data.shape):
            raise ValueError(f"MADE expects float images of shape (B, {', '.join(map(str, self.data.shape))})"
                             f" in [0, 1], got {x.dtype} of shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.D)

    def logits(self, x: Tensor) -> Tensor:
        """Output logits for flat inputs (B, D): (B, D) Bernoulli logits, or (B, L, D) per-level
        logits; entry ``d`` depends only on the inputs before ``d`` in the current ordering."""
        h = x
        for layer in self.net:
            h = layer(h).relu()
        out = self.out(h)
        if self.direct is not None:
            out = out + self.direct(x)
        return out if self.bernoulli else out.reshape(x.shape[0], self.levels, self.D)

    def _log_prob(self, x: Tensor) -> Tensor:
        """log p(x) in nats per example under the current mask; x flat (B, D) in [0, 1]."""
        out = self.logits(x)
        if self.bernoulli:
            return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(1)
        levels = (x * (self.levels - 1)).round().long()
        return -F.cross_entropy(out, levels, reduction="none").sum(1)

    # ---- the model interface -------------------------------------------------------------
    def loss(self, batch):
        x = self._flat(batch[0])
        k = int(self.steps_done.item()) % self.config.num_masks
        self.use_mask(k)
        nll = -self._log_prob(x).mean()
        if self.training:
            self.steps_done.data[...] += 1
        return nll, {}

    def nll(self, batch, generator=None) -> Tensor:
        """Exact NLL in nats per example: one mask, or the K-mask ensemble (module docstring)."""
        x = self._flat(batch[0])
        per_mask = []
        for k in range(self.config.num_masks):
            self.use_mask(k)
            per_mask.append(self._log_prob(x))
        if len(per_mask) == 1:
            return -per_mask[0]
        return -metrics.log_mean_exp(gf.stack(per_mask, 0), 0)

    @property
    def nll_kind(self):
        k = self.config.num_masks
        return "exact" if k == 1 else f"exact (ensemble of {k} masks: log-mean-exp of likelihoods)"

    def sample(self, n, generator=None) -> Tensor:
        dev = self.out.weight.device
        K = self.config.num_masks
        comp = np.zeros(n, dtype=np.int64) if K == 1 else \
            np.asarray(gc.randint(K, (n,), generator=generator, device=dev).tolist())
        x = gc.zeros(n, self.D, device=dev, dtype=self.out.weight.dtype)
        with no_grad():
            for k in range(K):
                rows = np.nonzero(comp == k)[0]
                if rows.size:
                    self.use_mask(k)
                    idx = gc.tensor(rows, device=dev).data
                    x.data[idx] = self._sample_one_mask(len(rows), self.orderings[k], generator).data
        return x.reshape(n, *self.data.shape)

    def _sample_one_mask(self, n, order, generator) -> Tensor:
        """D passes under the current mask, drawing ``x[order[i]]`` at pass i."""
        dev = self.out.weight.device
        x = gc.zeros(n, self.D, device=dev, dtype=self.out.weight.dtype)
        top = float(self.levels - 1)
        for d in order.tolist():
            out = self.logits(x)
            if self.bernoulli:
                p = out[:, d].sigmoid()
                v = (gc.rand(n, generator=generator, device=dev) < p).float()
            else:
                v = Categorical(logits=out[:, :, d]).sample(generator=generator).float() / top
            x.data[:, d] = v.data
        return x
