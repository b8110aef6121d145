"""LSGAN (Mao, Li, Xie, Lau, Wang & Smolley 2017, "Least Squares Generative Adversarial
Networks"): the discriminator regresses real examples to 1 and generated ones to 0, the
generator pushes its samples' scores to 1 (the a-b-c = 0-1-1 coding), which penalises samples
far on the right side of the boundary and keeps gradients alive where the sigmoid saturates.

Differences: gmcore's DCGAN networks and Adam (2e-4, beta1 0.5); MLPs on the toys.
"""
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults

LSGANConfig = config_with_defaults("LSGANConfig", loss="least_squares")


@register("lsgan", family="gan", dataset="digits",
          description="LSGAN: least-squares discriminator and generator losses (0-1-1 coding)")
class LSGAN(AdversarialModel):
    """See the module docstring."""

    Config = LSGANConfig
    config_defaults = {"points": {"latent_dim": 8, "hidden": 128}}
    train_defaults = {**AdversarialModel.train_defaults, "points": {"batch_size": 256, "steps": 3000}}
