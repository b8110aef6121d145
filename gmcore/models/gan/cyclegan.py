"""CycleGAN (Zhu, Park, Isola & Efros 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks"): two generators, G: A -> B and F: B -> A, each with a
discriminator on its output domain, trained from unpaired examples of the two domains.

The domains (:mod:`._cyclegan_domains`): A is the data's images (digits by default), B the same
kind of images under a known map, ``--domain-b invert`` (default: ``1 - x``), ``rotate90`` (a
quarter turn counter-clockwise) or ``transpose``; A and B come from disjoint halves of the
training split in independent random orders. The model never uses the map; the evaluation does,
to check that a translation kept its digit.

Losses, as the paper (sections 3 and 4; images scaled to [-1, 1] as its code):

* adversarial, least squares (LSGAN, Mao et al. 2017, the paper's choice): G minimises
  ``mean (D_B(G(a)) - 1)^2``, D_B minimises ``1/2 [mean (D_B(b) - 1)^2 + mean D_B(fake_b)^2]``
  (the 1/2 "slows down the rate at which D learns"); the same for F and D_A. D's output is a
  map of patch scores (PatchGAN), averaged;
* cycle consistency, ``lambda * (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)`` (means over pixels),
  ``--cycle-weight`` lambda = 10;
* identity, ``w lambda * (|G(b) - b|_1 + |F(a) - a|_1)``, ``--identity-weight`` w: the paper's
  code uses 0.5 (the paper itself only for painting <-> photo); default 0 here (below);
* each discriminator sees fakes through an :class:`~gmcore.nn.gan.ImagePool` of the 50 last
  fakes (``--pool-size``): once full, half the time an older one.

One Adam over both generators, one over both discriminators (the paper's code), lr 2e-4,
betas (0.5, 0.999); each step updates the generators, then the discriminators on the fakes of
that same forward pass. Networks (:mod:`._cyclegan_nets`): the paper's ResNet generator
(reflection-padded c-k-s1, stride-2 stages, residual blocks, transposed convolutions back,
tanh) and pix2pix's PatchGAN discriminator, scaled to 8x8 digits: 3x3 instead of 7x7 end
convolutions, no stride-2 stage and one residual block (so each output pixel sees a 9x9
window); a PatchGAN with one stride-2 layer, whose 2x2 scores each see a 16x16 window (all of
the padded image), as the paper's 70x70 patch needs three stride-2 layers. 28/32-pixel data
get two stride-2 stages and 34x34 patches by default.

Measured on digits (batch 32; class agreement of the A->B / B->A translations of the test
split; one run each), which set these defaults:

* ``invert``, the defaults: 97.6% / 99.7% after the default 1000 steps (digits-FID 1.1 / 1.6,
  cycle error 0.043 both ways; 97.6% / 99.3% already at 500), where an identity translator scores
  2%;
* ``invert`` with ``--identity-weight 0.5``: 0.3% / 0.7% after 250 steps, the discriminators
  won (an identity term asks G to keep a B image and invert an A image: with a local view it
  can hardly tell them apart);
* ``invert`` with the paper-like 8x8 generator (7x7 end convolutions, a stride-2 stage to 4x4,
  3 blocks, identity 0.5): 1.3% after 250 steps: translations were good digits of *other*
  classes. With every output seeing the whole image, nothing ties a translation to its source
  beyond the cycle, which any bijection between the digits satisfies; a local generator keeps
  the stroke where it is;
* ``rotate90`` does not train: 24% / 26% after 500 steps with the paper-like generator
  (identity 0.5). Convolutions commute with translations, so they cannot send a pixel to a
  place that depends on where it is; a learned linear mixing of the positions (identity 0; at
  the bottleneck: 29% / 32% after 250 steps; before the first convolution: 10% / 11%; before the
  local generator: 2% after 500 steps, 26% / 20% after 600 started at the identity) did not find
  the rotation, nor did Gaussian noise (std 0.2) on
  the cycle's input (13% / 15%). The generators drew realistic rotated digits of other classes
  and hid the source in them. The issue's >= 80% holds for ``invert`` only.

What else differs: the paper keeps the learning rate for 100 epochs and decays it linearly to 0
over the next 100; gmcore's loop offers warm-up then constant or cosine decay for every
optimizer (``--lr-schedule``), not a linear one: the default is cosine decay to 0 (the closest
available). The paper trains with batch size 1; here 32, which instance norm keeps per example.

No likelihood (``nll_kind`` "none"). A run's end (``save_pictures``) writes ``translations.png``
(rows of test images of A, their A->B translations and the cycle reconstructions, then other
test images in B, their B->A translations and reconstructions) and, in ``metrics.json``: the
cycle reconstruction error (mean absolute error in [0, 1] units over the test split, both
directions) and, on digits, the class agreement (the digits classifier reads the translation,
mapped back to domain A by the inverse of the domain map for A->B, as the source's label) and
digits-FID against the test digits, both directions, beside what an identity "translator"
scores. ``sample`` translates *test* images: ``gmcore sample RUN`` writes a grid of B->A
translations of test images of domain B (``--direction a2b`` the other way, ``--show input``
the images translated, ``--show reconstruction`` the cycle's reconstructions; the same
``--seed`` picks the same images), the source images' classes in turn 0, 1, 2, ...; so the
run's own ``samples.png`` and the digits-FID and ``label_accuracy`` that ``gmcore eval``
reports are those of B->A translations (``gmcore eval`` does not recompute the translation
figures above: they are in the run's metrics.json).

>>> import gmcore as gm
>>> from gmcore.models.base import DataInfo
>>> _ = gm.manual_seed(0)
>>> m = CycleGAN(CycleGAN.Config(g_channels=4, g_blocks=1, d_channels=4), DataInfo((1, 8, 8), 17, "digits", 10))
>>> m.translate(gm.rand(3, 1, 8, 8), "a2b").shape
gmcore.Size([3, 1, 8, 8])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import creation, nn, optim
from ... import functional as gf
from ...nn import gan as gan_losses
from ..base import DataInfo, GenerativeModel
from ..registry import register
from ._cyclegan_domains import DOMAIN_MAPS, check_domain_map, from_domain_b, to_domain_b, unpaired_domains
from ._cyclegan_nets import PatchDiscriminator, ResnetGenerator, auto_downsamplings

__all__ = ["CycleGAN", "CycleGANConfig", "CycleGANSampleOptions"]

SHOWN = 8   # test images per row of translations.png


@dataclass
class CycleGANConfig:
    domain_b: str = field(default="invert", metadata={
        "help": "how domain B is made from the images: 1 - x, a quarter turn counter-clockwise, or the "
                "transpose (the geometric two did not train: see the module docstring)",
        "choices": list(DOMAIN_MAPS)})
    g_channels: int = field(default=32, metadata={"help": "generator: channels of its first layer (k)",
                                                  "min": 1})
    g_blocks: int = field(default=1, metadata={"help": "generator: residual blocks (the paper: 6 or 9)",
                                               "min": 0})
    g_down: int = field(default=-1, metadata={
        "help": "generator: stride-2 stages (-1 = auto: none below 16 pixels, else 2 as the paper)", "min": -1})
    g_kernel: int = field(default=3, metadata={
        "help": "generator: kernel of its first and last convolutions (the paper's c7s1: 7)", "min": 1})
    d_channels: int = field(default=32, metadata={"help": "discriminator: channels of its first layer",
                                                  "min": 1})
    d_layers: int = field(default=0, metadata={
        "help": "discriminator: stride-2 layers (3: the paper's 70x70 patches; 0 = auto: 1 below 16 "
                "pixels, i.e. 16x16 patches, else 2)", "min": 0})
    cycle_weight: float = field(default=10.0, metadata={"help": "lambda, the cycle loss weight", "min": 0.0})
    identity_weight: float = field(default=0.0, metadata={
        "help": "identity loss weight, times lambda (the paper's code: 0.5; 0 = off, the default: it "
                "fights every domain map here)", "min": 0.0})
    pool_size: int = field(default=50, metadata={"help": "past fakes kept per discriminator (0 = no pool)",
                                                 "min": 0})
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1", "min": 0.0})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2", "min": 0.0})


@dataclass
class CycleGANSampleOptions:
    direction: str = field(default="b2a", metadata={
        "help": "b2a: translate test images of domain B into A; a2b: the other way", "choices": ["b2a", "a2b"]})
    show: str = field(default="translation", metadata={
        "help": "what to return for the chosen test images: the translation, the input, or the cycle's "
                "reconstruction", "choices": ["translation", "input", "reconstruction"]})


@register("cyclegan", family="gan", dataset="digits",
          description="CycleGAN: unpaired translation between two domains made from the digits")
class CycleGAN(GenerativeModel):
    """See the module docstring."""

    nll_kind = "none"
    Config = CycleGANConfig
    SampleOptions = CycleGANSampleOptions
    train_defaults = {"lr": 2e-4, "warmup": 0, "lr_schedule": "cosine", "batch_size": 32, "steps": 1000,
                      "eval_every": 250}

    def __init__(self, config: CycleGANConfig, data: DataInfo):
        super().__init__(config, data)
        name, c = type(self).model_name, config
        if len(data.shape) != 3:
            raise ValueError(f"{name} translates images, not {data.name or 'data'} of shape {tuple(data.shape)}")
        check_domain_map(c.domain_b, data.shape)
        channels, h, w = data.shape
        down = c.g_down if c.g_down >= 0 else auto_downsamplings(h, w)
        if h % 2 ** down or w % 2 ** down:
            raise ValueError(f"{name}: --g-down {down} needs image sides divisible by {2 ** down}, got {h}x{w}")
        if c.g_kernel % 2 == 0:
            raise ValueError(f"{name}: --g-kernel must be odd (reflection padding keeps the size), got {c.g_kernel}")
        d_layers = c.d_layers or (1 if min(h, w) < 16 else 2)
        if min(h, w) // 2 ** d_layers < 2:
            raise ValueError(f"{name}: --d-layers {d_layers} leaves no patches on {h}x{w} images")
        self.generators = nn.ModuleDict({d: ResnetGenerator(channels, c.g_channels, c.g_blocks, down, c.g_kernel)
                                         for d in ("a2b", "b2a")})
        # discriminators["b"] judges domain B (real b against G's outputs), ["a"] domain A
        self.discriminators = nn.ModuleDict({d: PatchDiscriminator(channels, c.d_channels, d_layers)
                                             for d in ("a", "b")})
        self.pools = nn.ModuleDict({d: gan_losses.ImagePool(c.pool_size, data.shape) for d in ("a", "b")})
        self.num_classes = int(data.num_classes)
        self._test_source = None   # the test split the samples translate (see _test_images)

    # ---- the training-loop contract (gmcore/models/base.py) --------------------------------------
    @property
    def class_conditional(self) -> bool:
        """Samples translate test images of the classes in turn (0, 1, 2, ...): the run's
        ``label_accuracy`` is the class agreement of the B->A translations."""
        return self.num_classes > 0

    def prepare_data(self, dataset):
        """The (a, label_a, b, label_b) rows the loop iterates (:func:`unpaired_domains`); a test
        split is also kept as what ``sample`` translates."""
        if getattr(dataset, "split", None) == "test":
            self._test_source = dataset
        return unpaired_domains(dataset, self.config.domain_b)

    def configure_optimizers(self, tcfg) -> dict:
        betas = (self.config.beta1, self.config.beta2)
        return {"generator": optim.Adam(self.generators.parameters(), lr=tcfg.lr, betas=betas),
                "discriminator": optim.Adam(self.discriminators.parameters(), lr=tcfg.lr, betas=betas)}

    def ema_module(self):
        return self.generators

    def generator_losses(self, a, b) -> dict:
        """The generators' loss terms on batches ``a``, ``b`` in [-1, 1], with the fakes (detached
        by the caller for the discriminators): adversarial (LSGAN), cycle and identity."""
        g, d = self.generators, self.discriminators
        fake_b, fake_a = g["a2b"](a), g["b2a"](b)
        # the paper's generator term (D(G(a)) - 1)^2; gmcore.nn.gan's least squares halves it
        adv = 2 * (gan_losses.generator_loss(d["b"](fake_b), "least_squares")
                   + gan_losses.generator_loss(d["a"](fake_a), "least_squares"))
        cycle = (g["b2a"](fake_b) - a).abs().mean() + (g["a2b"](fake_a) - b).abs().mean()
        terms = {"adv": adv, "cycle": cycle, "fake_a": fake_a, "fake_b": fake_b}
        if self.config.identity_weight:
            terms["identity"] = (g["a2b"](b) - b).abs().mean() + (g["b2a"](a) - a).abs().mean()
        return terms

    def generator_objective(self, terms):
        c = self.config
        loss = terms["adv"] + c.cycle_weight * terms["cycle"]
        if "identity" in terms:
            loss = loss + c.identity_weight * c.cycle_weight * terms["identity"]
        return loss

    def discriminator_loss(self, a, b, fake_a, fake_b):
        """Both discriminators' LSGAN losses, 1/2 [(D(real) - 1)^2 + D(fake)^2] each (means),
        on (pooled, detached) fakes; returns (total, D_A's, D_B's)."""
        d = self.discriminators
        la = gan_losses.discriminator_loss(d["a"](a), d["a"](fake_a), "least_squares")
        lb = gan_losses.discriminator_loss(d["b"](b), d["b"](fake_b), "least_squares")
        return la + lb, la, lb

    def training_step(self, batch, step) -> dict:
        a, b = batch[0] * 2.0 - 1.0, batch[2] * 2.0 - 1.0
        # 1. the generators, against discriminators whose weights take no gradient
        self.discriminators.requires_grad_(False)
        try:
            terms = self.generator_losses(a, b)
            g_loss = step.update("generator", self.generator_objective(terms))
        finally:
            self.discriminators.requires_grad_(True)
        # 2. the discriminators, on this step's fakes through the pools
        fake_a = self.pools["a"].query(terms["fake_a"])
        fake_b = self.pools["b"].query(terms["fake_b"])
        loss, la, lb = self.discriminator_loss(a, b, fake_a, fake_b)
        d_loss = step.update("discriminator", loss)
        logs = {"g_loss": g_loss, "d_loss": d_loss, "g_adv": terms["adv"].item(), "cycle": terms["cycle"].item(),
                "d_a": la.item(), "d_b": lb.item()}
        if "identity" in terms:
            logs["identity"] = terms["identity"].item()
        return logs

    # ---- translation and sampling ----------------------------------------------------------------
    def translate(self, x, direction: str):
        """Images ``x`` (B, C, H, W) in [0, 1] of the source domain translated by ``direction``
        ("a2b": G, "b2a": F), in [0, 1]."""
        if direction not in ("a2b", "b2a"):
            raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
        return (self.generators[direction](x * 2.0 - 1.0) + 1.0) * 0.5

    def _test_images(self):
        """(images (N, C, H, W) float in [0, 1], labels (N,)) of the run's test split: the one
        handed to ``prepare_data``/``save_pictures``, else the built-in data set's."""
        ds = self._test_source
        if ds is None:
            from ...data import get_dataset
            try:
                ds = self._test_source = get_dataset(self.data.name, "test")
            except ValueError as exc:
                raise ValueError(f"{self.model_name} samples translate test images of {self.data.name!r}, "
                                 f"which this process has not loaded: {exc}") from None
        levels, labels = ds.arrays[0], np.asarray(ds.arrays[1])
        scale = ds.transforms[0] if getattr(ds, "transforms", None) and ds.transforms[0] else None
        images = scale(levels) if scale is not None else np.asarray(levels, np.float32)
        return images, labels

    def sample(self, n, generator=None, direction: str = "b2a", show: str = "translation"):
        """Translations of ``n`` test images (see the module docstring): image i is a random test
        image of class ``i % num_classes`` (any class without labels), drawn by ``generator``."""
        if show not in ("translation", "input", "reconstruction"):
            raise ValueError(f"show must be 'translation', 'input' or 'reconstruction', got {show!r}")
        if direction not in ("a2b", "b2a"):
            raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
        dev = next(self.parameters()).device
        images, labels = self._test_images()
        u = creation.rand(n, generator=generator, device=dev).cpu().numpy()
        pick = np.empty(n, np.int64)
        for i in range(n):
            pool = np.flatnonzero(labels == i % self.num_classes) if self.num_classes else np.arange(len(labels))
            pool = pool if len(pool) else np.arange(len(labels))   # a class absent from the split
            pick[i] = pool[min(int(u[i] * len(pool)), len(pool) - 1)]
        x = creation.tensor(images[pick], device=dev)
        src = x if direction == "a2b" else to_domain_b(self.config.domain_b, x)
        if show == "input":
            return src
        out = self.translate(src, direction)
        return out if show == "translation" else self.translate(out, "b2a" if direction == "a2b" else "a2b")

    # ---- evaluation and pictures -----------------------------------------------------------------
    def test_metrics(self, test_set, batch_size: int = 256) -> dict:
        """Cycle reconstruction error (mean absolute error in [0, 1] units over the test split, both
        directions: A -> B -> A and B -> A -> B, where B is the mapped test split) and, on digits,
        class agreement and digits-FID of the translations (A->B mapped back to A by the inverse
        map) against the test digits, beside an identity translator's class agreement. The run's end
        and ``gmcore eval`` call it (the model contract's ``test_metrics``), under no_grad in eval
        mode."""
        from ...data import DataLoader

        kind, dev = self.config.domain_b, next(self.parameters()).device
        err = {"a2b2a": 0.0, "b2a2b": 0.0}
        count, back_a2b, b2a, idt_a2b, idt_b2a, labels = 0, [], [], [], [], []
        for batch in DataLoader(test_set, batch_size=batch_size, device=dev):
            a = batch[0]
            b = to_domain_b(kind, a)
            ab, ba = self.translate(a, "a2b"), self.translate(b, "b2a")
            err["a2b2a"] += float((self.translate(ab, "b2a") - a).abs().sum().item())
            err["b2a2b"] += float((self.translate(ba, "a2b") - b).abs().sum().item())
            count += a.numel()
            back_a2b.append(from_domain_b(kind, ab).cpu().numpy())
            b2a.append(ba.cpu().numpy())
            idt_a2b.append(from_domain_b(kind, a).cpu().numpy())   # "translating" by doing nothing
            idt_b2a.append(b.cpu().numpy())
            if len(batch) > 1:
                labels.append(batch[1].cpu().numpy())
        res = {"domain_b": kind, "cycle_l1_a2b2a": err["a2b2a"] / count, "cycle_l1_b2a2b": err["b2a2b"] / count,
               "num_translated": int(sum(len(x) for x in b2a))}
        if self.data.name != "digits" or tuple(self.data.shape) != (1, 8, 8) or not labels:
            return res
        from ... import feature_metrics
        from ...autograd import enable_grad

        with enable_grad():   # the classifier trains on first use (then it is cached)
            net = feature_metrics.DigitsFeatures.get()
        y = np.concatenate(labels)
        real = net.features(test_set.arrays[0] / (test_set.num_levels - 1))
        for name, parts in (("a2b", back_a2b), ("b2a", b2a)):
            x = np.concatenate(parts)
            res[f"class_agreement_{name}"] = net.accuracy(x, y)
            res[f"digits_fid_{name}"] = feature_metrics.frechet_distance(real, net.features(x))
        res["class_agreement_identity_a2b"] = net.accuracy(np.concatenate(idt_a2b), y)
        res["class_agreement_identity_b2a"] = net.accuracy(np.concatenate(idt_b2a), y)
        res["feature_net"] = f"digits MLP classifier v{feature_metrics.CLASSIFIER_VERSION} (not Inception)"
        return res

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``translations.png``: SHOWN test images of A, their A->B translations and their cycle
        reconstructions (three rows), then SHOWN other test images mapped to B, their B->A
        translations and reconstructions. ``{}`` without a test set."""
        if test_set is None:
            return {}
        from ...plots import save_image_grid

        self._test_source = test_set
        images, _ = self._test_images()
        dev = next(self.parameters()).device
        a = creation.tensor(images[:SHOWN], device=dev)
        b = to_domain_b(self.config.domain_b, creation.tensor(images[SHOWN:2 * SHOWN], device=dev))
        ab, ba = self.translate(a, "a2b"), self.translate(b, "b2a")
        rows = [a, ab, self.translate(ab, "b2a"), b, ba, self.translate(ba, "a2b")]
        save_image_grid(gf.cat(rows, 0), Path(out_dir) / "translations.png", nrow=a.shape[0])
        return {"translations_png": "translations.png"}
