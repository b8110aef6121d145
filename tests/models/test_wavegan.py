"""WaveGAN (gmcore.models.gan.wavegan): phase shuffle, the 1-D networks, the WGAN-GP terms on a
hand-computed case, the spectral figure, a CLI run that writes samples.wav, exact resume, and
the errors on data and flags that do not fit."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli, nn, train
from gmcore.cli_train import parse_train_args
from gmcore.data.audio import read_wav
from gmcore.models.base import DataInfo
from gmcore.nn.gan import PhaseShuffle
from gmcore.models.gan.wavegan import (WaveDiscriminator, WaveGAN, WaveGenerator,
                                       mean_log_spectrum, spectral_distance, wave_stages)
from gmcore.testing import gradcheck, gradgradcheck
from resume_checks import check_crash_resume

TINY = ["--g-channels", "2", "--d-channels", "2", "--latent-dim", "4", "--kernel-size", "8",
        "--clip-length", "256", "--seconds", "4", "--samples", "2", "--figure-clips", "8"]
FAST = ["--no-progress", "--log-every", "1", "--batch-size", "8"]


# ---- phase shuffle ---------------------------------------------------------------------------

def test_phase_shuffle_shifts_each_example_with_reflection():
    x = gm.tensor(np.arange(12, dtype=np.float32).reshape(2, 1, 6))
    x = gm.cat([x, x + 100], 1)                                      # (2, 2, 6): two channels
    y = PhaseShuffle(2)(x, shifts=gm.tensor([2, -2])).numpy()
    # right by 2: positions -2, -1 reflect to 2, 1; left by 2: positions 6, 7 reflect to 4, 3
    np.testing.assert_array_equal(y[0, 0], [2, 1, 0, 1, 2, 3])
    np.testing.assert_array_equal(y[1, 0], [8, 9, 10, 11, 10, 9])
    np.testing.assert_array_equal(y[:, 1], y[:, 0] + 100)             # one shift for all channels


def test_phase_shuffle_draws_shifts_in_range_and_is_the_identity_in_eval_or_for_n0():
    gm.manual_seed(0)
    x = gm.randn(64, 3, 10)
    shuffle = PhaseShuffle(2)
    y = shuffle(x).numpy()
    seen = set()
    for b in range(64):    # each example is its own shift of x, one of [-2, 2]
        match = [k for k in range(-2, 3)
                 if np.array_equal(y[b], PhaseShuffle(2)(x[b:b + 1], shifts=gm.tensor([k])).numpy()[0])]
        assert match
        seen.add(match[0])
    assert seen == {-2, -1, 0, 1, 2}
    assert PhaseShuffle(0)(x) is x
    assert shuffle.eval()(x) is x
    with pytest.raises(ValueError, match="length 2"):
        PhaseShuffle(2)(gm.randn(1, 1, 2))
    with pytest.raises(ValueError, match=r"\(B, C, L\)"):
        PhaseShuffle(2)(gm.randn(4, 8))
    with pytest.raises(ValueError, match=r"integers in \[-2, 2\]"):
        PhaseShuffle(2)(x, shifts=gm.tensor([3] * 64))
    with pytest.raises(ValueError, match=">= 0"):
        PhaseShuffle(-1)


def test_phase_shuffle_routes_the_gradient_to_the_positions_read():
    x = gm.zeros(1, 1, 6, requires_grad=True)
    w = gm.tensor([[[1.0, 2.0, 4.0, 8.0, 16.0, 32.0]]])
    (PhaseShuffle(2)(x, shifts=gm.tensor([2])) * w).sum().backward()
    # y reads x[2, 1, 0, 1, 2, 3]: x0 gets w2, x1 gets w1 + w3, x2 gets w0 + w4, x3 gets w5
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [4, 2 + 8, 1 + 16, 32, 0, 0])
    xd = gm.randn(2, 2, 5, dtype=gm.float64, requires_grad=True)
    shifts = gm.tensor([1, -2])
    assert gradcheck(lambda a: PhaseShuffle(2)(a, shifts=shifts), (xd,))
    assert gradgradcheck(lambda a: PhaseShuffle(2)(a, shifts=shifts) ** 2, (xd,))


# ---- networks --------------------------------------------------------------------------------

@pytest.mark.parametrize("length, stages", [(2048, 4), (16384, 5), (4096, 5), (256, 3), (16, 1), (100, 1),
                                            (102, 0), (8, 0)])
def test_depth_follows_the_clip_length(length, stages):
    assert wave_stages(length) == stages


@pytest.mark.parametrize("kernel", [25, 24, 4])
def test_networks_fit_the_clip(kernel):
    gm.manual_seed(0)
    g, d = WaveGenerator(4, 256, 2, kernel), WaveDiscriminator(256, 2, kernel)
    x = g(gm.randn(3, 4))
    assert x.shape == (3, 1, 256) and float(x.abs().max().item()) <= 1.0
    assert g.start == (8, 4)                                     # 3 stages from 4: channels 2 * 2^2
    assert d(x).shape == (3, 1) and d.features(x).shape == (3, 8 * 4)
    shuffles = [m for m in d.body if isinstance(m, PhaseShuffle)]
    assert len(shuffles) == 2 and all(m.n == 2 for m in shuffles)  # after every layer but the last
    assert WaveDiscriminator(256, 2, kernel, norm="layer", minibatch_kernels=3)(x).shape == (3, 1)


def test_config_is_the_papers_setting():
    c = WaveGAN.Config()
    assert (c.loss, c.gp_weight, c.n_critic, c.beta1, c.beta2, c.d_norm, c.phase_shuffle, c.kernel_size) == \
        ("wasserstein", 10.0, 5, 0.5, 0.9, "none", 2, 25)
    assert WaveGAN.train_defaults["lr"] == 1e-4
    assert WaveGAN.dataset_options(c)["encoding"] == "float"


# ---- the loss terms, by hand -------------------------------------------------------------------

class _Linear(nn.Module):
    """A critic C(x) = w . x + b: its input gradient is w everywhere."""

    def __init__(self, w, b):
        super().__init__()
        self.lin = nn.Linear(w.size, 1)
        self.lin.weight.data[...] = w.reshape(1, -1)
        self.lin.bias.data[...] = b

    def forward(self, x):
        return self.lin(x.reshape(x.shape[0], -1))


def test_critic_and_generator_losses_are_wgan_gp_by_hand():
    gm.manual_seed(0)
    model = WaveGAN(WaveGAN.Config(g_channels=2, d_channels=2, latent_dim=4, kernel_size=8),
                    DataInfo((1, 64), 0, "audio"))
    w = np.linspace(-0.3, 0.2, 64).astype(np.float32)
    model.discriminator = _Linear(w, 0.5)
    real, fake = gm.randn(3, 1, 64), gm.randn(3, 1, 64)
    loss, logs = model.critic_loss(real, fake)
    c_real, c_fake = real.numpy().reshape(3, -1) @ w + 0.5, fake.numpy().reshape(3, -1) @ w + 0.5
    gp = (np.linalg.norm(w) - 1.0) ** 2                    # the same at every interpolate
    assert logs["gp"] == pytest.approx(gp, rel=1e-5)
    assert loss.item() == pytest.approx(c_fake.mean() - c_real.mean() + 10.0 * gp, rel=1e-5)
    gm.manual_seed(1)
    g_loss, _ = model.generator_loss(3)
    gm.manual_seed(1)
    x = model.generate(model.noise(3)).detach().numpy().reshape(3, -1)
    assert g_loss.item() == pytest.approx(-(x @ w + 0.5).mean(), rel=1e-5)


# ---- the spectral figure -----------------------------------------------------------------------

def test_spectral_figure_on_known_spectra():
    rng = np.random.default_rng(0)
    t = np.arange(4096)
    sines = np.stack([np.sin(2 * np.pi * 20 * t / 256 + p) for p in (0.0, 1.0)])
    s = mean_log_spectrum(sines)
    assert s.shape == (129,) and int(np.argmax(s)) == 20
    # a unit sine on bin k: |X_k| = sum(w) / 2, the power divided by sum(w^2)
    w = np.hanning(256)
    assert s[20] == pytest.approx(10 * np.log10(w.sum() ** 2 / 4 / (w ** 2).sum()), abs=0.05)
    noise = rng.normal(0.0, 0.1, (16, 4096))
    flat = mean_log_spectrum(noise)
    assert np.abs(flat[1:-1] - 10 * np.log10(0.01)).max() < 1.0  # white noise: sigma^2 in every bin
    assert spectral_distance(noise, noise) == 0.0
    assert spectral_distance(noise, 2 * noise) == pytest.approx(20 * np.log10(2), abs=1e-6)
    assert spectral_distance(noise, sines) == pytest.approx(spectral_distance(sines, noise))
    with pytest.raises(ValueError, match="shorter than a frame"):
        mean_log_spectrum(np.zeros((2, 100)))


# ---- training from the CLI ---------------------------------------------------------------------

def test_wavegan_trains_from_the_cli_and_writes_samples_wav(tmp_path):
    out = tmp_path / "run"
    flags = ["--out", str(out), "--steps", "2", *FAST, *TINY, "--ema", "0.9"]
    assert cli.main(["train", "wavegan", *flags]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["nll_kind"] == "none" and "test_bits" not in res
    assert res["spectral_distance_db"] > 0 and res["spectral_distance_floor_db"] > 0
    wave, rate = read_wav(out / "samples.wav")
    assert rate == 8000 == res["sample_rate"] and len(wave) == 2 * 256 + 8000 // 4   # 2 clips, a gap
    assert np.abs(wave[256:256 + 2000]).max() == 0.0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["gp"]) for r in rows if r["split"] == "train")
    assert cli.main(["sample", str(out), "--out", str(tmp_path / "s")]) == 0
    assert read_wav(tmp_path / "s" / "samples.wav")[0].shape == wave.shape


def test_wavegan_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "wavegan", WaveGAN, [*FAST, *TINY, "--num-samples", "0"],
                       method="training_step", key="g_loss")


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "digits"], "lacks"),
    (["--clip-length", "102"], "multiple of 4"),
    (["--labels", "input"], "--labels does not apply"),
    (["--d-norm", "batch"], "--d-norm batch is not offered"),
])
def test_bad_data_and_flags_are_named(tmp_path, flags, message):
    flags = ["--out", str(tmp_path / "r"), "--steps", "1", *FAST, *TINY, *flags]
    name, tcfg, mcfg = parse_train_args("wavegan", flags)
    with pytest.raises(ValueError, match=message):
        train.train(name, tcfg, mcfg, log=lambda *a: None)


def test_wavegan_on_a_wav_file_keeps_its_rate(tmp_path):
    from gmcore.data.audio import synthetic_signal, write_wav

    write_wav(tmp_path / "a.wav", synthetic_signal(1.0, 4000, seed=1), 4000)
    out = tmp_path / "run"
    assert cli.main(["train", "wavegan", "--out", str(out), "--steps", "1", *FAST, *TINY, "--data-root",
                     str(tmp_path / "a.wav"), "--sample-rate", "0"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["sample_rate"] == 4000 and read_wav(out / "samples.wav")[1] == 4000
    assert "2 held-out clips" in res["spectral_figure"]      # 15 clips of 256: 13 train, 2 held out
