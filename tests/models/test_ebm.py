"""Energy network (Du & Mordatch): the Langevin score is -grad E / T (finite differences), the
chains leave the network's gradients alone, the replay buffer takes the chains' ends back, the
2-D density integrates to one, the CLI trains on 8gaussians and on digits, resume is exact, and
bad data is refused."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore.models.base import DataInfo
from gmcore.models.ebm.ebm import EBM

from resume_checks import check_crash_resume

quiet = lambda *a: None  # noqa: E731
POINTS = DataInfo((2,), 0, "8gaussians")


def _ebm(**kw):
    gm.manual_seed(0)
    kw.setdefault("hidden", 16)
    kw.setdefault("buffer_size", 32)
    kw.setdefault("langevin_steps", 3)
    return EBM(EBM.Config(**kw), POINTS).double()


def test_score_is_minus_energy_gradient_over_temperature():
    m = _ebm(temperature=0.5)
    x = gm.tensor(np.random.default_rng(0).normal(size=(5, 2)))
    s = m._score(x).numpy()
    h = 1e-6
    for j in range(2):
        d = np.zeros((5, 2))
        d[:, j] = h
        fd = (m.energy(x + gm.tensor(d)).detach().numpy() - m.energy(x - gm.tensor(d)).detach().numpy()) / (2 * h)
        np.testing.assert_allclose(s[:, j], -fd / 0.5, rtol=1e-6, atol=1e-8)
    assert all(p.grad is None for p in m.parameters())     # Langevin leaves the network alone


def test_loss_uses_the_buffer_and_writes_the_chains_back():
    m = _ebm(reinit=0.0, alpha=0.0)
    x = gm.tensor(np.random.default_rng(1).normal(size=(8, 2)))
    loss, logs = m.loss((x,))
    assert int(m.buffer_ready.item()) == 1
    buf = m.buffer.numpy()
    lo, hi = m.box.tolist()
    assert buf.min() >= lo - 1.0 and buf.max() <= hi + 1.0
    # alpha = 0: the loss is the energy gap, data minus model
    assert loss.item() == pytest.approx(logs["e_pos"] - logs["e_neg"], rel=1e-12)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    # the drawn rows come back moved (reinit 0: from where they were; reinit 1: from noise in the box)
    for reinit in (0.0, 1.0):
        m2 = _ebm(reinit=reinit, langevin_steps=1, step_size=1e-8)
        m2.loss((x,))                          # fills the buffer
        m2.buffer.data[...] = 100.0
        m2.loss((x,))
        rows = m2.buffer.numpy()
        drawn = np.any(rows != 100.0, axis=1)
        assert 0 < drawn.sum() <= 8
        inside = (rows[drawn] >= lo - 0.01).all() and (rows[drawn] <= hi + 0.01).all()
        assert inside == (reinit == 1.0)
        if reinit == 0.0:
            np.testing.assert_allclose(rows[drawn], 100.0, atol=0.01)


def test_density_on_points_integrates_to_one():
    m = _ebm()
    lo, hi = m.box.tolist()
    g = np.linspace(lo, hi, 301)
    c = 0.5 * (g[1:] + g[:-1])
    pts = np.stack(np.meshgrid(c, c), -1).reshape(-1, 2)
    p = np.exp(-m.nll((gm.tensor(pts),)).detach().numpy())
    assert (p * (g[1] - g[0]) ** 2).sum() == pytest.approx(1.0, abs=2e-3)
    assert "grid estimate of Z" in m.nll_kind


def _flags(*extra):
    return ["--steps", "4", "--batch-size", "16", "--no-progress", "--eval-every", "0",
            "--hidden", "8", "--buffer-size", "64", "--langevin-steps", "3", "--sample-steps", "3", *extra]


def test_cli_trains_on_8gaussians_and_digits(tmp_path):
    pytest.importorskip("safetensors")
    from gmcore import train
    from gmcore.cli_train import parse_train_args

    name, tcfg, mcfg = parse_train_args("ebm", ["--out", str(tmp_path / "pts"), *_flags()])
    train.train(name, tcfg, mcfg, log=quiet)
    final = json.loads((tmp_path / "pts" / "metrics.json").read_text())
    assert final["modes"] == 8 and 0 <= final["modes_hit"] <= 8 and np.isfinite(final["test_nll_nats"])
    assert (tmp_path / "pts" / "density.png").exists()
    name, tcfg, mcfg = parse_train_args("ebm", ["--out", str(tmp_path / "img"), "--dataset", "digits",
                                                "--num-samples", "4", "--no-sample-quality", *_flags()])
    train.train(name, tcfg, mcfg, log=quiet)
    final = json.loads((tmp_path / "img" / "metrics.json").read_text())
    assert final["nll_kind"] == "none" and (tmp_path / "img" / "samples.png").exists()
    cfg = json.loads((tmp_path / "img" / "config.json").read_text())["model_config"]
    assert cfg["step_size"] == 2.5e-5 and cfg["temperature"] == 1.25e-6     # the image defaults


def test_resume_is_bit_exact_with_the_replay_buffer(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    check_crash_resume(tmp_path, monkeypatch, "ebm", EBM,
                       ["--dataset", "digits", "--batch-size", "16", "--no-progress", "--eval-every", "0",
                        "--num-samples", "0", "--no-sample-quality", "--hidden", "4", "--buffer-size", "64",
                        "--langevin-steps", "2"])


def test_rejects_data_it_cannot_model():
    with pytest.raises(ValueError, match="continuous points"):
        EBM(EBM.Config(), DataInfo((64,), 100, "text"))
    with pytest.raises(ValueError, match="images"):
        EBM(EBM.Config(), DataInfo((4, 4), 0, "x"))
    m = _ebm()
    with pytest.raises(ValueError, match="float data"):
        m.loss((gm.zeros(3, 3, dtype=gm.float64),))
    img = EBM(EBM.Config(hidden=4), DataInfo((1, 8, 8), 17, "digits"))
    with pytest.raises(NotImplementedError, match="2-D"):
        img.log_partition()
