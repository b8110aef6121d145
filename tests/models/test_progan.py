"""ProGAN (gmcore.models.gan.progan): the phase schedule, fade-in in both networks (alpha 0 =
the old path, 1 = the new), the data at each phase, the networks' shapes, a CLI run that grows
through a fade, exact resume across phases, and clear errors."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.models.base import DataInfo
from gmcore.models.gan import ProGAN
from gmcore.models.gan.progan import progressive_phase
from gmcore.nn.style import downscale2d, upscale2d
from resume_checks import check_crash_resume

TINY = ["--latent-dim", "4", "--g-channels", "2", "--d-channels", "2",
        "--stable-steps", "2", "--fade-steps", "2"]
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "8", "--num-samples", "4",
        "--no-sample-quality"]
DIGITS = DataInfo((1, 8, 8), 17, "digits")


def _model(**kw):
    gm.manual_seed(0)
    return ProGAN(ProGAN.Config(latent_dim=4, g_channels=2, d_channels=2, **kw), DIGITS)


def test_phase_schedule_stable_then_fade_per_resolution():
    # 3 stages (32x32): 4 stable, 2 fade per level; the last level stays
    got = [progressive_phase(s, 3, 4, 2) for s in range(20)]
    assert got[:4] == [(0, 1.0)] * 4
    assert got[4:6] == [(1, 0.0), (1, 0.5)] and got[6:10] == [(1, 1.0)] * 4
    assert got[10:12] == [(2, 0.0), (2, 0.5)] and got[16:18] == [(3, 0.0), (3, 0.5)]
    assert got[18:] == [(3, 1.0)] * 2 and progressive_phase(10 ** 6, 3, 4, 2) == (3, 1.0)
    assert progressive_phase(3, 1, 3, 0) == (1, 1.0)             # no fade: the new level at once


def test_generator_fade_in_old_path_at_alpha_0_new_path_at_1():
    m = _model()
    g, z = m.generator, gm.randn(3, 4)
    with gm.no_grad():
        old = upscale2d(g(z, 0, 1.0))                      # the 4x4 network's image, upsampled
        new = g(z, 1, 1.0)
        assert np.allclose(g(z, 1, 0.0).numpy(), old.numpy(), atol=1e-6)
        assert np.allclose(g(z, 1, 0.3).numpy(), (0.7 * old + 0.3 * new).numpy(), atol=1e-5)
        assert not np.allclose(old.numpy(), new.numpy())


def test_discriminator_fade_in_old_path_at_alpha_0_new_path_at_1():
    m = _model()
    d, x = m.discriminator, gm.randn(4, 1, 8, 8)
    with gm.no_grad():
        assert np.allclose(d(x, 1, 0.0).numpy(), d(downscale2d(x), 0, 1.0).numpy(), atol=1e-5)
        # alpha 1: the new block's path alone (differs from the old one)
        assert not np.allclose(d(x, 1, 1.0).numpy(), d(x, 1, 0.0).numpy())


def test_real_images_follow_the_phase():
    m = _model()
    x = gm.rand(2, 1, 8, 8)
    y = x * 2 - 1
    assert np.allclose(m.real_at(x, 0, 1.0).numpy(), downscale2d(y).numpy(), atol=1e-6)
    assert np.allclose(m.real_at(x, 1, 1.0).numpy(), y.numpy(), atol=1e-6)
    assert np.allclose(m.real_at(x, 1, 0.0).numpy(), upscale2d(downscale2d(y)).numpy(), atol=1e-6)


@pytest.mark.parametrize("shape, stages", [((1, 8, 8), 1), ((1, 28, 28), 2), ((3, 32, 32), 3)])
def test_networks_grow_to_the_data_size(shape, stages):
    gm.manual_seed(0)
    m = ProGAN(ProGAN.Config(latent_dim=3, g_channels=2, d_channels=2), DataInfo(shape, 256, "x"))
    assert m.stages == stages
    z = gm.randn(2, 3)
    with gm.no_grad():
        for level in range(stages + 1):
            img = m.generator(z, level, 0.5)
            assert img.shape == (2, shape[0], shape[1] >> (stages - level), shape[2] >> (stages - level))
            assert m.discriminator(img, level, 0.5).shape == (2, 1)
        x = m.sample(2)          # before training: level 0, upsampled to the data's size
    assert x.shape == (2, *shape) and float(x.min().item()) >= 0 and float(x.max().item()) <= 1


def test_a_cli_run_grows_through_a_fade_and_samples_at_full_size(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "progan", "--out", str(out), "--steps", "5", *FAST, *TINY]) == 0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in r]
    assert [(r["level"], r["alpha"]) for r in rows] == [(0, 1), (0, 1), (1, 0), (1, 0.5), (1, 1)]
    assert all(np.isfinite(r["d_loss"]) and r["gp"] >= 0 and r["drift"] >= 0 for r in rows)
    assert (out / "samples.png").exists()
    assert cli.main(["sample", str(out), "--n", "3", "--out", str(tmp_path / "s.npy")]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (3, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    model, _ = gm.train.load_run_model(out / "last")
    assert int(model.steps_done.item()) == 5 and model.sampling_phase() == (1, 1.0)


def test_progan_resume_is_bit_exact_across_phases(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "progan", ProGAN, [*FAST, *TINY, "--ema", "0.9"],
                       method="training_step", key="g_loss")


def test_bad_flags_and_data_are_refused():
    with pytest.raises(ValueError, match="--loss"):
        ProGAN(ProGAN.Config(loss="hinge"), DIGITS)
    with pytest.raises(ValueError, match="--labels"):
        ProGAN(ProGAN.Config(labels="input"), DataInfo((1, 8, 8), 17, "digits", num_classes=10))
    with pytest.raises(ValueError, match="not images"):
        ProGAN(ProGAN.Config(), DataInfo((2,), 0, "8gaussians"))
    with pytest.raises(ValueError, match="nothing to grow"):
        ProGAN(ProGAN.Config(), DataInfo((1, 4, 4), 2, "tiny"))
    with pytest.raises(ValueError, match="no truncation"):
        _model().sample(2, truncation=0.5)
