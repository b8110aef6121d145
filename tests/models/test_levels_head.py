"""``--predict levels`` (gmcore.models.diffusion.levels): the posterior over the levels against a
direct NumPy computation, the snap to the nearest level at low noise, the cross-entropy, and the
ddpm option around it (its channels, its loss, the models that refuse it, a resumed run)."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.models.base import DataInfo
from gmcore.models.diffusion.ddpm import DDPM, DDPMConfig
from gmcore.models.diffusion.levels import LevelsHead
from gmcore.schedules import NoiseSchedule
from resume_checks import check_crash_resume

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = dict(channels=8, num_res_blocks=1, timesteps=20, attention_resolutions="", num_heads=1, dropout=0.0)


def _reference_log_posterior(logits, x_t, abar, L):
    """log softmax_k (l_k - (x_t - sqrt(abar) v_k)^2 / (2 (1 - abar))), in float64 NumPy."""
    B, C, H, W = x_t.shape
    v = np.linspace(-1, 1, L).reshape(1, 1, L, 1, 1)
    a = abar.reshape(B, 1, 1, 1, 1)
    z = logits.reshape(B, C, L, H, W) - (x_t[:, :, None] - np.sqrt(a) * v) ** 2 / (2 * (1 - a))
    z = z - z.max(2, keepdims=True)
    return z - np.log(np.exp(z).sum(2, keepdims=True))


def test_posterior_mean_and_cross_entropy_match_numpy():
    rng = np.random.default_rng(0)
    sched = NoiseSchedule.cosine(50)
    head = LevelsHead(sched, 5)
    logits = rng.standard_normal((3, 2 * 5, 2, 2))
    x_t = rng.standard_normal((3, 2, 2, 2))
    t = np.array([3, 20, 49])
    x0 = np.linspace(-1, 1, 5)[rng.integers(0, 5, (3, 2, 2, 2))]
    ref = _reference_log_posterior(logits, x_t, np.asarray(sched.alphas_cumprod)[t], 5)

    got = head.log_posterior(gm.tensor(logits), gm.tensor(x_t), gm.tensor(t)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    mean = (np.exp(ref) * np.linspace(-1, 1, 5).reshape(1, 1, 5, 1, 1)).sum(2)
    np.testing.assert_allclose(head.x0(gm.tensor(logits), gm.tensor(x_t), gm.tensor(t)).numpy(), mean,
                               rtol=1e-10, atol=1e-12)
    k = np.rint((x0 + 1) * 2).astype(int)
    ce = -np.take_along_axis(ref, k[:, :, None], 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(head.cross_entropy(gm.tensor(logits), gm.tensor(x_t), gm.tensor(t),
                                                  gm.tensor(x0)).numpy(), ce, rtol=1e-10)


def test_low_noise_snaps_to_the_nearest_level_and_high_noise_follows_the_logits():
    sched = NoiseSchedule.linear(1000)
    head = LevelsHead(sched, 17)
    values = np.linspace(-1, 1, 17)
    x0 = values[np.random.default_rng(1).integers(0, 17, (2, 1, 4, 4))]
    x_t = np.sqrt(sched.alphas_cumprod[0]) * x0 + np.sqrt(1 - sched.alphas_cumprod[0]) * 0.5  # half a sigma off
    # logits that favour another level strongly still lose to the likelihood at t = 0
    logits = np.zeros((2, 17, 4, 4))
    logits[:, 3] = 20.0
    got = head.x0(gm.tensor(logits), gm.tensor(x_t), gm.tensor([0, 0])).numpy()
    np.testing.assert_allclose(got, x0, atol=1e-9)
    # at the last step (x_t = 0, a = 0.006) the likelihood is flat: the prediction is the logits' mean
    logits = np.zeros((2, 17, 4, 4))
    logits[:, 3], logits[:, 12] = 1.0, 2.0
    prior = np.exp(logits[0, :, 0, 0]) / np.exp(logits[0, :, 0, 0]).sum()
    far = head.x0(gm.tensor(logits), gm.zeros(2, 1, 4, 4, dtype="float64"), gm.tensor([999, 999])).numpy()
    np.testing.assert_allclose(far, (prior * values).sum(), atol=1e-4)


def test_shapes_and_levels_are_checked():
    head = LevelsHead(NoiseSchedule.linear(10), 17)
    with pytest.raises(ValueError, match=r"logits must be \(B, C \* 17, H, W\) = \(2, 17, 4, 4\)"):
        head.x0(gm.zeros(2, 16, 4, 4), gm.zeros(2, 1, 4, 4), gm.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_levels must be >= 2"):
        LevelsHead(NoiseSchedule.linear(10), 1)


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_ddpm_levels_outputs_logits_and_trains_on_their_cross_entropy(learn_sigma):
    m = DDPM(DDPMConfig(**TINY, predict="levels", learn_sigma=learn_sigma), DIGITS)
    assert m.diffusion.predict == "x0"           # the process sees the posterior mean
    x, t = gm.rand(3, 1, 8, 8), gm.tensor([0, 5, 19])
    assert tuple(m.net(x, t).shape) == (3, 17 + (1 if learn_sigma else 0), 8, 8)
    assert tuple(m.net_output(x, t).shape) == (3, 2 if learn_sigma else 1, 8, 8)
    gm.manual_seed(0)
    x0 = gm.tensor(np.random.default_rng(0).integers(0, 17, (4, 1, 8, 8)) / 16.0, dtype="float32")
    loss, logs = m.loss((x0, gm.zeros(4).long()))
    assert ("vb" in logs) == learn_sigma and logs["ce"] > 0
    loss.backward()
    assert all(p.grad is not None for p in m.net.parameters() if p.requires_grad)
    with gm.no_grad():
        s = m.eval().sample(2, steps=4, generator=gm.Generator().manual_seed(0)).numpy()
        assert s.shape == (2, 1, 8, 8)
        assert np.isfinite(m.nll((x0, None)).numpy()).all()


def test_models_without_levels_refuse_it():
    from gmcore.models.diffusion.bit_diffusion import BitDiffusion, BitDiffusionConfig
    with pytest.raises(ValueError, match="--predict levels is for ddpm on images"):
        BitDiffusion(BitDiffusionConfig(**TINY, predict="levels"), DIGITS)
    with pytest.raises(ValueError, match="--predict levels is for ddpm on images"):
        DDPM(DDPMConfig(predict="levels"), DataInfo((2,), 0, "8gaussians"))


def test_levels_run_resumes_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "ddpm", DDPM,
                       ["--no-progress", "--log-every", "1", "--batch-size", "8", "--num-samples", "4",
                        "--no-sample-quality", "--channels", "8", "--num-res-blocks", "1", "--timesteps", "20",
                        "--attention-resolutions", "", "--num-heads", "1", "--timesteps-subsample", "10",
                        "--eval-every", "0", "--ema", "0.9", "--predict", "levels", "--learn-sigma"])


def test_bound_breakdown_adds_up_to_the_exact_bound(monkeypatch):
    # blocks of one timestep: every term is computed, so the parts sum to the exact bound drawn
    # with the same noise (the same generator, in nll_bound's order)
    from gmcore.data import DataLoader, get_dataset
    m = DDPM(DDPMConfig(**TINY, predict="levels", learn_sigma=True), DIGITS).eval()
    test = get_dataset("digits", "test")
    with gm.no_grad():
        res = m.test_metrics(test)
        assert res["bound_bits_by_timesteps_kind"].startswith("every term below t = 2, one timestep drawn")
        monkeypatch.setattr(DDPM, "BOUND_SPLIT_BLOCK", 1)
        parts = m.test_metrics(test)["bound_bits_by_timesteps"]
        assert list(parts) == ["[1, 2)", "[2, 6)", "[6, 20)", "decoder (t = 0)", "prior (T)"]
        gen, total, n = gm.Generator().manual_seed(0), 0.0, 0
        for batch in DataLoader(test, batch_size=256):
            total += float(m.diffusion.nll_bound(m.denoiser(None), m.to_diffusion(batch[0]), 17,
                                                 generator=gen).sum().item())
            n += batch[0].shape[0]
    assert sum(parts.values()) == pytest.approx(total / (n * 64 * np.log(2)), rel=1e-6)
    assert all(v >= 0 for v in parts.values())
