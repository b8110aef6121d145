"""VAE-GAN (Larsen, Sønderby, Larochelle & Winther 2016, "Autoencoding beyond pixels using a
learned similarity metric"): a VAE whose reconstruction error is measured in the feature space of
a GAN discriminator, trained together with that discriminator.

Networks: an encoder q(z|x) = N(mu(x), diag exp(logvar(x))) (strided convolutions and a linear
head, the shape of the DCGAN discriminator), the decoder = the GAN's generator
(:class:`~gmcore.models.gan._nets.ConvGenerator`), and the discriminator
(:class:`~gmcore.models.gan._nets.ConvDiscriminator`), whose activations after conv block
``--feature-layer`` are Dis_l. The losses, as the paper (means over the batch):

* ``L_prior = KL(q(z|x) || N(0, I))``, in closed form;
* ``L_llike = ||Dis_l(x) - Dis_l(x~)||^2 / (2 sigma^2)``: minus the log-likelihood of Dis_l(x)
  under a Gaussian N(Dis_l(x~), sigma^2 I) (constant dropped), x~ = Dec(z), z ~ q(z|x);
* ``L_GAN``: the discriminator's loss (``--loss``, non-saturating by default) with the data as
  real and *both* the reconstructions x~ and the prior samples x_p = Dec(z ~ N(0, I)) as fakes
  (one fake batch, half of each; ``--no-prior-fakes``: the reconstructions alone). On digits the
  prior fakes are what makes the prior samples digits: without them the decoder never sees
  z ~ N(0, I) in training, and digits-FID went from 7.5 to 136 (reconstruction MAE 0.038).

Three optimizers, one update each per step, all from the same parameters (the paper's
simultaneous update): ``encoder`` on ``L_prior + L_rec``, ``decoder`` on
``gamma * L_rec + L_GAN_dec`` (the generator's form of ``-L_GAN`` for ``--loss``: the
non-saturating ``-log D(x~), -log D(x_p)`` by default) and ``discriminator`` on ``L_GAN``. The
error signals are limited as in the paper: ``L_rec`` never trains the discriminator (its weights
take no gradient from it), and ``L_GAN`` never trains the encoder. ``L_rec = L_llike +
pixel_weight * 1/2 ||x - x~||^2``.

Differences from the paper, measured on digits (2000 steps, one run each): the paper's Gaussian
has sigma 1; here ``--feature-sigma`` is 0.1. With sigma 1 (and gamma 0.05, the same balance in
the decoder) the feature error (~5 nats over the 1024 features of block 1) was too weak against
L_prior: the posterior nearly collapsed (KL 1.3 nats) and the reconstructions often showed
another digit (pixel MAE 0.115, digits-FID 8.1); with 0.1 the KL is ~48 nats and the
reconstructions are the test digits (MAE 0.048, digits-FID 7.5). ``gamma`` (the paper's 1e-6
was for their own scale) is 0.005: the decoder's reconstruction term is then ~0.25 against an
adversarial term near 1. The optional pixel term (``--pixel-weight``, not in the paper; default
0: off, not needed at these settings) adds a Gaussian pixel error of variance 1 to the
reconstruction for stability. The discriminator's conv blocks follow the image size (two on 8x8
digits: Dis_l is block 1, before any normalisation, so Dis_l of an image does not depend on its
batch; the paper took its third of four). The networks are gmcore's DCGAN ones (sigmoid output
into [0, 1]); the paper's "don't update the discriminator when it is far ahead" trick is in
their code, not the paper, and is not here.

No likelihood (``nll_kind`` "none"): L_llike is a Gaussian density of the discriminator's
*features*, which move as the discriminator trains and are not an invertible map of the pixels,
so ``L_prior + L_llike`` bounds no density of the images. Runs are judged by their prior
samples' digits-FID, and by ``reconstructions.png`` (test digits, each row followed by its
reconstruction from the posterior mean) with its pixel mean absolute error. ``--ema`` averages
the decoder (what samples come from); reconstructions use the trained encoder with it (off by
default: ``--ema 0.999`` gave digits-FID 7.6 and MAE 0.052, no gain).

>>> import gmcore as gm
>>> from gmcore.models.base import DataInfo
>>> _ = gm.manual_seed(0)
>>> m = VAEGAN(VAEGAN.Config(latent_dim=4, g_channels=4, d_channels=4, e_channels=4),
...            DataInfo((1, 8, 8), 17, "digits"))
>>> m.sample(2).shape, m.reconstruct(gm.rand(3, 1, 8, 8)).shape
(gmcore.Size([2, 1, 8, 8]), gmcore.Size([3, 1, 8, 8]))
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from ... import creation
from ... import functional as gf
from ...autograd import no_grad
from ...nn import gan as gan_losses
from ..base import DataInfo
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults
from ._nets import ConvDiscriminator

__all__ = ["VAEGAN", "VAEGANConfig", "kl_to_standard_normal", "feature_error"]

RECON_IMAGES = 32   # test digits shown in reconstructions.png (4 rows of 8, each with its reconstruction)


@dataclass
class VAEGANConfig(config_with_defaults("_VAEGANBase", arch="conv", latent_dim=32, d_norm="batch")):
    gamma: float = field(default=0.005, metadata={
        "help": "weight of the reconstruction error against the adversarial loss in the decoder's loss "
                "(the paper's gamma; its 1e-6 was for its own scale)", "min": 0.0})
    feature_sigma: float = field(default=0.1, metadata={
        "help": "standard deviation of the Gaussian of Dis_l(x) around Dis_l(x~) (the paper: 1)",
        "min": 1e-6})
    feature_layer: int = field(default=1, metadata={
        "help": "the discriminator's conv block whose activations are Dis_l (1 = the first; 0 = the last)",
        "min": 0})
    e_channels: int = field(default=64, metadata={"help": "conv encoder: channels of its first layer",
                                                  "min": 1})
    pixel_weight: float = field(default=0.0, metadata={
        "help": "weight of a pixel-space squared error added to the feature error "
                "(not in the paper; 0 = off)",
        "min": 0.0})
    prior_fakes: bool = field(default=True, metadata={
        "help": "prior samples Dec(z ~ N(0, I)) are fakes for the GAN loss beside the reconstructions"})


# GANConfig fields this model does not use: refused unless left at these values
_UNSUPPORTED = {"labels": "none", "n_critic": 1, "clip": 0.0, "feature_matching": False,
                "historical_weight": 0.0}


def kl_to_standard_normal(mu, logvar):
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` per example (B,), summed over the latent."""
    return (0.5 * (mu * mu + logvar.exp() - 1.0 - logvar)).sum(1)


def feature_error(target, features, sigma: float = 1.0):
    """``||target - features||^2 / (2 sigma^2)`` per example (B,): minus the log-density of
    ``target`` under N(features, sigma^2 I), constant dropped (the paper's L_llike^Dis_l with
    sigma 1; the pixel term on pixels)."""
    d = (target - features).reshape(target.shape[0], -1)
    return (d * d).sum(1) * (0.5 / sigma ** 2)


@contextlib.contextmanager
def _frozen(*modules):
    """The modules' weights take no gradient inside (what a loss backpropagates through them still
    reaches their inputs): the paper's limited error signals, and no wasted weight gradients."""
    params = [p for m in modules for p in m.parameters()]
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, w in zip(params, was):
            p.requires_grad_(w)


@register("vae-gan", family="gan", dataset="digits",
          description="VAE-GAN: a VAE whose reconstruction error is measured in a GAN "
                      "discriminator's features")
class VAEGAN(AdversarialModel):
    """See the module docstring."""

    Config = VAEGANConfig
    train_defaults = {**AdversarialModel.train_defaults, "steps": 2000}

    def __init__(self, config: VAEGANConfig, data: DataInfo):
        name = type(self).model_name
        if len(data.shape) != 3:
            raise ValueError(f"{name} models images, not {data.name or 'data'} of shape {tuple(data.shape)}")
        if config.arch == "mlp":
            raise ValueError(f"{name} uses convolutional networks: --arch mlp is not supported")
        for f, default in _UNSUPPORTED.items():
            if getattr(config, f) != default:
                raise ValueError(f"{name} does not support --{f.replace('_', '-')} (its three updates "
                                 f"per step are the paper's); leave it at {default}")
        super().__init__(config, data)
        c = config
        self.encoder = ConvDiscriminator(data.shape, c.e_channels, "batch", outputs=2 * c.latent_dim)
        if c.feature_layer > self.discriminator.blocks:
            raise ValueError(f"{name}: --feature-layer {c.feature_layer} does not exist: the discriminator "
                             f"has conv blocks 1..{self.discriminator.blocks} on {tuple(data.shape)} images "
                             "(0 = the last)")

    # ---- the training-loop contract (gmcore/models/base.py) --------------------------------------
    def configure_optimizers(self, tcfg) -> dict:
        return {"encoder": self.make_optimizer(self.encoder, tcfg.lr),
                "decoder": self.make_optimizer(self.generator, tcfg.lr),
                "discriminator": self.make_optimizer(self.discriminator, tcfg.lr * self.config.d_lr_mult)}

    def encode(self, x):
        """(mu, logvar) of q(z|x), each (B, latent_dim)."""
        out = self.encoder(x)
        return out[:, :self.config.latent_dim], out[:, self.config.latent_dim:]

    def reconstruct(self, x):
        """Dec(mu(x)): the reconstruction from the posterior mean."""
        return self.generate(self.encode(x)[0])

    def reconstruction_error(self, x, x_tilde, target=None):
        """L_rec per example (B,): the feature error at Dis_l (``target`` = Dis_l(x) when already
        computed) plus ``pixel_weight`` times the pixel error; (L_rec, feature error)."""
        c = self.config
        target = self.discriminator.features(x, c.feature_layer).detach() if target is None else target
        llike = feature_error(target, self.discriminator.features(x_tilde, c.feature_layer), c.feature_sigma)
        if c.pixel_weight:
            return llike + c.pixel_weight * feature_error(x, x_tilde), llike
        return llike, llike

    def training_step(self, batch, step) -> dict:
        """The encoder, the decoder and the discriminator each take one update from the same
        parameters (each update reads only values computed before the earlier ones stepped)."""
        c, x = self.config, batch[0]
        n = x.shape[0]
        with no_grad():     # the reconstruction target, a constant for the encoder and the decoder
            target = self.discriminator.features(x, c.feature_layer)
        # 1. encoder: L_prior + L_rec, through the decoder and Dis_l, whose weights stay out
        mu, logvar = self.encode(x)
        z = mu + (0.5 * logvar).exp() * creation.randn(*mu.shape, device=mu.device, dtype=mu.dtype)
        with _frozen(self.generator, self.discriminator):
            rec, llike = self.reconstruction_error(x, self.generate(z), target)
            kl = kl_to_standard_normal(mu, logvar).mean()
            e_loss = step.update("encoder", kl + rec.mean())
        # 2. decoder: gamma * L_rec + the generator's adversarial loss on x~ (and x_p)
        fakes = self.generate(z.detach())
        if c.prior_fakes:
            fakes = gf.cat([fakes, self.generate(self.noise(n))], 0)
        with _frozen(self.discriminator):
            out, feats = self.discriminator.forward_and_features(fakes, c.feature_layer)
            rec_d = feature_error(target, feats[:n], c.feature_sigma)
            if c.pixel_weight:
                rec_d = rec_d + c.pixel_weight * feature_error(x, fakes[:n])
            adv = gan_losses.generator_loss(out, c.loss)
            g_loss = step.update("decoder", c.gamma * rec_d.mean() + adv)
        # 3. discriminator: L_GAN, data against both kinds of fakes (penalties as the GANs')
        loss, logs = self.critic_loss(x, fakes.detach())
        d_loss = step.update("discriminator", loss)
        return {"e_loss": e_loss, "g_loss": g_loss, "d_loss": d_loss, "kl": kl.item(),
                "llike": llike.mean().item(), "g_adv": adv.item(), **logs}

    # ---- pictures ------------------------------------------------------------------------------
    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """``reconstructions.png`` (test digits, each row of 8 followed by its reconstruction from
        the posterior mean) and the pixel mean absolute error of the reconstructions over the whole
        test split (values in [0, 1]); ``{}`` without a test set."""
        if test_set is None:
            return {}
        from ...data import DataLoader
        from ...plots import save_image_grid

        dev = next(self.parameters()).device
        shown, total, count = [], 0.0, 0
        for batch in DataLoader(test_set, batch_size=256, device=dev):
            x = batch[0]
            rec = self.reconstruct(x)
            total += float((rec - x).abs().sum().item())
            count += x.numel()
            if not shown:
                for i in range(0, min(RECON_IMAGES, x.shape[0]), 8):
                    shown += [x[i:i + 8], rec[i:i + 8]]
        save_image_grid(gf.cat(shown, 0), Path(out_dir) / "reconstructions.png", nrow=8)
        return {"reconstructions_png": "reconstructions.png", "test_reconstruction_mae": total / count}
