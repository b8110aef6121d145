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


# ---- a model's own defaults, per kind of data and per data set (gmcore.cli_train) ------------

def test_model_defaults_sections_override_by_kind_then_data_set():
    from gmcore.cli_train import model_defaults

    d = {"steps": 1000, "lr": 1e-3, "points": {"steps": 4000, "ema": 0.99},
         "8gaussians": {"lr": 5e-4}, "image": {"batch_size": 32}}
    assert model_defaults(d, "digits") == {"steps": 1000, "lr": 1e-3, "batch_size": 32}
    assert model_defaults(d, "moons") == {"steps": 4000, "lr": 1e-3, "ema": 0.99}
    assert model_defaults(d, "8gaussians") == {"steps": 4000, "lr": 5e-4, "ema": 0.99}
    assert model_defaults({}, "moons") == {} and model_defaults(None, "moons") == {}
    with pytest.raises(configs.ConfigError, match="'pointz' names neither"):
        model_defaults({"pointz": {"steps": 1}}, "moons")
    with pytest.raises(configs.ConfigError, match="may not set the data set"):
        model_defaults({"points": {"dataset": "moons"}}, "moons")


def test_cli_applies_the_defaults_of_the_chosen_data_below_toml_and_flags(tmp_path, monkeypatch):
    from gmcore import models
    from gmcore.cli_train import parse_train_args

    cls = models.get("maf").cls
    monkeypatch.setattr(cls, "train_defaults", {"steps": 1000, "lr": 1e-3,
                                                "points": {"steps": 4000, "batch_size": 256},
                                                "checkerboard": {"steps": 5000}})
    monkeypatch.setattr(cls, "config_defaults", {"points": {"layers": 9, "hidden": 48}},
                        raising=False)
    from gmcore.cli_train import _defaults_epilog            # --help shows them
    assert "on points data: steps=4000, batch_size=256" in _defaults_epilog(cls)
    assert "on checkerboard: steps=5000" in _defaults_epilog(cls)
    _, t, m = parse_train_args("maf", [])                     # maf's default data: digits
    assert (t.steps, t.batch_size, m.layers) == (1000, 64, cls.Config().layers)
    _, t, m = parse_train_args("maf", ["--dataset", "moons"])
    assert (t.steps, t.batch_size, t.lr, m.layers, m.hidden) == (4000, 256, 1e-3, 9, 48)
    _, t, m = parse_train_args("maf", ["--dataset", "checkerboard", "--hidden", "20"])
    assert (t.steps, t.batch_size, m.layers, m.hidden) == (5000, 256, 9, 20)
    f = tmp_path / "c.toml"                                   # the data set chosen in TOML
    f.write_text('[train]\ndataset = "moons"\nsteps = 7\n[model]\nlayers = 3\n')
    _, t, m = parse_train_args("maf", ["--config", str(f)])
    assert (t.dataset, t.steps, t.batch_size, m.layers, m.hidden) == ("moons", 7, 256, 3, 48)
    _, t, m = parse_train_args("maf", ["--config", str(f), "--dataset", "digits"])
    assert (t.steps, t.batch_size, m.layers, m.hidden) == (7, 64, 3, cls.Config().hidden)
    monkeypatch.setattr(cls, "config_defaults", {"points": {"layerz": 9}}, raising=False)
    with pytest.raises(SystemExit):                           # a typo is refused, named
        parse_train_args("maf", ["--dataset", "moons"])


def test_every_models_own_defaults_are_valid_for_every_data_set():
    """A typo in a model's train_defaults / config_defaults (a field, a section name) fails here,
    not in a user's run."""
    from gmcore import models
    from gmcore.cli_train import model_defaults
    from gmcore.data.registry import DATASETS
    from gmcore.train import TrainConfig

    for spec in models.specs():
        for data in DATASETS:
            for attr, cls in (("train_defaults", TrainConfig), ("config_defaults", spec.config_cls)):
                vals = model_defaults(getattr(spec.cls, attr, {}), data, f"{spec.name}.{attr}")
                configs.from_mapping(cls, vals, source=f"{spec.name}.{attr}")
