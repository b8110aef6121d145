"""gmcore.train and the CLI: outputs of a run, bit-exact resume, Ctrl-C, flag and config errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli, train
from gmcore.cli_train import parse_train_args
from gmcore.train import TrainConfig

pytest.importorskip("safetensors")

FAST = ["--batch-size", "32", "--no-progress", "--no-sample-quality", "--num-samples", "16"]
SMALL_VAE = ["--latent-dim", "4", "--hidden", "32", "--iw-samples", "4"]


def _cfg(tmp_path, *flags, model="vae", extra=SMALL_VAE):
    return parse_train_args(model, ["--out", str(tmp_path / "run"), *FAST, *extra, *flags])


def _train_losses(rows):
    return [r["loss"] for r in rows if r["split"] == "train"]


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_every_output(tmp_path):
    name, tcfg, mcfg = _cfg(tmp_path, "--steps", "30", "--eval-every", "10", "--log-every", "5",
                            "--ema", "0.9")
    res = train.train(name, tcfg, mcfg, log=lambda *a: None)
    run = tmp_path / "run"
    for f in ("config.json", "metrics.jsonl", "last.safetensors", "last.json", "samples.png",
              "loss_curve.png", "metrics.json"):
        assert (run / f).exists(), f
    rows = _rows(run)
    assert [r["step"] for r in rows if r["split"] == "train"] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in rows if r["split"] == "test"] == [10, 20, 30]
    final = json.loads((run / "metrics.json").read_text())
    assert final["step"] == 30 and final["test_bits_per_dim"] == res["test_bits_per_dim"]
    assert final["nll_kind"].startswith("IWAE") and final["test_bits_per_dim"] > 0
    assert 0 < final["baseline_bits_per_dim"] < np.log2(17)
    from PIL import Image
    assert Image.open(run / "samples.png").size[0] > 8


def test_resume_reproduces_losses_bit_for_bit(tmp_path, monkeypatch):
    flags = ["--steps", "40", "--log-every", "1", "--eval-every", "15", "--ckpt-every", "20",
             "--ema", "0.9", "--warmup", "5", "--grad-clip", "1.0"]
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(tmp_path / "full"), *FAST, *SMALL_VAE, *flags])
    train.train(name, tcfg, mcfg, log=lambda *a: None)
    full = _train_losses(_rows(tmp_path / "full"))

    # The same run crashes hard (no Ctrl-C handler runs) at step 27; its last checkpoint is
    # step 20, and metrics.jsonl already holds rows 21..26, which the resume must drop.
    from gmcore.models.latent import VAE

    real_loss, calls = VAE.loss, {"n": 0}

    def crash(self, batch):
        calls["n"] += 1
        if calls["n"] == 27:
            raise RuntimeError("power cut")
        return real_loss(self, batch)

    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(tmp_path / "part"), *FAST, *SMALL_VAE, *flags])
    monkeypatch.setattr(VAE, "loss", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        train.train(name, tcfg, mcfg, log=lambda *a: None)
    monkeypatch.setattr(VAE, "loss", real_loss)
    assert gm.io.load_checkpoint(tmp_path / "part" / "last")["step"] == 20
    tcfg.resume = True
    train.train(name, tcfg, mcfg, log=lambda *a: None)
    resumed = _train_losses(_rows(tmp_path / "part"))
    assert len(full) == len(resumed) == 40
    assert full == resumed                         # exact float equality, every step
    test_rows = [r["step"] for r in _rows(tmp_path / "part") if r["split"] == "test"]
    assert test_rows == [15, 30, 40]


def _rows_no_clock(run_dir):
    return [{k: v for k, v in r.items() if k != "sec_per_step"} for r in _rows(run_dir)]


def _interrupt_at_loss_call(monkeypatch, n, after_loss=False):
    """Raise KeyboardInterrupt in the n-th loss call: on entry, or (``after_loss``) once the loss
    has run, when the model's buffers (the VAE's KL warm-up counter) have already moved."""
    from gmcore.models.latent import VAE

    calls, real_loss = {"n": 0}, VAE.loss

    def flaky(self, batch):
        calls["n"] += 1
        if calls["n"] == n and not after_loss:
            raise KeyboardInterrupt
        out = real_loss(self, batch)
        if calls["n"] == n:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(VAE, "loss", flaky)
    return lambda: monkeypatch.setattr(VAE, "loss", real_loss)


# rows every 4 steps: the partial sums of the next row are part of the checkpoint
# and a KL warm-up, so that the VAE's step counter (a buffer moved inside loss) shows in the rows
CTRL_C_FLAGS = ("--steps", "30", "--log-every", "4", "--eval-every", "0", "--ckpt-every", "0",
                "--kl-warmup", "50")


@pytest.mark.parametrize("in_thread, after_loss", [(False, False), (True, False), (True, True)])
def test_ctrl_c_saves_the_last_completed_step_and_resume_is_exact(tmp_path, monkeypatch, in_thread,
                                                                  after_loss):
    # A KeyboardInterrupt inside step 13, before its update: the checkpoint is that of step 12,
    # the data loader and RNG rewound to before step 13's batch. Outside the main thread no
    # signal handler can be set, and this path is the only one.
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(tmp_path / "ref"), *FAST, *SMALL_VAE, *CTRL_C_FLAGS])
    train.train(name, tcfg, mcfg, log=lambda *a: None)
    name, tcfg, mcfg = _cfg(tmp_path, *CTRL_C_FLAGS)
    undo = _interrupt_at_loss_call(monkeypatch, 13, after_loss)
    if in_thread:
        import threading

        box = {}
        t = threading.Thread(target=lambda: box.update(res=train.train(name, tcfg, mcfg, log=lambda *a: None)))
        t.start()
        t.join()
        res = box["res"]
    else:
        res = train.train(name, tcfg, mcfg, log=lambda *a: None)
    assert res == {"interrupted": True, "step": 12}
    assert gm.io.load_checkpoint(tmp_path / "run" / "last")["step"] == 12
    undo()
    tcfg.resume = True
    assert train.train(name, tcfg, mcfg, log=lambda *a: None)["step"] == 30
    got, ref = _rows_no_clock(tmp_path / "run"), _rows_no_clock(tmp_path / "ref")
    assert [r["step"] for r in got if r["split"] == "train"] == [4, 8, 12, 16, 20, 24, 28, 30]
    assert got == ref


def test_ctrl_c_inside_the_optimizer_update_saves_nothing(tmp_path, monkeypatch):
    from gmcore import optim

    calls, real_step = {"n": 0}, optim.Adam.step

    def step(self, *a, **k):
        calls["n"] += 1
        real_step(self, *a, **k)      # the parameters have changed ...
        if calls["n"] == 13:
            raise KeyboardInterrupt   # ... but the step is not done (scheduler, EMA, counters)

    monkeypatch.setattr(optim.Adam, "step", step)
    name, tcfg, mcfg = _cfg(tmp_path, "--steps", "30", "--eval-every", "0", "--ckpt-every", "5")
    with pytest.raises(KeyboardInterrupt):
        train.train(name, tcfg, mcfg, log=lambda *a: None)
    assert gm.io.load_checkpoint(tmp_path / "run" / "last")["step"] == 10   # the last complete one
    assert not (tmp_path / "run" / "run.lock").exists()


def test_existing_run_is_never_overwritten(tmp_path):
    name, tcfg, mcfg = _cfg(tmp_path, "--steps", "2", "--eval-every", "0")
    train.train(name, tcfg, mcfg, log=lambda *a: None)
    with pytest.raises(FileExistsError, match="--resume"):
        train.train(name, tcfg, mcfg, log=lambda *a: None)
    # resuming with a different model config is refused with the differing field named
    name, tcfg, mcfg = _cfg(tmp_path, "--steps", "4", "--resume", extra=["--latent-dim", "5", "--hidden", "32"])
    with pytest.raises(ValueError, match="latent_dim"):
        train.train(name, tcfg, mcfg, log=lambda *a: None)


def test_ppca_closed_form_run(tmp_path):
    name, tcfg, mcfg = _cfg(tmp_path, "--eval-every", "0", model="ppca", extra=["--latent-dim", "4"])
    res = train.train(name, tcfg, mcfg, log=lambda *a: None)
    # A Gaussian fits 17-level digits worse than the per-pixel categorical baseline (the
    # constant border pixels cost it ~0.25 bit each), but it must beat the uniform model.
    assert res["test_bits_per_dim"] < np.log2(17)
    assert res["step"] == tcfg.steps


def test_cli_flag_errors(capsys):
    with pytest.raises(SystemExit):
        parse_train_args("vae", ["--latent-dim", "zero"])
    assert "latent-dim" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_train_args("vae", ["--decoder", "poisson"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_train_args("vae", ["--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        parse_train_args("nope", [])
    with pytest.raises(SystemExit):
        parse_train_args("vae", ["--steps", "-3"])
    assert "steps must be >= 0" in capsys.readouterr().err


def test_cli_config_file_then_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nsteps = 7\nlr = 0.01\n[model]\nlatent_dim = 3\ndecoder = "gaussian"\n')
    _, tcfg, mcfg = parse_train_args("vae", ["--config", str(f), "--steps", "9"])
    assert (tcfg.steps, tcfg.lr, mcfg.latent_dim, mcfg.decoder) == (9, 0.01, 3, "gaussian")
    f.write_text("[model]\nlatent = 3\n")
    with pytest.raises(SystemExit):
        parse_train_args("vae", ["--config", str(f)])


def test_cli_model_train_defaults_sit_below_toml_and_flags(tmp_path):
    # wavenet's train_defaults replace the general ones; a TOML file and flags still win
    _, tcfg, _ = parse_train_args("wavenet", [])
    assert (tcfg.steps, tcfg.batch_size, tcfg.lr) == (300, 8, 3e-3)
    f = tmp_path / "c.toml"
    f.write_text("[train]\nbatch_size = 4\n")
    _, tcfg, _ = parse_train_args("wavenet", ["--config", str(f), "--steps", "5"])
    assert (tcfg.steps, tcfg.batch_size, tcfg.lr) == (5, 4, 3e-3)
    _, tcfg, _ = parse_train_args("vae", [])
    assert tcfg.steps == TrainConfig().steps


def test_cli_models_sample_eval(tmp_path, capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("vae", "ppca", "dae", "cae"):
        assert name in out
    run = tmp_path / "run"
    assert cli.main(["train", "dae", "--out", str(run), "--steps", "3", "--eval-every", "0", *FAST,
                     "--code-dim", "4", "--hidden", "16", "--chain-steps", "2"]) == 0
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--n", "9", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"] == "dae" and res["nll_kind"].startswith("reconstruction")
    assert cli.main(["sample", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_python_m_gmcore_train_help():
    proc = subprocess.run([sys.executable, "-m", "gmcore", "train", "vae", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    assert "--latent-dim" in proc.stdout and "--batch-size" in proc.stdout and "--free-bits" in proc.stdout


def test_default_run_folder_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--steps", "2", "--eval-every", "0", *FAST, *SMALL_VAE]
    for expect in ("vae", "vae-2", "vae-3"):
        name, tcfg, mcfg = parse_train_args("vae", flags)
        train.train(name, tcfg, mcfg, log=lambda *a: None)
        assert (tmp_path / "runs" / expect / "last.json").exists()
    name, tcfg, mcfg = parse_train_args("vae", flags + ["--resume", "--steps", "4"])
    assert train.train(name, tcfg, mcfg, log=lambda *a: None)["step"] == 4   # resumes runs/vae


def test_train_on_user_mnist_files(tmp_path):
    from gmcore.data import write_idx

    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    for prefix, n in (("train", 40), ("t10k", 12)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    name, tcfg, mcfg = parse_train_args("vae", ["--dataset", "mnist", "--data-root", str(root), "--steps", "3",
                                                "--batch-size", "8", "--arch", "conv", "--channels", "4",
                                                "--latent-dim", "2", "--iw-samples", "2", "--eval-every", "0",
                                                "--no-progress", "--no-sample-quality", "--num-samples", "4",
                                                "--out", str(tmp_path / "run")])
    res = train.train(name, tcfg, mcfg, log=lambda *a: None)
    assert res["dataset"] == "mnist" and res["step"] == 3 and np.isfinite(res["test_bits_per_dim"])
    assert 7.5 < res["baseline_bits_per_dim"] < 9.0          # uniform random pixels: about 8 bits
    with pytest.raises(FileNotFoundError, match="nowhere"):
        parse = parse_train_args("vae", ["--dataset", "mnist", "--data-root", str(tmp_path / "nowhere"),
                                         "--out", str(tmp_path / "run2")])
        train.train(*parse, log=lambda *a: None)


def test_cli_sample_text_run_writes_text(tmp_path, capsys):
    # text (and audio) runs have no image grid: `gmcore sample` asks the model for its own format
    run = tmp_path / "run"
    assert cli.main(["train", "char-rnn", "--out", str(run), "--steps", "2", "--eval-every", "0", *FAST,
                     "--hidden", "8", "--embed-dim", "4", "--seq-len", "16", "--samples", "2",
                     "--sample-length", "30"]) == 0
    assert (run / "samples.txt").exists()
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--seed", "3"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith("samples.txt") and "samples_3" in out
    texts = (run / "samples_3" / "samples.txt").read_text(encoding="utf-8").split("-" * 72)
    assert len(texts) == 2 and all(len(t.strip("\n")) == 30 for t in texts)


def test_ema_forgets_the_weights_from_before_actnorms_data_dependent_init(tmp_path):
    # ActNorm sets its weights from the first batch: an EMA without warm-up kept averaging the
    # pre-initialisation weights for thousands of steps (maf --ema 0.999 scored 10 bits/dim).
    results = {}
    for ema in ("0", "0.999"):
        name, tcfg, mcfg = parse_train_args("linear-flow", ["--out", str(tmp_path / ema), *FAST, "--steps", "30",
                                                            "--ema", ema, "--no-sample-quality"])
        results[ema] = train.train(name, tcfg, mcfg, log=lambda *a: None)["test_bits_per_dim"]
    assert abs(results["0.999"] - results["0"]) < 0.5, results
