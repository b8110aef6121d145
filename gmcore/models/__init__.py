"""The model zoo: one model per file, grouped by family, and the registry the CLI reads.

>>> import gmcore.models as zoo
>>> spec = zoo.get("vae")
>>> spec.family, spec.dataset
('latent', 'digits')
"""
from .registry import ModelSpec, get, names, register, specs, build  # noqa: F401
from .base import GenerativeModel  # noqa: F401
