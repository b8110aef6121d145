"""The ``ncsn`` model (gmcore.models.score.ncsn): NCSNv2's rules for the noise scales and the step
size, the noise conditioning s = net(x, t(sigma)) / sigma, the DSM and SSM objectives, annealed
Langevin sampling with its options, exact resume, and the CLI around a run."""
import json
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.data import get_dataset
from gmcore.models.base import DataInfo
from gmcore.models.score.ncsn import (NCSN, NCSNConfig, max_pairwise_distance, num_scales,
                                      step_eps)
from gmcore.score.ssm import ssm_loss
from resume_checks import check_crash_resume
from helpers import perturbed

pytest.importorskip("safetensors")

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = dict(channels=8, num_res_blocks=1, attention_resolutions="", num_heads=1, dropout=0.0,
            sigma_max=4.8, num_scales=4)
TINY_FLAGS = ["--channels", "8", "--num-res-blocks", "1", "--attention-resolutions", "", "--num-heads", "1",
              "--num-scales", "4"]
FAST = ["--no-progress", "--log-every", "1", "--batch-size", "16", "--num-samples", "4", "--no-sample-quality"]


def test_ncsnv2_rules():
    # technique 1: sigma_1 is the largest distance between two training digits (the digits default)
    x = get_dataset("digits", "train").arrays[0].astype(np.float64) / 16.0
    assert max_pairwise_distance(x) == pytest.approx(4.80, abs=0.005)
    assert NCSN.config_defaults["digits"]["sigma_max"] == 4.8
    # technique 2: Phi(sqrt(2D)(g-1) + 3g) - Phi(sqrt(2D)(g-1) - 3g) >= 1/2 at L, not at L - 1
    phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731

    def chance(L):
        g = (4.8 / 0.01) ** (1 / (L - 1))
        return phi(8 * math.sqrt(2) * (g - 1) + 3 * g) - phi(8 * math.sqrt(2) * (g - 1) - 3 * g)
    L = num_scales(4.8, 0.01, 64)
    assert L == 22 and chance(L) >= 0.5 > chance(L - 1)
    # technique 4 gives NCSNv2's CIFAR-10 step (L = 232 from 50 to 0.01, T = 5): 6.2e-6
    assert step_eps(5000 ** (1 / 231), 0.01, 5) == pytest.approx(6.2e-6, rel=0.01)
    assert step_eps(1.34, 0.01, 20) < step_eps(1.34, 0.01, 5)          # more steps, smaller steps
    m = NCSN(NCSNConfig(sigma_max=4.8), DIGITS)
    assert len(m.sigmas) == 22 and m.sigmas[0] == 4.8 and m.sigmas[-1] == 0.01
    assert NCSN(NCSNConfig(), DIGITS).sigmas[0] == 8.0               # 0: sqrt(D)


def test_score_is_the_net_at_log_sigma_divided_by_sigma(monkeypatch):
    m = perturbed(NCSN(NCSNConfig(**TINY), DIGITS))
    seen = []
    real = m.net.forward
    monkeypatch.setattr(m.net, "forward", lambda x, t, y=None: (seen.append(t.numpy().copy()), real(x, t, y))[1])
    x = gm.randn(4, 1, 8, 8)
    sigma = gm.tensor(m.sigmas[[0, 1, 3, 2]].astype(np.float32))
    with gm.no_grad():
        s = m.score(x, sigma)
        raw = real(x, gm.tensor([0.0, 1.0, 3.0, 2.0]))
    np.testing.assert_allclose(seen[0], [0, 1, 3, 2], atol=1e-5)     # the scales sit at t = 0 .. L-1
    np.testing.assert_allclose(s.numpy(), raw.numpy() / sigma.numpy().reshape(-1, 1, 1, 1), rtol=1e-4, atol=1e-6)


def test_dsm_loss_is_the_eps_regression_of_the_net():
    """With s = net / sigma and the sigma^2 weighting, the loss is mean_b 1/2 ||net(x~, t) + z||^2;
    the level then the noise are drawn from the global generator."""
    m = perturbed(NCSN(NCSNConfig(**TINY), DIGITS))
    x = gm.rand(6, 1, 8, 8)
    gm.manual_seed(4)
    loss, _ = m.loss((x,))
    gm.manual_seed(4)
    idx = gm.randint(0, 4, (6,))
    z = gm.randn(6, 1, 8, 8)
    sig = m.sigmas[idx.numpy()]
    with gm.no_grad():
        out = m.net(x + gm.tensor(sig.reshape(-1, 1, 1, 1).astype(np.float32)) * z, gm.tensor(idx.numpy() * 1.0))
    want = 0.5 * ((out.numpy() + z.numpy()) ** 2).reshape(6, -1).sum(1).mean()
    assert float(loss) == pytest.approx(want, rel=1e-4)


def test_ssm_loss_is_sigma2_weighted_and_trains_the_net_through_double_backward():
    m = perturbed(NCSN(NCSNConfig(**TINY, loss="ssm"), DIGITS)).train()
    x = gm.rand(3, 1, 8, 8)
    gm.manual_seed(1)
    loss, _ = m.loss((x,))
    gm.manual_seed(1)
    idx = gm.randint(0, 4, (3,))
    sigma = gm.tensor(m.sigmas[idx.numpy()].astype(np.float32))
    xt = (x + sigma.reshape(-1, 1, 1, 1) * gm.randn(3, 1, 8, 8)).detach()
    per = ssm_loss(lambda v: m.score(v, sigma), xt, reduction="none")
    assert float(loss) == pytest.approx(float((per * sigma * sigma).mean()), rel=1e-4)
    loss.backward()
    grads = [p.grad for p in m.net.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_sampling_runs_annealed_langevin_with_its_options(monkeypatch):
    m = perturbed(NCSN(NCSNConfig(**TINY), DIGITS))
    calls = []
    real = m.net.forward
    monkeypatch.setattr(m.net, "forward", lambda x, t, y=None: (calls.append(float(t.numpy()[0])), real(x, t, y))[1])
    with gm.no_grad():
        x = m.sample(3, generator=gm.Generator().manual_seed(0), steps_per_sigma=2)
    assert x.shape == (3, 1, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    np.testing.assert_allclose(x.numpy() * 16, np.round(x.numpy() * 16), atol=1e-5)    # on the 17 levels
    np.testing.assert_allclose(calls, [0, 0, 1, 1, 2, 2, 3, 3, 3], atol=1e-5)         # L T steps + denoise
    calls.clear()
    with gm.no_grad():
        img, chain = m.sample(2, generator=gm.Generator().manual_seed(0), steps_per_sigma=1, denoise=False,
                              return_chain=True)
    assert len(calls) == 4 and len(chain) == 4 + 2
    # without denoising the image is the last Langevin state, clamped and rounded
    np.testing.assert_allclose(img.numpy(), np.round(np.clip(chain[-1].numpy(), 0, 1) * 16) / 16, atol=1e-6)
    # the step follows step_eps: NCSNv2's rule when 0
    a = m.sample(2, generator=gm.Generator().manual_seed(0), steps_per_sigma=1, step_eps=m.default_step_eps(1))
    b = m.sample(2, generator=gm.Generator().manual_seed(0), steps_per_sigma=1)
    c = m.sample(2, generator=gm.Generator().manual_seed(0), steps_per_sigma=1, step_eps=1e-3)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    with pytest.raises(ValueError, match="steps-per-sigma"):
        m.sample(2, steps_per_sigma=0)


def test_bad_data_and_flags_are_refused():
    with pytest.raises(ValueError, match="images"):
        NCSN(NCSNConfig(**TINY), DataInfo((2,), 0, "moons"))
    with pytest.raises(ValueError, match="square"):
        NCSN(NCSNConfig(**TINY), DataInfo((1, 8, 4), 17, "x"))
    with pytest.raises(ValueError, match="sigma-min"):
        NCSN(NCSNConfig(sigma_max=0.005), DIGITS)
    with pytest.raises(ValueError, match="num-scales"):
        NCSN(NCSNConfig(sigma_max=1.0, num_scales=1), DIGITS)


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "ncsn", NCSN,
                       [*FAST, *TINY_FLAGS, "--batch-size", "8", "--eval-every", "0", "--ema", "0.9",
                        "--num-samples", "0"], steps=4, ckpt_every=2, crash_at=4)


def test_a_run_writes_its_pictures_and_samples_with_options(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "ncsn", "--out", str(run), "--steps", "2", *FAST, *TINY_FLAGS]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["nll_kind"] == "none" and "test_bits_per_dim" not in metrics
    assert metrics["num_scales"] == 4 and metrics["sigma_max"] == 4.8
    assert (run / "samples.png").exists() and (run / "chain.png").exists()
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(run), "--n", "3", "--steps-per-sigma", "2", "--step-eps", "1e-4",
                     "--no-denoise", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (3, 1, 8, 8) and np.allclose(x * 16, np.round(x * 16), atol=1e-5)
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--n", "1", "--eta", "0.5", "--out", str(out)]) == 2   # ddpm's, not ours
    assert "--eta" in capsys.readouterr().err
    assert cli.main(["sample", str(run), "--n", "1", "--step-eps", "-1", "--out", str(out)]) == 2
