"""WGAN-GP (Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville 2017, "Improved Training of
Wasserstein GANs"): the Wasserstein critic kept 1-Lipschitz by a penalty
``lambda * (||grad C(x_hat)|| - 1)^2`` at points ``x_hat`` between a real and a generated
example, with one interpolation weight per example (gmcore.nn.gan.gradient_penalty, through the
double backward); lambda 10, five critic updates per generator update, Adam at 1e-4 with betas
(0, 0.9), and no batch norm in the critic (layer norm instead), all as the paper.

Differences: gmcore's DCGAN networks (the paper's ResNets were for CIFAR); MLPs on the toys,
with the toy settings of the authors' script (lambda 0.1, betas (0.5, 0.9)).
"""
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults

WGANGPConfig = config_with_defaults("WGANGPConfig", loss="wasserstein", gp_weight=10.0, n_critic=5,
                                    beta1=0.0, beta2=0.9, d_norm="layer")


@register("wgan-gp", family="gan", dataset="digits",
          description="WGAN-GP: Wasserstein critic with a gradient penalty (lambda 10), Adam (0, 0.9), "
                      "5 critic steps")
class WGANGP(AdversarialModel):
    """See the module docstring."""

    Config = WGANGPConfig
    # the toys: the settings of the paper's own toy script (gan_toy.py): lambda 0.1 ("smaller
    # lambda seems to help for toy tasks"), Adam betas (0.5, 0.9); wider MLPs. With lambda 10
    # and 128 units: 8/8 modes but 54% high-quality samples (bridges between the modes); with
    # these, 86%
    config_defaults = {"points": {"latent_dim": 8, "hidden": 256, "gp_weight": 0.1, "beta1": 0.5}}
    train_defaults = {**AdversarialModel.train_defaults, "lr": 1e-4,
                      "points": {"batch_size": 256, "steps": 3000}}
