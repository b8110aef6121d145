"""SAGAN (Zhang, Goodfellow, Metaxas & Odena 2019, "Self-Attention Generative Adversarial
Networks"): spectral normalisation (Miyato et al. 2018) on every layer of both networks,
self-attention (:class:`gmcore.nn.SAGANSelfAttention`, gamma-gated, starting as the identity) in
both at one resolution, the hinge loss, and the two time-scale update rule (TTUR: the
discriminator's learning rate 4 times the generator's, Adam betas (0, 0.9), one discriminator
step per generator step). Class-conditional (``--class-cond``, the default on labelled data):
class-conditional batch norm in the generator and the projection discriminator (Miyato & Koyama
2018).

Differences: an EMA of the weights (``--ema 0.999``, BigGAN's) draws the samples; the rates are
2e-4 / 8e-4 by default (the paper's 1e-4 / 4e-4 is ``--lr 1e-4``): at 1e-4 the generator still
drew one blob for every class after 500 steps (digits-FID 290, label accuracy 0.18, with an
earlier discriminator), the class-conditional BN gains moving by at most the learning rate per
step. Small residual networks (:mod:`._sagan_nets`) sized for 8x8 digits (generator 2x2 -> 4x4
-> 8x8 with 128/64/32 channels, discriminator 8x8 -> 4x4 -> 4x4 with 64/128, its last block
without pooling as SN-GAN's, attention at 4x4 in both by default; 28x28 and 32x32 by the same
rule); nearest upsampling. The generator ends in a sigmoid into gmcore's [0, 1] range (the
paper's tanh targets [-1, 1]) and the discriminator maps its input to [-1, 1]: with 1-Lipschitz
layers its scores scale with the input; on [0, 1], and with a last pooling to 2x2, they stayed
within +-0.3 and the hinge d_loss near 1.9 of 2 (digits-FID 15.7 after 1500 steps; with the
unpooled last block d_loss 1.1-1.6 and FID 10.4 at step 1000). The
projections f, g, h map to C/8 channels and v back to C (the paper's section 3), without the
max-pooling of the released code (``SAGANSelfAttention(pool=True)``). Samples drawn without
labels cycle through the classes; the run reports their ``label_accuracy`` under the digits
classifier.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...nn import gan as gan_losses
from ..registry import register
from ._adversarial import AdversarialModel, ConditionalSampleOptions, config_with_defaults
from ._sagan_nets import ResNetDiscriminator, ResNetGenerator

__all__ = ["SAGAN", "SAGANConfig", "ResNetGAN"]

# the fields of GANConfig that the DCGAN/MLP networks read and these networks do not have
_UNUSED = {"arch": "auto", "labels": "none", "minibatch_kernels": 0, "vbn_reference": 0,
           "feature_matching": False, "d_norm": "none"}


@dataclass
class SAGANConfig(config_with_defaults("SAGANBaseConfig", loss="hinge", beta1=0.0, beta2=0.9, d_lr_mult=4.0,
                                       g_channels=32, d_channels=64, latent_dim=64, d_norm="none")):
    attention_res: int = field(default=4, metadata={
        "help": "self-attention after the block whose feature map has this side, in both networks "
                "(0 = none)", "min": 0})
    class_cond: bool = field(default=True, metadata={
        "help": "class-conditional batch norm in the generator and a projection discriminator "
                "(needs labelled data; --no-class-cond for unconditional)"})


class ResNetGAN(AdversarialModel):
    """What SAGAN and BigGAN share: the residual networks with spectral norm and attention in
    place of the DCGAN ones, the labels entering through conditional BN and the projection."""

    generator_norm = "class"   # what the generator's BN is conditioned on when class-conditional

    def _build_networks(self) -> None:
        c, data = self.config, self.data
        for name, default in _UNUSED.items():
            if getattr(c, name) != default:
                raise ValueError(f"{self.model_name}: --{name.replace('_', '-')} is not used by its residual "
                                 f"networks (keep {default!r}; class conditioning is --class-cond)")
        if len(data.shape) != 3:
            raise ValueError(f"{self.model_name} models images, not {data.name or 'data'} of shape "
                             f"{tuple(data.shape)}")
        if self.conditional:
            if int(data.num_classes) < 2:
                raise ValueError(f"{self.model_name} is class-conditional: it needs a data set with class "
                                 f"labels; {data.name or 'this one'} has none (use --no-class-cond)")
            self.num_classes = int(data.num_classes)
        self.generator = self._generator()
        self.discriminator = ResNetDiscriminator(data.shape, c.d_channels, self.num_classes, c.attention_res)

    @property
    def conditional(self) -> bool:
        return bool(self.config.class_cond)

    def _generator(self):
        c = self.config
        return ResNetGenerator(c.latent_dim, self.data.shape, c.g_channels,
                               norm=self.generator_norm if self.num_classes else "none",
                               num_classes=self.num_classes, attention_res=c.attention_res)

    @property
    def _conv(self) -> bool:
        return True

    def generate(self, z, labels=None):
        return self.generator(z, labels)

    def discriminate(self, x, labels=None):
        return self.discriminator(x, labels), None

    def features(self, x, labels=None):
        raise ValueError(f"{self.model_name}: feature matching is not available with these networks")

    def critic_loss(self, real, fake, real_labels=None, fake_labels=None):
        """As :meth:`AdversarialModel.critic_loss`, but real and fake go through the
        discriminator as one batch when nothing else needs them apart: it has no batch norm to
        mix their statistics, and one pass halves the discriminator step's per-op overhead (its
        spectral norms then take one power iteration per step, not two)."""
        c = self.config
        if c.gp_weight or c.r1_weight or c.historical_weight:
            return super().critic_loss(real, fake, real_labels, fake_labels)
        from ... import functional as gf

        n = real.shape[0]
        labels = gf.cat([real_labels, fake_labels], 0) if self.num_classes else None
        out = self.discriminator(gf.cat([real, fake.to(real.dtype)], 0), labels)
        return gan_losses.discriminator_loss(out[:n], out[n:], c.loss, real_label=c.real_label), {}


@register("sagan", family="gan", dataset="digits",
          description="SAGAN: spectral norm, self-attention, hinge loss, TTUR; conditional BN + projection D")
class SAGAN(ResNetGAN):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> _ = gm.manual_seed(0)
    >>> m = SAGAN(SAGAN.Config(g_channels=4, d_channels=4), DataInfo((1, 8, 8), 17, "digits", num_classes=10))
    >>> m.sample(3, labels=gm.tensor([7, 7, 1])).shape
    gmcore.Size([3, 1, 8, 8])
    """

    Config = SAGANConfig
    SampleOptions = ConditionalSampleOptions   # gmcore sample RUN --label 7
    # the EMA of the weights (BigGAN's; not in SAGAN's paper): without it the digits-FID swung
    # between steps (10.4 at step 1000, 13.1 at 1500 in one run); with it 11.1 at 1000 steps,
    # 8.6 at 1500 (batch 128 for 1000 steps: 13.3)
    train_defaults = {**AdversarialModel.train_defaults, "lr": 2e-4, "steps": 1500, "ema": 0.999}
