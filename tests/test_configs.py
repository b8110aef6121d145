"""gmcore.configs: dataclass configs as flags and TOML, with clear errors."""
import argparse
from dataclasses import dataclass, field

import pytest

from gmcore import configs


@dataclass
class C:
    steps: int = 10
    lr: float = 1e-3
    ema: bool = False
    decoder: str = field(default="a", metadata={"choices": ["a", "b"]})
    width: int = field(default=4, metadata={"min": 1})


def test_flags_override_defaults_and_only_given_ones():
    p = argparse.ArgumentParser()
    configs.add_dataclass_flags(p, C)
    ns = p.parse_args(["--steps", "3", "--ema", "--decoder", "b"])
    c = configs.from_namespace(C, ns)
    assert (c.steps, c.lr, c.ema, c.decoder) == (3, 1e-3, True, "b")
    base = C(lr=0.5)
    assert configs.from_namespace(C, p.parse_args(["--no-ema"]), base=base).lr == 0.5


def test_bad_values_are_named():
    with pytest.raises(configs.ConfigError, match="unknown option.*bogus"):
        configs.from_mapping(C, {"bogus": 1})
    with pytest.raises(configs.ConfigError, match="steps must be an integer"):
        configs.from_mapping(C, {"steps": "ten"})
    with pytest.raises(configs.ConfigError, match="decoder must be one of"):
        configs.from_mapping(C, {"decoder": "z"})
    with pytest.raises(configs.ConfigError, match="width must be >= 1"):
        configs.from_mapping(C, {"width": 0})
    assert configs.from_mapping(C, {"lr": 1}).lr == 1.0        # ints are fine for floats


def test_read_toml(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nsteps = 5\n[model]\nlatent_dim = 3\n")
    assert configs.read_toml(f) == {"train": {"steps": 5}, "model": {"latent_dim": 3}}
    f.write_text("[other]\nx = 1\n")
    with pytest.raises(configs.ConfigError, match="unknown table"):
        configs.read_toml(f)
    f.write_text("[train\n")
    with pytest.raises(configs.ConfigError, match="not valid TOML"):
        configs.read_toml(f)
    with pytest.raises(configs.ConfigError, match="does not exist"):
        configs.read_toml(tmp_path / "missing.toml")
