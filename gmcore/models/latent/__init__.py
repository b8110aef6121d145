"""Latent-variable models: VAE, VQ-VAE, probabilistic PCA, denoising and contractive autoencoders."""
from .vae import VAE  # noqa: F401
from .ppca import PPCA  # noqa: F401
from .autoencoders import DAE, CAE  # noqa: F401
from .vqvae import VQVAE  # noqa: F401
from .vqvae2 import VQVAE2  # noqa: F401
from .vq_prior import VQPrior  # noqa: F401
from .delta_vae import DeltaVAE  # noqa: F401
