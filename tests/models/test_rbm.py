"""RBM: the exact partition function against a brute-force sum over every (v, h) state (and a
quadrature for Gaussian visibles), the surrogate loss's gradient is the data-minus-model rule,
block Gibbs sampling reaches p(v), AIS lands within 0.5 nats of the exact log Z of a small RBM
trained on binarized digits, the CLI run writes log Z and its standard error, resumes
bit for bit (persistent chains included), and bad input is refused."""
import itertools
import json
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore.models.base import DataInfo
from gmcore.models.ebm.rbm import RBM

from resume_checks import check_crash_resume

quiet = lambda *a: None  # noqa: E731


def _rbm(d, h, visible="bernoulli", seed=0, scale=1.0, **kw):
    """A small float64 RBM with weights far from zero (so every test is about a real model)."""
    gm.manual_seed(seed)
    levels = 2 if visible == "bernoulli" else 17
    m = RBM(RBM.Config(hidden=h, visible=visible, **kw), DataInfo((1, 1, d), levels, "toy")).double()
    rng = np.random.default_rng(seed)
    with gm.no_grad():
        m.W.data[...] = rng.normal(0, scale, (d, h))
        m.b.data[...] = rng.normal(0, scale, d)
        m.c.data[...] = rng.normal(0, scale, h)
        if visible == "gaussian":
            m.log_sigma.data[...] = rng.normal(-0.5, 0.2, d)
            m.base_bias.data[...] = 0.5
    return m


def _states(n):
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def _brute_log_z(m):
    """log sum over all (v, h) of exp(v.b + h.c + v^T W h), in NumPy."""
    W, b, c = m.W.detach().numpy(), m.b.detach().numpy(), m.c.detach().numpy()
    V, H = _states(m.D), _states(m.H)
    neg_e = (V @ b)[:, None] + (H @ c)[None, :] + V @ W @ H.T
    top = neg_e.max()
    return top + math.log(np.exp(neg_e - top).sum())


@pytest.mark.parametrize("d,h", [(4, 3), (3, 5)])   # enumerates the hiddens, then the visibles
def test_exact_log_partition_matches_brute_force(d, h):
    m = _rbm(d, h)
    assert m.exact_log_partition() == pytest.approx(_brute_log_z(m), rel=0, abs=1e-10)
    # and so p(v) = exp(-F(v)) / Z sums to one over the 2^d images
    m.config.partition = "exact"
    x = gm.tensor(_states(d).reshape(-1, 1, 1, d))
    assert np.exp(-m.nll((x,)).detach().numpy()).sum() == pytest.approx(1.0, abs=1e-12)


def test_gaussian_exact_log_partition_matches_quadrature():
    m = _rbm(2, 3, visible="gaussian", seed=1)
    W, b, c = m.W.detach().numpy(), m.b.detach().numpy(), m.c.detach().numpy()
    sd = np.exp(m.log_sigma.detach().numpy())
    s2 = sd ** 2
    g = np.linspace(-6, 7, 1301)
    v = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    free = (0.5 * (v - b) ** 2 / s2).sum(1) - np.logaddexp(0, c + (v / sd) @ W).sum(1)
    top = (-free).max()
    log_z = top + math.log(np.exp(-free - top).sum() * (g[1] - g[0]) ** 2)
    assert m.exact_log_partition() == pytest.approx(log_z, abs=1e-6)
    # the free energy agrees with the NumPy one
    np.testing.assert_allclose(m.free_energy(gm.tensor(v[:50])).detach().numpy(), free[:50], rtol=1e-12)


def test_exact_log_partition_refuses_too_many_units():
    m = RBM(RBM.Config(hidden=21), DataInfo((1, 8, 8), 2, "digits"))
    with pytest.raises(ValueError, match="at most 20 units"):
        m.exact_log_partition()


@pytest.mark.parametrize("visible,persistent", [("bernoulli", True), ("gaussian", True), ("bernoulli", False)])
def test_surrogate_gradient_is_data_minus_model_statistics(visible, persistent):
    m = _rbm(5, 4, visible=visible, chains=7, persistent=persistent)
    rng = np.random.default_rng(3)
    x = gm.tensor(rng.integers(0, 2 if visible == "bernoulli" else 17, (6, 1, 1, 5))
                  / (1.0 if visible == "bernoulli" else 16.0))
    gm.manual_seed(5)
    loss, _ = m.loss((x,))
    loss.backward()
    # replay the same random draws to recover the data and negative visibles
    m2 = _rbm(5, 4, visible=visible, chains=7, persistent=persistent)
    gm.manual_seed(5)
    v = m2._train_input(x)
    if persistent:      # PCD: the chains start from the base model on the first step
        m2.chains.data[...] = m2._base_draw(7).data
        neg = m2.gibbs(m2.chains, 1)
    else:               # CD-1: one sweep from the data
        neg = m2.gibbs(v, 1)
    inv = np.exp(-m2.log_sigma.detach().numpy()) if visible == "gaussian" else 1.0
    W, c = m2.W.detach().numpy(), m2.c.detach().numpy()
    vd, vn = v.detach().numpy() * inv, neg.detach().numpy() * inv     # the Gaussian's hiddens see v / s
    ph_d, ph_n = 1 / (1 + np.exp(-(c + vd @ W))), 1 / (1 + np.exp(-(c + vn @ W)))
    want_w = -(vd.T @ ph_d / len(vd) - vn.T @ ph_n / len(vn))       # minus the ascent direction
    np.testing.assert_allclose(m.W.grad.detach().numpy(), want_w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.c.grad.detach().numpy(), -(ph_d.mean(0) - ph_n.mean(0)), rtol=1e-10, atol=1e-12)
    if visible == "bernoulli":
        np.testing.assert_allclose(m.b.grad.detach().numpy(), -(v.detach().numpy().mean(0) - neg.detach().numpy().mean(0)),
                                   rtol=1e-10, atol=1e-12)
    if persistent:      # the chains moved on: they are the negative samples of this step
        np.testing.assert_array_equal(m.chains.detach().numpy(), neg.detach().numpy())
    else:
        assert not m.chains_ready.item()


def test_gibbs_chains_reach_the_model_distribution():
    """4000 chains, 60 sweeps each, on an RBM with 3 visibles: the empirical frequencies of the
    8 images match exp(-F(v)) / Z within 4 binomial standard deviations (+ 0.002)."""
    m = _rbm(3, 2, seed=2, scale=1.5)
    exact = m.exact_log_partition()
    grid = _states(3)
    probs = np.exp(-m.free_energy(gm.tensor(grid)).detach().numpy() - exact)
    s = m.sample(4000, generator=gm.Generator().manual_seed(0), gibbs_steps=60).detach().numpy().reshape(4000, 3)
    freq = np.bincount((s @ [4, 2, 1]).astype(int), minlength=8) / 4000
    sd = np.sqrt(probs * (1 - probs) / 4000)
    assert np.all(np.abs(freq - probs) < 4 * sd + 0.002), (freq, probs)


def _digits_binary(n):
    from gmcore.data.digits import load_digits_arrays

    x = load_digits_arrays("train")[0][:n].astype(np.float64) / 16.0
    return (x > 0.5).astype(np.float64)


def test_ais_is_within_half_a_nat_of_exact_for_a_trained_rbm():
    gm.manual_seed(0)
    m = RBM(RBM.Config(hidden=16, chains=100), DataInfo((1, 8, 8), 2, "digits")).double()
    x = _digits_binary(1000)
    m.fit_base(x.reshape(1000, -1))
    opt = gm.optim.Adam(m.parameters(), lr=1e-2)
    for step in range(300):
        batch = gm.tensor(x[(step * 100) % 1000:(step * 100) % 1000 + 100])
        loss, _ = m.loss((batch,))
        opt.zero_grad()
        loss.backward()
        opt.step()
    exact = m.exact_log_partition()
    est, se = m.ais_log_partition(gm.Generator().manual_seed(1), runs=64, steps=300)
    assert abs(est - exact) < 0.5 and 0 < se < 0.5, (est, exact, se)
    # a real test: the trained model is far from AIS's base (the per-pixel model), whose NLL on
    # these digits it beats by more than 2 nats
    m.config.partition = "exact"
    v = gm.tensor(x[:500].reshape(500, 64))
    base_nll = m.base_log_partition() - m._log_unnorm(v, 0.0).mean().item()
    assert m.nll((v.reshape(500, 1, 8, 8),)).mean().item() < base_nll - 2.0


def _train_args(out, *extra):
    return ["--out", str(out), "--steps", "3", "--batch-size", "16", "--no-progress",
            "--no-sample-quality", "--num-samples", "4", "--eval-every", "0", "--hidden", "6",
            "--chains", "8", "--ais-runs", "4", "--ais-steps", "20", *extra]


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_cli_trains_and_reports_log_z(tmp_path, visible, capsys):
    pytest.importorskip("safetensors")
    from gmcore import train
    from gmcore.cli import main
    from gmcore.cli_train import parse_train_args

    name, tcfg, mcfg = parse_train_args("rbm", _train_args(tmp_path / "run", "--visible", visible))
    res = train.train(name, tcfg, mcfg, log=quiet)
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert final["test_bits_per_dim"] == res["test_bits_per_dim"] and np.isfinite(final["log_z"])
    assert final["log_z_std"] > 0 and final["ais_steps"] == 20 and "AIS estimate" in final["nll_kind"]
    assert ("dequantization" in final["nll_kind"]) == (visible == "gaussian")
    assert (tmp_path / "run" / "filters.png").exists() and (tmp_path / "run" / "samples.png").exists()
    capsys.readouterr()
    # gmcore eval reproduces the figure (same seed: same AIS draws); --partition exact swaps log Z
    assert main(["eval", str(tmp_path / "run"), "--no-sample-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["test_bits_per_dim"] == final["test_bits_per_dim"]
    assert main(["eval", str(tmp_path / "run"), "--no-sample-quality", "--partition", "exact"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["partition"] == "exact" and ev["nll_kind"].startswith("exact log Z")
    assert abs(ev["test_nll_nats"] - final["test_nll_nats"]) < 4 * final["log_z_std"] + 0.5
    # gmcore sample takes the model's sampling options
    out = tmp_path / "s.png"
    assert main(["sample", str(tmp_path / "run"), "--n", "3", "--gibbs-steps", "2", "--mean",
                 "--out", str(out)]) == 0
    assert out.exists()


def test_resume_is_bit_exact_with_persistent_chains(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    check_crash_resume(tmp_path, monkeypatch, "rbm", RBM,
                       ["--batch-size", "16", "--no-progress", "--no-sample-quality", "--num-samples", "0",
                        "--eval-every", "0", "--hidden", "6", "--chains", "8", "--ais-runs", "4",
                        "--ais-steps", "5", "--cd-k", "2", "--persistent"])


def test_rejects_data_and_input_it_cannot_model():
    with pytest.raises(ValueError, match="binary data"):
        RBM(RBM.Config(), DataInfo((1, 8, 8), 17, "digits"))
    with pytest.raises(ValueError, match="binary"):
        RBM(RBM.Config(visible="gaussian"), DataInfo((1, 8, 8), 2, "digits"))
    with pytest.raises(ValueError, match="continuous"):
        RBM(RBM.Config(), DataInfo((2,), 0, "8gaussians"))
    m = _rbm(4, 3)
    with pytest.raises(ValueError, match="float images"):
        m.loss((gm.zeros(2, 1, 2, 2, dtype=gm.float64),))
    with pytest.raises(ValueError, match="2 runs"):
        m.ais_log_partition(runs=1)
    assert RBM.dataset_options(RBM.Config()) == {"binarize": "threshold"}
    assert RBM.dataset_options(RBM.Config(visible="gaussian")) == {}
