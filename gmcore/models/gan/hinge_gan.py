"""Hinge GAN (Lim & Ye 2017, "Geometric GAN"; the loss of SN-GAN, SAGAN and BigGAN): the
discriminator minimises ``relu(1 - D(x)) + relu(1 + D(G(z)))``, a margin classifier, and the
generator ``-D(G(z))``.

Differences: gmcore's DCGAN networks with batch norm in the discriminator (spectral
normalisation, with which the loss is usually paired, comes with the modern GANs) and Adam
(2e-4, beta1 0.5); MLPs on the toys.
"""
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults

HingeGANConfig = config_with_defaults("HingeGANConfig", loss="hinge")


@register("hinge-gan", family="gan", dataset="digits",
          description="hinge-loss GAN (geometric GAN / SN-GAN loss) with DCGAN networks")
class HingeGAN(AdversarialModel):
    """See the module docstring."""

    Config = HingeGANConfig
    config_defaults = {"points": {"latent_dim": 8, "hidden": 128}}
    train_defaults = {**AdversarialModel.train_defaults, "points": {"batch_size": 256, "steps": 3000}}
