"""GAN (Goodfellow et al. 2014, "Generative Adversarial Nets"): a generator and a discriminator
playing the minimax game: MLPs on vectors (the 2-D toys), the DCGAN convolutions on images (so
on images it is ``dcgan`` with a choice of loss; ``--arch mlp`` gives the paper's kind of
network, MLPs over the flattened image, which collapse on the digits: digits-FID 481 with the
non-saturating loss, 534 with minimax, 433 with minibatch discrimination, measured 2026-12-07).

``--loss minimax`` trains the generator on the game's value as written, minimising
log(1 - D(G(z))), whose gradient vanishes while the discriminator wins (early in training);
``--loss nonsaturating`` (the default) maximises log D(G(z)) instead, the paper's own
suggestion. Differences from the paper: ReLU / LeakyReLU MLPs instead of maxout units with
dropout (and convolutions on images), and Adam (beta1 0.5) instead of SGD with momentum. No likelihood: figures come from
samples (digits-FID on digits; mode coverage and energy distance on the 2-D toys).
"""
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults

GANModelConfig = config_with_defaults("GANModelConfig")


@register("gan", family="gan", dataset="digits",
          description="GAN (Goodfellow 2014): --loss minimax|nonsaturating; MLPs on vectors, DCGAN convs on images")
class GAN(AdversarialModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> _ = gm.manual_seed(0)
    >>> model = GAN(GAN.Config(hidden=16, layers=1, latent_dim=4), DataInfo((2,), 0, "moons"))
    >>> model.sample(5).shape, model.nll_kind
    (gmcore.Size([5, 2]), 'none')
    """

    Config = GANModelConfig
    config_defaults = {"points": {"latent_dim": 8, "hidden": 128}}
    train_defaults = {**AdversarialModel.train_defaults, "points": {"batch_size": 256, "steps": 3000}}
