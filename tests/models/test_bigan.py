"""BiGAN / ALI (gmcore.models.gan.bigan): its losses against hand computations, which network each
update trains, the networks' shapes, the stochastic encoder, the linear probes and reconstructions
it reports, a CLI run with its files, exact resume, and the errors on data and flags it refuses."""
import json
import math

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import cli, io
from gmcore.data import TensorDataset
from gmcore.models.base import DataInfo
from gmcore.models.gan import BiGAN
from gmcore.models.gan.bigan import JointDiscriminator, encoder_generator_loss
from gmcore.random import default_generator
from recording_step import RecordingStep
from resume_checks import check_crash_resume

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = ["--latent-dim", "4", "--g-channels", "4", "--d-channels", "4", "--e-channels", "4", "--hidden", "8"]
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality"]


def tiny(**kw):
    gm.manual_seed(0)
    return BiGAN(BiGAN.Config(latent_dim=3, g_channels=4, d_channels=4, e_channels=4, hidden=8, **kw), DIGITS)


def test_encoder_generator_losses_by_hand():
    real, fake = gm.tensor([1.0, -2.0]), gm.tensor([0.5, 3.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731  softplus
    # non-saturating: the discriminator's cross-entropy with the labels swapped
    assert encoder_generator_loss(real, fake).item() == pytest.approx(
        (sp(1.0) + sp(-2.0)) / 2 + (sp(-0.5) + sp(-3.0)) / 2, rel=1e-6)
    # minimax: minus the discriminator's loss, log sigmoid(real) + log(1 - sigmoid(fake))
    assert encoder_generator_loss(real, fake, "minimax").item() == pytest.approx(
        -((sp(-1.0) + sp(2.0)) / 2 + (sp(0.5) + sp(3.0)) / 2), rel=1e-6)
    assert encoder_generator_loss(real, fake, "least_squares").item() == pytest.approx(
        0.5 * (1 + 4) / 2 + 0.5 * (0.25 + 4) / 2, rel=1e-6)
    assert encoder_generator_loss(real, fake, "hinge").item() == pytest.approx(-0.5 - 1.75, rel=1e-6)
    with pytest.raises(ValueError, match="unknown BiGAN loss 'wasserstein'"):
        encoder_generator_loss(real, fake, "wasserstein")


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_networks_shapes(shape):
    gm.manual_seed(0)
    m = BiGAN(BiGAN.Config(latent_dim=5, g_channels=4, d_channels=4, e_channels=4, hidden=8),
              DataInfo(shape, 256, "x"))
    m.requires_grad_(False)
    x = gm.rand(3, *shape)
    z = m.encode(x)
    assert z.shape == (3, 5) and m.reconstruct(x).shape == (3, *shape) and m.sample(2).shape == (2, *shape)
    assert m.discriminator(x, z).shape == (3, 1)


def test_the_discriminator_sees_both_halves_of_the_pair():
    gm.manual_seed(0)
    d = JointDiscriminator((1, 8, 8), 3, channels=4, hidden=8, layers=2, dropout=0.5).eval()
    x, z = gm.rand(2, 1, 8, 8), gm.randn(2, 3)
    with gm.no_grad():
        out = d(x, z).numpy()
        assert not np.allclose(out, d(x, z + 1.0).numpy()) and not np.allclose(out, d(x.flip(3), z).numpy())
        np.testing.assert_array_equal(out, d(x, z).numpy())   # eval: no dropout
        d.train()
        assert not np.allclose(d(x, z).numpy(), d(x, z).numpy())   # training: dropout draws


def test_stochastic_encoder_is_alis_reparameterised_gaussian():
    m = tiny(stochastic_encoder=True).requires_grad_(False)
    x = gm.rand(4, 1, 8, 8)
    out = m.encoder(x)
    assert out.shape == (4, 6)
    mu, logvar = out[:, :3], out[:, 3:]
    np.testing.assert_allclose(m.encode(x).numpy(), mu.numpy(), rtol=1e-6)   # the mean by default
    gm.manual_seed(5)
    drawn = m.encode(x, sample=True)
    gm.manual_seed(5)
    eps = gm.randn(4, 3)
    np.testing.assert_allclose(drawn.numpy(), (mu + (0.5 * logvar).exp() * eps).numpy(), rtol=1e-5)


@pytest.mark.parametrize("kind", ["nonsaturating", "least_squares"])
def test_each_update_trains_its_networks_with_the_bigan_loss(kind):
    m = tiny(dropout=0.0, loss=kind)
    x = gm.rand(6, 1, 8, 8)
    step = RecordingStep(m)
    gm.manual_seed(1)
    logs = m.training_step((x,), step)
    # D learns from the pairs alone; G and E together from one loss, D's weights left out
    assert step.trained == {"discriminator": {"discriminator"}, "generator_encoder": {"generator", "encoder"}}
    gm.manual_seed(1)   # the same draw of z
    z = gm.randn(6, 3)
    s_real, s_fake = m.discriminator(x, m.encoder(x)), m.discriminator(m.generate(z), z)
    if kind == "nonsaturating":
        d_loss = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
        ge_loss = F.softplus(s_real).mean() + F.softplus(-s_fake).mean()
    else:
        d_loss = 0.5 * ((s_real - 1) ** 2).mean() + 0.5 * (s_fake ** 2).mean()
        ge_loss = 0.5 * (s_real ** 2).mean() + 0.5 * ((s_fake - 1) ** 2).mean()
    assert step.losses["discriminator"] == pytest.approx(d_loss.item(), rel=1e-5)
    assert step.losses["generator_encoder"] == pytest.approx(ge_loss.item(), rel=1e-5)
    assert logs["d_real"] == pytest.approx(s_real.mean().item(), rel=1e-5)


def test_pictures_reconstructions_and_linear_probes(tmp_path):
    m = tiny().eval()
    gm.manual_seed(3)
    x, y = gm.rand(40, 1, 8, 8), gm.tensor(np.arange(40) % 4)
    train_set, test_set = TensorDataset(x[:30], y[:30]), TensorDataset(x[30:], y[30:])
    state = default_generator.get_state()
    with gm.no_grad():
        res = m.test_metrics(test_set, train_set=train_set)
        assert m.save_pictures(tmp_path, test_set=test_set) == {"reconstructions_png": "reconstructions.png"}
        rec = m.reconstruct(x[30:])
        assert res["test_reconstruction_mae"] == pytest.approx((rec - x[30:]).abs().mean().item(), rel=1e-5)
        assert res["test_reconstruction_mse"] == pytest.approx(((rec - x[30:]) ** 2).mean().item(), rel=1e-5)
        again = m.linear_probe(train_set, test_set)
    assert default_generator.get_state() == state     # the random-encoder baseline leaves the stream alone
    assert (tmp_path / "reconstructions.png").exists() and m.save_pictures(tmp_path) == {}
    from gmcore.linear_probe import linear_probe_accuracy
    with gm.no_grad():
        z_train, z_test = m.encode(x[:30]).numpy(), m.encode(x[30:]).numpy()
    assert res["linear_probe_accuracy"] == linear_probe_accuracy(z_train, y[:30].numpy(), z_test, y[30:].numpy(),
                                                                 l2=res["linear_probe_l2"])
    assert res["linear_probe_accuracy_raw_pixels"] == linear_probe_accuracy(
        x[:30].numpy(), y[:30].numpy(), x[30:].numpy(), y[30:].numpy(), l2=res["linear_probe_l2"])
    for k in ("", "_encoder_hidden", "_raw_pixels", "_random_encoder", "_random_encoder_hidden"):
        assert 0.0 <= res[f"linear_probe_accuracy{k}"] <= 1.0
        assert again[f"linear_probe_accuracy{k}"] == res[f"linear_probe_accuracy{k}"]   # deterministic


def test_trains_from_the_cli_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "bigan", "--out", str(out), "--steps", "3", *FAST, *TINY]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["nll_kind"] == "none" and 0 < res["test_reconstruction_mae"] < 1
    # digits: the probes of E(x), E's hidden layer, the raw pixels and a random E, fitted on the train split
    assert res["linear_probe_accuracy_raw_pixels"] > 0.9
    assert all(0.1 < res[f"linear_probe_accuracy{k}"] <= 1.0
               for k in ("", "_encoder_hidden", "_random_encoder", "_random_encoder_hidden"))
    for f in ("reconstructions.png", "samples.png", "last.safetensors", "loss_curve.png"):
        assert (out / f).exists(), f
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 3 and all(np.isfinite(r[k]) for r in train_rows for k in ("ge_loss", "d_loss"))
    state = io.load_checkpoint(out / "last")
    steps = {name: {int(v["step"]) for v in opt["state"].values()} for name, opt in state["optimizers"].items()}
    assert steps == {"generator_encoder": {3}, "discriminator": {3}}
    assert cli.main(["sample", str(out), "--n", "5", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (5, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--no-sample-quality"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["nll_kind"] == "none"
    for k in ("linear_probe_accuracy", "linear_probe_accuracy_raw_pixels", "test_reconstruction_mae"):
        assert ev[k] == res[k]   # the model's own figures, reproduced


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "bigan", BiGAN, [*FAST, *TINY, "--stochastic-encoder",
                                                               "--num-samples", "0"],
                       method="training_step", key="ge_loss")


@pytest.mark.parametrize("flags, match", [
    (["--dataset", "8gaussians"], "models images"),
    (["--arch", "mlp"], "--arch mlp is not supported"),
    (["--loss", "wasserstein"], "--loss wasserstein is not supported"),
    (["--labels", "input"], "does not support --labels"),
    (["--gp-weight", "10", "--d-norm", "none"], "does not support --gp-weight"),
    (["--loss", "hinge", "--real-label", "0.9"], "--real-label applies"),
])
def test_bad_data_and_flags_are_named(tmp_path, capsys, flags, match):
    out = str(tmp_path / "r")
    assert cli.main(["train", "bigan", "--out", out, "--steps", "1", *FAST, *TINY, *flags]) != 0
    assert match in capsys.readouterr().err
