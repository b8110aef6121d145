"""BiGAN / ALI (Donahue, Kraehenbuehl & Darrell 2017, "Adversarial Feature Learning"; Dumoulin et
al. 2017, "Adversarially Learned Inference"): a generator G(z), an encoder E(x) and a
discriminator D(x, z) on *pairs*: it tells data with its encoding, (x, E(x)), from samples with
their noise, (G(z), z). At the optimum the two joint distributions match, so E inverts G and
E(x) is a representation of x learnt without labels.

Networks: G is the DCGAN generator (:class:`~gmcore.models.gan._nets.ConvGenerator`); E has the
DCGAN discriminator's shape with a linear head to z (batch norm, LeakyReLU 0.2); D takes x through
strided convolutions and z through an MLP (``--layers`` of width ``--hidden``), joins the two,
and ends in an MLP to one logit, with LeakyReLU 0.2 and dropout (``--dropout``, ALI's 0.2) after
every layer, no normalisation. E is deterministic as BiGAN's, or with ``--stochastic-encoder``
ALI's Gaussian ``z = mu(x) + sigma(x) * eps`` (reparameterised; the probe and the
reconstructions use mu).

Objective, with ``s_real = D(x, E(x))`` and ``s_fake = D(G(z), z)`` the logits:

* D minimises ``--loss`` on its outputs as any GAN: ``-log sigmoid(s_real) - log(1 - sigmoid(s_fake))``
  (:func:`gmcore.nn.gan.discriminator_loss`; ``--real-label`` smooths the real target);
* G and E, updated together by one optimizer, minimise :func:`encoder_generator_loss`: by default
  the *non-saturating* form (BiGAN's "inverted" objective, section 3.4, as the GAN's
  ``-log D(G(z))``): the
  discriminator's loss with the labels swapped, ``-log(1 - sigmoid(s_real)) - log sigmoid(s_fake)``.
  ``--loss minimax`` takes the negated discriminator loss (the paper's minimax game as written),
  ``least_squares`` the swapped targets of LSGAN, ``hinge`` BigBiGAN's ``mean(s_real) -
  mean(s_fake)``.

One step: D takes one update on the pairs (E(x) and G(z) detached), then G and E take one
update against the updated D, from the same x, z and forward passes of E and G.

Figures (digits): ``linear_probe_accuracy``, the test accuracy of a multinomial logistic
regression (:mod:`gmcore.linear_probe`, L2 1e-2 on standardised features) fitted on E(x) of
the training split, beside the same probe on the raw pixels and on E at a random
initialisation (same architecture, fixed seed), and the same pair for E's last hidden layer
(``_encoder_hidden``, ``_random_encoder_hidden``). These baselines are the honest comparison:
on 8x8 digits the raw pixels reach 97.3%, a random E's 32 outputs 91.9% and its 512 hidden
features 99.0%, so the probe clears 80% with no learning at all; what BiGAN adds is the gap
between E(x) and the random E. ``test_reconstruction_mae`` / ``_mse`` of G(E(x)) on the test
split, with ``reconstructions.png`` (rows of test digits, each row followed by their
reconstructions); digits-FID of samples as every GAN. No likelihood (``nll_kind`` "none").

Measured on digits (2000 steps unless said, seed 0): the defaults give a probe of 94.6% (FID
15.8, reconstruction MAE 0.166; seed 1: 94.9%, FID 18.1, MAE 0.164); with D at the
generator's lr (``--d-lr-mult 1``, 3000 steps) 91.9%, no better than the random E (FID 12.8,
MAE 0.174); ``--stochastic-encoder`` 93.6% (FID 13.8, MAE 0.133), and with ``--d-lr-mult 1``
95.3% (FID 13.4, MAE 0.142). A difference of 1% is 3 of the 297 test digits. Many
reconstructions show another digit than their input (BiGAN's and ALI's reconstructions are
loose too: E learns to invert G only through D, with no reconstruction loss).

Differences from the papers: gmcore's DCGAN-shaped convolutional networks at 8x8 (the papers'
MNIST/CIFAR networks are deeper); the generator's sigmoid into [0, 1]; z ~ N(0, I) (BiGAN's
MNIST run drew z uniformly); Adam beta1 0.5, 2e-4 for G and E, and 4e-4 for D
(``--d-lr-mult 2``: at the papers' equal rates D stayed near chance and E learnt no more
than its random initialisation gives, above); no weight decay (BiGAN's 2.5e-5) or lr decay;
the probe is on E's output (BiGAN also probed E's hidden layers, reported here beside their
random baseline). ``--ema`` averages G only (E is what the probe reads); it is off by default.

>>> import gmcore as gm
>>> from gmcore.models.base import DataInfo
>>> _ = gm.manual_seed(0)
>>> m = BiGAN(BiGAN.Config(latent_dim=4, g_channels=4, d_channels=4, e_channels=4, hidden=8),
...           DataInfo((1, 8, 8), 17, "digits", num_classes=10))
>>> x = gm.rand(3, 1, 8, 8)
>>> m.encode(x).shape, m.reconstruct(x).shape, m.discriminator(x, m.encode(x)).shape
(gmcore.Size([3, 4]), gmcore.Size([3, 1, 8, 8]), gmcore.Size([3, 1]))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import creation, nn, optim
from ... import functional as gf
from ...nn import functional as F
from ...nn import gan as gan_losses
from ...tensor import Tensor
from ..base import DataInfo
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults
from ._nets import ConvDiscriminator, ConvGenerator, _norm, upsampling_stages
from .vae_gan import _frozen

__all__ = ["BiGAN", "BiGANConfig", "JointDiscriminator", "encoder_generator_loss", "LOSSES"]

LOSSES = ("nonsaturating", "minimax", "least_squares", "hinge")
RECON_IMAGES = 32     # test digits in reconstructions.png (4 rows of 8, each followed by its reconstruction)
PROBE_L2 = 1e-2       # the linear probe's L2 weight on standardised features (gmcore.linear_probe)
RANDOM_ENCODER_SEED = 1234   # the randomly initialised encoder of the probe's baseline


@dataclass
class BiGANConfig(config_with_defaults("_BiGANBase", arch="conv", latent_dim=32, d_norm="none", hidden=256,
                                       layers=2, d_lr_mult=2.0)):
    e_channels: int = field(default=64, metadata={"help": "conv encoder: channels of its first layer",
                                                  "min": 1})
    dropout: float = field(default=0.2, metadata={
        "help": "dropout after every layer of the joint discriminator (ALI: 0.2)", "min": 0.0, "max": 0.99})
    stochastic_encoder: bool = field(default=False, metadata={
        "help": "ALI's Gaussian encoder z = mu(x) + sigma(x) eps (default: BiGAN's deterministic E)"})


# GANConfig fields this model does not use: refused unless left at these values
_UNSUPPORTED = {"labels": "none", "n_critic": 1, "clip": 0.0, "gp_weight": 0.0, "r1_weight": 0.0,
                "feature_matching": False, "minibatch_kernels": 0, "historical_weight": 0.0,
                "vbn_reference": 0}


def encoder_generator_loss(real: Tensor, fake: Tensor, kind: str = "nonsaturating") -> Tensor:
    """The loss G and E minimise together, from the joint discriminator's logits on data pairs
    ``real`` = D(x, E(x)) and sample pairs ``fake`` = D(G(z), z) (see the module docstring):

    =================  ==============================================
    nonsaturating      -log(1 - sigmoid(real)) - log sigmoid(fake)
    minimax            log sigmoid(real) + log(1 - sigmoid(fake))
    least_squares      real^2 / 2 + (fake - 1)^2 / 2
    hinge              real - fake
    =================  ==============================================

    each a mean over the batch.

    >>> import gmcore as gm
    >>> round(encoder_generator_loss(gm.tensor([0.0]), gm.tensor([0.0])).item(), 4)   # 2 log 2
    1.3863
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown BiGAN loss {kind!r}; choose one of {', '.join(LOSSES)}")
    if kind == "nonsaturating":    # the discriminator's cross-entropy with the labels swapped
        return F.softplus(real).mean() + F.softplus(-fake).mean()
    if kind == "minimax":
        return -gan_losses.discriminator_loss(real, fake, "minimax")
    if kind == "least_squares":
        return 0.5 * (real ** 2).mean() + 0.5 * ((fake - 1.0) ** 2).mean()
    return real.mean() - fake.mean()


class JointDiscriminator(nn.Module):
    """D(x, z) -> one logit (B, 1): x through 4x4 stride-2 convolutions doubling the channels from
    ``channels`` (as the DCGAN discriminator, ``norm`` after all but the first), z through an MLP
    of ``layers`` layers of width ``hidden``, the two joined and mapped by one hidden layer of
    width ``hidden`` to the logit. LeakyReLU 0.2 and dropout ``dropout`` follow every layer."""

    def __init__(self, shape, latent_dim: int, channels: int, hidden: int, layers: int, dropout: float,
                 norm: str = "none"):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        mods, ch = [nn.Conv2d(c, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Dropout(dropout)], channels
        h, w = h // 2, w // 2
        for _ in range(upsampling_stages(h * 2, w * 2)):
            mods += [nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1), _norm(norm, ch * 2), nn.LeakyReLU(0.2),
                     nn.Dropout(dropout)]
            ch, h, w = ch * 2, h // 2, w // 2
        self.x_body = nn.Sequential(*mods, nn.Flatten())
        zmods, d = [], latent_dim
        for _ in range(layers):
            zmods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            d = hidden
        self.z_body = nn.Sequential(*zmods)
        self.joint = nn.Sequential(nn.Linear(ch * h * w + hidden, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                                   nn.Linear(hidden, 1))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.joint(gf.cat([self.x_body(x), self.z_body(z)], 1))


@register("bigan", family="gan", dataset="digits",
          description="BiGAN/ALI: generator, encoder and a discriminator on (x, z) pairs; linear probe of E(x)")
class BiGAN(AdversarialModel):
    """See the module docstring."""

    Config = BiGANConfig
    train_defaults = {**AdversarialModel.train_defaults, "steps": 2000}

    def __init__(self, config: BiGANConfig, data: DataInfo):
        name = type(self).model_name
        if len(data.shape) != 3:
            raise ValueError(f"{name} models images, not {data.name or 'data'} of shape {tuple(data.shape)}")
        if config.arch == "mlp":
            raise ValueError(f"{name} uses convolutional networks: --arch mlp is not supported")
        if config.loss not in LOSSES:
            raise ValueError(f"{name}: --loss {config.loss} is not supported (a Wasserstein critic on (x, z) "
                             f"pairs needs a Lipschitz constraint this model lacks); choose one of "
                             f"{', '.join(LOSSES)}")
        for f, default in _UNSUPPORTED.items():
            if getattr(config, f) != default:
                raise ValueError(f"{name} does not support --{f.replace('_', '-')} (one discriminator and "
                                 f"one generator-encoder update per step); leave it at {default}")
        if config.real_label != 1.0 and config.loss not in ("nonsaturating", "minimax", "least_squares"):
            raise ValueError(f"{name}: --real-label applies to the probabilistic losses, not to {config.loss}")
        super().__init__(config, data)

    def _build_networks(self) -> None:
        c, data = self.config, self.data
        self.generator = ConvGenerator(c.latent_dim, data.shape, c.g_channels)
        out = 2 * c.latent_dim if c.stochastic_encoder else c.latent_dim
        self.encoder = ConvDiscriminator(data.shape, c.e_channels, "batch", outputs=out)
        self.discriminator = JointDiscriminator(data.shape, c.latent_dim, c.d_channels, c.hidden, c.layers,
                                                c.dropout, c.d_norm)

    # ---- the training-loop contract (gmcore/models/base.py) --------------------------------------
    def configure_optimizers(self, tcfg) -> dict:
        c = self.config
        ge = list(self.generator.parameters()) + list(self.encoder.parameters())
        if c.optimizer == "rmsprop":
            g_opt = optim.RMSprop(ge, lr=tcfg.lr)
        else:
            g_opt = optim.Adam(ge, lr=tcfg.lr, betas=(c.beta1, c.beta2))
        return {"generator_encoder": g_opt,
                "discriminator": self.make_optimizer(self.discriminator, tcfg.lr * c.d_lr_mult)}

    def encode(self, x, sample: bool = False):
        """E(x) (B, latent_dim): the deterministic encoding, or the stochastic encoder's mean (its
        reparameterised draw with ``sample``)."""
        out = self.encoder(x)
        if not self.config.stochastic_encoder:
            return out
        k = self.config.latent_dim
        mu = out[:, :k]
        if not sample:
            return mu
        logvar = out[:, k:]
        return mu + (0.5 * logvar).exp() * creation.randn(*mu.shape, device=mu.device, dtype=mu.dtype)

    def reconstruct(self, x):
        """G(E(x)) in the data's shape (the mean encoding for a stochastic encoder)."""
        return self.generate(self.encode(x))

    def training_step(self, batch, step) -> dict:
        """One update of D on the pairs, then one of G and E together against the updated D."""
        c, x = self.config, batch[0]
        z = self.noise(x.shape[0])
        z_hat = self.encode(x, sample=True)
        x_hat = self.generate(z)
        d_real, d_fake = self.discriminator(x, z_hat.detach()), self.discriminator(x_hat.detach(), z)
        d_loss = step.update("discriminator", gan_losses.discriminator_loss(d_real, d_fake, c.loss,
                                                                            real_label=c.real_label))
        with _frozen(self.discriminator):   # its weights take no gradient from G and E's loss
            s_real, s_fake = self.discriminator(x, z_hat), self.discriminator(x_hat, z)
            ge_loss = step.update("generator_encoder", encoder_generator_loss(s_real, s_fake, c.loss))
        return {"d_loss": d_loss, "ge_loss": ge_loss,
                "d_real": float(d_real.mean().item()), "d_fake": float(d_fake.mean().item())}

    # ---- figures ------------------------------------------------------------------------------------
    def _features(self, dataset, fn):
        """(fn(x) flattened to (N, F) float64, the labels (N,)) over a labelled image ``dataset``."""
        from ...data import DataLoader

        dev = next(self.parameters()).device
        feats, labels = [], []
        for batch in DataLoader(dataset, batch_size=256, device=dev):
            f = fn(batch[0])
            feats.append(f.detach().reshape(f.shape[0], -1).numpy().astype(np.float64))
            labels.append(batch[1].numpy())
        return np.concatenate(feats), np.concatenate(labels).astype(np.int64)

    def _random_encoder(self):
        """E's architecture at a fixed random initialisation (eval mode), drawn without moving the
        run's own random stream."""
        from ...random import default_generator

        c, state = self.config, default_generator.get_state()
        try:
            default_generator.manual_seed(RANDOM_ENCODER_SEED)
            enc = ConvDiscriminator(self.data.shape, c.e_channels, "batch",
                                    outputs=2 * c.latent_dim if c.stochastic_encoder else c.latent_dim)
        finally:
            default_generator.set_state(state)
        return enc.to(next(self.parameters()).device).eval()

    def linear_probe(self, train_set, test_set) -> dict:
        """The linear-probe accuracies on ``test_set`` of probes fitted on ``train_set`` (both
        labelled image sets): of E(x) and E's last hidden layer, of the same two of E at a random
        initialisation, and of the raw pixels (see the module docstring). Call under no_grad, in
        eval mode."""
        from ...linear_probe import linear_probe_accuracy

        def probe(train, test):
            return linear_probe_accuracy(train[0], train[1], test[0], test[1], l2=PROBE_L2)

        rand, k = self._random_encoder(), self.config.latent_dim
        features = {"": self.encode, "_encoder_hidden": self.encoder.features, "_raw_pixels": lambda x: x,
                    "_random_encoder": lambda x: rand(x)[:, :k], "_random_encoder_hidden": rand.features}
        res = {f"linear_probe_accuracy{name}": probe(self._features(train_set, fn), self._features(test_set, fn))
               for name, fn in features.items()}
        return {**res, "linear_probe_l2": PROBE_L2}

    def test_metrics(self, test_set, train_set=None) -> dict:
        """The mean absolute and squared pixel error of G(E(x)) over ``test_set`` and, on labelled
        data, the linear probes (:meth:`linear_probe`) fitted on ``train_set`` (on digits, the
        training split when none is given). The run's end and ``gmcore eval`` call it (the model
        contract's ``test_metrics``), under no_grad in eval mode."""
        from ...data import DataLoader

        dev = next(self.parameters()).device
        abs_err, sq_err, count = 0.0, 0.0, 0
        for batch in DataLoader(test_set, batch_size=256, device=dev):
            x = batch[0]
            rec = self.reconstruct(x)
            abs_err += float((rec - x).abs().sum().item())
            sq_err += float(((rec - x) ** 2).sum().item())
            count += x.numel()
        res = {"test_reconstruction_mae": abs_err / count, "test_reconstruction_mse": sq_err / count}
        if train_set is None and self.data.name == "digits":
            from ...data import get_dataset
            train_set = get_dataset("digits", "train")
        if train_set is not None and self.data.num_classes:
            res.update(self.linear_probe(train_set, test_set))
        return res

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``reconstructions.png``: rows of 8 test digits, each followed by G(E(x)). ``{}``
        without a test set."""
        if test_set is None:
            return {}
        from ...plots import save_image_grid

        from ...data import DataLoader

        dev = next(self.parameters()).device
        x = next(iter(DataLoader(test_set, batch_size=RECON_IMAGES, device=dev)))[0]
        rec = self.reconstruct(x)
        shown = []
        for i in range(0, x.shape[0], 8):
            shown += [x[i:i + 8], rec[i:i + 8]]
        save_image_grid(gf.cat(shown, 0), Path(out_dir) / "reconstructions.png", nrow=8)
        return {"reconstructions_png": "reconstructions.png"}
