"""MAF and NSF (coupling and autoregressive): they learn a 2-D density (a proper one: it
integrates to 1 on a grid), model dequantized digits in bits/dim with samples on the 17 levels,
invert their own samples, are listed under "flows", and a resumed CLI run continues bit for bit."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore.data.toy2d import make_moons
from gmcore.models import registry
from gmcore.models.base import DataInfo
from gmcore.models.flows.maf import MAF
from gmcore.models.flows.nsf import NSF

MOONS = DataInfo((2,), 0, "moons")
DIGITS = DataInfo((1, 8, 8), 17, "digits")

TINY = {
    "maf": lambda info: MAF(MAF.Config(layers=4, hidden=32), info),
    "maf-mog": lambda info: MAF(MAF.Config(layers=2, hidden=32, base="mog", components=4), info),
    "nsf": lambda info: NSF(NSF.Config(layers=2, hidden=32, num_bins=6), info),
    "nsf-ar": lambda info: NSF(NSF.Config(variant="autoregressive", layers=2, hidden=32,
                                          num_bins=6), info),
}


def _fit(model, x, steps, lr=5e-3, batch=128):
    opt = gm.optim.Adam(model.parameters(), lr=lr)
    g = np.random.default_rng(0)
    for _ in range(steps):
        idx = g.integers(0, x.shape[0], batch)
        loss, _ = model.loss((x[gm.tensor(idx)],))
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("name", sorted(TINY))
def test_learns_moons_and_density_integrates_to_one(name):
    gm.manual_seed(0)
    model = TINY[name](MOONS)
    x = gm.tensor(make_moons(512, seed=1)[0].astype(np.float32))
    before = model.nll((x,)).mean().item()
    _fit(model, x, 80)
    model.eval()
    with gm.no_grad():
        after = model.nll((x,)).mean().item()
        # a grid covering the data and beyond: the density's mass there is about 1
        u = np.linspace(-2.5, 3.5, 121)
        grid = np.stack(np.meshgrid(u, u - 0.75), -1).reshape(-1, 2).astype(np.float32)
        mass = np.exp(-model.nll((gm.tensor(grid),)).numpy()).sum() * (u[1] - u[0]) ** 2
    assert after < before - 0.5, (before, after)
    assert after < 1.6          # a standard 2-D Gaussian fit of moons scores about 2.0 nats
    assert abs(mass - 1.0) < 0.03, mass


@pytest.mark.parametrize("name", sorted(TINY))
def test_digits_bits_per_dim_and_samples_on_the_levels(name):
    from gmcore.data.digits import load_digits_arrays

    gm.manual_seed(0)
    model = TINY[name](DIGITS)
    x = gm.tensor(load_digits_arrays("train")[0][:32].astype(np.float32) / 16.0)
    g = gm.Generator().manual_seed(0)
    nll = model.nll((x,), generator=g)
    assert nll.shape == (32,) and model.nll_kind == "dequantization bound"
    gm.manual_seed(5)
    loss, _ = model.loss((x,))
    gm.manual_seed(5)
    again = model.nll((x,)).mean().item() / (64 * np.log(2))
    assert loss.item() == pytest.approx(again, rel=1e-5)       # the loss is bits/dim
    s = model.sample(6, generator=gm.Generator().manual_seed(1)).numpy()
    assert s.shape == (6, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    np.testing.assert_allclose(s * 16, np.round(s * 16), atol=1e-4)


@pytest.mark.parametrize("name", sorted(TINY))
def test_samples_map_back_to_the_base_draws(name):
    gm.manual_seed(0)
    model = TINY[name](MOONS)
    _fit(model, gm.tensor(make_moons(256, seed=2)[0].astype(np.float32)), 5)
    model.eval()
    with gm.no_grad():
        pts = model.sample(16, generator=gm.Generator().manual_seed(3))
        z, _ = model.flow.transform(pts)
    z0 = model.flow.base.sample(16, generator=gm.Generator().manual_seed(3))
    np.testing.assert_allclose(z.numpy(), z0.numpy(), atol=1e-4)


def test_made_mog_is_a_normalised_density_and_samples_from_it():
    """MAF-MoG's base with random weights: its density integrates to 1 on a grid, the first
    variable of its ordering is a plain mixture, and the sampler draws from that density (the
    moments of 20000 draws match the grid's)."""
    from gmcore.nn.flows.made_mog import MADEMoG

    gm.manual_seed(3)
    base = MADEMoG(2, components=3, hidden=16, ordering="reverse").double()
    with gm.no_grad():
        for p in base.net.out.parameters():          # the output layer starts at zero
            p.copy_(p + 0.1 * gm.randn(*p.shape, dtype="float64"))
        u = np.linspace(-9, 9, 361)
        grid = np.stack(np.meshgrid(u, u), -1).reshape(-1, 2)
        p = np.exp(base.log_prob(gm.tensor(grid)).numpy()) * (u[1] - u[0]) ** 2
        draws = base.sample(20000, generator=gm.Generator().manual_seed(0)).numpy()
        lp2 = base.log_prob(gm.tensor(np.array([[0.0, 0.3], [5.0, 0.3]]))).numpy()
    assert p.sum() == pytest.approx(1.0, abs=1e-6)
    mean = (p[:, None] * grid).sum(0)
    std = np.sqrt((p[:, None] * (grid - mean) ** 2).sum(0))
    np.testing.assert_allclose(draws.mean(0), mean, atol=4 * std.max() / np.sqrt(20000) + 1e-3)
    np.testing.assert_allclose(draws.std(0), std, rtol=0.03)
    assert lp2[0] != lp2[1]        # dimension 0 comes second in "reverse": it depends on x_1 ...
    with gm.no_grad():             # ... while x_1, first, does not depend on x_0
        a = base._params(gm.tensor(np.array([[0.0, 0.3], [5.0, 0.3]])))[1].numpy()
    np.testing.assert_allclose(a[0, 1], a[1, 1])
    with pytest.raises(ValueError, match="expected values of shape"):
        base.log_prob(gm.randn(3, 3, dtype="float64"))


def test_maf_is_maf_mog_on_the_toys_and_keeps_its_image_defaults():
    """The per-data defaults (gmcore/models/base.py): the 2-D toys get MAF-MoG, small, at a
    higher lr and with noise regularization, without flags; digits keep the image settings;
    flags still win."""
    from gmcore.cli_train import parse_train_args

    for data in ("moons", "8gaussians", "checkerboard"):
        _, t, m = parse_train_args("maf", ["--dataset", data])
        assert (m.base, m.layers, m.hidden, m.noise_std, t.lr, t.ema, t.steps) == \
            ("mog", 2, 32, 0.03, 5e-3, 0.995, 2000)
    _, t, m = parse_train_args("maf", [])
    assert (m.base, m.layers, m.hidden, t.lr, t.ema) == ("normal", 5, 256, 1e-3, 0.0)
    _, t, m = parse_train_args("maf", ["--dataset", "moons", "--base", "normal", "--lr", "1e-3"])
    assert (m.base, m.layers, t.lr) == ("normal", 2, 1e-3)
    model = MAF(parse_train_args("maf", ["--dataset", "moons"])[2], MOONS)
    from gmcore.nn.flows.made_mog import MADEMoG
    assert isinstance(model.flow.base, MADEMoG) and model.flow.base.components == 10


def test_registered_under_flows_and_bad_data_refused():
    for name in ("maf", "nsf"):
        assert registry.get(name).family == "flows"
    with pytest.raises(ValueError, match="at least 2"):
        MAF(MAF.Config(), DataInfo((1,), 0, "line"))
    with pytest.raises(ValueError, match="needs --base mog"):
        MAF(MAF.Config(layers=0), MOONS)


@pytest.mark.parametrize("name,extra", [
    ("maf", ["--hidden", "16", "--layers", "2"]),
    pytest.param("nsf", ["--hidden", "16", "--layers", "2", "--num-bins", "4"],
                 marks=pytest.mark.slow),      # ~3 s: the run's end (GMM baseline, density grid)
])
def test_cli_resume_is_bit_exact(tmp_path, name, extra):
    pytest.importorskip("safetensors")
    from gmcore import train
    from gmcore.cli_train import parse_train_args

    def run(out, steps, *more):
        _, tcfg, mcfg = parse_train_args(name, [
            "--out", str(out), "--steps", str(steps), "--batch-size", "32", "--no-progress",
            "--no-sample-quality", "--num-samples", "0", "--eval-every", "0", "--log-every", "1",
            "--dataset", "moons", *extra, *more])
        train.train(name, tcfg, mcfg, log=lambda *a: None)
        rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r and r.get("split", "train") == "train"]

    full = run(tmp_path / "full", 6)
    run(tmp_path / "part", 3)
    assert run(tmp_path / "part", 6, "--resume") == full
