"""``--dequantization variational`` on the image flows: the figure stays a bound on the discrete
data's NLL (checked against the exact probability of each level, integrated), it starts equal to
the uniform bound, it trains, and the CLI, evaluation and resume work with it."""
import json
from dataclasses import dataclass

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.models.base import DataInfo
from gmcore.models.flows._density import DequantizationConfig, FlowModel
from gmcore.models.flows.glow import Glow
from gmcore.models.flows.maf import MAF
from gmcore.models.flows.nice import NICE
from gmcore.models.flows.nsf import NSF
from gmcore.models.flows.realnvp import RealNVP
from gmcore.nn.flows import FlowDensity, StandardNormal
from gmcore.nn.flows.linear import LULinear
from flow_checks import perturb
from resume_checks import check_crash_resume

FAST = ["--batch-size", "16", "--no-progress", "--no-sample-quality", "--num-samples", "4",
        "--eval-every", "0"]
DIGITS = DataInfo((1, 8, 8), 17, "digits")


@dataclass
class _TinyConfig(DequantizationConfig):
    pass


class _Tiny(FlowModel):
    """A full-covariance Gaussian on two-pixel images with 3 levels: small enough to integrate."""
    flat_input = True
    preprocess = "logit"

    def __init__(self, config, data):
        super().__init__(config, data)
        self.flow = FlowDensity(StandardNormal(self.flow_shape), LULinear(data.dims))


def _log_p_level(model, level, n=300):
    """log P(level) = log of the integral over u in [0, 1)^2 of p((level + u) / K) K^-D:
    the midpoint rule on an n x n grid (the flow's density is smooth inside a bin)."""
    k = model.data.num_levels
    g = (np.arange(n) + 0.5) / n
    u = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 1, 1, 2)
    x = gm.tensor((np.asarray(level, float).reshape(1, 1, 1, 2) + u) / k)
    with gm.no_grad():
        y, ld = model.to_flow_space(x)
        log_p = (model.flow.log_prob(y) + ld).numpy() - 2 * np.log(k)
    return np.log(np.mean(np.exp(log_p)))


def test_variational_figure_is_a_bound_and_its_weights_recover_the_probability():
    """E_q[-log p + log q] >= -log P(level) (Jensen), and the importance-weighted mean of
    p / q is P(level): the second fails unless log q is the density the draws come from."""
    gm.manual_seed(0)
    model = _Tiny(_TinyConfig(dequantization="variational", dequant_hidden=6,
                              dequant_couplings=3), DataInfo((1, 1, 2), 3)).double()
    perturb(model, 0.3, seed=1)
    n = 4000
    for level in ([0, 2], [1, 1], [2, 0]):
        exact = _log_p_level(model, level)
        x = gm.tensor(np.broadcast_to(np.array(level, float) / 2, (n, 1, 1, 2)).copy())
        with gm.no_grad():
            nll = model.nll((x,), generator=gm.Generator().manual_seed(3)).numpy()
        bound = nll.mean()
        assert bound >= -exact - 3 * nll.std() / np.sqrt(n)
        assert np.log(np.mean(np.exp(-nll))) == pytest.approx(exact, abs=0.03)
        assert nll.std() > 0.05                       # q is not the exact posterior by chance


@pytest.mark.parametrize("cls,kw", [(Glow, dict(hidden=8, depth=1)),
                                    (RealNVP, dict(hidden=8, couplings=1)),
                                    (NICE, dict(hidden=16, layers=1, couplings=2)),
                                    (MAF, dict(layers=1, hidden=16)),
                                    (NSF, dict(layers=1, hidden=16))])
def test_image_flows_start_at_the_uniform_bound_and_train(cls, kw):
    gm.manual_seed(0)
    model = cls(cls.Config(dequantization="variational", dequant_hidden=8, dequant_couplings=2,
                           **kw), DIGITS)
    assert model.nll_kind == "variational dequantization bound"
    gm.manual_seed(0)
    uniform = cls(cls.Config(**kw), DIGITS)
    assert uniform.dequantizer is None and uniform.nll_kind == "dequantization bound"
    uniform.load_state_dict({k: v for k, v in model.state_dict().items()
                             if not k.startswith("dequantizer.")})
    from gmcore.data.digits import load_digits_arrays

    x = gm.tensor(load_digits_arrays("train")[0][:32].astype(np.float32) / 16)
    with gm.no_grad():
        a = model.nll((x,), generator=gm.Generator().manual_seed(5))
        b = uniform.nll((x,), generator=gm.Generator().manual_seed(5))
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-3)
    opt = gm.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, _ = model.loss((x,))
        opt.zero_grad()
        loss.backward()
        if not losses:   # the bound's gradient reaches the couplings' (zero) last layers
            assert any(float(p.grad.abs().max()) > 0 for p in model.dequantizer.parameters())
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2


def test_cli_trains_evaluates_and_refuses_points(tmp_path, capsys):
    run = tmp_path / "glow"
    assert cli.main(["train", "glow", "--hidden", "8", "--depth", "1", "--dequantization",
                     "variational", "--dequant-hidden", "4", "--dequant-couplings", "1",
                     "--steps", "3", "--out", str(run), *FAST]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["nll_kind"] == "variational dequantization bound" and np.isfinite(m["test_bits"])
    assert cli.main(["eval", str(run)]) == 0
    assert "variational dequantization bound" in capsys.readouterr().out
    assert cli.main(["train", "realnvp", "--dataset", "moons", "--dequantization", "variational",
                     "--steps", "2", "--out", str(tmp_path / "moons"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "variational is for discrete images" in err, err


def test_variational_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "glow", Glow,
                       ["--hidden", "8", "--depth", "1", "--dequantization", "variational",
                        "--dequant-hidden", "4", "--dequant-couplings", "2", *FAST])


@pytest.mark.parametrize("kind", ["uniform", "variational"])
def test_importance_weighted_bound_combines_the_draws_and_tightens(kind):
    """--dequant-samples K: -log mean_k exp(-nll_k) of K one-draw bounds drawn in turn from the
    generator, labelled as such; on the integrable model it closes most of the gap to -log P."""
    gm.manual_seed(0)
    cfg = _TinyConfig(dequantization=kind, dequant_hidden=6, dequant_couplings=3)
    model = _Tiny(cfg, DataInfo((1, 1, 2), 3)).double()
    perturb(model, 0.3, seed=1)
    x = gm.tensor(np.array([[[[0.0, 1.0]]], [[[1.0, 1.0]]]]))   # edge levels: q is far off
    with gm.no_grad():
        gen = gm.Generator().manual_seed(4)
        singles = np.stack([model.nll((x,), generator=gen).numpy() for _ in range(8)])
        model.config.dequant_samples = 8
        weighted = model.nll((x,), generator=gm.Generator().manual_seed(4)).numpy()
    assert model.nll_kind.endswith("importance-weighted (k=8)")
    np.testing.assert_allclose(weighted, -np.log(np.mean(np.exp(-singles), 0)), rtol=1e-12)
    with gm.no_grad():
        model.config.dequant_samples = 1
        one = model.nll((x.repeat(256, 1, 1, 1),), generator=gm.Generator().manual_seed(5))
        model.config.dequant_samples = 512
        many = model.nll((x,), generator=gm.Generator().manual_seed(6)).numpy()
    exact = -np.array([_log_p_level(model, [0, 2]), _log_p_level(model, [2, 2])])
    gap_one = one.numpy().reshape(256, 2).mean(0) - exact
    gap_many = many - exact
    assert (gap_one > 0.02).all() and (np.abs(gap_many) < gap_one / 4).all()


def test_dequant_samples_is_refused_on_points_and_training_uses_one_draw(tmp_path, capsys):
    with pytest.raises(ValueError, match="--dequant-samples is for discrete images"):
        RealNVP(RealNVP.Config(dequant_samples=4), DataInfo((2,), 0, "moons"))
    gm.manual_seed(0)
    model = Glow(Glow.Config(hidden=8, depth=1, dequant_samples=16), DataInfo((1, 4, 4), 17))
    x = (gm.rand(3, 1, 4, 4) * 16).round() / 16
    gm.manual_seed(7)
    loss, _ = model.loss((x,))
    model.config.dequant_samples = 1
    gm.manual_seed(7)
    assert loss.item() == model.loss((x,))[0].item()
    run = tmp_path / "moons"
    assert cli.main(["train", "realnvp", "--dataset", "moons", "--flat-couplings", "2", "--steps",
                     "2", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--dequant-samples", "4"]) == 1
    assert "continuous points have an exact density" in capsys.readouterr().err
