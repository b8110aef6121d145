"""DCGAN (Radford, Metz & Chintala 2016, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks"): all-convolutional generator (transposed
convolutions, batch norm, ReLU) and discriminator (strided convolutions, batch norm except on
its first layer, LeakyReLU 0.2), Adam at 2e-4 with beta1 0.5, the non-saturating loss.

Differences: the generator ends in a sigmoid into gmcore's [0, 1] image range (the paper's tanh
targets [-1, 1]); it starts from a linear projection of z to the smallest grid (4x4 for 8x8
digits and 32x32 images, 7x7 for 28x28), one stride-2 stage per doubling, so the depth follows
the image size. On the 2-D toys it uses MLPs (no convolution there).
"""
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults

DCGANConfig = config_with_defaults("DCGANConfig", arch="auto")


@register("dcgan", family="gan", dataset="digits",
          description="DCGAN: convolutional generator and discriminator with batch norm, non-saturating loss")
class DCGAN(AdversarialModel):
    """See the module docstring."""

    Config = DCGANConfig
    config_defaults = {"points": {"latent_dim": 8, "hidden": 128}}
    train_defaults = {**AdversarialModel.train_defaults, "points": {"batch_size": 256, "steps": 3000}}
