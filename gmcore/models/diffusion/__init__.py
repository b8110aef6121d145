"""Diffusion models (Ho et al. 2020, Nichol & Dhariwal 2021, Song et al. 2021 ...).

The network and the process math live apart, as in improved-diffusion:

* ``unet.py``: :class:`~gmcore.models.diffusion.unet.UNet`, the noise-prediction network
  (residual blocks with GroupNorm and SiLU, sinusoidal time embedding, optional class
  embedding with a null row for classifier-free guidance, self-attention at chosen
  resolutions);
* ``gaussian_diffusion.py``: the forward process, the losses and the samplers, which see the
  network only as a function ``model_fn(x_t, t)``;
* ``ddpm.py``: the registered model (config, EMA, sampling options, pictures).
"""

from .ddpm import DDPM  # noqa: F401,E402  (registers ddpm)
from .bit_diffusion import BitDiffusion  # noqa: F401,E402  (registers bit-diffusion)
from .latent_diffusion import LatentDiffusion  # noqa: F401,E402  (registers latent-diffusion)
from .noisy_classifier import NoisyClassifier  # noqa: F401,E402  (registers noisy-classifier)
from .glide_core import GlideCore  # noqa: F401,E402  (registers glide-core)
