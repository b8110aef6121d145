"""A run folder survives kills and Ctrl-C: a complete checkpoint exists at every instant, and a
resume after a Ctrl-C at any moment reproduces the uninterrupted run bit for bit (issue 11)."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from gmcore import io, train
from gmcore.cli_train import parse_train_args

pytest.importorskip("safetensors")
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")


@pytest.fixture(autouse=True)
def python_signal_defaults():
    """Python's own SIGINT/SIGTERM handling, also where the test runner was started with them
    ignored (a shell's background job ignores SIGINT, and its children inherit that)."""
    old = {s: signal.signal(s, h) for s, h in ((signal.SIGINT, signal.default_int_handler),
                                               (signal.SIGTERM, signal.SIG_DFL))}
    yield
    for s, h in old.items():
        signal.signal(s, h)


def _default_signals_in_child():
    signal.signal(signal.SIGINT, signal.SIG_DFL)    # the child's Python then raises KeyboardInterrupt

FAST = ["--batch-size", "32", "--no-progress", "--no-sample-quality", "--num-samples", "0"]
SMALL_VAE = ["--latent-dim", "4", "--hidden", "32", "--iw-samples", "4"]

# Saves checkpoint 1, then checkpoint 2 with the fault injected at argv[2]; w holds the step.
SAVE_TWICE = """
import os, sys
import gmcore as gm
from gmcore import io
d = sys.argv[1]
io.save_checkpoint(d + "/last", {"step": 1, "w": gm.full((300,), 1.0)})
os.environ["GMCORE_FAULT_INJECT"] = "save:" + sys.argv[2]
io.save_checkpoint(d + "/last", {"step": 2, "w": gm.full((300,), 2.0)})
"""


def test_kill_at_every_point_of_a_save_leaves_a_loadable_checkpoint(tmp_path):
    points = io.SAVE_FAULT_POINTS
    assert len(points) == 14
    procs = {}
    for p in points:   # all at once: each is a short process that kills itself
        (tmp_path / p).mkdir()
        procs[p] = subprocess.Popen([sys.executable, "-c", SAVE_TWICE, str(tmp_path / p), p],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    renamed = points.index("weights-renamed")
    for i, p in enumerate(points):
        _, err = procs[p].communicate(timeout=120)
        assert procs[p].returncode == -signal.SIGKILL, (p, err.decode())   # the point was reached
        folder = tmp_path / p
        state = io.load_checkpoint(folder / "last")           # never an error
        expect = 1 if i < renamed else 2                      # the old one, until the one rename
        assert state["step"] == expect, p
        assert state["w"].numpy().tolist() == [float(expect)] * 300, p
        leftovers = [f.name for f in folder.iterdir() if f.name.endswith(".tmp")]
        # a kill after a temporary was created and before its rename leaves it behind ...
        assert bool(leftovers) == (p.split("-", 1)[1] in ("created", "half-written", "written",
                                                          "flushed", "fsynced")), (p, leftovers)
        # ... and the next start clears it
        assert sorted(f.name for f in io.remove_temp_files(folder)) == sorted(leftovers)
        assert sorted(f.name for f in folder.iterdir()) == ["last.json", "last.safetensors"]


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train_rows(rows):
    """Train rows without the wall-clock column: everything else must match exactly."""
    return [{k: v for k, v in r.items() if k != "sec_per_step"} for r in rows if r["split"] == "train"]


STEPS = 200
FLAGS = ["--steps", str(STEPS), "--log-every", "3", "--eval-every", "0", "--ckpt-every", "10",
         "--warmup", "5", "--ema", "0.9", *FAST, *SMALL_VAE]


@pytest.fixture(scope="module")
def reference_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(out), *FLAGS])
    train.train(name, tcfg, mcfg, log=lambda *a: None)
    return _train_rows(_rows(out))


def _sigint_trial(tmp_path, seed, reference_rows):
    out = tmp_path / f"run{seed}"
    proc = subprocess.Popen([sys.executable, "-m", "gmcore", "train", "vae", "--out", str(out), *FLAGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_signals_in_child)
    log = out / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text().strip()):    # the loop has started
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.002)
    time.sleep(random.Random(seed).uniform(0.0, 0.1))
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert "Traceback" not in stderr.decode()
    stopped = io.load_checkpoint(out / "last")["step"]
    assert 0 < stopped < STEPS            # it stopped inside the loop, at a step boundary
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(out), "--resume", *FLAGS])
    assert train.train(name, tcfg, mcfg, log=lambda *a: None)["step"] == STEPS
    assert _train_rows(_rows(out)) == reference_rows        # exact floats, every row
    return stopped


@pytest.mark.parametrize("seed", [0])
def test_sigint_at_a_random_moment_then_resume_is_exact(tmp_path, reference_rows, seed):
    _sigint_trial(tmp_path, seed, reference_rows)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_sigint_at_random_moments_then_resume_is_exact_more_trials(tmp_path, reference_rows, seed):
    _sigint_trial(tmp_path, seed, reference_rows)


def test_second_ctrl_c_during_the_save_keeps_a_complete_checkpoint(tmp_path, monkeypatch, reference_rows):
    # Every save gets a SIGINT after its rename: the first (the periodic one at step 10) asks the
    # loop to stop; the second lands in the save that follows and quits at once when it is done.
    out = tmp_path / "run"
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(out), *FLAGS])
    monkeypatch.setenv("GMCORE_FAULT_INJECT", "save:weights-renamed:SIGINT")
    with pytest.raises(KeyboardInterrupt):
        train.train(name, tcfg, mcfg, log=lambda *a: None)
    monkeypatch.delenv("GMCORE_FAULT_INJECT")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler    # handlers put back
    assert io.load_checkpoint(out / "last")["step"] == 10
    assert not (out / "run.lock").exists()
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(out), "--resume", *FLAGS])
    train.train(name, tcfg, mcfg, log=lambda *a: None)
    assert _train_rows(_rows(out)) == reference_rows


def test_sigterm_finishes_the_step_saves_it_and_stops(tmp_path, monkeypatch, reference_rows):
    from gmcore.models.latent import VAE

    real_loss, calls = VAE.loss, {"n": 0}

    def loss(self, batch):
        calls["n"] += 1
        if calls["n"] == 13:   # arrives in the middle of step 13, which still completes
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(self, batch)

    out = tmp_path / "run"
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(out), *FLAGS])
    monkeypatch.setattr(VAE, "loss", loss)
    assert train.train(name, tcfg, mcfg, log=lambda *a: None) == {"interrupted": True, "step": 13}
    monkeypatch.setattr(VAE, "loss", real_loss)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert io.load_checkpoint(out / "last")["step"] == 13
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(out), "--resume", *FLAGS])
    train.train(name, tcfg, mcfg, log=lambda *a: None)
    assert _train_rows(_rows(out)) == reference_rows
