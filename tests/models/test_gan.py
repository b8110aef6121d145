"""The classic GANs (gmcore.models.gan): their configurations, networks, the adversarial step,
a smoke run of every one from the CLI, exact resume, and sampling/evaluation of a GAN run."""
import dataclasses
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli, io, train
from gmcore.cli_train import parse_train_args
from gmcore.models import registry
from gmcore.models.base import DataInfo
from gmcore.models.gan import ACGAN, CGAN, DCGAN, GAN, WGANGP
from gmcore.models.gan._adversarial import GANConfig, config_with_defaults
from gmcore.models.gan._nets import upsampling_stages
from resume_checks import check_crash_resume

GANS = ["gan", "dcgan", "cgan", "acgan", "wgan", "wgan-gp", "lsgan", "hinge-gan"]
# vae-gan (images only) and wavegan (audio only) have their own test files
FAMILY = [*GANS, "vae-gan", "wavegan", "sagan", "biggan", "progan", "stylegan", "bigan",
          "infogan", "cyclegan"]   # (each has its own test file)
TINY = ["--hidden", "16", "--layers", "1", "--latent-dim", "4", "--g-channels", "4", "--d-channels", "4"]
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality"]


def test_family_lists_every_gan():
    assert sorted(s.name for s in registry.specs() if s.family == "gan") == sorted(FAMILY)


def test_each_gan_config_is_its_paper_setting():
    wgp = WGANGP.Config()
    assert (wgp.loss, wgp.gp_weight, wgp.n_critic, wgp.beta1, wgp.beta2, wgp.d_norm) == \
        ("wasserstein", 10.0, 5, 0.0, 0.9, "layer")
    w = registry.get("wgan").config_cls()
    assert (w.loss, w.optimizer, w.clip, w.n_critic) == ("wasserstein", "rmsprop", 0.01, 5)
    assert registry.get("lsgan").config_cls().loss == "least_squares"
    assert registry.get("hinge-gan").config_cls().loss == "hinge"
    assert GAN.Config().arch == "auto" and DCGAN.Config().arch == "auto"
    # help and limits survive the change of defaults
    f = {x.name: x for x in dataclasses.fields(WGANGP.Config)}
    assert f["n_critic"].metadata == {x.name: x for x in dataclasses.fields(GANConfig)}["n_critic"].metadata
    with pytest.raises(TypeError, match="no field"):
        config_with_defaults("Bad", lr=1.0)


@pytest.mark.parametrize("hw, stages", [((8, 8), 1), ((28, 28), 2), ((32, 32), 3), ((4, 4), 0), ((12, 20), 1)])
def test_generator_depth_follows_the_image_size(hw, stages):
    assert upsampling_stages(*hw) == stages


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_conv_networks_fit_the_image_sizes(shape):
    gm.manual_seed(0)
    model = DCGAN(DCGAN.Config(g_channels=4, d_channels=4, latent_dim=3), DataInfo(shape, 256, "x"))
    x = model.sample(2)
    assert x.shape == (2, *shape) and float(x.min().item()) >= 0.0 and float(x.max().item()) <= 1.0
    assert model.discriminator(x).shape == (2, 1)


def test_gradient_penalty_refuses_batch_norm_in_the_critic():
    with pytest.raises(ValueError, match="--d-norm layer or none"):
        WGANGP(WGANGP.Config(d_norm="batch"), DataInfo((1, 8, 8), 17, "digits"))


def test_critic_steps_and_weight_clipping_in_one_training_step(tmp_path):
    name, tcfg, mcfg = parse_train_args("wgan", ["--out", str(tmp_path / "run"), "--steps", "2", *FAST, *TINY])
    train.train(name, tcfg, mcfg, log=lambda *a: None)
    state = io.load_checkpoint(tmp_path / "run" / "last")
    model, _ = train.load_run_model(tmp_path / "run" / "last")
    d_weights = [p.detach().numpy() for p in model.discriminator.parameters()]
    assert max(np.abs(w).max() for w in d_weights) == pytest.approx(0.01)   # clipped, and some at the edge
    steps = {name: {int(v["step"]) for v in opt["state"].values()} for name, opt in state["optimizers"].items()}
    assert steps == {"generator": {2}, "discriminator": {10}}


@pytest.mark.parametrize("model", GANS)
def test_every_gan_trains_from_the_cli(tmp_path, model):
    toys = [] if model in ("cgan", "acgan") else [["--dataset", "8gaussians"]]   # the toys carry no classes
    for data in [["--dataset", "digits"], *toys]:
        out = tmp_path / (model + data[1])
        assert cli.main(["train", model, "--out", str(out), "--steps", "2", *FAST, *TINY, *data]) == 0
        res = json.loads((out / "metrics.json").read_text())
        assert res["nll_kind"] == "none" and "test_bits" not in res
        rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
        assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows if r["split"] == "train")
        if data[1] == "8gaussians":
            assert res["modes"] == 8 and 0 <= res["modes_hit"] <= 8 and 0 <= res["high_quality_share"] <= 1
            assert res["energy_distance"] > 0 and res["figure_samples"] == 2000


def test_gan_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "dcgan", DCGAN, [*FAST, *TINY, "--ema", "0.9"],
                       method="training_step", key="g_loss")


def test_sample_and_eval_of_a_gan_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "dcgan", "--out", str(out), "--steps", "2", *FAST, *TINY, "--ema", "0.9"]) == 0
    assert cli.main(["sample", str(out), "--n", "6", "--out", str(tmp_path / "s.npy")]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (6, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--no-sample-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["nll_kind"] == "none"


def test_progress_strip_grows_with_each_evaluation_and_resumes(tmp_path):
    out = tmp_path / "run"
    flags = ["--out", str(out), *FAST, *TINY, "--eval-every", "1"]
    assert cli.main(["train", "dcgan", "--steps", "2", *flags]) == 0
    with np.load(out / "progress.npz") as f:
        assert sorted(f.files) == ["step_000000001", "step_000000002"]
        first = f["step_000000001"]
    assert first.shape == (8, 1, 8, 8) and (out / "progress.png").exists()
    # a row from a step the resumed run will redo is dropped, the others stay
    from gmcore.sample_progress import record_frame
    record_frame(out, 9, first)
    assert cli.main(["train", "dcgan", "--steps", "3", "--resume", *flags]) == 0
    with np.load(out / "progress.npz") as f:
        assert sorted(f.files) == ["step_000000001", "step_000000002", "step_000000003"]
        np.testing.assert_array_equal(f["step_000000001"], first)


DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)


def test_cgan_discriminator_judges_image_and_label_together():
    gm.manual_seed(0)
    for arch in ("conv", "mlp"):
        m = CGAN(CGAN.Config(arch=arch, g_channels=4, d_channels=4, hidden=8, layers=1), DIGITS)
        x = m.sample(4, labels=gm.tensor([3, 3, 3, 3]))
        a, _ = m.discriminate(x, gm.tensor([3, 3, 3, 3]))
        b, _ = m.discriminate(x, gm.tensor([5, 5, 5, 5]))
        assert a.shape == (4, 1) and not np.allclose(a.detach().numpy(), b.detach().numpy())
        # the generator follows the label too: same noise, other digit
        z = m.noise(2)
        assert not np.allclose(m.generate(z, gm.tensor([0, 0])).detach().numpy(),
                               m.generate(z, gm.tensor([9, 9])).detach().numpy())


def test_acgan_discriminator_classifies_and_its_losses_use_the_labels():
    gm.manual_seed(0)
    m = ACGAN(ACGAN.Config(g_channels=4, d_channels=4), DIGITS)
    x = m.sample(5)
    src, cls = m.discriminate(x)
    assert src.shape == (5, 1) and cls.shape == (5, 10)
    real, y = gm.rand(5, 1, 8, 8), gm.tensor([1, 2, 3, 4, 5])
    loss, logs = m.critic_loss(real, x.detach(), y, gm.arange(5) % 10)
    assert logs["d_class"] > 0
    import gmcore.nn.functional as F
    _, cls_real = m.discriminate(real)
    _, cls_fake = m.discriminate(x.detach())
    base = gm.nn.gan.discriminator_loss(m.discriminate(real)[0], m.discriminate(x.detach())[0])
    expect = base + F.cross_entropy(cls_real, y) + F.cross_entropy(cls_fake, gm.arange(5) % 10)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)


def test_class_conditional_samples_cycle_labels_and_validate_them():
    gm.manual_seed(0)
    m = CGAN(CGAN.Config(g_channels=4, d_channels=4), DIGITS)
    assert m.class_conditional
    gm.manual_seed(1)
    a = m.sample(12)
    gm.manual_seed(1)
    b = m.sample(12, labels=gm.arange(12) % 10)
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    gm.manual_seed(2)
    c = m.sample(3, label=7)
    gm.manual_seed(2)
    np.testing.assert_array_equal(c.detach().numpy(), m.sample(3, labels=gm.tensor([7, 7, 7])).detach().numpy())
    with pytest.raises(ValueError, match=r"labels must be \(3,\) class indices in \[0, 9\]"):
        m.sample(3, labels=gm.tensor([0, 1, 10]))
    with pytest.raises(ValueError, match="takes no labels"):
        DCGAN(DCGAN.Config(g_channels=4, d_channels=4), DIGITS).sample(2, labels=gm.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs a data set with class labels"):
        CGAN(CGAN.Config(), DataInfo((2,), 0, "moons"))


def test_sample_a_chosen_class_from_the_cli(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "cgan", "--out", str(out), "--steps", "1", *FAST, *TINY]) == 0
    assert cli.main(["sample", str(out), "--n", "3", "--label", "7", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (3, 1, 8, 8)
    assert cli.main(["sample", str(out), "--label", "12", "--out", str(tmp_path / "t.npy")]) == 1


def test_label_accuracy_of_class_conditional_samples():
    from gmcore.data import get_dataset
    gm.manual_seed(0)
    m = CGAN(CGAN.Config(g_channels=4, d_channels=4), DIGITS)
    with gm.no_grad():
        _, q = train.final_samples(m, get_dataset("digits", "test"), "digits", 0, 0, True)
    assert 0.0 <= q["label_accuracy"] <= 1.0 and q["num_quality_samples"] == 1000


TRICKS = ["--feature-matching", "--minibatch-kernels", "4", "--historical-weight", "0.01", "--vbn-reference", "8",
          "--real-label", "0.9"]


def test_improved_gan_techniques_train_and_resume_exactly(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "dcgan", DCGAN, [*FAST, *TINY, *TRICKS],
                       method="training_step", key="g_loss")
    state = io.load_checkpoint(tmp_path / "full" / "last")
    assert float(state["model"]["g_history.count"].numpy()) == 7.0          # initial + 6 updates
    assert float(state["model"]["d_history.count"].numpy()) == 7.0
    assert "generator.reference" in state["model"] and "discriminator.minibatch.T" in state["model"]


def test_virtual_batch_norm_makes_each_sample_independent_of_its_batch():
    gm.manual_seed(0)
    m = DCGAN(DCGAN.Config(g_channels=4, d_channels=4, vbn_reference=8), DataInfo((1, 8, 8), 17, "digits"))
    m.train()
    z = m.noise(5)
    alone = m.generate(z[:1]).detach().numpy()
    together = m.generate(z).detach().numpy()
    np.testing.assert_allclose(alone[0], together[0], rtol=1e-5, atol=1e-6)
    plain = DCGAN(DCGAN.Config(g_channels=4, d_channels=4), DataInfo((1, 8, 8), 17, "digits")).train()
    z = plain.noise(5)
    assert not np.allclose(plain.generate(z[:2]).detach().numpy()[0], plain.generate(z).detach().numpy()[0])
    with pytest.raises(ValueError, match="needs the conv generator"):
        GAN(GAN.Config(arch="mlp", vbn_reference=4), DataInfo((1, 8, 8), 17, "digits"))


def test_feature_matching_replaces_the_generator_loss():
    gm.manual_seed(0)
    m = DCGAN(DCGAN.Config(g_channels=4, d_channels=4, feature_matching=True), DataInfo((1, 8, 8), 17, "digits"))
    real = gm.rand(6, 1, 8, 8)
    gm.manual_seed(3)
    loss, _ = m.generator_loss(6, real)
    gm.manual_seed(3)
    fake = m.generate(m.noise(6))
    expect = ((m.features(real).mean(0) - m.features(fake).mean(0)) ** 2).sum()
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    with pytest.raises(ValueError, match="needs the data batch"):
        m.generator_loss(6)
