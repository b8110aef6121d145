"""One run owns its folder (run.lock), claims it before training, and refuses a checkpoint that does
not fit its model: wrong dtype or shape, non-finite values, malformed fields (issue 11)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli, io, runlock, train
from gmcore.cli_train import parse_train_args
from gmcore.runlock import RunLock, RunLockedError

pytest.importorskip("safetensors")

FAST = ["--batch-size", "32", "--no-progress", "--no-sample-quality", "--num-samples", "0"]
SMALL_VAE = ["--latent-dim", "4", "--hidden", "32", "--iw-samples", "4"]
FLAGS = ["--steps", "3", "--eval-every", "0", *FAST, *SMALL_VAE]


def _quiet(*a):
    pass


def _train(out, *extra, log=_quiet):
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(out), *FLAGS, *extra])
    return train.train(name, tcfg, mcfg, log=log)


HOLD_LOCK = ("import sys, time\nfrom gmcore.runlock import RunLock\nRunLock(sys.argv[1]).acquire()\n"
             "print('locked', flush=True)\ntime.sleep(120)\n")


@pytest.mark.skipif(runlock.fcntl is None, reason="flock")
def test_locked_folder_is_refused_then_reclaimed_when_its_holder_dies(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"{out}.*PID {holder.pid} on host {socket.gethostname()}"):
            _train(out)
        # the CLI says it in one line, exit status 1
        assert cli.main(["train", "vae", "--out", str(out), *FLAGS]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"PID {holder.pid}" in err and str(out) in err
        assert not (out / "config.json").exists()          # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    logs = []
    assert _train(out, log=logs.append)["step"] == 3
    assert any("stale lock" in m and f"PID {holder.pid}" in m for m in logs), logs
    assert not (out / "run.lock").exists()          # released at the end


def test_default_folder_moves_on_when_locked_or_holding_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, tcfg, mcfg = parse_train_args("vae", FLAGS)
    with RunLock(tmp_path / "runs" / "vae"):    # a run that has not written config.json yet
        train.train(name, tcfg, mcfg, log=_quiet)
    assert (tmp_path / "runs" / "vae-2" / "last.safetensors").exists()
    assert not (tmp_path / "runs" / "vae" / "config.json").exists()
    (tmp_path / "runs" / "vae-3").mkdir()
    (tmp_path / "runs" / "vae-3" / "config.json").write_text("{}")    # claimed, no checkpoint yet
    train.train(name, tcfg, mcfg, log=_quiet)                         # runs/vae is free again
    train.train(name, tcfg, mcfg, log=_quiet)
    assert (tmp_path / "runs" / "vae" / "last.safetensors").exists()
    assert (tmp_path / "runs" / "vae-4" / "last.safetensors").exists()


def test_folder_is_claimed_and_locked_before_the_first_step(tmp_path, monkeypatch):
    from gmcore.models.latent import VAE

    out, seen = tmp_path / "run", []
    real_loss = VAE.loss

    def loss(self, batch):
        if not seen:
            seen.append(json.loads((out / "config.json").read_text())["model"])
            seen.append(json.loads((out / "run.lock").read_text())["pid"])
        return real_loss(self, batch)

    monkeypatch.setattr(VAE, "loss", loss)
    _train(out)
    assert seen == ["vae", os.getpid()]
    # config.json alone (a run killed before its first checkpoint) already makes it a run ...
    (out / "last.safetensors").unlink()
    (out / "last.json").unlink()
    with pytest.raises(FileExistsError, match=r"config\.json.*--resume"):
        _train(out)
    # ... which --resume starts again from step 0
    logs = []
    assert _train(out, "--resume", log=logs.append)["step"] == 3
    assert any("starting at step 0" in m for m in logs)


def test_leftover_temporaries_are_removed_at_start(tmp_path):
    out = tmp_path / "run"
    _train(out)
    (out / ".last.safetensors.x1y2z3ab.tmp").write_bytes(b"half a checkpoint")
    logs = []
    _train(out, "--resume", "--steps", "4", log=logs.append)
    assert not (out / ".last.safetensors.x1y2z3ab.tmp").exists()
    assert any(".last.safetensors.x1y2z3ab.tmp" in m for m in logs)


def test_lock_without_fcntl_uses_exclusive_create(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "fcntl", None)
    lock = RunLock(tmp_path / "run").acquire()
    with pytest.raises(RunLockedError, match=rf"PID {os.getpid()}.*delete .*run\.lock"):
        RunLock(tmp_path / "run").acquire()
    lock.release()
    assert not (tmp_path / "run").exists()           # the folder it made, empty again, is gone
    with RunLock(tmp_path / "run"):
        pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    _train(out, "--ema", "0.9")
    return out


def test_sample_and_eval_work_on_a_locked_folder(trained, tmp_path, capsys):
    with RunLock(trained):
        assert cli.main(["sample", str(trained), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
        assert cli.main(["eval", str(trained)]) == 0
    assert (tmp_path / "s.png").exists()


def _tamper(trained, tmp_path, edit):
    """A copy of the trained run whose checkpoint ``edit(state)`` changed, saved with a valid SHA."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    state = io.load_checkpoint(out / "last")
    edit(state)
    io.save_checkpoint(out / "last", state)
    return out


W = "encoder.0.weight"


def _set_weight(fn):
    def edit(state):
        key = W if W in state["model"] else sorted(state["model"])[0]
        state["model"][key] = gm.tensor(fn(state["model"][key].numpy()))
    return edit


TAMPERS = {
    "int32 weight": (_set_weight(lambda a: a.astype(np.int32)), r"tensor 'model\.\S+' is stored as int32"),
    "float16 weight": (_set_weight(lambda a: a.astype(np.float16)), r"'model\.\S+' is stored as float16"),
    "wrong shape": (_set_weight(lambda a: a.reshape(-1)[:-1].copy()), r"'model\.\S+' has shape"),
    "NaN weight": (_set_weight(lambda a: np.full_like(a, np.nan)), r"'model\.\S+' holds \d+ non-finite"),
    "NaN optimizer moment": (
        lambda s: s["optimizers"]["main"]["state"][0].update(
            exp_avg=gm.full(s["optimizers"]["main"]["state"][0]["exp_avg"].shape, float("inf"))),
        r"'optimizers\.main\.state\.0\.exp_avg' holds"),
    "EMA shadow dtype": (
        lambda s: s["ema"]["shadow_params"].__setitem__(0, gm.tensor(s["ema"]["shadow_params"][0].numpy()
                                                                     .astype(np.float64))),
        r"'ema\.shadow_params\.0' is stored as float64"),
    "rng of the wrong form": (lambda s: s.update(rng={"words": [1, 2, 3]}), r"field 'rng\.seed' is missing"),
    "rng state not PCG64": (lambda s: s["rng"]["bit_generator"].update(state="x"),
                            r"field 'rng\.bit_generator' is not a valid PCG64"),
    "loader batch negative": (lambda s: s["loader"].update(batch=-1), r"field 'loader\.batch' must be"),
    "loader not an object": (lambda s: s.update(loader=[0, 1]), r"field 'loader' must be an object"),
    "step a string": (lambda s: s.update(step="12"), r"field 'step' must be an integer"),
    "data shape": (lambda s: s["data"].update(shape=[0, 8]), r"field 'data\.shape'"),
    "model config not a dict": (lambda s: s.update(model_config=3), r"field 'model_config' must be an object"),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_checkpoint_is_refused_naming_file_and_field(trained, tmp_path, case):
    edit, message = TAMPERS[case]
    out = _tamper(trained, tmp_path, edit)
    pattern = rf"last\.safetensors.*{message}"
    if "optimizer" not in case:    # sampling never reads the optimizer's state
        with pytest.raises(io.CheckpointError, match=pattern):             # gmcore sample / eval
            train.load_run_model(out / "last")
    with pytest.raises(io.CheckpointError, match=pattern):                 # --resume
        _train(out, "--resume", "--ema", "0.9", "--steps", "5")


def test_tampered_checkpoint_through_the_cli_is_one_line(trained, tmp_path, capsys):
    out = _tamper(trained, tmp_path, TAMPERS["NaN weight"][0])
    assert cli.main(["sample", str(out), "--n", "4"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "non-finite" in err and "last.safetensors" in err
    assert not list(out.glob("samples_*.png"))


def test_truncated_checkpoint_is_refused_on_resume_and_sample(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    f = out / "last.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(io.CheckpointError, match=r"last\.safetensors"):
        train.load_run_model(out / "last")
    with pytest.raises(io.CheckpointError, match=r"last\.safetensors"):
        _train(out, "--resume", "--ema", "0.9", "--steps", "5")


def test_untampered_copy_resumes(trained, tmp_path):
    out = _tamper(trained, tmp_path, lambda s: None)     # the same state, written again
    assert _train(out, "--resume", "--ema", "0.9", "--steps", "5")["step"] == 5


def test_run_saved_in_the_old_two_file_format_still_samples_and_resumes(trained, tmp_path):
    import hashlib

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    state = io.load_checkpoint(out / "last")
    arrays = {}
    tree = io._split(state, "", arrays)      # what gmcore wrote before the single file
    blob = io._serialize(arrays, {"format": "gmcore-checkpoint-1"})
    (out / "last.safetensors").write_bytes(blob)
    (out / "last.json").write_text(json.dumps({"format": "gmcore-checkpoint-1", "weights": "last.safetensors",
                                               "weights_sha256": hashlib.sha256(blob).hexdigest(),
                                               "state": tree}))
    model, back = train.load_run_model(out / "last")
    assert back["step"] == 3
    assert _train(out, "--resume", "--ema", "0.9", "--steps", "5")["step"] == 5
    meta, _ = io._read_file(out / "last.safetensors")
    assert meta["format"] == io.FORMAT                     # saved again in the current format


def test_two_runs_started_together_get_two_folders(tmp_path):
    cmd = [sys.executable, "-m", "gmcore", "train", "vae", *FLAGS, "--steps", "20", "--ckpt-every", "5"]
    procs = [subprocess.Popen(cmd + ["--seed", str(seed)], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for seed in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    folders = sorted(d.name for d in (tmp_path / "runs").iterdir())
    assert folders == ["vae", "vae-2"]
    seeds = set()
    for d in folders:     # each folder is one run's own: config, checkpoint and rows agree
        run = tmp_path / "runs" / d
        seed = json.loads((run / "config.json").read_text())["train"]["seed"]
        assert io.load_checkpoint(run / "last")["train_config"]["seed"] == seed
        steps = [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()
                 if json.loads(r)["split"] == "train"]
        assert steps == sorted(set(steps)) and steps[-1] == 20
        seeds.add(seed)
    assert seeds == {1, 2}


def test_a_run_that_fails_before_its_first_step_gives_its_folder_back(tmp_path, monkeypatch, kernels_env):
    monkeypatch.chdir(tmp_path)
    kernels_env("dlml=bogus")           # refused only when the first loss is computed
    name, tcfg, mcfg = parse_train_args("vae", FLAGS)
    with pytest.raises(ValueError, match="bogus"):
        train.train(name, tcfg, mcfg, log=_quiet)
    assert not (tmp_path / "runs" / "vae").exists()
    kernels_env(None)
    train.train(name, tcfg, mcfg, log=_quiet)         # the next attempt gets runs/vae, not vae-2
    assert (tmp_path / "runs" / "vae" / "last.safetensors").exists()


def test_a_run_that_fails_after_steps_keeps_what_it_wrote(tmp_path, monkeypatch):
    calls = []

    def fail_at_third(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise FloatingPointError("loss became nan at step 2")
        return original(self, batch)

    from gmcore.models.latent.vae import VAE
    original = VAE.loss
    monkeypatch.setattr(VAE, "loss", fail_at_third)
    with pytest.raises(FloatingPointError):
        _train(tmp_path / "r", "--log-every", "1")
    rows = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and (tmp_path / "r" / "config.json").exists()
