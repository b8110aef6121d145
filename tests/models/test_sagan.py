"""SAGAN (gmcore.models.gan.sagan): the paper's settings, spectral norm on every layer of both
networks, self-attention where asked, conditional BN and the projection discriminator, the hinge
losses by hand, a CLI run, exact resume, and clear errors."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.models.base import DataInfo
from gmcore.models.gan import SAGAN
from gmcore.models.gan._sagan_nets import resnet_stages
from resume_checks import check_crash_resume

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = ["--latent-dim", "6", "--g-channels", "4", "--d-channels", "4"]
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality"]


def tiny(**kw):
    gm.manual_seed(0)
    return SAGAN(SAGAN.Config(g_channels=4, d_channels=4, latent_dim=6, **kw), DIGITS)


def test_config_is_the_papers_setting():
    c = SAGAN.Config()
    assert (c.loss, c.beta1, c.beta2, c.d_lr_mult, c.n_critic, c.class_cond) == ("hinge", 0.0, 0.9, 4.0, 1, True)
    # TTUR: the discriminator at 4x the generator's rate (the paper's 1e-4 / 4e-4 with --lr 1e-4;
    # the default 2e-4 trains in 1500 steps), samples from an EMA of the weights
    assert SAGAN.train_defaults["lr"] == 2e-4 and SAGAN.train_defaults["lr_schedule"] == "constant"
    assert SAGAN.train_defaults["ema"] == 0.999

    class T:
        lr = 1e-4
    opts = tiny().configure_optimizers(T)
    assert opts["generator"].param_groups[0]["lr"] == 1e-4 and opts["discriminator"].param_groups[0]["lr"] == 4e-4
    assert opts["discriminator"].param_groups[0]["betas"] == (0.0, 0.9)


@pytest.mark.parametrize("hw, stages", [((8, 8), 2), ((28, 28), 2), ((32, 32), 3), ((4, 4), 1)])
def test_depth_follows_the_image_size(hw, stages):
    assert resnet_stages(*hw) == stages


def test_every_weight_layer_of_both_networks_is_spectrally_normalised():
    m = tiny()
    for net in (m.generator, m.discriminator):
        # the class-conditional BN's gain/bias table is the one weight layer without it
        tables = {id(mod.embed) for mod in net.modules() if isinstance(mod, gm.nn.ConditionalBatchNorm2d)}
        layers = [mod for mod in net.modules() if isinstance(mod, (gm.nn.Conv2d, gm.nn.Linear, gm.nn.Embedding))]
        assert len(layers) > 8
        for mod in layers:
            assert ("weight_orig" in mod._parameters) != (id(mod) in tables), mod


@pytest.mark.parametrize("shape, res", [((1, 8, 8), 4), ((1, 28, 28), 14), ((3, 32, 32), 8), ((1, 8, 8), 0)])
def test_networks_fit_the_image_sizes_with_attention_where_asked(shape, res):
    gm.manual_seed(0)
    m = SAGAN(SAGAN.Config(g_channels=4, d_channels=4, latent_dim=6, attention_res=res, class_cond=False),
              DataInfo(shape, 256, "x"))
    x = m.sample(2)
    assert x.shape == (2, *shape) and float(x.min().item()) >= 0.0 and float(x.max().item()) <= 1.0
    assert m.discriminator(x).shape == (2, 1)
    for net in (m.generator, m.discriminator):
        assert (net.attention is not None) == bool(res)
    if res:   # the attention runs on a map of side res
        seen = []
        m.generator.attention.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[-1]))
        m.discriminator.attention.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[-1]))
        m.discriminator(m.sample(2))
        assert seen == [res, res]


def test_conditional_bn_in_the_generator_and_the_projection_in_the_discriminator():
    m = tiny()
    assert all(isinstance(b.bn1.bn, gm.nn.ConditionalBatchNorm2d) for b in m.generator.blocks)
    z = m.noise(2)
    assert not np.allclose(m.generate(z, gm.tensor([0, 0])).detach().numpy(),
                           m.generate(z, gm.tensor([9, 9])).detach().numpy())
    # D(x, y) = linear(h) + <embed(y), h> with h the pooled features
    d = m.discriminator
    x, y = gm.rand(3, 1, 8, 8), gm.tensor([1, 4, 4])
    feats = []
    d.head.register_forward_pre_hook(lambda mod, args: feats.append(args[0]))
    out = d(x, y)
    h = feats[0].detach().numpy()
    w, b = d.head.weight.detach().numpy(), d.head.bias.detach().numpy()
    emb = d.embed.weight.detach().numpy()[[1, 4, 4]]
    np.testing.assert_allclose(out.detach().numpy(), h @ w.T + b + (emb * h).sum(1, keepdims=True), rtol=1e-5)
    assert SAGAN(SAGAN.Config(g_channels=4, d_channels=4, class_cond=False), DIGITS).discriminator.embed is None


def test_hinge_losses_by_hand():
    m = tiny()
    real, fake = gm.rand(4, 1, 8, 8), gm.rand(4, 1, 8, 8)
    yr, yf = gm.tensor([0, 1, 2, 3]), gm.tensor([3, 2, 1, 0])
    m.eval()   # no power iteration: both passes see the same normalised weights
    loss, _ = m.critic_loss(real, fake, yr, yf)
    dr, df = m.discriminator(real, yr).detach().numpy(), m.discriminator(fake, yf).detach().numpy()
    expect = np.maximum(0, 1 - dr).mean() + np.maximum(0, 1 + df).mean()
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    gm.manual_seed(5)
    g_loss, _ = m.generator_loss(4)
    gm.manual_seed(5)
    y = m.random_labels(4)
    assert g_loss.item() == pytest.approx(-m.discriminator(m.generate(m.noise(4), y), y).mean().item(), rel=1e-5)


def test_sagan_trains_from_the_cli_and_samples_a_label(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "sagan", "--out", str(out), "--steps", "2", *FAST, *TINY]) == 0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows if r["split"] == "train")
    assert (out / "samples.png").exists()
    assert cli.main(["sample", str(out), "--n", "3", "--label", "7", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (3, 1, 8, 8)
    # no truncation trick: the flag is refused, naming what sagan takes
    assert cli.main(["sample", str(out), "--truncation", "0.5", "--out", str(tmp_path / "t.npy")]) == 2
    with pytest.raises(ValueError, match="no truncation trick"):
        tiny().sample(2, truncation=0.5)


def test_sagan_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "sagan", SAGAN, [*FAST, *TINY], method="training_step", key="g_loss")


@pytest.mark.parametrize("kw, message", [
    ({"arch": "mlp"}, "--arch is not used"),
    ({"labels": "input"}, "class conditioning is --class-cond"),
    ({"attention_res": 3}, "--attention-res 3"),
])
def test_bad_flags_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)


def test_class_conditioning_needs_labels():
    with pytest.raises(ValueError, match="--no-class-cond"):
        SAGAN(SAGAN.Config(), DataInfo((1, 8, 8), 17, "folder"))
    with pytest.raises(ValueError, match="models images"):
        SAGAN(SAGAN.Config(class_cond=False), DataInfo((2,), 0, "moons"))
