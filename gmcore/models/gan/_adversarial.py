"""What every GAN of the zoo shares: the configuration, the two networks, their optimizers and
the adversarial training step (several critic updates per generator update, a gradient penalty,
weight clipping, one-sided label smoothing), an EMA of the generator, and sampling.

A model file gives only its defaults (:func:`config_with_defaults`) and its registration; the
differences between the classic GANs are which loss, which optimizer, how many critic steps,
which penalty, and which networks, all of them fields of :class:`GANConfig`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ... import creation, nn, optim
from ... import functional as gf
from ...autograd import no_grad
from ...nn import functional as F
from ...nn import gan as gan_losses
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ._nets import ConvDiscriminator, ConvGenerator, MLPDiscriminator, mlp_generator

__all__ = ["GANConfig", "AdversarialModel", "config_with_defaults", "truncation_options", "truncated_normal"]


@dataclass
class GANConfig:
    loss: str = field(default="nonsaturating", metadata={
        "help": "adversarial loss (gmcore.nn.gan)", "choices": list(gan_losses.KINDS)})
    arch: str = field(default="auto", metadata={
        "help": "networks: MLPs, DCGAN convolutions, or auto (conv for images, MLP for vectors)",
        "choices": ["auto", "mlp", "conv"]})
    latent_dim: int = field(default=64, metadata={"help": "size of the generator's noise z", "min": 1})
    hidden: int = field(default=256, metadata={"help": "MLP width", "min": 1})
    layers: int = field(default=3, metadata={"help": "MLP hidden layers (generator and discriminator)",
                                             "min": 1})
    g_channels: int = field(default=64, metadata={"help": "conv generator: channels of its last stage",
                                                  "min": 1})
    d_channels: int = field(default=64, metadata={"help": "conv discriminator: channels of its first layer",
                                                  "min": 1})
    d_norm: str = field(default="batch", metadata={
        "help": "conv discriminator normalisation (none or layer for a gradient penalty)",
        "choices": ["batch", "layer", "none"]})
    optimizer: str = field(default="adam", metadata={"help": "both networks' optimizer",
                                                     "choices": ["adam", "rmsprop"]})
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1 (DCGAN: 0.5)", "min": 0.0})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2", "min": 0.0})
    d_lr_mult: float = field(default=1.0, metadata={
        "help": "discriminator lr = --lr times this (TTUR: e.g. 4)", "min": 0.0})
    n_critic: int = field(default=1, metadata={"help": "discriminator updates per generator update, each "
                                                       "on a fresh batch", "min": 1})
    gp_weight: float = field(default=0.0, metadata={"help": "WGAN-GP penalty weight lambda (0 = off)",
                                                    "min": 0.0})
    r1_weight: float = field(default=0.0, metadata={"help": "R1 penalty weight gamma (0 = off)", "min": 0.0})
    clip: float = field(default=0.0, metadata={"help": "clip the critic's weights to [-c, c] after each "
                                                       "update (WGAN; 0 = off)", "min": 0.0})
    real_label: float = field(default=1.0, metadata={
        "help": "target for real data (< 1: one-sided label smoothing, e.g. 0.9)", "min": 0.0})
    labels: str = field(default="none", metadata={
        "help": "class conditioning: none; input (cGAN: the label enters both networks); auxiliary "
                "(AC-GAN: the generator takes it, the discriminator also classifies)",
        "choices": ["none", "input", "auxiliary"]})
    aux_weight: float = field(default=1.0, metadata={"help": "AC-GAN: weight of the class losses",
                                                     "min": 0.0})
    # Improved techniques (Salimans et al. 2016); one-sided label smoothing is --real-label
    feature_matching: bool = field(default=False, metadata={
        "help": "generator matches the mean of the discriminator's hidden features on data"})
    minibatch_kernels: int = field(default=0, metadata={
        "help": "minibatch discrimination kernels before the discriminator's head (0 = off)", "min": 0})
    historical_weight: float = field(default=0.0, metadata={
        "help": "historical averaging: weight of ||theta - mean of past thetas||^2, both networks (0 = off)",
        "min": 0.0})
    vbn_reference: int = field(default=0, metadata={
        "help": "virtual batch norm in the conv generator with a fixed reference batch of this size "
                "(0 = batch norm)", "min": 0})


def config_with_defaults(name: str, **defaults) -> type:
    """A copy of :class:`GANConfig` named ``name`` whose fields default to ``defaults`` (help and
    limits kept), so that each GAN's ``Config()`` is that GAN in Python as on the CLI."""
    unknown = set(defaults) - {f.name for f in dataclasses.fields(GANConfig)}
    if unknown:
        raise TypeError(f"{name}: GANConfig has no field(s) {sorted(unknown)}")
    specs = [(f.name, f.type, field(default=defaults.get(f.name, f.default), metadata=f.metadata))
             for f in dataclasses.fields(GANConfig)]
    return dataclasses.make_dataclass(name, specs, bases=(GANConfig,))


@dataclass
class ConditionalSampleOptions:
    label: int = field(default=-1, metadata={
        "help": "draw this class only (-1: the classes in turn, 0, 1, 2, ...)", "min": -1})


# ---- the truncation trick (gmcore sample RUN --truncation T) -----------------------------------
# A model declares ``truncation = "threshold"`` (BigGAN: the entries of z with |z| > T are drawn
# again, T = 0 off) or ``"psi"`` (its ``generate(z, labels, psi=psi)`` truncates, e.g. StyleGAN's
# w_avg + psi (w - w_avg), psi = 1 off), and takes :func:`truncation_options` as SampleOptions;
# a run reports digits-FID, precision/recall (and label accuracy) at TRUNCATION_VALUES.
TRUNCATION_KINDS = {"threshold": (0.0, "resample the entries of z with |z| > T (BigGAN); 0: off"),
                    "psi": (1.0, "psi: pull the latent towards its mean, w_avg + psi (w - w_avg); 1: off")}
TRUNCATION_VALUES = (0.5, 0.7, 1.0)


def truncation_options(kind: str, conditional: bool = False) -> type:
    """The SampleOptions dataclass of a model with the truncation trick ``kind`` (a ``truncation``
    field, plus ``label`` for a class-conditional model)."""
    if kind not in TRUNCATION_KINDS:
        raise ValueError(f"unknown truncation kind {kind!r}; choose one of {', '.join(TRUNCATION_KINDS)}")
    default, help_ = TRUNCATION_KINDS[kind]
    spec = [("truncation", float, field(default=default, metadata={"help": help_, "min": 0.0}))]
    bases = (ConditionalSampleOptions,) if conditional else ()
    return dataclasses.make_dataclass(f"{kind.capitalize()}TruncationSampleOptions", spec, bases=bases)


def truncated_normal(n: int, dim: int, threshold: float, generator=None, device="cpu"):
    """(n, dim) standard normal draws with every entry above ``threshold`` in absolute value
    drawn again until none is (BigGAN's truncation trick: a normal truncated to [-T, T])."""
    if not threshold > 0:
        raise ValueError(f"truncation threshold must be positive, got {threshold}")
    z = creation.randn(n, dim, generator=generator, device=device)
    for _ in range(100000):   # acceptance >= 3% per round for T >= 0.04: ends long before
        out = z.abs() > threshold
        if not bool(out.any().item()):
            return z
        z = gf.where(out, creation.randn(n, dim, generator=generator, device=device), z)
    raise RuntimeError(f"truncated_normal: threshold {threshold} too small to sample")


class AdversarialModel(GenerativeModel):
    """A generator and a discriminator trained against each other (see the module docstring).

    Networks: for vectors (the 2-D toys) MLPs; for images DCGAN convolutions, or with ``--arch
    mlp`` MLPs over the flattened image (Goodfellow et al. 2014's GAN). The generator's outputs
    lie in the data range: sigmoid into [0, 1] for images, unbounded for points.
    """

    nll_kind = "none"
    truncation = None   # the truncation trick it supports: a key of TRUNCATION_KINDS, or None
    # GANs keep a constant learning rate (DCGAN, WGAN-GP). An evaluation has no likelihood to
    # compute: it adds a row of fixed-noise samples to progress.png (image data)
    train_defaults = {"lr": 2e-4, "warmup": 0, "lr_schedule": "constant", "batch_size": 64,
                      "steps": 3000, "eval_every": 250}

    def __init__(self, config: GANConfig, data: DataInfo):
        super().__init__(config, data)
        c = config
        if c.loss not in gan_losses.KINDS:
            raise ValueError(f"{self.model_name}: unknown --loss {c.loss!r}; choose one of "
                             f"{', '.join(gan_losses.KINDS)}")
        self._check_data(data)
        if c.gp_weight and c.d_norm == "batch" and self._conv:
            raise ValueError(f"{self.model_name}: a gradient penalty is per example, which batch norm in the "
                             "critic breaks (Gulrajani et al. 2017); use --d-norm layer or none")
        self.num_classes = int(data.num_classes) if c.labels != "none" else 0
        if c.labels != "none" and self.num_classes < 2:
            raise ValueError(f"{self.model_name} --labels {c.labels} needs a data set with class labels; "
                             f"{data.name or 'this one'} has none")
        self._build_networks()
        if c.historical_weight:
            self.g_history = gan_losses.HistoricalAverage(self.generator)
            self.d_history = gan_losses.HistoricalAverage(self.discriminator)

    def _check_data(self, data: DataInfo) -> None:
        """Refuse data these networks cannot model (a GAN with its own networks, e.g. WaveGAN's
        1-D convolutions for audio, overrides it with ``_build_networks``)."""
        if not (len(data.shape) == 3 or (data.num_levels == 0 and len(data.shape) == 1)):
            raise ValueError(f"{self.model_name} models images or continuous vectors (the 2-D toys), not "
                             f"{data.name or 'data'} of shape {tuple(data.shape)}")

    def _build_networks(self) -> None:
        c, data, k = self.config, self.data, self.num_classes
        z_in = c.latent_dim + k                         # cGAN/AC-GAN: z with the one-hot label
        d_extra = k if c.labels == "input" else 0       # cGAN: the label enters the discriminator too
        d_out = 1 + (k if c.labels == "auxiliary" else 0)
        if self._conv:
            if len(data.shape) != 3:
                raise ValueError(f"{self.model_name} --arch conv needs images, got data of shape {data.shape}")
            self.generator = ConvGenerator(z_in, data.shape, c.g_channels, vbn_reference=c.vbn_reference)
            self.discriminator = ConvDiscriminator(data.shape, c.d_channels, c.d_norm, extra_channels=d_extra,
                                                   outputs=d_out, minibatch_kernels=c.minibatch_kernels)
            if k and c.vbn_reference:   # the reference batch's labels: the classes in turn
                self.generator.reference.data[:, c.latent_dim:] = np.eye(k, dtype=np.float32)[
                    np.arange(c.vbn_reference) % k]
        else:
            if c.vbn_reference:
                raise ValueError(f"{self.model_name}: --vbn-reference needs the conv generator (--arch conv)")
            self.generator = mlp_generator(z_in, c.hidden, c.layers, data.dims)
            if len(data.shape) == 3:   # images: into the data range [0, 1]
                self.generator.append(nn.Sigmoid())
            self.discriminator = MLPDiscriminator(data.dims + d_extra, c.hidden, c.layers, outputs=d_out,
                                                  minibatch_kernels=c.minibatch_kernels)

    @property
    def class_conditional(self) -> bool:
        """Samples drawn without labels cycle through the classes 0, 1, 2, ... (the run's
        label accuracy of its samples is measured against that)."""
        return self.num_classes > 0

    @property
    def _conv(self) -> bool:
        arch = self.config.arch
        return arch == "conv" or (arch == "auto" and len(self.data.shape) == 3)

    # ---- the training-loop contract (gmcore/models/base.py) --------------------------------------
    def configure_optimizers(self, tcfg) -> dict:
        return {"generator": self.make_optimizer(self.generator, tcfg.lr),
                "discriminator": self.make_optimizer(self.discriminator, tcfg.lr * self.config.d_lr_mult)}

    def make_optimizer(self, module, lr: float):
        """``--optimizer`` (Adam with ``--beta1/--beta2``, or RMSprop) over ``module``'s parameters."""
        c = self.config
        if c.optimizer == "rmsprop":
            return optim.RMSprop(module.parameters(), lr=lr)
        return optim.Adam(module.parameters(), lr=lr, betas=(c.beta1, c.beta2))

    def ema_module(self):
        return self.generator

    def _one_hot(self, y):
        return F.one_hot(y, self.num_classes).to(self.generator_dtype)

    @property
    def generator_dtype(self):
        return next(self.generator.parameters()).dtype

    def generate(self, z, labels=None):
        """Samples in the data's shape from noise ``z`` (B, latent_dim) (and class ``labels`` (B,)
        for a class-conditional model)."""
        if self.num_classes:
            z = gf.cat([z, self._one_hot(labels)], 1)
        return self.generator(z).reshape(z.shape[0], *self.data.shape)

    def _d_input(self, x, labels):
        if self.config.labels != "input":
            return x
        y = self._one_hot(labels)   # cGAN: one-hot label maps beside the image (a vector beside a vector)
        if self._conv:
            return gf.cat([x, y.reshape(*y.shape, 1, 1).expand(y.shape[0], y.shape[1], *x.shape[2:])], 1)
        return gf.cat([x.reshape(x.shape[0], -1), y], 1)

    def discriminate(self, x, labels=None):
        """(the adversarial output (B, 1), class logits (B, K) for AC-GAN or None)."""
        out = self.discriminator(self._d_input(x, labels))
        if self.config.labels == "auxiliary":
            return out[:, :1], out[:, 1:]
        return out, None

    def features(self, x, labels=None):
        """The discriminator's last hidden layer (B, F): what feature matching matches."""
        return self.discriminator.features(self._d_input(x, labels))

    def noise(self, n: int, generator=None):
        dev = next(self.parameters()).device
        return creation.randn(n, self.config.latent_dim, generator=generator, device=dev)

    def random_labels(self, n: int, generator=None):
        if not self.num_classes:
            return None
        dev = next(self.parameters()).device
        return creation.randint(0, self.num_classes, (n,), generator=generator, device=dev)

    def _labels_of(self, batch):
        if not self.num_classes:
            return None
        if len(batch) < 2:
            raise ValueError(f"{self.model_name} is class-conditional: batches must be (images, labels)")
        return batch[1]

    def critic_loss(self, real, fake, real_labels=None, fake_labels=None):
        """The discriminator's loss on a real and a (detached) fake batch (with their labels for
        a class-conditional model), with its penalties; returns (loss, logs). Real and fake go
        through the discriminator in separate batches, so batch norm never mixes their
        statistics."""
        c = self.config
        (d_real, cls_real), (d_fake, cls_fake) = self.discriminate(real, real_labels), \
            self.discriminate(fake, fake_labels)
        loss = gan_losses.discriminator_loss(d_real, d_fake, c.loss, real_label=c.real_label)
        logs = {}
        if cls_real is not None:   # AC-GAN: classify both the data and the samples by their labels
            aux = F.cross_entropy(cls_real, real_labels) + F.cross_entropy(cls_fake, fake_labels)
            loss = loss + c.aux_weight * aux
            logs["d_class"] = aux.item()

        def critic(x, y=real_labels):
            return self.discriminate(x, y)[0]
        if c.gp_weight:
            gp = gan_losses.gradient_penalty(critic, real, fake)
            loss = loss + c.gp_weight * gp
            logs["gp"] = gp.item()
        if c.r1_weight:
            r1 = gan_losses.r1_penalty(critic, real)
            loss = loss + c.r1_weight * r1
            logs["r1"] = r1.item()
        if c.historical_weight:
            loss = loss + c.historical_weight * self.d_history.penalty(self.discriminator)
        return loss, logs

    def generator_loss(self, n: int, real=None, real_labels=None):
        """The generator's loss on ``n`` fresh samples (labels drawn uniformly when conditional);
        with feature matching, the data batch ``real`` gives the features to match. Returns
        (loss, logs)."""
        c = self.config
        y = self.random_labels(n)
        fake = self.generate(self.noise(n), y)
        logs = {}
        if c.feature_matching:
            if real is None:
                raise ValueError("feature matching needs the data batch: generator_loss(n, real)")
            loss = gan_losses.feature_matching_loss(self.features(real, real_labels), self.features(fake, y))
            cls = self.discriminate(fake, y)[1] if c.labels == "auxiliary" else None
        else:
            out, cls = self.discriminate(fake, y)
            loss = gan_losses.generator_loss(out, c.loss)
        if cls is not None:
            aux = F.cross_entropy(cls, y)
            loss = loss + c.aux_weight * aux
            logs["g_class"] = aux.item()
        if c.historical_weight:
            loss = loss + c.historical_weight * self.g_history.penalty(self.generator)
        return loss, logs

    def training_step(self, batch, step) -> dict:
        c = self.config
        logs = {}
        for i in range(c.n_critic):
            b = batch if i == 0 else step.next_batch()
            real, y = b[0], self._labels_of(b)
            y_fake = self.random_labels(real.shape[0])
            with no_grad():
                fake = self.generate(self.noise(real.shape[0]), y_fake)
            loss, logs = self.critic_loss(real, fake, y, y_fake)
            d_loss = step.update("discriminator", loss)
            if c.clip:
                gan_losses.clip_weights_(self.discriminator, c.clip)
            if c.historical_weight:
                self.d_history.update(self.discriminator)
        loss, g_logs = self.generator_loss(batch[0].shape[0], batch[0], self._labels_of(batch))
        g_loss = step.update("generator", loss)
        if c.historical_weight:
            self.g_history.update(self.generator)
        return {"d_loss": d_loss, "g_loss": g_loss, **logs, **g_logs}

    def sample(self, n, generator=None, labels=None, label: int = -1, truncation=None):
        """``n`` samples; a class-conditional model takes ``labels`` (n,), or one ``label`` for
        all (default: the classes in turn, 0, 1, 2, ...); a model with the truncation trick
        (``self.truncation``) takes ``truncation`` (None: off)."""
        if self.num_classes:
            dev = next(self.parameters()).device
            if labels is None and label >= 0:
                labels = creation.full((n,), int(label), device=dev).long()
            if labels is None:
                labels = creation.arange(n, device=dev) % self.num_classes
            labels = (labels if isinstance(labels, Tensor) else creation.tensor(labels)).long().to(dev)
            if tuple(labels.shape) != (n,) or bool(((labels < 0) | (labels >= self.num_classes)).any().item()):
                raise ValueError(f"{self.model_name}.sample: labels must be ({n},) class indices in "
                                 f"[0, {self.num_classes - 1}]")
        elif labels is not None or label >= 0:
            raise ValueError(f"{self.model_name} is not class-conditional: it takes no labels")
        if truncation is None:
            return self.generate(self.noise(n, generator=generator), labels)
        if self.truncation not in TRUNCATION_KINDS:
            raise ValueError(f"{self.model_name} has no truncation trick: it takes no truncation")
        if not float(truncation) >= 0:
            raise ValueError(f"{self.model_name}: truncation must be >= 0, got {truncation}")
        if self.truncation == "psi":
            return self.generate(self.noise(n, generator=generator), labels, psi=float(truncation))
        if float(truncation) == 0.0:   # the threshold's "off"
            return self.generate(self.noise(n, generator=generator), labels)
        dev = next(self.parameters()).device
        return self.generate(truncated_normal(n, self.config.latent_dim, float(truncation), generator, dev),
                             labels)

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """A model with the truncation trick: ``truncation.png`` (a row of samples per value of
        TRUNCATION_VALUES, then untruncated if that is none of them, all from the same seed) and,
        on digits, each value's digits-FID, KID, precision/recall (and label accuracy) under
        ``truncation`` in metrics.json (1000 samples each, as the run's own figures)."""
        if self.truncation not in TRUNCATION_KINDS:
            return {}
        from pathlib import Path

        from ...plots import save_image_grid
        from ...random import Generator

        seed = generator.initial_seed() if generator is not None else 0
        dev = next(self.parameters()).device

        def draw(n, value):
            return self.sample(n, generator=Generator(device=dev).manual_seed(seed), truncation=value)
        off = TRUNCATION_KINDS[self.truncation][0]
        rows = [draw(10, v) for v in TRUNCATION_VALUES + ((off,) if off not in TRUNCATION_VALUES else ())]
        save_image_grid(gf.cat(rows, 0), Path(out_dir) / "truncation.png", nrow=10)
        res = {"truncation_png": "truncation.png", "truncation_kind": self.truncation}
        if test_set is None or self.data.name != "digits":
            return res
        from ... import feature_metrics
        from ...autograd import enable_grad
        from ...train import QUALITY_SAMPLES

        labels = np.arange(QUALITY_SAMPLES) % self.num_classes if self.num_classes else None
        keep = ("digits_fid", "digits_kid", "precision", "recall", "label_accuracy")
        res["truncation"] = {}
        for v in TRUNCATION_VALUES:
            samples = draw(QUALITY_SAMPLES, v)
            with enable_grad():   # the feature classifier may train on first use
                q = feature_metrics.sample_quality(samples, test_set, labels=labels)
            res["truncation"][str(v)] = {k: q[k] for k in keep if k in q}
        return res
