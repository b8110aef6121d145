"""Sampling and evaluation options (the model contract's ``SampleOptions`` and ``EvalOptions``):
``gmcore sample RUN --flag value`` reaches ``model.sample(n, generator, **options)``, ``gmcore eval
RUN --flag value`` replaces that config field for the evaluation and is recorded beside the
figure, ``--help`` lists the run's options, and an unknown flag is refused in one line."""
import json

from dataclasses import dataclass, field

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.models.base import GenerativeModel
from gmcore.models import registry

pytest.importorskip("safetensors")


class Tempered(GenerativeModel):
    """Per-pixel means; samples scaled by a temperature (registered only while these tests run)."""

    @dataclass
    class Config:
        width: int = 1
        scale: float = 1.0     # an evaluation setting: EvalOptions below may replace it

    @dataclass
    class SampleOptions:
        temperature: float = field(default=1.0, metadata={"help": "scale of the samples", "min": 0.0})

    def __init__(self, config, data):
        super().__init__(config, data)
        self.mean = gm.nn.Parameter(gm.full(data.shape, 0.5))

    def loss(self, batch):
        loss = ((batch[0] - self.mean) ** 2).mean()
        return loss, {}

    @dataclass
    class EvalOptions:
        scale: float = field(default=1.0, metadata={"help": "multiplies the NLL", "min": 0.0})

    def nll(self, batch, generator=None):
        return ((batch[0] - self.mean) ** 2).reshape(batch[0].shape[0], -1).sum(1) * self.config.scale

    def sample(self, n, generator=None, temperature=1.0):
        return (self.mean * temperature).expand(n, *self.data.shape).clamp(0, 1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    registry.names()  # load the zoo first, then add the test model for this module only
    registry.register("test-tempered", family="test", dataset="digits", description="a test model")(Tempered)
    try:
        out = tmp_path_factory.mktemp("opts") / "run"
        assert cli.main(["train", "test-tempered", "--out", str(out), "--steps", "2", "--no-progress",
                         "--num-samples", "4", "--no-sample-quality"]) == 0
        yield out
    finally:
        registry._REGISTRY.pop("test-tempered", None)


def test_option_reaches_the_sampler(run, tmp_path):
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(run), "--n", "3", "--temperature", "0.5", "--out", str(out)]) == 0
    half = np.load(out)
    assert cli.main(["sample", str(run), "--n", "3", "--out", str(out)]) == 0   # the default, 1.0
    full = np.load(out)
    assert half.shape == full.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(half, full * 0.5, rtol=1e-6)


def test_help_lists_the_runs_options(run, capsys):
    assert cli.main(["sample", str(run), "--help"]) == 0
    out = capsys.readouterr().out
    assert "--temperature" in out and "sampling options of test-tempered" in out
    assert cli.main(["sample", "--help"]) == 0          # no run named: the common flags only
    assert "--temperature" not in capsys.readouterr().out


def test_unknown_or_bad_option_is_one_line(run, capsys):
    assert cli.main(["sample", str(run), "--temprature", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--temprature" in err and "--temperature" in err, err
    assert cli.main(["sample", str(run), "--temperature", "-1"]) == 2
    err = capsys.readouterr().err
    assert "temperature" in err and "Traceback" not in err, err


def test_models_without_options_refuse_extra_flags(tmp_path, capsys):
    out = tmp_path / "ppca"
    assert cli.main(["train", "ppca", "--out", str(out), "--no-progress", "--num-samples", "4",
                     "--no-sample-quality"]) == 0
    assert cli.main(["sample", str(out), "--temperature", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "has no sampling options" in err, err
    with pytest.raises(SystemExit) as exc:               # other commands: argparse's own error
        cli.main(["info", "--bogus"])
    assert exc.value.code == 2


def test_eval_option_reaches_nll_and_is_recorded(run, capsys):
    assert cli.main(["eval", str(run), "--no-sample-quality"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert cli.main(["eval", str(run), "--no-sample-quality", "--scale", "3"]) == 0
    scaled = json.loads(capsys.readouterr().out)
    assert scaled["scale"] == 3.0
    assert "scale" not in plain      # the run's own value, as in metrics.json
    assert scaled["test_nll_nats"] == pytest.approx(3 * plain["test_nll_nats"], rel=1e-6)
    assert cli.main(["eval", str(run), "--help"]) == 0
    assert "--scale" in capsys.readouterr().out
    assert cli.main(["eval", str(run), "--sclae", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--sclae" in err and "--scale" in err, err
    with pytest.raises(SystemExit):                      # no run named: argparse's usage error
        cli.main(["eval"])
