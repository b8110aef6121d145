"""The ``ddpm`` model (gmcore.models.diffusion.ddpm): classifier-free guidance's formula, label
dropout, the importance sampler kept in the checkpoint (exact resume), DDIM's deterministic
encoding of test digits, and the CLI around a run (sample options, eval options, SDEdit)."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.data import get_dataset
from gmcore.models.base import DataInfo
from gmcore.models.diffusion.ddpm import DDPM, DDPMConfig
from resume_checks import check_crash_resume
from helpers import perturbed

pytest.importorskip("safetensors")

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = dict(channels=8, num_res_blocks=1, timesteps=20, attention_resolutions="", num_heads=1, dropout=0.0)
TINY_FLAGS = ["--channels", "8", "--num-res-blocks", "1", "--timesteps", "20", "--attention-resolutions", "",
              "--num-heads", "1", "--timesteps-subsample", "10"]
FAST = ["--no-progress", "--log-every", "1", "--batch-size", "16", "--num-samples", "4", "--no-sample-quality"]


def test_guidance_mixes_conditional_and_unconditional_predictions():
    m = perturbed(DDPM(DDPMConfig(**TINY, class_cond=True, learn_sigma=True), DIGITS))
    x, t = gm.randn(3, 1, 8, 8), gm.tensor([0, 7, 19])
    y = gm.tensor([1, 4, 9])
    null = gm.full((3,), 10).long()
    with gm.no_grad():
        cond, uncond = m.net(x, t, y), m.net(x, t, null)
        guided = m.denoiser(y, guidance=3.0)(x, t)
    np.testing.assert_allclose(guided[:, :1].numpy(), (4.0 * cond[:, :1] - 3.0 * uncond[:, :1]).numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(guided[:, 1:].numpy(), cond[:, 1:].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(cond.numpy(), uncond.numpy())      # the label does reach the net


def test_label_dropout_trains_the_null_label(monkeypatch):
    m = DDPM(DDPMConfig(**TINY, class_cond=True, label_dropout=0.5), DIGITS)
    seen = []
    real = m.net.forward
    monkeypatch.setattr(m.net, "forward", lambda x, t, y=None: (seen.append(y.numpy().copy()), real(x, t, y))[1])
    gm.manual_seed(0)
    m.loss((gm.rand(400, 1, 8, 8), gm.zeros(400).long() + 3))
    labels = seen[0]
    assert set(np.unique(labels)) == {3, 10}
    assert 0.4 < (labels == 10).mean() < 0.6


def test_unconditional_runs_refuse_labels_and_guidance():
    m = DDPM(DDPMConfig(**TINY), DIGITS)
    with pytest.raises(ValueError, match="class-conditional"):
        m.sample(2, label=3)
    with pytest.raises(ValueError, match="class-conditional"):
        m.sample(2, guidance=1.0)
    with pytest.raises(ValueError, match="class labels"):
        DDPM(DDPMConfig(**TINY, class_cond=True), DataInfo((1, 8, 8), 17, "noclasses"))
    with pytest.raises(ValueError, match="images"):   # the 2-D toys are points mode (test_ddpm_points.py)
        DDPM(DDPMConfig(**TINY), DataInfo((3, 4), 0, "vectors"))


def test_samples_lie_on_the_data_levels():
    m = perturbed(DDPM(DDPMConfig(**TINY), DIGITS))
    with gm.no_grad():
        for sampler in ("ddpm", "ddim", "pndm"):
            x = m.sample(5, generator=gm.Generator().manual_seed(1), sampler=sampler, steps=8).numpy()
            assert x.shape == (5, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
            np.testing.assert_allclose(x * 16, np.round(x * 16), atol=1e-5)


def test_ddim_encoding_of_test_digits_decodes_back():
    # The target: x -> x_T by the reverse ODE -> x with 100 steps, mean abs error < 0.02
    # on [0, 1]. Any smooth denoiser has the property; a randomly initialised U-Net is one.
    m = perturbed(DDPM(DDPMConfig(channels=8, num_res_blocks=1, timesteps=1000, attention_resolutions="",
                                   num_heads=1, dropout=0.0), DIGITS), scale=0.1)
    test = get_dataset("digits", "test")
    x = gm.tensor(test.arrays[0][:4] / 16.0, dtype="float32")
    with gm.no_grad():
        x_T = m.invert(x, steps=100)
        back = m.decode(x_T, steps=100)
    assert float((x_T - (x * 2 - 1)).abs().mean()) > 0.3     # the encoding went far from the image
    assert float((back - x).abs().mean()) < 0.02


def test_importance_sampler_resume_is_bit_exact(tmp_path, monkeypatch):
    # T = 4: the sampler's history (10 losses per t) fills within the first steps, so the draws
    # after the crash depend on the history restored from the checkpoint's buffers
    check_crash_resume(tmp_path, monkeypatch, "ddpm", DDPM,
                       [*FAST, *TINY_FLAGS, "--timesteps", "4", "--timesteps-subsample", "1", "--eval-every", "0",
                        "--ema", "0.9", "--learn-sigma", "--timestep-sampler", "importance"])
    state = gm.io.load_checkpoint(tmp_path / "part" / "last")["model"]
    assert int(state["sampler_counts"].numpy().min()) == 10      # warmed up before the end


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm") / "run"
    saved, DDPM.GUIDANCE_ACCURACY_SAMPLES = DDPM.GUIDANCE_ACCURACY_SAMPLES, 20    # a smoke run
    try:
        assert cli.main(["train", "ddpm", "--out", str(out), "--steps", "3", *FAST, *TINY_FLAGS,
                         "--class-cond"]) == 0
    finally:
        DDPM.GUIDANCE_ACCURACY_SAMPLES = saved
    return out


def test_a_run_writes_its_figure_and_pictures(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["nll_kind"].startswith("variational bound on -log p(x | y), estimated")
    assert "each block of 10 of the 20" in metrics["nll_kind"]
    assert 0 < metrics["test_bits_per_dim"] < 100
    assert metrics["chain_png"] == "chain.png" and (run / "chain.png").exists()
    assert (run / "guidance.png").exists() and metrics["guidance_scales"][0] == 0.0
    accuracy = metrics["label_accuracy_by_guidance"]
    assert sorted(accuracy) == ["0.0", "1.0", "3.0", "7.0"] and all(0 <= a <= 1 for a in accuracy.values())
    assert json.loads((run / "config.json").read_text())["train"]["ema"] == 0.999   # EMA on by default


def test_cli_sampling_and_eval_options(run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(run), "--n", "4", "--sampler", "pndm", "--steps", "6", "--label", "7",
                     "--guidance", "2", "--out", str(out)]) == 0
    assert np.load(out).shape == (4, 1, 8, 8)
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--no-sample-quality"]) == 0
    own = json.loads(capsys.readouterr().out)
    metrics = json.loads((run / "metrics.json").read_text())
    assert own["test_bits_per_dim"] == metrics["test_bits_per_dim"]     # the run's own figure, again
    assert cli.main(["eval", str(run), "--no-sample-quality", "--timesteps-subsample", "1"]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert exact["timesteps_subsample"] == 1 and exact["nll_kind"] == "variational bound on -log p(x | y)"
    assert exact["test_bits_per_dim"] != own["test_bits_per_dim"]


def test_sdedit_from_the_cli(run, tmp_path, capsys):
    out = tmp_path / "edit.png"
    assert cli.main(["edit", str(run), "--from-test", "4", "--strength", "0.3", "--steps", "10",
                     "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert out.exists() and summary["edited"] == 4 and summary["strength"] == 0.3
    assert 0 <= summary["class_kept"] <= 1 and 0 <= summary["class_kept_inputs"] <= 1
    from PIL import Image
    img = tmp_path / "in.png"
    Image.fromarray((np.arange(256).reshape(16, 16)).astype(np.uint8)).save(img)
    assert cli.main(["edit", str(run), "--input", str(img), "--input", str(img), "--strength", "1",
                     "--steps", "5", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["edited"] == 2


def test_edit_errors_are_one_line(run, tmp_path, capsys):
    for args, words in ((["--strength", "0.5"], "--input IMAGE"),
                        (["--from-test", "2", "--strength", "1.5"], "--strength"),
                        (["--input", str(tmp_path / "none.png")], "no such file"),
                        (["--from-test", "9999"], "test split has")):
        assert cli.main(["edit", str(run), *args]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err


def test_edit_refuses_a_model_without_a_diffusion(tmp_path, capsys):
    out = tmp_path / "ppca"
    assert cli.main(["train", "ppca", "--out", str(out), "--no-progress", "--num-samples", "4",
                     "--no-sample-quality"]) == 0
    assert cli.main(["edit", str(out), "--from-test", "2"]) == 1
    assert "diffusion run" in capsys.readouterr().err
