"""Training utilities (``torch.nn.utils``): gradient clipping."""
from .clip_grad import clip_grad_norm_, clip_grad_value_
from . import parametrize, parametrizations  # noqa: F401,E402
from .spectral_norm import spectral_norm, remove_spectral_norm  # noqa: E402  (torch's hook form)

__all__ = ["clip_grad_norm_", "clip_grad_value_", "spectral_norm", "remove_spectral_norm"]
