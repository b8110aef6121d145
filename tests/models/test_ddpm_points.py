"""ddpm's points mode (issue 17): `gmcore train ddpm --dataset 8gaussians` trains an MLP denoiser
with the "points" defaults, reports the sample figures of the 2-D toys (no likelihood: the
digits' bound ends in a discretized decoder), samples unclipped and unrounded points, resumes
bit for bit, and refuses the image-only options. The image path is covered by test_ddpm.py."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.models.base import DataInfo
from gmcore.models.diffusion.ddpm import DDPM, DDPMConfig
from gmcore.models.score.score_mlp import ConditionalMLP
from resume_checks import check_crash_resume

TINY = ["--channels", "16", "--num-res-blocks", "1", "--timesteps", "20"]
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality"]
POINTS = DataInfo((2,), 0, "8gaussians")


def test_ddpm_trains_on_the_toys_from_the_cli(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "ddpm", "--dataset", "8gaussians", "--out", str(out), "--steps", "2",
                     "--timesteps", "20", *FAST]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["nll_kind"] == "none" and "test_nll_nats" not in res
    assert res["figure_samples"] == 2000 and res["energy_distance"] > 0
    assert res["modes"] == 8 and 0 <= res["modes_hit"] <= 8
    cfg = json.loads((out / "config.json").read_text())
    # the "points" defaults: the MLP's width and depth, no dropout
    model_cfg = cfg.get("model_config", cfg.get("model", {}))
    assert (model_cfg["channels"], model_cfg["num_res_blocks"], model_cfg["dropout"]) == (128, 3, 0.0)
    assert cli.main(["sample", str(out), "--n", "5", "--steps", "10", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (5, 2) and np.isfinite(s).all()


def test_points_mode_builds_an_mlp_and_has_no_likelihood():
    m = DDPM(DDPMConfig(channels=16, num_res_blocks=2, timesteps=10), POINTS)
    assert isinstance(m.net, ConditionalMLP) and m.nll_kind == "none"
    with pytest.raises(NotImplementedError, match="no likelihood"):
        m.nll((gm.randn(3, 2),))
    loss, logs = m.loss((gm.randn(8, 2),))
    assert np.isfinite(loss.item()) and "mse" in logs
    assert m.save_pictures("/nonexistent") == {}


def test_points_are_diffused_as_they_are():
    """An exact eps oracle for a point mass at (2.5, -3.0), outside [-1, 1]: DDIM returns the
    point itself (no rescaling, x0 not clipped to the images' range, not rounded to levels)."""
    m = DDPM(DDPMConfig(channels=8, num_res_blocks=1, timesteps=50), POINTS).eval()
    target = gm.tensor([[2.5, -3.0]])

    def oracle(x, t, y=None):
        return m.diffusion.eps_from_x0(x, t, target.expand(x.shape[0], 2))
    m.denoiser = lambda labels=None, guidance=0.0: oracle
    s = m.sample(4, generator=gm.Generator().manual_seed(0), steps=10).numpy()
    np.testing.assert_allclose(s, np.tile([[2.5, -3.0]], (4, 1)), atol=1e-4)


def test_image_only_options_are_refused_on_points():
    for kw, flag in ((dict(learn_sigma=True), "learn-sigma"), (dict(class_cond=True), "class-cond"),
                     (dict(timestep_sampler="importance"), "timestep-sampler importance")):
        with pytest.raises(ValueError, match=f"--{flag} is for images only"):
            DDPM(DDPMConfig(channels=8, timesteps=10, **kw), POINTS)
    with pytest.raises(ValueError, match="models images"):   # still refused: other shapes
        DDPM(DDPMConfig(), DataInfo((3, 4), 0, "vectors"))


def test_points_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "ddpm", DDPM,
                       ["--dataset", "8gaussians", *FAST, *TINY, "--num-samples", "0"])
