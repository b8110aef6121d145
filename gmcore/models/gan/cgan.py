"""Conditional GAN (Mirza & Osindero 2014, "Conditional Generative Adversarial Nets"): the class
label enters both networks, so the generator draws a chosen digit and the discriminator judges
(image, label) pairs: the generator sees z beside the one-hot label; the discriminator sees the
image beside one-hot label maps (a channel per class, constant over the image; for vectors, the
one-hot vector beside the input).

Differences: gmcore's DCGAN networks with the non-saturating loss (the paper used MLPs with
maxout, the label embedded by a hidden layer before joining). Samples drawn without labels cycle
through the classes, and the run reports how often the digits classifier
(:mod:`gmcore.feature_metrics`) reads each sample as its label (``label_accuracy``).
"""
from ..registry import register
from ._adversarial import AdversarialModel, ConditionalSampleOptions, config_with_defaults

CGANConfig = config_with_defaults("CGANConfig", labels="input")


@register("cgan", family="gan", dataset="digits",
          description="conditional GAN: the label enters the generator and the discriminator")
class CGAN(AdversarialModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> _ = gm.manual_seed(0)
    >>> m = CGAN(CGAN.Config(g_channels=4, d_channels=4), DataInfo((1, 8, 8), 17, "digits", num_classes=10))
    >>> m.sample(3, labels=gm.tensor([7, 7, 1])).shape
    gmcore.Size([3, 1, 8, 8])
    """

    Config = CGANConfig
    SampleOptions = ConditionalSampleOptions   # gmcore sample RUN --label 7
