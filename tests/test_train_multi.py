"""The training loop's multi-network contract: named optimizers (``configure_optimizers``), a
model's own ``training_step`` (several critic updates per generator update, TTUR), an EMA of one
network (``ema_module``), checkpoints of every optimizer and scheduler, exact resume, and the
interrupt rules when a step holds several updates.

The model is a small 2-D GAN registered for these tests only; the zoo's GANs test what they
model elsewhere."""
import json
from dataclasses import dataclass, field

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import io, nn, optim, train
from gmcore.cli import main
from gmcore.cli_train import parse_train_args
from gmcore.models import registry
from gmcore.models.base import GenerativeModel

from resume_checks import check_crash_resume

quiet = lambda *a: None  # noqa: E731
FAST = ["--no-progress", "--eval-every", "0", "--num-samples", "0", "--log-every", "1"]


@dataclass
class TinyGANConfig:
    n_critic: int = field(default=2, metadata={"help": "critic updates per generator update", "min": 1})
    d_lr_mult: float = field(default=4.0, metadata={"help": "critic lr / generator lr", "min": 0.0})


class TinyGAN(GenerativeModel):
    Config = TinyGANConfig
    nll_kind = "none"

    def __init__(self, config, data):
        super().__init__(config, data)
        self.generator = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))

    def configure_optimizers(self, tcfg):
        return {"generator": optim.Adam(self.generator.parameters(), lr=tcfg.lr, betas=(0.5, 0.999)),
                "discriminator": optim.Adam(self.discriminator.parameters(), lr=tcfg.lr * self.config.d_lr_mult,
                                            betas=(0.5, 0.999))}

    def ema_module(self):
        return self.generator

    def training_step(self, batch, step):
        for i in range(self.config.n_critic):
            real = batch[0] if i == 0 else step.next_batch()[0]
            fake = self.generator(gm.randn(real.shape[0], 2)).detach()
            d_loss = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake)).mean()
            d = step.update("discriminator", d_loss)
        g_loss = F.softplus(-self.discriminator(self.generator(gm.randn(real.shape[0], 2)))).mean()
        return {"d_loss": d, "g_loss": step.update("generator", g_loss)}

    def sample(self, n, generator=None):
        return self.generator(gm.randn(n, 2, generator=generator))


@pytest.fixture(autouse=True)
def tiny_gan_model():
    registry.register("test-tiny-gan", family="test", dataset="moons", description="a test GAN")(TinyGAN)
    try:
        yield
    finally:
        registry._REGISTRY.pop("test-tiny-gan", None)


def _train(out, *flags, log=quiet):
    name, tcfg, mcfg = parse_train_args("test-tiny-gan", ["--out", str(out), "--batch-size", "32", *FAST, *flags])
    return train.train(name, tcfg, mcfg, log=log)


def _rows(out):
    return [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]


def test_n_critic_ttur_and_generator_ema(tmp_path):
    res = _train(tmp_path / "run", "--steps", "5", "--lr", "1e-3", "--warmup", "0", "--lr-schedule", "constant",
                 "--ema", "0.9")
    assert res["nll_kind"] == "none" and "test_bits" not in res and "test_nll_nats" not in res
    state = io.load_checkpoint(tmp_path / "run" / "last")
    opts = state["optimizers"]
    assert sorted(opts) == ["discriminator", "generator"] and sorted(state["schedulers"]) == sorted(opts)
    # Adam counts its own steps: two critic updates per generator update
    assert {int(v["step"]) for v in opts["discriminator"]["state"].values()} == {10}
    assert {int(v["step"]) for v in opts["generator"]["state"].values()} == {5}
    rows = [r for r in _rows(tmp_path / "run") if r["split"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["lr_discriminator"] == pytest.approx(4e-3) and r["lr_generator"] == pytest.approx(1e-3)
               for r in rows)
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows)
    # the EMA averages the generator only; sampling loads it
    assert len(state["ema"]["shadow_params"]) == len(list(TinyGAN(TinyGANConfig(), None).generator.parameters()))
    model, _ = train.load_run_model(tmp_path / "run" / "last")
    np.testing.assert_array_equal(model.generator[0].weight.detach().numpy(), state["ema"]["shadow_params"][0].numpy())
    assert (tmp_path / "run" / "samples.png").exists() is False   # --num-samples 0
    assert main(["sample", str(tmp_path / "run"), "--n", "8", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (8, 2)


def test_schedules_apply_to_each_optimizer(tmp_path):
    _train(tmp_path / "run", "--steps", "4", "--lr", "1e-3", "--warmup", "4", "--lr-schedule", "constant")
    rows = [r for r in _rows(tmp_path / "run") if r["split"] == "train"]
    # the lr of the next step, logged after each: warm-up (k + 1) / 4, each on its own peak lr
    assert [r["lr_generator"] for r in rows] == pytest.approx([5e-4, 7.5e-4, 1e-3, 1e-3])
    assert [r["lr_discriminator"] for r in rows] == pytest.approx([2e-3, 3e-3, 4e-3, 4e-3])


def test_resume_is_bit_exact_for_both_optimizers(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "test-tiny-gan", TinyGAN, ["--batch-size", "32", "--no-progress",
                       "--eval-every", "0", "--num-samples", "0", "--ema", "0.9"],
                       steps=6, ckpt_every=3, crash_at=5, method="training_step", key="g_loss")
    a = io.load_checkpoint(tmp_path / "full" / "last")
    b = io.load_checkpoint(tmp_path / "part" / "last")
    for name in ("generator", "discriminator"):
        for idx, entry in a["optimizers"][name]["state"].items():
            np.testing.assert_array_equal(entry["exp_avg_sq"].numpy(),
                                          b["optimizers"][name]["state"][idx]["exp_avg_sq"].numpy())


def test_interrupt_between_two_updates_saves_nothing(tmp_path, monkeypatch):
    _train(tmp_path / "run", "--steps", "3", "--ckpt-every", "3")
    calls, real = {"n": 0}, optim.Adam.step

    def step(self, *a, **k):
        calls["n"] += 1
        real(self, *a, **k)
        if calls["n"] == 2:   # the first critic update of step 4 is done, the rest is not
            raise KeyboardInterrupt

    monkeypatch.setattr(optim.Adam, "step", step)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", "--steps", "6", "--resume", "--ckpt-every", "3")
    assert io.load_checkpoint(tmp_path / "run" / "last")["step"] == 3


def test_interrupt_before_the_first_update_rewinds_the_step(tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    _train(ref, "--steps", "6")
    real = TinyGAN.training_step
    calls = {"n": 0}

    def flaky(self, batch, step):
        calls["n"] += 1
        if calls["n"] == 4:
            step.next_batch()            # consumes a batch, then is interrupted
            raise KeyboardInterrupt
        return real(self, batch, step)

    monkeypatch.setattr(TinyGAN, "training_step", flaky)
    assert _train(tmp_path / "run", "--steps", "6") == {"interrupted": True, "step": 3}
    monkeypatch.setattr(TinyGAN, "training_step", real)
    _train(tmp_path / "run", "--steps", "6", "--resume")

    def losses(out):
        return [(r["d_loss"], r["g_loss"]) for r in _rows(out) if r["split"] == "train"]
    assert losses(tmp_path / "run") == losses(ref)


def test_bad_optimizer_declarations_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(TinyGAN, "configure_optimizers",
                        lambda self, tcfg: {"g": optim.Adam(self.parameters()),
                                            "d": optim.Adam(self.discriminator.parameters())})
    with pytest.raises(ValueError, match="in both the 'g' and the 'd' optimizers"):
        _train(tmp_path / "a", "--steps", "1")
    monkeypatch.setattr(TinyGAN, "configure_optimizers", lambda self, tcfg: [optim.Adam(self.parameters())])
    with pytest.raises(TypeError, match="must return a non-empty dict of names"):
        _train(tmp_path / "b", "--steps", "1")


def test_update_of_an_unknown_optimizer_or_a_nan_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(TinyGAN, "training_step", lambda self, batch, step: {"x": step.update("critic", batch[0].sum())})
    with pytest.raises(KeyError, match="no optimizer named 'critic'; this model's: generator, discriminator"):
        _train(tmp_path / "a", "--steps", "1")
    monkeypatch.setattr(TinyGAN, "training_step",
                        lambda self, batch, step: {"x": step.update("generator", batch[0].sum() * float("nan"))})
    with pytest.raises(FloatingPointError, match="the generator loss became nan at step 0"):
        _train(tmp_path / "b", "--steps", "1")


def test_checkpoint_with_the_single_optimizer_form_still_resumes(tmp_path):
    """Checkpoints written before the loop knew several optimizers hold "optimizer" and
    "scheduler": they load as the one optimizer "main"."""
    name, tcfg, mcfg = parse_train_args("made", ["--out", str(tmp_path / "run"), "--steps", "2", *FAST,
                                                 "--no-sample-quality", "--hidden", "16"])
    train.train(name, tcfg, mcfg, log=quiet)
    state = io.load_checkpoint(tmp_path / "run" / "last")
    state["optimizer"] = state.pop("optimizers")["main"]
    state["scheduler"] = state.pop("schedulers")["main"]
    io.save_checkpoint(tmp_path / "run" / "last", state)
    (tmp_path / "run" / "metrics.json").unlink()
    name, tcfg, mcfg = parse_train_args("made", ["--out", str(tmp_path / "run"), "--steps", "3", "--resume", *FAST,
                                                 "--no-sample-quality", "--hidden", "16"])
    assert train.train(name, tcfg, mcfg, log=quiet)["step"] == 3
