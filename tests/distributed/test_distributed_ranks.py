"""Two ranks on one machine (``mpiexec -n 2``, from the `mpich` wheel of the test extra): a
data-parallel run follows the one-process trajectory, DDP and SyncBatchNorm equal the whole-batch
computation, resume is exact, and disagreement or a failing rank ends every rank with a clear
message. Skipped where mpi4py or mpiexec is missing."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gmcore.distributed as dist

HERE = Path(__file__).parent
MPIEXEC = shutil.which("mpiexec") or str(Path(sys.executable).with_name("mpiexec"))
pytestmark = pytest.mark.skipif(not dist.is_available() or not os.path.exists(MPIEXEC),
                                reason="needs mpi4py and mpiexec (pip install \"gmcore[dist]\")")
# one BLAS thread per rank: two ranks on two cores
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
for _name in dist._SIZE_VARIABLES:   # a test run under mpiexec itself must not leak its size
    ENV.pop(_name, None)
QUIET = ["--no-progress", "--num-samples", "0", "--no-sample-quality", "--eval-every", "0"]


def _run(args, ranks=2, timeout=240):
    cmd = [MPIEXEC, "-n", str(ranks), *args] if ranks else args
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def _gmcore(*args):
    return [sys.executable, "-m", "gmcore", *args]


def _losses(folder):
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"], rows


def test_ddp_and_sync_batchnorm_equal_the_whole_batch():
    res = _run([sys.executable, str(HERE / "ranks_worker.py")])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rank 0: ok" in res.stdout and "rank 1: ok" in res.stdout


def test_two_ranks_follow_the_one_process_trajectory_and_resume_exactly(tmp_path):
    args = ["train", "vae", "--steps", "20", "--batch-size", "64", "--log-every", "5", *QUIET]
    one = _run(_gmcore(*args, "--out", str(tmp_path / "one")), ranks=0)
    assert one.returncode == 0, one.stderr
    two = _run(_gmcore(*args, "--out", str(tmp_path / "two")))
    assert two.returncode == 0, two.stderr
    a, _ = _losses(tmp_path / "one")
    b, rows = _losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    # the same examples and noise per step; only the float32 summation order differs
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-5 * abs(x), (a, b)
    assert len([r for r in rows if r["split"] == "test"]) == 1     # rank 0 alone wrote
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert (config["world_size"], config["batch_per_rank"]) == (2, 32)
    assert two.stdout.count("run folder:") == 1

    # stop at 10 (a shorter run's checkpoint), resume to 20: bit for bit the same losses
    short = _run(_gmcore(*args[:3], "10", *args[4:], "--out", str(tmp_path / "res"), "--lr-schedule", "constant"))
    assert short.returncode == 0, short.stderr
    full = _run(_gmcore(*args, "--out", str(tmp_path / "full"), "--lr-schedule", "constant"))
    resumed = _run(_gmcore(*args, "--out", str(tmp_path / "res"), "--lr-schedule", "constant", "--resume"))
    assert full.returncode == 0 and resumed.returncode == 0, full.stderr + resumed.stderr
    assert _losses(tmp_path / "res")[0] == _losses(tmp_path / "full")[0]

    # a checkpoint of two ranks does not resume on one
    single = _run(_gmcore(*args[:3], "30", *args[4:], "--out", str(tmp_path / "res"), "--lr-schedule",
                          "constant", "--resume"), ranks=0)
    assert single.returncode != 0 and "written by a run on 2" in single.stderr


def test_gan_loop_with_sync_batchnorm_follows_one_process(tmp_path):
    args = ["train", "dcgan", "--steps", "6", "--batch-size", "32", "--log-every", "3", *QUIET]
    one = _run(_gmcore(*args, "--out", str(tmp_path / "one")), ranks=0)
    two = _run(_gmcore(*args, "--sync-batchnorm", "--out", str(tmp_path / "two")))
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    rows = [[r for r in map(json.loads, (tmp_path / f / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"] for f in ("one", "two")]
    assert len(rows[0]) == len(rows[1]) == 2
    for r1, r2 in zip(*rows):
        for key in ("d_loss", "g_loss"):
            assert abs(r1[key] - r2[key]) <= 1e-4 * max(1.0, abs(r1[key])), (key, r1, r2)


def test_ranks_that_disagree_are_refused(tmp_path):
    out = str(tmp_path / "run")
    res = _run([MPIEXEC, "-n", "1", *_gmcore("train", "vae", "--steps", "2", "--lr", "1e-3", "--out", out, *QUIET),
                ":", "-n", "1", *_gmcore("train", "vae", "--steps", "2", "--lr", "2e-3", "--out", out, *QUIET)],
               ranks=0)
    assert res.returncode != 0
    assert "disagree on the model and configuration" in res.stderr and "rank(s) [1]" in res.stderr


def test_global_batch_must_divide(tmp_path):
    res = _run(_gmcore("train", "vae", "--steps", "2", "--batch-size", "63", "--out", str(tmp_path / "r"), *QUIET))
    assert res.returncode != 0 and "--batch-size 63 is the global batch" in res.stderr


def test_a_failing_rank_ends_every_rank_and_leaves_the_checkpoint_whole(tmp_path):
    out = tmp_path / "run"
    res = _run([sys.executable, str(HERE / "failing_worker.py"), str(out)], timeout=120)
    assert res.returncode != 0
    assert "rank 1 of 2" in res.stderr and "rank 1 fails on purpose" in res.stderr
    from gmcore import io
    state = io.load_checkpoint(out / "last")     # whole: it loads and its digest checks
    assert state["step"] == 2 and state["world_size"] == 2
    assert not [p for p in out.iterdir() if p.name not in ("config.json", "metrics.jsonl", "last.json",
                                                           "last.safetensors", "run.lock")]


def test_two_ranks_validate_and_select_as_one_process(tmp_path):
    # the validation split is sharded over the ranks like the test set; rank 0 writes best.safetensors.
    # MAF's ActNorm initialises on the first batch: from every rank's shard, the replicas started
    # apart and the run died at its first checkpoint ("the replicas diverged"); now from the whole batch.
    # The toy defaults add noise regularization (--noise-std 0.03): its scale, the batch's spread,
    # is taken over every rank's rows too (with each rank's own, the two runs differed by 6e-4 nats)
    args = ["train", "maf", "--dataset", "moons", "--steps", "20", "--batch-size", "64", "--layers", "1",
            "--hidden", "8", "--ema", "0", *QUIET[:-2], "--val-split", "0.1", "--eval-every", "5"]
    one = _run(_gmcore(*args, "--out", str(tmp_path / "one")), ranks=0)
    two = _run(_gmcore(*args, "--out", str(tmp_path / "two")))
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    assert a["selected_step"] == b["selected_step"] and a["val_examples"] == b["val_examples"] == 100
    assert abs(a["val_nll_nats"] - b["val_nll_nats"]) <= 1e-5 * abs(a["val_nll_nats"])
    assert (tmp_path / "two" / "best.safetensors").exists() and two.stdout.count(": validation") == 4
