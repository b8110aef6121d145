"""Registry of trainable models: name -> family, default data set, description, config class.

A model file registers its class with :func:`register`; the CLI (``gmcore models``, ``gmcore
train NAME``) looks names up here. Family packages are imported on first lookup, so importing
gmcore imports no model code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["ModelSpec", "register", "get", "names", "specs", "build"]

# Packages whose modules register models when imported (one per family).
_FAMILY_PACKAGES = ("gmcore.models.latent", "gmcore.models.autoregressive", "gmcore.models.flows",
                    "gmcore.models.gan", "gmcore.models.diffusion", "gmcore.models.score",
                    "gmcore.models.ebm")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    dataset: str
    description: str
    cls: type

    @property
    def config_cls(self) -> type:
        return self.cls.Config


_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False


def register(name: str, *, family: str, dataset: str, description: str):
    """Class decorator: ``@register("vae", family="latent", dataset="digits", description=...)``.

    The class must define a ``Config`` dataclass and follow :class:`gmcore.models.GenerativeModel`.
    """

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].cls.__name__}")
        if not hasattr(cls, "Config"):
            raise TypeError(f"{cls.__name__} needs a Config dataclass to be registered")
        _REGISTRY[name] = ModelSpec(name, family, dataset, description, cls)
        cls.model_name = name
        return cls

    return deco


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for pkg in _FAMILY_PACKAGES:
            importlib.import_module(pkg)
        _loaded = True


def specs() -> list[ModelSpec]:
    """Every registered model, sorted by family then name."""
    _load_all()
    return sorted(_REGISTRY.values(), key=lambda s: (s.family, s.name))


def names() -> list[str]:
    return [s.name for s in specs()]


def get(name: str) -> ModelSpec:
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(names())} "
                       "(gmcore models lists them)")
    return _REGISTRY[name]


def build(name: str, config=None, data_info=None):
    """Instantiate model ``name`` with ``config`` (default: its Config()) for ``data_info``."""
    spec = get(name)
    return spec.cls(config if config is not None else spec.config_cls(), data_info)
