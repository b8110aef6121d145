"""Dataclass configs as command-line flags and TOML files, with clear errors.

A config is a ``@dataclass`` whose fields have defaults; ``field(metadata={"help": ...,
"choices": [...]})`` adds help text and allowed values. :func:`add_dataclass_flags` turns the
fields into ``--kebab-case`` flags (booleans get ``--flag`` / ``--no-flag``);
:func:`from_mapping` builds a config from a dict (e.g. a TOML table), rejecting unknown keys and
values of the wrong type.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class C:
...     steps: int = 10
...     decoder: str = field(default="bernoulli", metadata={"choices": ["bernoulli", "gaussian"]})
>>> from_mapping(C, {"steps": 3}).steps
3
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Mapping

__all__ = ["add_dataclass_flags", "from_namespace", "from_mapping", "to_dict", "ConfigError", "read_toml",
           "int_list"]


class ConfigError(ValueError):
    """A configuration value or key is wrong (the message names it)."""


def _field_type(cls, f) -> type:
    hints = typing.get_type_hints(cls)
    t = hints.get(f.name, f.type)
    origin = typing.get_origin(t)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(t) if a is not type(None)]
        t = args[0] if len(args) == 1 else str
    return t if t in (int, float, str, bool) else str


def _check_value(cls, f, value, source: str):
    t = _field_type(cls, f)
    if t is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {f.name} must be true or false, got {value!r}")
    elif t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {f.name} must be an integer, got {value!r}")
    elif t is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {f.name} must be a number, got {value!r}")
        value = float(value)
    elif t is str and not isinstance(value, str):
        raise ConfigError(f"{source}: {f.name} must be a string, got {value!r}")
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{source}: {f.name} must be one of {list(choices)}, got {value!r}")
    low = f.metadata.get("min")
    if low is not None and value < low:
        raise ConfigError(f"{source}: {f.name} must be >= {low}, got {value!r}")
    return value


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, title: str | None = None) -> None:
    """Add one flag per field of dataclass ``cls`` (defaults left unset, so that a TOML file's
    values can sit between the dataclass default and the command line)."""
    group = parser.add_argument_group(title or cls.__name__)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        t = _field_type(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "") + f" (default: {default!r})"
        if t is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=t, default=None, choices=f.metadata.get("choices"),
                               metavar=f.name.upper() if not f.metadata.get("choices") else None,
                               help=help_text)


def from_mapping(cls, values: Mapping[str, Any], source: str = "config", base=None):
    """``cls`` built from ``base`` (or the defaults) updated by ``values``; unknown keys and
    ill-typed values raise :class:`ConfigError` naming them."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)} for {cls.__name__}; "
                          f"known: {', '.join(sorted(names))}")
    current = to_dict(base) if base is not None else {}
    for k, v in values.items():
        current[k] = _check_value(cls, names[k], v, source)
    try:
        return cls(**current)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def from_namespace(cls, ns: argparse.Namespace, base=None):
    """``base`` (or the defaults) updated by the flags of ``cls`` that were given on the command line."""
    given = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)
             if getattr(ns, f.name, None) is not None}
    return from_mapping(cls, given, source="command line", base=base)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def read_toml(path) -> dict:
    """Parse a TOML file (``[train]`` and ``[model]`` tables) with a clear error on failure."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as exc:
            raise ConfigError("reading --config TOML files needs Python 3.11+ or the tomli package") from exc
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"train", "model"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown table(s) {', '.join(unknown)} "
                          "(expected [train] and [model])")
    return data


def int_list(text: str, flag: str, owner: str) -> tuple:
    """A comma-separated string field ("1,2,2") as a tuple of ints; a bad one is a ValueError
    naming ``owner`` (the model) and its ``--flag``.

    >>> int_list("1, 2,2", "channel-mult", "ddpm")
    (1, 2, 2)
    """
    try:
        return tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise ValueError(f"{owner}: --{flag} must be comma-separated integers, got {text!r}") from None
