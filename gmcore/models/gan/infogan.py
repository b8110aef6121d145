"""InfoGAN (Chen, Duan, Houthooft, Schulman, Sutskever & Abbeel 2016, "InfoGAN: Interpretable
Representation Learning by Information Maximizing Generative Adversarial Nets"): the generator
takes noise z and a latent code c, G(z, c); a network Q, which shares the discriminator's body,
reads c back from the samples, and both G and Q maximise the variational lower bound of the
mutual information

    L_I(G, Q) = E_{c ~ p(c), x ~ G(z, c)}[log Q(c | x)] + H(c)  <=  I(c; G(z, c)),

added with weight lambda to the GAN objective: the discriminator (with Q) minimises its GAN loss
minus lambda L_I on the samples, the generator its non-saturating loss minus lambda L_I. With
nothing but this pressure, a 10-way categorical code comes to pick the digit.

Codes (as the paper's MNIST model): one categorical code of ``--categories`` K (10) equally
likely values, and ``--continuous`` C (2) codes uniform on (-1, 1); H(c) = log K + C log 2
(differential for the continuous part). Q is a head on the discriminator's last features
(Linear to ``--q-hidden`` 128, batch norm, LeakyReLU 0.2, Linear; the paper's FC.128-BN-lReLU-FC)
giving the categorical logits and, for the continuous codes, the mean of a factored Gaussian.
Its standard deviation is fixed (``--q-std 1``) by default, as the authors' MNIST code
(``fix_std=True``): the term is then a squared error with a fixed scale. ``--q-std 0`` makes Q
output a log-std too (the paper's text), which lets Q sharpen log Q(c | x) without bound where it
is confident, so the continuous term outgrows the rest: on digits (3000 steps, seed 0) its
continuous bound rose to 3.5 nats against -0.5 with a fixed std, the continuous codes took over
the digit's identity (codes.png: a sweep turns a 0 into a 7) and the categorical code's agreement
with the digits fell from 0.90 to 0.33 (digits-FID 7.4 against 7.6). lambda is 1 for the
categorical code and ``--lambda-cont`` (1, the authors' code) for the continuous ones. The discriminator and Q
share one optimizer (the authors' code); the generator has the other.

Pictures: ``samples.png``; ``codes.png``: first K rows, one per category (each row the same 10
noise vectors, continuous codes at 0), then for each continuous code a block of K rows (one per
category, one noise vector per row) with that code going from -2 to 2 across the columns (beyond
the (-1, 1) it was trained on, as the paper's Fig. 2). On digits the run reports
``code_label_agreement``: 100 samples per category are read by the digits classifier (the one
digits-FID uses), categories are matched one-to-one to digits by the assignment with the most
agreeing samples (:func:`best_assignment`, an exact Hungarian algorithm), and the share of
samples whose digit is their category's match is the figure (``code_permutation[k]`` is the digit
of category k); with it ``mi_lower_bound_cat`` (nats, at most log K) and ``mi_lower_bound_cont``
(loose and possibly negative with a fixed std) over the same samples.

Measured on digits with the defaults (3000 steps; code_label_agreement, digits-FID): seed 0
0.901, 7.6; seed 1 0.917, 9.1; seed 2 0.752, 6.7; seed 3 0.697, 5.8. The categorical bound is
near log 10 = 2.30 nats in all four (2.29-2.30): Q always reads the category back, but in the
weaker seeds two categories each draw two digits, chosen by the noise z (seed 3: two categories
both make 0s or 9s), and some digit (a 5, a 1) has no category of its own: InfoGAN's known seed
dependence, not a failure of Q.

Differences from the paper: gmcore's DCGAN networks (:mod:`._nets`; sigmoid output into [0, 1],
two conv blocks in D on 8x8 digits, no FC.1024 layer in D's body), the 8x8 digits in place of
MNIST, and the noise size 62 kept. Learning rates: the paper's 2e-4 for D and 1e-3 for G.
Samples drawn without a code cycle through the categories (0, 1, 2, ...); ``gmcore sample RUN
--label k`` draws category k: a code is *not* a label (``code_permutation`` says which digit it
became). The run reports no label accuracy: the model never sees a label.

>>> import gmcore as gm
>>> from gmcore.models.base import DataInfo
>>> _ = gm.manual_seed(0)
>>> m = InfoGAN(InfoGAN.Config(latent_dim=4, g_channels=4, d_channels=4, q_hidden=8),
...             DataInfo((1, 8, 8), 17, "digits"))
>>> x = m.sample(3, label=7)
>>> d, logits, mean, log_std = m.discriminate_with_q(x)
>>> x.shape, d.shape, logits.shape, mean.shape
(gmcore.Size([3, 1, 8, 8]), gmcore.Size([3, 1]), gmcore.Size([3, 10]), gmcore.Size([3, 2]))
>>> best_assignment([[1, 9], [8, 2]])        # row 0 -> column 1, row 1 -> column 0
[1, 0]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import creation, nn
from ... import functional as gf
from ...autograd import no_grad
from ...nn import functional as F
from ...nn import gan as gan_losses
from ..base import DataInfo
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults
from ._nets import ConvDiscriminator, ConvGenerator, MLPDiscriminator, mlp_generator

__all__ = ["InfoGAN", "InfoGANConfig", "best_assignment"]

AGREEMENT_PER_CODE = 100    # samples per category behind code_label_agreement
CODE_COLUMNS = 10           # columns of codes.png
CODE_RANGE = 2.0            # continuous codes swept over [-2, 2] in codes.png (the paper's Fig. 2)


@dataclass
class InfoGANConfig(config_with_defaults("_InfoGANBase", arch="conv", latent_dim=62,
                                                     d_lr_mult=0.2)):
    categories: int = field(default=10, metadata={
        "help": "values of the categorical code (0: none)", "min": 0})
    continuous: int = field(default=2, metadata={
        "help": "continuous codes, each uniform on (-1, 1)", "min": 0})
    lambda_cont: float = field(default=1.0, metadata={
        "help": "weight lambda of the continuous codes' information term (the categorical one's is 1)",
        "min": 0.0})
    q_std: float = field(default=1.0, metadata={
        "help": "standard deviation of Q's Gaussian over the continuous codes; 0: learned (Q outputs a "
                "log-std per code)", "min": 0.0})
    q_hidden: int = field(default=128, metadata={
        "help": "width of Q's hidden layer on the discriminator's features (0: one linear layer)", "min": 0})


# GANConfig fields InfoGAN's step does not use: refused unless left at these values
_UNSUPPORTED = {"labels": "none", "gp_weight": 0.0, "r1_weight": 0.0, "clip": 0.0, "feature_matching": False,
                "historical_weight": 0.0, "vbn_reference": 0}


def best_assignment(score) -> list:
    """The one-to-one assignment of the rows of ``score`` (n, m) to its columns with the largest
    total score: ``cols[i]`` for row i (-1 for the rows left over when n > m). Exact: the
    Hungarian algorithm with potentials (Kuhn-Munkres, O(n^2 m)) on -score.

    >>> best_assignment([[5, 1, 0], [4, 3, 0]])      # 5 + 3 beats 4 + 1
    [0, 1]
    """
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 2 or not np.isfinite(s).all():
        raise ValueError(f"best_assignment needs a finite 2-D score matrix, got shape {s.shape}")
    n, m = s.shape
    if n > m:                      # assign the columns to the rows, then invert
        out = [-1] * n
        for j, i in enumerate(best_assignment(s.T)):
            out[i] = j
        return out
    cost = -s
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    match = np.zeros(m + 1, dtype=np.int64)     # match[j]: the row (1-based) on column j; 0 = free
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):      # add row i, then augment along the shortest alternating path
        match[0], j0 = i, 0
        minv, used = np.full(m + 1, np.inf), np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            j1 = 1 + int(np.argmin(np.where(free, minv[1:], np.inf)))
            delta = minv[j1]
            u[match[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:                  # flip the path
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    cols = [-1] * n
    for j in range(1, m + 1):
        if match[j]:
            cols[match[j] - 1] = j - 1
    return cols


@register("infogan", family="gan", dataset="digits",
          description="InfoGAN: latent codes the discriminator's Q head reads back "
                      "(mutual-information bound)")
class InfoGAN(AdversarialModel):
    """See the module docstring."""

    Config = InfoGANConfig
    # the paper: 1e-3 for G, 2e-4 (--d-lr-mult 0.2) for D and Q
    train_defaults = {**AdversarialModel.train_defaults, "lr": 1e-3}

    @dataclass
    class SampleOptions:
        label: int = field(default=-1, metadata={
            "help": "draw this category of the categorical code (-1: the categories in turn, 0, 1, 2, ...); "
                    "a code is not a label: which digit it shows is learned (metrics.json's "
                    "code_permutation maps codes to digits)", "min": -1})

    def __init__(self, config: InfoGANConfig, data: DataInfo):
        name = type(self).model_name
        if len(data.shape) != 3:
            raise ValueError(f"{name} models images, not {data.name or 'data'} of shape {tuple(data.shape)}")
        for f, default in _UNSUPPORTED.items():
            if getattr(config, f) != default:
                raise ValueError(f"{name} does not support --{f.replace('_', '-')} (its step is the paper's "
                                 f"GAN loss plus the information term); leave it at {default}")
        if config.categories == 1:
            raise ValueError(f"{name}: --categories 1 is a constant, not a code; use 0 (none) or >= 2")
        if config.categories == 0 and config.continuous == 0:
            raise ValueError(f"{name} needs a latent code: --categories and --continuous are both 0")
        super().__init__(config, data)

    def _build_networks(self) -> None:
        """G takes [z, one-hot c_cat, c_cont]; D is the GANs' (one output); Q sits on D's body."""
        c, data = self.config, self.data
        z_in = c.latent_dim + c.categories + c.continuous
        if self._conv:
            self.generator = ConvGenerator(z_in, data.shape, c.g_channels)
            self.discriminator = ConvDiscriminator(data.shape, c.d_channels, c.d_norm,
                                                   minibatch_kernels=c.minibatch_kernels)
        else:
            self.generator = nn.Sequential(*mlp_generator(z_in, c.hidden, c.layers, data.dims), nn.Sigmoid())
            self.discriminator = MLPDiscriminator(data.dims, c.hidden, c.layers,
                                                  minibatch_kernels=c.minibatch_kernels)
        feats = self.discriminator.head.in_features - c.minibatch_kernels   # D's body's output
        q_out = c.categories + c.continuous * (2 if c.q_std == 0 else 1)
        self.q_head = (nn.Sequential(nn.Linear(feats, c.q_hidden), nn.BatchNorm1d(c.q_hidden),
                                     nn.LeakyReLU(0.2), nn.Linear(c.q_hidden, q_out))
                       if c.q_hidden else nn.Linear(feats, q_out))

    # ---- the training-loop contract (gmcore/models/base.py) --------------------------------------
    def configure_optimizers(self, tcfg) -> dict:
        return {"generator": self.make_optimizer(self.generator, tcfg.lr),
                "discriminator": self.make_optimizer(nn.ModuleList([self.discriminator, self.q_head]),
                                                     tcfg.lr * self.config.d_lr_mult)}

    def random_codes(self, n: int, generator=None, categories=None):
        """(categorical codes (n,) or None, continuous codes (n, C) or None) from the prior;
        ``categories`` (n,) fixes the categorical ones."""
        c = self.config
        dev = next(self.parameters()).device
        cat = cont = None
        if c.categories:
            cat = categories if categories is not None else \
                creation.randint(0, c.categories, (n,), generator=generator, device=dev)
        if c.continuous:
            cont = creation.rand(n, c.continuous, generator=generator, device=dev) * 2.0 - 1.0
        return cat, cont

    def generate(self, z, cat=None, cont=None):
        """Samples in the data's shape from noise ``z`` (B, latent_dim), the categorical codes
        ``cat`` (B,) and the continuous codes ``cont`` (B, C)."""
        parts = [z]
        if self.config.categories:
            parts.append(F.one_hot(cat, self.config.categories).to(z.dtype))
        if self.config.continuous:
            parts.append(cont.to(z.dtype))
        return self.generator(gf.cat(parts, 1)).reshape(z.shape[0], *self.data.shape)

    def discriminate_with_q(self, x):
        """One pass through D's body: (D's output (B, 1), Q's categorical logits (B, K) or None,
        Q's means of the continuous codes (B, C) or None, their log-std (B, C) with ``--q-std 0``,
        else the fixed log-std as a float)."""
        c, d = self.config, self.discriminator
        feats = d.body(x)
        out, q = d.head(d.minibatch(feats)), self.q_head(feats)
        k, n = c.categories, c.continuous
        logits = q[:, :k] if k else None
        mean = q[:, k:k + n] if n else None
        log_std = q[:, k + n:] if n and c.q_std == 0 else math.log(c.q_std or 1.0)
        return out, logits, mean, log_std

    def information(self, x, cat, cont, with_logs: bool = True):
        """(the information loss -lambda L_I without H(c), D's output, logs) of samples ``x``
        drawn with the codes ``cat``, ``cont``, from one pass through D's body; the logs (unless
        ``with_logs`` is False) are the lower bounds of the mutual information in nats,
        ``mi_cat = log K + E log Q(c_cat | x)`` and ``mi_cont = C log 2 + E log Q(c_cont | x)``."""
        c = self.config
        out, logits, mean, log_std = self.discriminate_with_q(x)
        loss = gan_losses.info_loss(logits, cat, mean, cont, log_std, cont_weight=c.lambda_cont)
        if not with_logs:
            return loss, out, {}
        logs = {}
        if logits is not None:
            logs["mi_cat"] = math.log(c.categories) + \
                gan_losses.categorical_code_log_likelihood(logits, cat).item()
        if mean is not None:
            logs["mi_cont"] = c.continuous * math.log(2.0) + \
                gan_losses.gaussian_code_log_likelihood(mean, cont, log_std).item()
        return loss, out, logs

    def training_step(self, batch, step) -> dict:
        """``n_critic`` updates of D and Q (the GAN loss on data and fresh samples, plus the
        information loss on those samples), then one of G (non-saturating loss plus the
        information loss, on new samples)."""
        c = self.config
        for i in range(c.n_critic):
            real = (batch if i == 0 else step.next_batch())[0]
            n = real.shape[0]
            cat, cont = self.random_codes(n)
            with no_grad():
                fake = self.generate(self.noise(n), cat, cont)
            info, d_fake, _ = self.information(fake, cat, cont, with_logs=False)
            gan = gan_losses.discriminator_loss(self.discriminator(real), d_fake, c.loss,
                                                real_label=c.real_label)
            d_loss = step.update("discriminator", gan + info)
        cat, cont = self.random_codes(n)
        info, g_out, logs = self.information(self.generate(self.noise(n), cat, cont), cat, cont)
        adv = gan_losses.generator_loss(g_out, c.loss)
        g_loss = step.update("generator", adv + info)
        return {"d_loss": d_loss, "g_loss": g_loss, "g_adv": adv.item(), "info_loss": info.item(), **logs}

    def sample(self, n, generator=None, label: int = -1, categories=None):
        """``n`` samples: the categorical code cycles through its values (0, 1, 2, ...), or is
        ``label`` for all, or ``categories`` (n,); continuous codes and noise from the prior."""
        c = self.config
        dev = next(self.parameters()).device
        if not c.categories and (label >= 0 or categories is not None):
            raise ValueError(f"{self.model_name} has no categorical code (--categories 0): it takes no label")
        if c.categories and categories is None:
            if label >= c.categories:
                raise ValueError(f"{self.model_name}: label {label} is not a category of the code: "
                                 f"choose 0..{c.categories - 1}")
            categories = creation.full((n,), int(label), device=dev).long() if label >= 0 else \
                creation.arange(n, device=dev) % c.categories
        z = self.noise(n, generator=generator)
        return self.generate(z, *self.random_codes(n, generator, categories))

    # ---- pictures and the code's agreement with the digits -------------------------------------
    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``codes.png`` (see the module docstring) and, on digits with a categorical code,
        ``code_label_agreement``, ``code_permutation`` and the mutual-information bounds."""
        from ...plots import save_image_grid
        from ...random import Generator

        c = self.config
        dev = next(self.parameters()).device
        seed = generator.initial_seed() if generator is not None else 0
        gen = Generator(device=dev).manual_seed(seed)
        rows = max(c.categories, 1)
        cats = creation.arange(rows, device=dev).long() if c.categories else None
        blocks = []
        # one row per category, the same CODE_COLUMNS noise vectors in every row
        z = self.noise(CODE_COLUMNS, generator=gen).repeat(rows, 1)
        cat = cats.reshape(rows, 1).expand(rows, CODE_COLUMNS).reshape(-1) if cats is not None else None
        cont = creation.zeros(rows * CODE_COLUMNS, c.continuous, device=dev) if c.continuous else None
        blocks.append(self.generate(z, cat, cont))
        # per continuous code: a row per category (its own noise), the code from -2 to 2 across
        z_rows = self.noise(rows, generator=gen)
        z = z_rows.reshape(rows, 1, -1).expand(rows, CODE_COLUMNS, c.latent_dim)
        z = z.reshape(rows * CODE_COLUMNS, -1)
        sweep = np.tile(np.linspace(-CODE_RANGE, CODE_RANGE, CODE_COLUMNS), rows).astype(np.float32)
        for j in range(c.continuous):
            values = np.zeros((rows * CODE_COLUMNS, c.continuous), dtype=np.float32)
            values[:, j] = sweep
            blocks.append(self.generate(z, cat, creation.tensor(values, device=dev)))
        save_image_grid(gf.cat(blocks, 0), Path(out_dir) / "codes.png", nrow=CODE_COLUMNS)
        res = {"codes_png": "codes.png"}
        if test_set is None or self.data.name != "digits" or not c.categories:
            return res
        res.update(self.code_agreement(Generator(device=dev).manual_seed(seed)))
        return res

    def code_agreement(self, generator=None, per_code: int = AGREEMENT_PER_CODE) -> dict:
        """``per_code`` samples of each category read by the digits classifier; the categories
        matched one-to-one to digits by :func:`best_assignment` on the counts; the share of
        samples read as their category's digit, the matching, the counts, and the bounds
        ``mi_lower_bound_cat`` / ``_cont`` over the same samples (in nats)."""
        from ... import feature_metrics
        from ...autograd import enable_grad

        c = self.config
        dev = next(self.parameters()).device
        cat = creation.arange(c.categories * per_code, device=dev).long() // per_code
        z = self.noise(len(cat), generator=generator)
        _, cont = self.random_codes(len(cat), generator)
        x = self.generate(z, cat, cont)
        with enable_grad():   # the classifier trains on first use
            net = feature_metrics.DigitsFeatures.get()
        classes = 10
        # counts[k, d]: samples of category k read as digit d
        read = net.predict(x)
        counts = np.zeros((c.categories, classes), dtype=np.int64)
        np.add.at(counts, (cat.cpu().numpy(), read), 1)
        perm = best_assignment(counts)
        agree = sum(int(counts[k, d]) for k, d in enumerate(perm) if d >= 0)
        _, _, logs = self.information(x, cat, cont)
        return {"code_label_agreement": agree / len(cat), "code_permutation": perm,
                "code_label_counts": counts.tolist(), "code_agreement_samples": int(len(cat)),
                **{f"mi_lower_bound_{k[3:]}": v for k, v in logs.items()}}
