"""Flow models' shared plumbing (FlowModel: dequantization, units, sampling), the 2-D machinery
of a run (density on a grid, its mass, the GMM-EM baseline, the pictures), and the simple flow
models linear-flow, planar-flow and radial-flow, from the CLI."""
import json
import math

import numpy as np
import pytest

import gmcore as gm
from helpers import fit_full_batch
from resume_checks import check_crash_resume
from gmcore import cli, train
from gmcore.baselines import fit_gmm, gmm_baseline_nll
from gmcore.cli_train import parse_train_args
from gmcore.data.toy2d import make_moons
from gmcore.density2d import density_mass, grid_bounds, log_density_grid
from gmcore.models.base import DataInfo
from gmcore.models.flows import LinearFlow, PlanarFlow, RadialFlow
from gmcore.models.flows._density import FlowModel, PointNoiseConfig
from gmcore.nn.flows import FlowDensity, LULinear, StandardNormal

MOONS = DataInfo((2,), 0, "moons")
DIGITS = DataInfo((1, 8, 8), 17, "digits")


def _moons(n=256, seed=0):
    return gm.tensor(make_moons(n, seed=seed)[0])


def _fit(model, x, steps, lr=1e-2):
    return fit_full_batch(model, x, steps, lr)


# ---- FlowModel: units, dequantization, sampling ----------------------------------------------

class _Identity(FlowModel):
    """N(0, I) on the flow's space (an LULinear at its identity initialisation): every figure
    has a closed form."""

    flat_input = True

    def __init__(self, data):
        super().__init__(None, data)
        self.flow = FlowDensity(StandardNormal(self.flow_shape), LULinear(self.flow_shape[0]))


class _IdentityLogit(_Identity):
    preprocess = "logit"


def _identity(data, preprocess="affine"):
    return (_IdentityLogit if preprocess == "logit" else _Identity)(data)


def _normal_logp(y):
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    return -0.5 * (y * y).sum(1) - 0.5 * y.shape[1] * math.log(2 * math.pi)


def test_points_nll_is_the_exact_density_in_nats():
    m = _Identity(MOONS)
    x = _moons(5)
    assert m.nll_kind == "exact (continuous density, nats)"
    np.testing.assert_allclose(m.nll((x,)).detach().numpy(), -_normal_logp(x.numpy()), rtol=1e-6)
    loss, _ = m.loss((x,))
    assert loss.item() == pytest.approx(-_normal_logp(x.numpy()).mean(), rel=1e-6)


def test_images_nll_is_the_dequantization_bound():
    m = _Identity(DataInfo((1, 2, 2), 17, "digits")).double()
    x = gm.tensor(np.array([0, 4, 16, 9]).reshape(1, 1, 2, 2) / 16.0, dtype="float64")
    nll = m.nll((x,), generator=gm.Generator().manual_seed(7)).item()
    u = gm.rand(1, 1, 2, 2, generator=gm.Generator().manual_seed(7), dtype="float64").numpy()
    y = (np.array([0, 4, 16, 9]).reshape(1, 1, 2, 2) + u) / 17 - 0.5    # affine: x - 1/2
    assert m.nll_kind == "dequantization bound"
    assert nll == pytest.approx(-_normal_logp(y)[0] + 4 * math.log(17), rel=1e-12)
    gen = gm.Generator().manual_seed(7)
    loss = m.nll((x,), generator=gen).item() / (4 * math.log(2))          # bits/dim
    gm.manual_seed(7)
    assert m.loss((x,))[0].item() == pytest.approx(loss, rel=1e-12)


class _NoisyIdentity(FlowModel):
    """:class:`_Identity` with ``--noise-std``."""

    flat_input = True

    def __init__(self, data, noise_std):
        super().__init__(PointNoiseConfig(noise_std=noise_std), data)
        self.flow = FlowDensity(StandardNormal(self.flow_shape), LULinear(self.flow_shape[0]))


def test_noise_regularization_moves_the_training_points_only():
    """``--noise-std s``: the loss is -log p(x + s sd eps), sd each feature's standard deviation
    over the batch and eps fresh from the global generator; the test figure (nll) is of the
    clean points."""
    x = _moons(6).double()
    m = _NoisyIdentity(MOONS, 0.3).double()
    gm.manual_seed(3)
    loss = m.loss((x,))[0].item()
    gm.manual_seed(3)
    eps = gm.randn(6, 2, dtype="float64").numpy()
    sd = x.numpy().std(0, ddof=1)                    # per feature, over the batch
    assert loss == pytest.approx(-_normal_logp(x.numpy() + 0.3 * sd * eps).mean(), rel=1e-12)
    assert abs(loss + _normal_logp(x.numpy()).mean()) > 0.01       # the noise did move them
    np.testing.assert_allclose(m.nll((x,)).detach().numpy(), -_normal_logp(x.numpy()), rtol=1e-12)
    clean = _NoisyIdentity(MOONS, 0.0).double()
    assert clean.loss((x,))[0].item() == pytest.approx(-_normal_logp(x.numpy()).mean(), rel=1e-12)


def _build_on_digits(name, argv):
    """Model ``name`` with the config ``gmcore train name ARGV`` would give, on digits."""
    from gmcore import models
    _, _, mcfg = parse_train_args(name, argv)
    return models.get(name).cls(mcfg, DIGITS)


def test_noise_regularization_is_refused_where_it_is_undefined():
    with pytest.raises(ValueError, match="batches of 2 or more"):
        _NoisyIdentity(MOONS, 0.1).loss((_moons(1),))
    with pytest.raises(ValueError, match="--noise-std is for continuous points"):
        _NoisyIdentity(DIGITS, 0.1)
    with pytest.raises(ValueError, match="--noise-std is for continuous points"):
        _build_on_digits("realnvp", ["--noise-std", "0.05"])


def test_logit_preprocessing_counts_its_log_determinant():
    m = _identity(DIGITS, "logit").double()
    x = gm.tensor(np.random.default_rng(0).uniform(0, 1, (3, 1, 8, 8)), dtype="float64",
                  requires_grad=True)
    y, ld = m.to_flow_space(x)
    (g,) = gm.autograd.grad(y.sum(), [x])                    # elementwise map: the diagonal
    np.testing.assert_allclose(ld.detach().numpy(), np.log(g.numpy()).reshape(3, -1).sum(1), rtol=1e-10)
    np.testing.assert_allclose(m.from_flow_space(y).detach().numpy(), x.detach().numpy(), atol=1e-12)


def test_image_samples_lie_on_the_levels():
    for pre in ("affine", "logit"):
        s = _identity(DIGITS, pre).sample(20, generator=gm.Generator().manual_seed(0),
                                          temperature=0.7)
        v = s.numpy() * 16
        assert s.shape == (20, 1, 8, 8) and v.min() >= 0 and v.max() <= 16
        np.testing.assert_allclose(v, np.round(v), atol=1e-4)


def test_flow_models_refuse_data_they_cannot_model():
    with pytest.raises(ValueError, match="continuous points"):
        PlanarFlow(PlanarFlow.Config(layers=2), DataInfo((16,), 50, "text"))
    with pytest.raises(ValueError, match="vectors"):
        LinearFlow(LinearFlow.Config(), DataInfo((1, 4, 4), 0, "x"))
    with pytest.raises(ValueError, match="float data of shape"):
        PlanarFlow(PlanarFlow.Config(layers=2), MOONS).nll((gm.randn(3, 3),))
    with pytest.raises(ValueError, match="temperature"):
        LinearFlow(LinearFlow.Config(), MOONS).sample(2, temperature=-1.0)


# ---- 2-D densities: mass on a grid, sampling through the numerical inverses --------------------

@pytest.mark.parametrize("cls", [PlanarFlow, RadialFlow, LinearFlow])
def test_2d_density_integrates_to_one_on_the_grid(cls):
    gm.manual_seed(0)
    model = cls(cls.Config(layers=8) if cls is not LinearFlow else cls.Config(layers=2), MOONS)
    x = _moons(256)
    losses = _fit(model, x, 40)
    assert np.mean(losses[-5:]) < losses[0]
    model.eval()
    bounds = grid_bounds(x.numpy())
    with gm.no_grad():
        mass = density_mass(log_density_grid(model, bounds, steps=120), bounds)
    assert abs(mass - 1) < 0.02, mass


@pytest.mark.parametrize("cls", [PlanarFlow, RadialFlow])
def test_samples_come_from_inverting_the_trained_flow(cls):
    gm.manual_seed(1)
    model = cls(cls.Config(layers=6), MOONS).double()
    _fit(model, _moons(128).double(), 20)
    model.eval()
    with gm.no_grad():
        s = model.sample(64, generator=gm.Generator().manual_seed(3))
        z, _ = model.flow.transform(s)
    z0 = StandardNormal((2,)).sample(64, generator=gm.Generator().manual_seed(3), dtype="float64")
    np.testing.assert_allclose(z.numpy(), z0.numpy(), atol=1e-8)


def test_density_mass_detects_a_wrong_normalisation():
    """The check can fail: a density off by a factor 2 reports mass 2."""
    x = _moons(64).numpy()
    model = LinearFlow(LinearFlow.Config(), MOONS)
    bounds = grid_bounds(x)
    with gm.no_grad():
        logd = log_density_grid(model, bounds, steps=100)
    assert density_mass(logd + math.log(2), bounds) == pytest.approx(2 * density_mass(logd, bounds))


# ---- GMM baseline ---------------------------------------------------------------------------

def test_gmm_em_recovers_two_separated_gaussians():
    rng = np.random.default_rng(0)
    cov_b = np.array([[1.0, 0.6], [0.6, 0.5]])
    a = rng.normal(0, 0.5, (600, 2)) + [-6, 0]
    b = rng.multivariate_normal([5, 3], cov_b, 400)
    g = fit_gmm(np.concatenate([a, b]), k=2, seed=1)
    order = np.argsort(g.means[:, 0])
    np.testing.assert_allclose(g.weights[order], [0.6, 0.4], atol=1e-3)
    np.testing.assert_allclose(g.means[order], [[-6, 0], [5, 3]], atol=0.15)
    np.testing.assert_allclose(g.covs[order[0]], 0.25 * np.eye(2), atol=0.05)
    np.testing.assert_allclose(g.covs[order[1]], cov_b, atol=0.15)
    # the mixture's log density integrates to 1 and is deterministic for a seed
    bounds = (-12.0, 12.0, -8.0, 10.0)
    xs, ys = np.linspace(-12, 12, 481)[:-1] + 0.025, np.linspace(-8, 10, 361)[:-1] + 0.025
    gx, gy = np.meshgrid(xs, ys)
    lp = g.log_prob(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gx.shape)
    assert density_mass(lp, bounds) == pytest.approx(1.0, abs=1e-3)
    assert gmm_baseline_nll(a, b, k=2, seed=4) == gmm_baseline_nll(a, b, k=2, seed=4)
    with pytest.raises(ValueError, match="k <= N"):
        fit_gmm(a[:3], k=10)


def test_gmm10_beats_one_gaussian_on_moons():
    tr, te = make_moons(1000, seed=0)[0], make_moons(1000, seed=1)[0]
    assert gmm_baseline_nll(tr, te, k=10) < gmm_baseline_nll(tr, te, k=1) - 0.5


# ---- runs from the CLI -------------------------------------------------------------------------

FAST = ["--batch-size", "64", "--no-progress", "--num-samples", "16", "--warmup", "0"]


def test_cli_planar_flow_run_writes_2d_pictures_and_figures(tmp_path, capsys):
    out = tmp_path / "planar"
    assert cli.main(["train", "planar-flow", "--steps", "3", "--layers", "4", "--out", str(out),
                     *FAST]) == 0
    for f in ("samples.png", "density.png", "loss_curve.png", "metrics.json", "last.safetensors"):
        assert (out / f).exists(), f
    res = json.loads((out / "metrics.json").read_text())
    assert res["unit"] == "nats" and res["nll_kind"] == "exact (continuous density, nats)"
    assert "test_bits" not in res and "test_bits_per_dim" not in res
    for key in ("test_nll_nats", "baseline_gmm10_nll_nats", "density_mass"):
        assert math.isfinite(res[key]), key
    assert res["baseline_gmm10_nll_nats"] < res["test_nll_nats"]   # 3 steps learn little
    assert 0.5 < res["density_mass"] < 1.5
    capsys.readouterr()
    assert cli.main(["eval", str(out)]) == 0                      # gmcore eval agrees
    ev = json.loads(capsys.readouterr().out)
    assert ev["test_nll_nats"] == res["test_nll_nats"] and ev["unit"] == "nats"
    assert cli.main(["sample", str(out), "--n", "50", "--temperature", "0.5",
                     "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def test_models_are_listed_under_flows():
    from gmcore import models

    fam = {s.name: s.family for s in models.specs()}
    assert {fam["linear-flow"], fam["planar-flow"], fam["radial-flow"]} == {"flows"}


def test_flow_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    # with noise regularization on, so the resumed run must also continue its noise draws
    check_crash_resume(tmp_path, monkeypatch, "planar-flow", PlanarFlow,
                       ["--eval-every", "0", "--layers", "4", "--noise-std", "0.05", *FAST,
                        "--no-sample-quality", "--num-samples", "0"])


def test_linear_flow_on_digits_reports_bits_per_dim(tmp_path):
    name, tcfg, mcfg = parse_train_args("linear-flow", [
        "--out", str(tmp_path / "lin"), "--steps", "3", *FAST, "--no-sample-quality"])
    res = train.train(name, tcfg, mcfg, log=lambda *a: None)
    assert res["unit"] == "dim" and res["nll_kind"] == "dequantization bound"
    assert res["test_bits"] == pytest.approx(res["test_nll_nats"] / (64 * math.log(2)))
    assert "baseline_bits_per_dim" in res and "density_mass" not in res
    assert (tmp_path / "lin" / "samples.png").exists()


def test_coupling_flows_take_their_toy_defaults_without_flags():
    """realnvp and glow train longer on the 2-D toys (glow also deeper) through their
    ``points`` defaults; digits keep the image settings; flags still win."""
    _, t, _ = parse_train_args("realnvp", ["--dataset", "checkerboard"])
    assert t.steps == 4000
    _, t, m = parse_train_args("glow", ["--dataset", "8gaussians"])
    assert (t.steps, m.flat_depth, t.lr) == (4000, 16, 2e-3)
    assert parse_train_args("realnvp", [])[1].steps == 1000          # digits
    _, t, m = parse_train_args("glow", [])
    assert (t.steps, m.flat_depth) == (1000, 8)
    _, t, m = parse_train_args("glow", ["--dataset", "moons", "--steps", "5", "--flat-depth", "3"])
    assert (t.steps, m.flat_depth) == (5, 3)


def test_toy_defaults_turn_on_noise_regularization():
    """maf, nsf, realnvp and glow fit the 2-D toys with --noise-std 0.03 (maf and nsf also
    train longer); digits never get it (it is refused there); a flag still wins."""
    for name in ("maf", "nsf", "realnvp", "glow"):
        assert parse_train_args(name, ["--dataset", "moons"])[2].noise_std == 0.03, name
        assert parse_train_args(name, [])[2].noise_std == 0.0, name
    _, t, m = parse_train_args("maf", ["--dataset", "8gaussians"])
    assert (t.steps, t.lr, m.base) == (2000, 5e-3, "mog")
    _, t, m = parse_train_args("nsf", ["--dataset", "checkerboard", "--noise-std", "0"])
    assert (t.steps, t.lr, m.noise_std) == (4000, 5e-3, 0.0)
    assert parse_train_args("nsf", [])[1].steps == 1000
