"""Latent-variable models: VAE, probabilistic PCA, denoising and contractive autoencoders."""
from .vae import VAE  # noqa: F401
from .ppca import PPCA  # noqa: F401
from .autoencoders import DAE, CAE  # noqa: F401
