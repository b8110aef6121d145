"""WGAN (Arjovsky, Chintala & Bottou 2017, "Wasserstein GAN"): the critic estimates the
Wasserstein-1 distance, ``E C(x) - E C(G(z))``, kept Lipschitz by clipping its weights to
[-0.01, 0.01] after every update; five critic updates (each on a fresh batch) per generator
update; RMSprop at 5e-5, as the paper.

Differences: gmcore's DCGAN networks (the paper also used a DCGAN); on the 2-D toys, MLPs.
"""
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults

WGANConfig = config_with_defaults("WGANConfig", loss="wasserstein", optimizer="rmsprop", clip=0.01,
                                  n_critic=5)


@register("wgan", family="gan", dataset="digits",
          description="WGAN: Wasserstein critic with weight clipping, RMSprop, 5 critic steps per generator step")
class WGAN(AdversarialModel):
    """See the module docstring."""

    Config = WGANConfig
    config_defaults = {"points": {"latent_dim": 8, "hidden": 128}}
    train_defaults = {**AdversarialModel.train_defaults, "lr": 5e-5,
                      "points": {"batch_size": 256, "steps": 3000}}
