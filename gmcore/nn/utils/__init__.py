"""Training utilities (``torch.nn.utils``): gradient clipping."""
from .clip_grad import clip_grad_norm_, clip_grad_value_
from . import parametrize, parametrizations  # noqa: F401,E402

__all__ = ["clip_grad_norm_", "clip_grad_value_"]
