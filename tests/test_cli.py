"""The command line as a user meets it: one-line errors, exit statuses, `gmcore eval` agreeing
with the run, `gmcore sample --out FILE.npy`, metric names per unit, output file modes."""
import json
import os
import shutil
import sys

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli

pytest.importorskip("safetensors")

TINY_VAE = ["--batch-size", "32", "--no-progress", "--num-samples", "4", "--latent-dim", "4",
            "--hidden", "16", "--iw-samples", "2"]


def _fails_in_one_line(capsys, argv, status=1):
    """Run the CLI in-process; it must exit with ``status`` and one stderr line, no traceback."""
    assert cli.main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"gmcore {argv[0]}: "), err
    return err.strip()


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A finished 6-step VAE run with EMA weights and a test evaluation at step 3 and 6."""
    run = tmp_path_factory.mktemp("cli") / "vae"
    assert cli.main(["train", "vae", "--out", str(run), "--steps", "6", "--eval-every", "3", "--ema", "0.9",
                     *TINY_VAE]) == 0
    return run


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# ---- argparse and devices -------------------------------------------------------------------

def test_bad_flag_prints_the_message_and_where_help_is_not_the_usage_block(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "vae", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["gmcore train vae: error: unrecognized arguments: --bogus",
                                "see 'gmcore train vae --help'"]
    with pytest.raises(SystemExit):
        cli.main(["sample"])        # missing positional: same shape, the subcommand's own prog
    assert capsys.readouterr().err.splitlines()[1] == "see 'gmcore sample --help'"


@pytest.mark.skipif(gm.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_gpu_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    err = _fails_in_one_line(capsys, ["train", "vae", "--device", "cuda", "--out", str(tmp_path / "r"),
                                      *TINY_VAE])
    assert "--device cuda: no CUDA device is usable here" in err
    assert not (tmp_path / "r").exists()
    assert "--device cuda:1" in _fails_in_one_line(capsys, ["eval", str(tmp_path), "--device", "cuda:1"])


def test_unavailable_kernel_override_is_one_line(tmp_path, capsys, kernels_env, monkeypatch):
    # numba "not installed": its module and gmcore's numba kernel module cannot be imported
    import gmcore.kernels.numba as numba_kernels  # an earlier import left the submodule bound here
    monkeypatch.delattr(numba_kernels, "dlml", raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.setitem(sys.modules, "gmcore.kernels.numba.dlml", None)
    kernels_env("dlml=numba")
    err = _fails_in_one_line(capsys, ["train", "vae", "--out", str(tmp_path / "r"), "--steps", "1",
                                      "--eval-every", "0", *TINY_VAE])
    assert "GMCORE_KERNELS asks for dlml=numba" in err and "unavailable" in err


# ---- data sets and models that do not fit ----------------------------------------------------

def test_data_root_errors_speak_of_the_flag(tmp_path, capsys):
    out = ["--out", str(tmp_path / "r"), *TINY_VAE]
    err = _fails_in_one_line(capsys, ["train", "vae", "--dataset", "mnist", *out])
    assert "--data-root" in err and "nothing is downloaded" in err
    err = _fails_in_one_line(capsys, ["train", "vae", "--data-root", str(tmp_path), *out])
    assert "'digits'" in err and "would be ignored" in err
    with pytest.raises(ValueError, match="would be ignored"):
        gm.data.get_dataset("moons", root=str(tmp_path))


def test_vae_on_points_names_what_to_change(tmp_path, capsys):
    out = ["--out", str(tmp_path / "r"), "--dataset", "moons", *TINY_VAE]
    assert "--dataset digits" in _fails_in_one_line(capsys, ["train", "vae", *out])
    err = _fails_in_one_line(capsys, ["train", "vae", *out, "--decoder", "bernoulli"])
    assert "binarize" in err and "'moons'" in err


# ---- run folders and checkpoints -------------------------------------------------------------

def test_eval_reproduces_the_runs_figures(vae_run, capsys):
    final = json.loads((vae_run / "metrics.json").read_text())
    assert cli.main(["eval", str(vae_run)]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("test_bits", "test_bits_per_dim", "test_nll_nats", "digits_fid", "digits_kid", "precision"):
        assert res[key] == final[key], key            # exactly: same seed, same EMA weights
    assert res["unit"] == final["unit"] == "dim"
    assert cli.main(["eval", str(vae_run), "--seed", "123", "--no-sample-quality"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["test_bits"] != final["test_bits"] and "digits_fid" not in other


def test_resume_with_no_more_steps_is_refused(vae_run, tmp_path, capsys):
    run = _copy(vae_run, tmp_path)
    before = (run / "metrics.jsonl").read_text()
    for steps in ("6", "4"):
        err = _fails_in_one_line(capsys, ["train", "vae", "--out", str(run), "--resume", "--steps", steps,
                                          "--ema", "0.9", *TINY_VAE])
        assert "already at step 6" in err and "larger --steps" in err
    assert (run / "metrics.jsonl").read_text() == before


def test_broken_checkpoints_are_one_line_naming_the_file(vae_run, tmp_path, capsys):
    run = _copy(vae_run, tmp_path)
    weights = run / "last.safetensors"
    state = gm.io.load_checkpoint(run / "last")
    name = next(k for k, v in state["model"].items() if v.ndim == 2)
    state["model"][name] = gm.zeros(3, 3)
    gm.io.save_checkpoint(run / "last", state)                     # a tensor of the wrong shape
    resume = ["train", "vae", "--out", str(run), "--resume", "--steps", "9", "--ema", "0.9", *TINY_VAE]
    for argv in (resume, ["sample", str(run)], ["eval", str(run)]):
        err = _fails_in_one_line(capsys, argv)
        assert str(weights) in err and name in err, err
    state["model_name"] = "no-such-model"
    state["model"][name] = gm.zeros(1)
    gm.io.save_checkpoint(run / "last", state)
    assert "no-such-model" in _fails_in_one_line(capsys, ["sample", str(run)])
    weights.write_bytes(weights.read_bytes()[:1000])                  # truncated
    for argv in (resume, ["sample", str(run)]):
        assert str(weights) in _fails_in_one_line(capsys, argv)


def test_sample_without_a_run_says_so(tmp_path, capsys):
    err = _fails_in_one_line(capsys, ["sample", str(tmp_path / "nonexistent")])
    assert err.startswith(f"gmcore sample: no run found at {tmp_path / 'nonexistent'}")
    assert "no run found" in _fails_in_one_line(capsys, ["eval", str(tmp_path)])   # a folder, no run


def test_sample_npy_writes_the_raw_images(vae_run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(vae_run), "--n", "5", "--out", str(out)]) == 0
    a = np.load(out)
    assert a.shape == (5, 1, 8, 8) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert len(np.unique(a)) > 1
    assert "FILE.png" in _fails_in_one_line(capsys, ["sample", str(vae_run), "--out", str(tmp_path / "s.jpg")],
                                            status=2)


def test_text_run_names_its_figure_bits_per_char_and_samples_ids(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "char-rnn", "--out", str(run), "--steps", "2", "--eval-every", "0",
                     "--batch-size", "16", "--no-progress", "--hidden", "8", "--embed-dim", "4",
                     "--seq-len", "16", "--samples", "1", "--sample-length", "12"]) == 0
    final = json.loads((run / "metrics.json").read_text())
    assert final["unit"] == "char" and final["test_bits_per_char"] == final["test_bits"] > 0
    assert "test_bits_per_dim" not in final
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["test_bits_per_char"] == final["test_bits_per_char"]
    assert cli.main(["sample", str(run), "--n", "3", "--out", str(tmp_path / "ids.npy")]) == 0
    ids = np.load(tmp_path / "ids.npy")
    assert ids.shape == (3, 12) and ids.dtype == np.int64 and ids.min() >= 0


# ---- files --------------------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        gm.io.atomic_write_text(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~umask
