"""Generative adversarial networks (no likelihood: ``nll_kind`` "none"; figures from samples).
Importing this package registers them for ``gmcore train``. What they share (networks, the
adversarial step, penalties, optimizers) is in ``_adversarial.AdversarialModel``; each model
file gives its defaults."""
from .acgan import ACGAN  # noqa: F401
from .bigan import BiGAN  # noqa: F401
from .biggan import BigGAN  # noqa: F401
from .cgan import CGAN  # noqa: F401
from .cyclegan import CycleGAN  # noqa: F401
from .dcgan import DCGAN  # noqa: F401
from .gan import GAN  # noqa: F401
from .hinge_gan import HingeGAN  # noqa: F401
from .infogan import InfoGAN  # noqa: F401
from .lsgan import LSGAN  # noqa: F401
from .progan import ProGAN  # noqa: F401
from .sagan import SAGAN  # noqa: F401
from .stylegan import StyleGAN  # noqa: F401
from .vae_gan import VAEGAN  # noqa: F401
from .wavegan import WaveGAN  # noqa: F401
from .wgan import WGAN  # noqa: F401
from .wgan_gp import WGANGP  # noqa: F401
