"""The coupling flow models (nice, realnvp, glow) on images and as 2-D densities: they train,
their whole transform inverts and has the right log-determinant, samples lie on the data's
levels, Glow's temperature works, and the CLI runs them."""
import json

import numpy as np
import pytest

import gmcore as gm
from helpers import fit_full_batch
from resume_checks import check_crash_resume
from gmcore import cli
from gmcore.models.base import DataInfo
from gmcore.models.flows.glow import Glow
from gmcore.models.flows.nice import NICE
from gmcore.models.flows.realnvp import RealNVP
from flow_checks import check_invertible, check_logdet, perturb

DIGITS = DataInfo((1, 8, 8), 17, "digits")
MOONS = DataInfo((2,), 0, "moons")
TINY = {NICE: dict(hidden=16, layers=1, couplings=2),
        RealNVP: dict(hidden=8, couplings=1, flat_couplings=2, mlp_layers=1),
        Glow: dict(hidden=8, depth=1, flat_depth=2, mlp_layers=1)}
TINY2D = {NICE: dict(hidden=16, layers=1, couplings=4),
          RealNVP: dict(flat_hidden=16, flat_couplings=2, mlp_layers=1),
          Glow: dict(hidden=16, flat_depth=2, mlp_layers=1)}
FAST = ["--batch-size", "32", "--no-progress", "--no-sample-quality", "--num-samples", "8",
        "--eval-every", "0"]


def _digits(n=32):
    from gmcore.data.digits import load_digits_arrays

    x, _ = load_digits_arrays("train")
    return gm.tensor(x[:n].astype(np.float32) / 16.0)


def _moons(n=256, split="train"):
    from gmcore.data import get_dataset

    return gm.tensor(get_dataset("moons", split, n=n).arrays[0].astype(np.float32))


def _fit(model, x, steps, lr=3e-3):
    return fit_full_batch(model, x, steps, lr)


@pytest.mark.parametrize("cls", [NICE, RealNVP, Glow])
def test_image_model_trains_and_samples_on_the_levels(cls):
    gm.manual_seed(0)
    model = cls(cls.Config(**TINY[cls]), DIGITS)
    assert model.nll_kind == "dequantization bound"
    x = _digits(32)
    gen = gm.Generator().manual_seed(1)
    before = model.nll((x,), generator=gen).mean().item()
    losses = _fit(model, x, 40, lr=1e-2)
    after = model.nll((x,), generator=gm.Generator().manual_seed(1)).mean().item()
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2        # bits/dim fall
    assert after < before
    # the loss is the NLL in bits per dimension
    assert losses[0] == pytest.approx(before / (64 * np.log(2)), rel=0.05)
    model.eval()
    with gm.no_grad():
        s = model.sample(6, generator=gm.Generator().manual_seed(0))
    assert s.shape == (6, 1, 8, 8) and float(s.min()) >= 0 and float(s.max()) <= 1
    lv = s.numpy() * 16
    np.testing.assert_allclose(lv, np.round(lv), atol=1e-4)


@pytest.mark.parametrize("cls", [RealNVP, Glow])
def test_multiscale_transform_inverts_and_logdet(cls):
    gm.manual_seed(0)
    info = DataInfo((1, 4, 4), 17)
    model = cls(cls.Config(**TINY[cls]), info)
    model.loss((gm.rand(16, 1, 4, 4),))          # initialises actnorm from data
    perturb(model, 0.05)
    t = model.flow.transform
    check_invertible(t, gm.randn(4, 1, 4, 4))
    check_logdet(t.double(), gm.randn(2, 1, 4, 4, dtype=gm.float64))


def test_realnvp_architecture_on_digits():
    model = RealNVP(RealNVP.Config(), DIGITS)
    names = [type(m).__name__ for m in model.flow.transform]
    # 3 checkerboard couplings (each with actnorm), squeeze, 3 channel couplings, factor-out
    assert names[:7] == ["AffineCoupling", "ActNorm2d"] * 3 + ["Squeeze"]
    assert names[-2:] == ["FactorOut", "Unsqueeze"]
    masks = [m.mask for m in model.flow.transform if type(m).__name__ == "AffineCoupling"]
    assert masks == ["checkerboard"] * 3 + ["channel"] * 3
    with pytest.raises(ValueError, match="fewer --scales"):
        RealNVP(RealNVP.Config(scales=5), DIGITS)
    with pytest.raises(ValueError, match="fewer --levels"):
        Glow(Glow.Config(levels=4), DIGITS)


@pytest.mark.parametrize("cls", [RealNVP, Glow, NICE])
def test_2d_density_trains_and_integrates_to_one(cls):
    gm.manual_seed(0)
    model = cls(cls.Config(**TINY2D[cls]), MOONS)
    assert model.nll_kind.startswith("exact")
    x = _moons()
    losses = _fit(model, x, 100, lr=1e-2)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3          # nats fall
    model.eval()
    g = np.linspace(-6, 6, 241)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2).astype(np.float32)
    with gm.no_grad():
        nll = model.nll((gm.tensor(pts),)).numpy()
    mass = np.exp(-nll).sum() * (g[1] - g[0]) ** 2
    assert abs(mass - 1) < 0.02, mass
    with gm.no_grad():
        s = model.sample(5, generator=gm.Generator().manual_seed(0))
    assert s.shape == (5, 2) and np.isfinite(s.numpy()).all()


def test_glow_temperature_and_strip(tmp_path):
    gm.manual_seed(0)
    model = Glow(Glow.Config(**TINY[Glow]), DIGITS)
    _fit(model, _digits(16), 5)
    model.eval()
    with gm.no_grad():
        z0 = model.sample(3, generator=gm.Generator().manual_seed(0), temperature=0.0)
        res = model.save_pictures(tmp_path, gm.Generator().manual_seed(0))
    assert (z0.numpy() == z0.numpy()[:1]).all()        # T = 0: every draw is the base's mean
    assert res["temperatures"] == [0.0, 0.5, 0.7, 1.0]
    from PIL import Image

    img = Image.open(tmp_path / "temperature.png")
    assert img.size == (4 * (8 * 9 + 1), 4 * (4 * 9 + 1))   # 4 rows of 8 images, scaled 4x
    with pytest.raises(ValueError, match="non-negative"):
        model.sample(2, temperature=-1.0)


def test_cli_trains_coupling_flows(tmp_path, capsys):
    assert cli.main(["models"]) == 0
    listing = capsys.readouterr().out
    families = {line.split()[0]: line.split()[1] for line in listing.splitlines()[1:] if line}
    assert [families[n] for n in ("nice", "realnvp", "glow")] == ["flows"] * 3
    run = tmp_path / "glow"
    assert cli.main(["train", "glow", "--out", str(run), "--steps", "3", *FAST,
                     "--hidden", "8", "--depth", "1"]) == 0
    res = json.loads((run / "metrics.json").read_text())
    assert res["nll_kind"] == "dequantization bound" and np.isfinite(res["test_bits_per_dim"])
    assert (run / "samples.png").exists() and (run / "temperature.png").exists()
    capsys.readouterr()
    out = tmp_path / "t.png"
    assert cli.main(["sample", str(run), "--n", "4", "--temperature", "0.5", "--out", str(out)]) == 0
    assert out.exists()
    for name, extra in (("nice", ["--hidden", "8", "--layers", "1"]),
                        ("realnvp", ["--hidden", "8", "--couplings", "1"])):
        assert cli.main(["train", name, "--out", str(tmp_path / name), "--steps", "2", *FAST,
                         *extra]) == 0
        res = json.loads((tmp_path / name / "metrics.json").read_text())
        assert np.isfinite(res["test_bits_per_dim"])


def test_glow_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    # actnorm's data-dependent initialisation is state (its ``initialized`` buffer): a resumed
    # run must not initialise again from the batch it resumes on
    check_crash_resume(tmp_path, monkeypatch, "glow", Glow, ["--hidden", "8", "--depth", "1", *FAST])


def test_draws_that_overflow_are_blank_and_reported():
    """An inverse that overflows gives NaN pixels; the sampler keeps the draw (as 0 there, so it
    counts against the sample figures) and warns with the count."""
    gm.manual_seed(0)
    model = Glow(Glow.Config(**TINY[Glow]), DataInfo((1, 4, 4), 17))
    real = model.sample_flow_space

    def overflowing(n, generator=None, temperature=1.0):
        y = real(n, generator=generator, temperature=temperature)
        y[1, 0, 2] = float("nan")
        y[3] = float("nan")
        return y

    model.sample_flow_space = overflowing
    with pytest.warns(RuntimeWarning, match="2 of 5 draws overflowed"):
        s = model.sample(5, generator=gm.Generator().manual_seed(0))
    a = s.numpy()
    assert np.isfinite(a).all() and a[1, 0, 2].max() == 0 and a[3].max() == 0
    ref = Glow(Glow.Config(**TINY[Glow]), DataInfo((1, 4, 4), 17))
    ref.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(a[[0, 2, 4]],
                                  ref.sample(5, generator=gm.Generator().manual_seed(0)).numpy()[[0, 2, 4]])
