"""VAE-GAN (gmcore.models.gan.vae_gan): its loss terms against hand computations, which network
each of its three updates trains, the networks' shapes, a CLI run with its pictures, exact
resume, sampling and evaluation of a run, and the errors on data and flags it does not take."""
import json
import math

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import cli, io
from gmcore.data import TensorDataset
from gmcore.models.base import DataInfo
from gmcore.models.gan import VAEGAN
from gmcore.models.gan._nets import ConvDiscriminator
from gmcore.models.gan.vae_gan import feature_error, kl_to_standard_normal
from recording_step import RecordingStep
from resume_checks import check_crash_resume

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = ["--latent-dim", "4", "--g-channels", "4", "--d-channels", "4", "--e-channels", "4"]
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality"]


def tiny(**kw):
    gm.manual_seed(0)
    return VAEGAN(VAEGAN.Config(latent_dim=3, g_channels=4, d_channels=4, e_channels=4, **kw), DIGITS)


def test_loss_terms_by_hand():
    mu, logvar = gm.tensor([[1.0, 0.0]]), gm.tensor([[0.0, math.log(4.0)]])
    # 1/2 (mu^2 + sigma^2 - 1 - log sigma^2) per dimension: 1/2 (1 + 1 - 1 - 0) + 1/2 (0 + 4 - 1 - log 4)
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(0.5 + 0.5 * (3.0 - math.log(4.0)))
    target, feats = gm.tensor([[1.0, 2.0], [0.0, 0.0]]), gm.tensor([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(feature_error(target, feats).numpy(), [2.5, 12.5])
    np.testing.assert_allclose(feature_error(target, feats, sigma=0.5).numpy(), [10.0, 50.0])   # / sigma^2


def test_networks_shapes_and_the_feature_layer():
    m = tiny()
    x = gm.rand(5, 1, 8, 8)
    m.requires_grad_(False)
    mu, logvar = m.encode(x)
    assert mu.shape == (5, 3) and logvar.shape == (5, 3)
    assert m.reconstruct(x).shape == (5, 1, 8, 8) and m.sample(2).shape == (2, 1, 8, 8)
    d = m.discriminator
    assert d.blocks == 2
    assert d.features(x, 1).shape == (5, 4 * 4 * 4) and d.features(x, 2).shape == (5, 8 * 2 * 2)
    out, f = d.forward_and_features(x, 1)          # one pass gives the logits and Dis_l
    np.testing.assert_allclose(out.numpy(), d(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(f.numpy(), d.features(x, 1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(d.features(x).numpy(), d.body(x).numpy(), rtol=1e-6)   # 0: the last block
    assert ConvDiscriminator((1, 28, 28), 4).blocks == 3
    with pytest.raises(ValueError, match="conv blocks 1..2"):
        d.features(x, 3)


def test_each_update_trains_its_network_with_the_papers_loss():
    m = tiny(gamma=0.3, pixel_weight=0.5, feature_sigma=0.5)
    x = gm.rand(6, 1, 8, 8)
    step = RecordingStep(m)
    gm.manual_seed(1)
    logs = m.training_step((x,), step)
    # the error signals are limited as in the paper: L_rec reaches neither the discriminator nor
    # (from the decoder's update) the encoder, and L_GAN does not reach the encoder
    assert step.trained == {"encoder": {"encoder"}, "decoder": {"generator"},
                            "discriminator": {"discriminator"}}

    gm.manual_seed(1)   # the same draws, in the same order: z's noise, then the prior's z
    d1 = lambda v: m.discriminator.features(v, 1)  # noqa: E731
    mu, logvar = m.encode(x)
    z = mu + (0.5 * logvar).exp() * gm.randn(6, 3)
    x_tilde = m.generate(z)
    kl = (0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)).sum(1).mean()
    llike = ((d1(x) - d1(x_tilde)) ** 2).sum(1).mean() / (2 * 0.5 ** 2)
    pixel = 0.5 * ((x - x_tilde) ** 2).reshape(6, -1).sum(1).mean()
    x_p = m.generate(gm.randn(6, 3))
    fakes = gm.cat([x_tilde, x_p], 0)
    l_gan_dec = F.softplus(-m.discriminator(fakes)).mean()          # non-saturating: -log D(fake)
    l_gan = F.softplus(-m.discriminator(x)).mean() + F.softplus(m.discriminator(fakes)).mean()
    assert step.losses["encoder"] == pytest.approx((kl + llike + 0.5 * pixel).item(), rel=1e-5)
    assert step.losses["decoder"] == pytest.approx((0.3 * (llike + 0.5 * pixel) + l_gan_dec).item(), rel=1e-5)
    assert step.losses["discriminator"] == pytest.approx(l_gan.item(), rel=1e-5)
    assert logs["kl"] == pytest.approx(kl.item(), rel=1e-5)
    assert logs["llike"] == pytest.approx(llike.item(), rel=1e-5)


def test_without_prior_fakes_the_reconstructions_alone_are_fake():
    m = tiny(prior_fakes=False)
    x = gm.rand(4, 1, 8, 8)
    step = RecordingStep(m)
    gm.manual_seed(2)
    m.training_step((x,), step)
    gm.manual_seed(2)
    mu, logvar = m.encode(x)
    x_tilde = m.generate(mu + (0.5 * logvar).exp() * gm.randn(4, 3))
    l_gan = F.softplus(-m.discriminator(x)).mean() + F.softplus(m.discriminator(x_tilde)).mean()
    assert step.losses["discriminator"] == pytest.approx(l_gan.item(), rel=1e-5)


def test_reconstruction_error_of_a_test_set(tmp_path):
    m = tiny().eval()
    x = gm.rand(10, 1, 8, 8)
    with gm.no_grad():
        res = m.save_pictures(tmp_path, test_set=TensorDataset(x, gm.zeros(10)))
        mae = (m.reconstruct(x) - x).abs().mean().item()
    assert res["test_reconstruction_mae"] == pytest.approx(mae, rel=1e-5)
    assert (tmp_path / "reconstructions.png").exists() and m.save_pictures(tmp_path) == {}


def test_trains_from_the_cli_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "vae-gan", "--out", str(out), "--steps", "3", *FAST, *TINY,
                     "--ema", "0.9"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["nll_kind"] == "none" and "test_bits" not in res and 0 < res["test_reconstruction_mae"] < 1
    for f in ("reconstructions.png", "samples.png", "last.safetensors", "loss_curve.png"):
        assert (out / f).exists(), f
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 3 and all(np.isfinite(r[k]) for r in train_rows
                                        for k in ("e_loss", "g_loss", "d_loss", "kl", "llike"))
    state = io.load_checkpoint(out / "last")
    steps = {name: {int(v["step"]) for v in opt["state"].values()}
             for name, opt in state["optimizers"].items()}
    assert steps == {"encoder": {3}, "decoder": {3}, "discriminator": {3}}
    # sampling and evaluation of the run (EMA of the decoder)
    assert cli.main(["sample", str(out), "--n", "5", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (5, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--no-sample-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["nll_kind"] == "none"


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "vae-gan", VAEGAN, [*FAST, *TINY, "--ema", "0.9"],
                       method="training_step", key="e_loss")


@pytest.mark.parametrize("flags, match", [
    (["--dataset", "8gaussians"], "models images"),
    (["--labels", "input"], "does not support --labels"),
    (["--n-critic", "2"], "does not support --n-critic"),
    (["--arch", "mlp"], "--arch mlp is not supported"),
    (["--feature-layer", "3"], "--feature-layer 3 does not exist"),
])
def test_bad_data_and_flags_are_named(tmp_path, capsys, flags, match):
    out = str(tmp_path / "r")
    assert cli.main(["train", "vae-gan", "--out", out, "--steps", "1", *FAST, *TINY, *flags]) != 0
    assert match in capsys.readouterr().err
