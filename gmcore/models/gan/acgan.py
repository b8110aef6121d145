"""AC-GAN (Odena, Olah & Shlens 2017, "Conditional Image Synthesis with Auxiliary Classifier
GANs"): the generator takes the class label with z; the discriminator sees the image alone and
has two heads, real-or-fake and a classifier over the classes. The discriminator maximises the
log-likelihood of the right source and of the right class (on data and on samples), the
generator the right class while fooling the source head.

Differences: gmcore's DCGAN networks; the class terms weighted by ``--aux-weight`` (1 as the
paper). Samples drawn without labels cycle through the classes; the run reports their
``label_accuracy`` under the digits classifier.
"""
from ..registry import register
from ._adversarial import AdversarialModel, ConditionalSampleOptions, config_with_defaults

ACGANConfig = config_with_defaults("ACGANConfig", labels="auxiliary")


@register("acgan", family="gan", dataset="digits",
          description="AC-GAN: class-conditional generator, discriminator with an auxiliary classifier")
class ACGAN(AdversarialModel):
    """See the module docstring."""

    Config = ACGANConfig
    SampleOptions = ConditionalSampleOptions   # gmcore sample RUN --label 7
