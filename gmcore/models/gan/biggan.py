"""BigGAN core (Brock, Donahue & Simonyan 2019, "Large Scale GAN Training for High Fidelity
Natural Image Synthesis"): class-conditional batch norm whose gains and biases are linear maps of
a *shared* class embedding concatenated with a chunk of z (the hierarchical latent: z is split
into one chunk for the first linear layer and one per generator block), orthogonal
regularisation of the generator's weights (beta 1e-4, :func:`gmcore.nn.gan.orthogonal_regularization`,
the off-diagonal form), the hinge loss, spectral norm in both networks, a projection
discriminator, self-attention, an EMA of the generator's weights (``--ema``, 0.999 by default)
and the truncation trick.

Truncation (``gmcore sample RUN --truncation T``): as the paper, by *resampling*: every entry of
z with ``|z| > T`` is drawn again until none is (a normal truncated to [-T, T]); T = 0 is off.
A run reports digits-FID, precision/recall and label accuracy at T in {0.5, 0.7, 1.0} under
``truncation`` in metrics.json, and ``truncation.png`` (a row per T, then untruncated).

Differences: the residual networks of :mod:`._sagan_nets` sized for 8x8 digits (two generator
blocks from 2x2, so z splits into three chunks; shared embedding of 32; not BigGAN-deep); one
discriminator step per generator step at ``sagan``'s rates (2e-4 / 8e-4, Adam betas (0, 0.9), which train in minutes here, where the paper
took two D steps at 1e-4 / 4e-4 at 128x128, betas (0, 0.999)); the EMA starts at the first step
(warmed up; the paper's after 20k) and keeps the live model's BN statistics (no "standing
statistics"); the generator's sigmoid into [0, 1] (the paper's tanh), the discriminator's input
mapped to [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...nn import gan as gan_losses
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults, truncation_options
from ._sagan_nets import ResNetGenerator
from .sagan import ResNetGAN

__all__ = ["BigGAN", "BigGANConfig"]


@dataclass
class BigGANConfig(config_with_defaults("BigGANBaseConfig", loss="hinge", beta1=0.0, beta2=0.9, d_lr_mult=4.0,
                                        g_channels=32, d_channels=64, latent_dim=60, d_norm="none")):
    attention_res: int = field(default=4, metadata={
        "help": "self-attention after the block whose feature map has this side, in both networks "
                "(0 = none)", "min": 0})
    shared_dim: int = field(default=32, metadata={
        "help": "size of the shared class embedding (concatenated with each block's chunk of z)",
        "min": 1})
    ortho_weight: float = field(default=1e-4, metadata={
        "help": "orthogonal regularisation of the generator's weights, beta (0 = off)", "min": 0.0})


@register("biggan", family="gan", dataset="digits",
          description="BigGAN core: shared-embedding conditional BN, hierarchical z, orthogonal reg., truncation")
class BigGAN(ResNetGAN):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> _ = gm.manual_seed(0)
    >>> m = BigGAN(BigGAN.Config(g_channels=4, d_channels=4), DataInfo((1, 8, 8), 17, "digits", num_classes=10))
    >>> m.generator.chunks                 # z of 60 split across the first layer and the 2 blocks
    [20, 20, 20]
    >>> m.sample(3, labels=gm.tensor([7, 7, 1]), truncation=0.5).shape
    gmcore.Size([3, 1, 8, 8])
    """

    Config = BigGANConfig
    truncation = "threshold"
    SampleOptions = truncation_options("threshold", conditional=True)   # --label 7 --truncation 0.5
    train_defaults = {**AdversarialModel.train_defaults, "lr": 2e-4, "steps": 1000, "ema": 0.999}

    @property
    def conditional(self) -> bool:
        return True   # BigGAN is class-conditional by construction

    def _generator(self):
        c = self.config
        return ResNetGenerator(c.latent_dim, self.data.shape, c.g_channels, norm="hierarchical",
                               num_classes=self.num_classes, shared_dim=c.shared_dim,
                               attention_res=c.attention_res)

    def generator_loss(self, n: int, real=None, real_labels=None):
        loss, logs = super().generator_loss(n, real, real_labels)
        if self.config.ortho_weight:
            ortho = gan_losses.orthogonal_regularization(self.generator, exclude=self.generator.shared.parameters())
            loss = loss + self.config.ortho_weight * ortho
            logs["ortho"] = ortho.item()
        return loss, logs
