"""Boltzmann machine: the exact partition function against a brute-force NumPy sum, p(v) sums
to one, the enumerated free energy's gradient is the data-minus-model rule, Gibbs sweeps reach
the exact distribution (a chi-square-sized tolerance), AIS agrees with enumeration, the CLI run
trains, evaluates and resumes bit for bit, and bad input is refused."""
import itertools
import json
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore.models.base import DataInfo
from gmcore.models.ebm.boltzmann_machine import BoltzmannMachine as BM

from resume_checks import check_crash_resume

quiet = lambda *a: None  # noqa: E731


def _bm(d, h, seed=0, scale=1.0, **kw):
    gm.manual_seed(seed)
    m = BM(BM.Config(hidden=h, init_std=scale, **kw), DataInfo((1, 1, d), 2, "toy")).double()
    with gm.no_grad():
        m.bias.data[...] = np.random.default_rng(seed).normal(0, scale, d + h)
    return m


def _states(n):
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def _np(t):
    return t.detach().numpy()


@pytest.mark.parametrize("d,h", [(5, 0), (4, 3)])
def test_exact_partition_function_matches_brute_force(d, h):
    m = _bm(d, h)
    J, a = _np(m.coupling()), _np(m.bias)
    assert np.allclose(J, J.T) and np.all(np.diag(J) == 0) and np.abs(J).max() > 0.5
    S = _states(d + h)
    neg_e = 0.5 * np.einsum("bi,ij,bj->b", S, J, S) + S @ a
    assert m.exact_log_partition() == pytest.approx(math.log(np.exp(neg_e).sum()), abs=1e-12)
    # p(v) = exp(-F(v)) / Z, F summing the hidden units out, sums to one over the 2^d images
    m.config.partition = "exact"
    x = gm.tensor(_states(d).reshape(-1, 1, 1, d))
    p = np.exp(-_np(m.nll((x,))))
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    marg = np.exp(neg_e - m.exact_log_partition()).reshape(2 ** d, 2 ** h).sum(1)
    np.testing.assert_allclose(p, marg, rtol=1e-10)


def test_free_energy_gradient_is_data_minus_model_statistics():
    m = _bm(3, 2, seed=1, chains=5)
    x = gm.tensor(np.random.default_rng(0).integers(0, 2, (4, 1, 1, 3)).astype(np.float64))
    gm.manual_seed(7)
    loss, _ = m.loss((x,))
    loss.backward()
    neg = _np(m.chains)                                   # the chains after this step's sweep
    J, a = _np(m.coupling()), _np(m.bias)
    # data term: E_{h | v}[s s^T] by enumeration of h; model term: the chains' s s^T
    H = _states(2)
    stats = []
    for v in x.numpy().reshape(4, 3):
        S = np.concatenate([np.broadcast_to(v, (4, 3)), H], 1)
        w = np.exp(0.5 * np.einsum("bi,ij,bj->b", S, J, S) + S @ a)
        w /= w.sum()
        stats.append(np.einsum("b,bi,bj->ij", w, S, S))
    data_ss, model_ss = np.mean(stats, 0), neg.T @ neg / len(neg)
    # dloss/dJ_ij (for J used symmetrically) = -1/2 (<s_i s_j>_data - <s_i s_j>_model), off the diagonal;
    # weight enters J as (W + W^T)/2, so dloss/dW has the same symmetric value
    want = -0.5 * (data_ss - model_ss) * (1 - np.eye(5))
    np.testing.assert_allclose(_np(m.weight.grad), want, atol=1e-12)
    np.testing.assert_allclose(_np(m.bias.grad), -(np.diagonal(data_ss) - neg.mean(0)), atol=1e-12)


def test_gibbs_sweeps_reach_the_exact_distribution():
    """3000 chains, 40 sweeps, 4 visible + 1 hidden unit: every visible image's frequency is
    within 4 binomial standard deviations (+ 0.002) of exp(-F(v)) / Z."""
    m = _bm(4, 1, seed=3, scale=1.2)
    m.config.partition = "exact"
    grid = _states(4)
    probs = np.exp(-_np(m.nll((gm.tensor(grid.reshape(-1, 1, 1, 4)),))))
    s = _np(m.sample(3000, generator=gm.Generator().manual_seed(0), gibbs_steps=40)).reshape(3000, 4)
    freq = np.bincount((s @ [8, 4, 2, 1]).astype(int), minlength=16) / 3000
    sd = np.sqrt(probs * (1 - probs) / 3000)
    assert np.all(np.abs(freq - probs) < 4 * sd + 0.002), (freq, probs)


def test_ais_agrees_with_enumeration():
    m = _bm(8, 2, seed=4, scale=0.8)
    m.fit_base(np.random.default_rng(0).integers(0, 2, (50, 8)))
    exact = m.exact_log_partition()
    est, se = m.ais_log_partition(gm.Generator().manual_seed(0), runs=50, steps=200)
    assert abs(est - exact) < max(4 * se, 0.05), (est, exact, se)
    assert 0 < se < 0.2


def _flags(*extra):
    return ["--batch-size", "16", "--no-progress", "--no-sample-quality", "--eval-every", "0",
            "--chains", "8", "--ais-runs", "4", "--ais-steps", "5", *extra]


def test_cli_trains_with_ais_on_digits_and_eval_reproduces(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from gmcore import train
    from gmcore.cli import main
    from gmcore.cli_train import parse_train_args

    name, tcfg, mcfg = parse_train_args("boltzmann-machine", [
        "--out", str(tmp_path / "run"), "--steps", "3", "--num-samples", "4", "--hidden", "2",
        *_flags()])
    res = train.train(name, tcfg, mcfg, log=quiet)
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert final["test_bits_per_dim"] == res["test_bits_per_dim"] and final["log_z_method"] == "ais"
    assert final["log_z_std"] > 0 and "AIS estimate" in final["nll_kind"]
    assert 0 < final["test_bits_per_dim"] < 1.5
    for pic in ("samples.png", "couplings.png", "filters.png"):
        assert (tmp_path / "run" / pic).exists()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--no-sample-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["test_bits_per_dim"] == final["test_bits_per_dim"]


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    check_crash_resume(tmp_path, monkeypatch, "boltzmann-machine", BM,
                       _flags("--num-samples", "0", "--sweeps", "2", "--hidden", "1"))


def test_rejects_what_it_cannot_model():
    with pytest.raises(ValueError, match="binary data"):
        BM(BM.Config(), DataInfo((1, 8, 8), 17, "digits"))
    with pytest.raises(ValueError, match="at most 12"):
        BM(BM.Config(hidden=13), DataInfo((1, 2, 2), 2, "toy"))
    m = BM(BM.Config(), DataInfo((1, 8, 8), 2, "digits"))
    with pytest.raises(ValueError, match="at most 20 units"):
        m.exact_log_partition()
    with pytest.raises(ValueError, match="binary images"):
        m.loss((gm.zeros(2, 64),))
    assert m.nll_kind.startswith("AIS") and _bm(3, 1).nll_kind.startswith("exact")
