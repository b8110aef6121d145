"""The two-stage mechanism (``--base-run``): loading a finished run frozen, recording its
identity, self-contained checkpoints, clear errors, and exact resume of a second stage.

The second stage here is a test model, an independent categorical prior per code position
(small enough to train in a few steps), registered for these tests only; ``vq-prior`` has its
own tests of what it models."""
import hashlib
import json
import shutil
from dataclasses import dataclass, field

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import nn, train
from gmcore.cli import main
from gmcore.cli_train import parse_train_args
from gmcore.models import registry
from gmcore.models.base import GenerativeModel

from resume_checks import check_crash_resume

quiet = lambda *a: None  # noqa: E731
TINY_VQ = ["--codes", "8", "--code-dim", "4", "--hidden", "8", "--res-hidden", "4", "--res-blocks", "1",
           "--downsample", "1"]


@dataclass
class CodePriorConfig:
    base_run: str = field(default="", metadata={"help": "the VQ run whose codes this prior models"})


class CodePrior(GenerativeModel):
    """-log p(z) with an independent categorical per code position and level."""

    Config = CodePriorConfig
    base_kinds = ("vq-codes",)
    nll_kind = "bound (test prior)"
    train_defaults = {"steps": 4, "batch_size": 32, "eval_every": 0, "num_samples": 4,
                      "sample_quality": False, "progress": False}

    def __init__(self, config, data, base=None):
        super().__init__(config, data, base)
        self.levels = self.base.code_levels
        for i, (k, h, w) in enumerate(self.levels):
            setattr(self, f"logits{i}", nn.Parameter(gm.zeros(k, h, w)))

    def prior_nll(self, codes):
        total = 0.0
        for i, c in enumerate(codes):
            logits = getattr(self, f"logits{i}")
            logits = logits.unsqueeze(0).expand(c.shape[0], *logits.shape)
            total = total + F.cross_entropy(logits, c, reduction="none").sum((1, 2))
        return total

    def loss(self, batch):
        nats = self.prior_nll(batch[-len(self.levels):]).mean()
        return nats, {"prior": nats.item()}

    def nll(self, batch, generator=None):
        codes = batch[-len(self.levels):]
        return self.prior_nll(codes) + self.base.recon_nll(batch[0], codes)

    def prepare_data(self, dataset):
        from gmcore.models.stages import encode_dataset
        return encode_dataset(self.base, dataset)

    def sample(self, n, generator=None):
        codes = []
        for i, (k, h, w) in enumerate(self.levels):
            g = gm.rand(n, k, h, w, generator=generator).clamp(1e-9, 1.0).log().neg().log().neg()
            codes.append((getattr(self, f"logits{i}").unsqueeze(0) + g).argmax(1))
        return self.base.decode(tuple(codes))


@pytest.fixture(autouse=True)
def code_prior_model():
    registry.register("test-code-prior", family="test", dataset="digits",
                      description="a test second stage")(CodePrior)
    try:
        yield
    finally:
        registry._REGISTRY.pop("test-code-prior", None)


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """A finished (tiny) vqvae run on the digits."""
    out = tmp_path_factory.mktemp("vq") / "vqvae"
    name, tcfg, mcfg = parse_train_args("vqvae", ["--out", str(out), "--steps", "3", "--batch-size", "32",
                                                  "--eval-every", "0", "--num-samples", "0",
                                                  "--no-sample-quality", "--no-progress", "--ema", "0.9",
                                                  *TINY_VQ])
    train.train(name, tcfg, mcfg, log=quiet)
    return out


def _train_prior(out, base, *flags):
    name, tcfg, mcfg = parse_train_args("test-code-prior", ["--out", str(out), "--base-run", str(base), *flags])
    return train.train(name, tcfg, mcfg, log=quiet)


def test_second_stage_trains_on_frozen_base_and_records_it(tmp_path, vq_run):
    base_state = gm.io.load_checkpoint(vq_run / "last")
    res = _train_prior(tmp_path / "prior", vq_run)
    assert res["nll_kind"] == "bound (test prior)" and res["step"] == 4
    cfg = json.loads((tmp_path / "prior" / "config.json").read_text())
    ident = cfg["base_run"]
    assert ident["run"] == str(vq_run) and ident["model_name"] == "vqvae" and ident["step"] == 3
    assert ident["checkpoint_sha256"] == hashlib.sha256((vq_run / "last.safetensors").read_bytes()).hexdigest()
    assert ident["ema"] is True
    # the base's weights were not trained: they are the base run's EMA weights, saved in the prior's
    # checkpoint; its optimizer holds only the prior's own parameters
    state = gm.io.load_checkpoint(tmp_path / "prior" / "last")
    base_model, _ = train.load_run_model(vq_run / "last")
    for k, v in base_model.state_dict().items():
        np.testing.assert_array_equal(state["model"]["base." + k].numpy(), v.numpy())
    assert not np.array_equal(state["model"]["base.encoder.0.weight"].numpy(),
                              base_state["model"]["encoder.0.weight"].numpy())   # EMA, not the raw ones
    assert [len(g["params"]) for g in state["optimizers"]["main"]["param_groups"]] == [1]


def test_base_stays_frozen_and_in_eval_mode(vq_run):
    base, _ = train.load_run_model(vq_run / "last")
    model = CodePrior(CodePriorConfig(), base.data, base=base)
    model.train()
    assert model.training and not model.base.training
    assert all(not p.requires_grad for p in model.base.parameters())
    assert [p.requires_grad for p in model.parameters()] .count(True) == 1


def test_second_stage_checkpoint_is_self_contained(tmp_path, vq_run, capsys):
    base = tmp_path / "base"
    shutil.copytree(vq_run, base)
    out = tmp_path / "prior"
    res = _train_prior(out, base)
    shutil.rmtree(base)   # sampling and evaluation never read the base run again
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 1, 8, 8)
    capsys.readouterr()
    assert main(["eval", str(out), "--no-sample-quality"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["test_bits"] == res["test_bits"]


def test_second_stage_resumes_bit_for_bit(tmp_path, monkeypatch, vq_run):
    check_crash_resume(tmp_path, monkeypatch, "test-code-prior", CodePrior,
                       ["--base-run", str(vq_run), "--no-progress", "--eval-every", "0", "--num-samples", "0"],
                       steps=6, ckpt_every=3, crash_at=5)


def test_resume_keeps_the_base_it_started_with(tmp_path, vq_run):
    base = tmp_path / "base"
    shutil.copytree(vq_run, base)
    out = tmp_path / "prior"
    _train_prior(out, base, "--steps", "2")
    first = gm.io.load_checkpoint(out / "last")["model"]["base.encoder.0.weight"].numpy()
    # the base run trains on: its checkpoint changes
    name, tcfg, mcfg = parse_train_args("vqvae", ["--out", str(base), "--resume", "--steps", "5", "--batch-size", "32",
                                                  "--no-progress", "--eval-every", "0", "--num-samples", "0",
                                                  "--no-sample-quality", "--ema", "0.9", *TINY_VQ])
    train.train(name, tcfg, mcfg, log=quiet)
    lines = []
    name, tcfg, mcfg = parse_train_args("test-code-prior", ["--out", str(out), "--base-run", str(base),
                                                            "--resume", "--steps", "4"])
    train.train(name, tcfg, mcfg, log=lines.append)
    assert any("has changed since this run started" in line for line in lines)
    np.testing.assert_array_equal(gm.io.load_checkpoint(out / "last")["model"]["base.encoder.0.weight"].numpy(),
                                  first)


def test_missing_base_run_is_named(tmp_path):
    name, tcfg, mcfg = parse_train_args("test-code-prior", ["--out", str(tmp_path / "p")])
    with pytest.raises(ValueError, match="--base-run RUN"):
        train.train(name, tcfg, mcfg, log=quiet)
    with pytest.raises(FileNotFoundError, match=r"--base-run .*nowhere: no such run folder"):
        _train_prior(tmp_path / "p", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no finished run there"):
        _train_prior(tmp_path / "p", tmp_path / "empty")


def test_base_run_of_the_wrong_kind_is_named(tmp_path):
    made = tmp_path / "made"
    name, tcfg, mcfg = parse_train_args("made", ["--out", str(made), "--steps", "1", "--no-progress",
                                                 "--eval-every", "0", "--num-samples", "0",
                                                 "--no-sample-quality"])
    train.train(name, tcfg, mcfg, log=quiet)
    with pytest.raises(ValueError, match=r"--base-run .*made: .*'vq-codes' latents; a 'made' model has no "
                                         "latents a second stage can use"):
        _train_prior(tmp_path / "p", made)


def test_second_stage_refuses_another_data_set(tmp_path, vq_run):
    with pytest.raises(ValueError, match="trained on 'digits'; a second stage trains on its base's data set"):
        _train_prior(tmp_path / "p", vq_run, "--dataset", "moons")


def test_a_second_stage_needs_a_base_of_its_kind(vq_run):
    base, _ = train.load_run_model(vq_run / "last")
    with pytest.raises(ValueError, match="is a second stage"):
        CodePrior(CodePriorConfig(), base.data)
    with pytest.raises(ValueError, match="a 'made' model has no latents"):
        from gmcore.models.autoregressive.made import MADE
        CodePrior(CodePriorConfig(), base.data, base=MADE(MADE.Config(binarize="none"), base.data))
