"""StyleGAN (gmcore.models.gan.stylegan): the mapping network's lr multiplier, truncation, the
tracked w_avg, style mixing (in training and in the grid picture), the R1 schedule, a CLI run
with its pictures and truncation figures, sampling with --truncation, exact resume, errors."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.models.base import DataInfo
from gmcore.models.gan import StyleGAN
from gmcore.models.gan.stylegan import mix_styles, truncate
from resume_checks import check_crash_resume

TINY = ["--latent-dim", "4", "--g-channels", "2", "--d-channels", "2", "--mapping-layers", "1"]
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "8", "--num-samples", "0",
        "--no-sample-quality"]
DIGITS = DataInfo((1, 8, 8), 17, "digits")


def _model(**kw):
    gm.manual_seed(0)
    return StyleGAN(StyleGAN.Config(latent_dim=4, g_channels=2, d_channels=2, mapping_layers=2, **kw), DIGITS)


def test_mapping_network_has_the_lr_multiplier():
    m = _model()
    layer = m.generator.mapping.layers[0]
    assert layer.lr_mul == 0.01 and layer.scale == pytest.approx(0.01 / 2)   # lr_mul / sqrt(4)
    assert m.generator.num_ws == 4


def test_truncation_pulls_w_to_its_average():
    w, avg = gm.tensor([[2.0, -1.0]]), gm.tensor([1.0, 1.0])
    assert truncate(w, avg, 0.5).tolist() == [[1.5, 0.0]] and truncate(w, avg, 1.0) is w
    m = _model()
    m.generator.w_avg.data[...] = np.array([0.3, -0.2, 0.1, 0.5], np.float32)
    with gm.no_grad():   # psi 0: every sample is w_avg's image (the noise strengths start at 0)
        x = m.sample(3, truncation=0.0).numpy()
        assert np.allclose(x, x[:1], atol=1e-6)
        y = m.sample(3).numpy()
        assert not np.allclose(y[0], y[1])


def test_w_avg_is_an_ema_of_the_mean_w():
    m = _model()
    w = gm.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    m.generator.update_w_avg(w, 0.9)
    assert np.allclose(m.generator.w_avg.numpy(), 0.1 * np.array([2.0, 2.0, 2.0, 2.0]))


def test_style_mixing_uses_each_source_on_its_layers():
    assert mix_styles("a", "b", 4, 1) == ["a", "b", "b", "b"]
    with pytest.raises(ValueError, match="crossover"):
        mix_styles("a", "b", 4, 5)
    m = _model()
    for conv in [m.generator.conv0, *m.generator.ups, *m.generator.convs]:   # visible noise
        conv.noise.weight.data[...] = 0.5
    with gm.no_grad():
        grid = m.style_mixing_grid(2, 3, gm.Generator().manual_seed(1)).numpy()
        assert grid.shape == (12, 1, 8, 8) and np.all(grid[0] == 0)         # (1 + 2) x (1 + 3), blank corner
        a, b = grid[[4, 8]], grid[1:4]
        # crossover at num_ws: every cell of row i is A_i; at 0: every cell of column j is B_j
        all_a = m.style_mixing_grid(2, 3, gm.Generator().manual_seed(1), crossover=4).numpy()
        all_b = m.style_mixing_grid(2, 3, gm.Generator().manual_seed(1), crossover=0).numpy()
    assert np.allclose(all_a[5:8], a[0], atol=1e-5) and np.allclose(all_a[9:12], a[1], atol=1e-5)
    assert np.allclose(all_b[5:8], b, atol=1e-5) and np.allclose(all_b[9:12], b, atol=1e-5)
    mixed = grid[5:8]          # coarse from A_0, fine from B_j: neither source
    assert not np.allclose(mixed, a[0]) and not np.allclose(mixed, b)


def test_training_mixes_styles_with_its_probability(monkeypatch):
    m = _model(mixing_prob=1.0)
    calls = []
    real = m.generator.mapping.forward
    monkeypatch.setattr(m.generator.mapping, "forward", lambda z: calls.append(z.shape) or real(z))
    m._training_fakes(5)
    assert len(calls) == 2                         # two z's mapped: a second source of styles
    calls.clear()
    m.config.mixing_prob = 0.0
    m._training_fakes(5)
    assert len(calls) == 1


def test_a_cli_run_writes_pictures_truncation_figures_and_samples_truncated(tmp_path, capsys):
    out = tmp_path / "run"
    flags = [*FAST, *TINY, "--r1-every", "2", "--num-samples", "4", "--ema", "0.9"]
    assert cli.main(["train", "stylegan", "--out", str(out), "--steps", "3", *flags]) == 0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in r]
    assert ["r1" in r for r in rows] == [True, False, True] and all(r["r1"] >= 0 for r in rows if "r1" in r)
    res = json.loads((out / "metrics.json").read_text())
    assert res["style_mixing_png"] == "style_mixing.png" and res["truncation_kind"] == "psi"
    assert set(res["truncation"]) == {"0.5", "0.7", "1.0"}
    assert all(v["digits_fid"] > 0 and 0 <= v["precision"] <= 1 for v in res["truncation"].values())
    assert (out / "style_mixing.png").exists() and (out / "truncation.png").exists()
    for psi in ("0.5", "1"):
        assert cli.main(["sample", str(out), "--n", "3", "--truncation", psi, "--seed", "3",
                         "--out", str(tmp_path / f"s{psi}.npy")]) == 0
    a, b = np.load(tmp_path / "s0.5.npy"), np.load(tmp_path / "s1.npy")
    assert a.shape == (3, 1, 8, 8) and 0 <= a.min() and a.max() <= 1 and not np.allclose(a, b)
    capsys.readouterr()


def test_sampling_is_reproducible_from_the_seed_noise_included():
    m = _model()
    for conv in [m.generator.conv0, *m.generator.convs]:
        conv.noise.weight.data[...] = 0.5
    with gm.no_grad():
        a = m.sample(2, generator=gm.Generator().manual_seed(4)).numpy()
        b = m.sample(2, generator=gm.Generator().manual_seed(4)).numpy()
    assert np.array_equal(a, b)


def test_stylegan_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "stylegan", StyleGAN,
                       [*FAST, *TINY, "--ema", "0.9", "--r1-every", "2", "--mixing-prob", "0.5"],
                       method="training_step", key="g_loss")


def test_bad_flags_and_data_are_refused():
    with pytest.raises(ValueError, match="--gp-weight"):
        StyleGAN(StyleGAN.Config(gp_weight=10.0), DIGITS)
    with pytest.raises(ValueError, match="--loss"):
        StyleGAN(StyleGAN.Config(loss="hinge"), DIGITS)
    with pytest.raises(ValueError, match="not images"):
        StyleGAN(StyleGAN.Config(), DataInfo((2,), 0, "8gaussians"))
    with pytest.raises(ValueError, match="truncation must be >= 0"):
        _model().sample(2, truncation=-1.0)
