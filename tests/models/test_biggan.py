"""BigGAN core (gmcore.models.gan.biggan): the hierarchical latent and the shared embedding into
each block's conditional BN, the orthogonal regulariser in the generator's loss, the truncation
trick (resampling), its report, a CLI run with EMA, exact resume, and clear errors."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.models.base import DataInfo
from gmcore.models.gan import DCGAN, BigGAN
from gmcore.models.gan._adversarial import truncated_normal
from gmcore.models.gan._sagan_nets import latent_chunks
from resume_checks import check_crash_resume

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = ["--latent-dim", "6", "--g-channels", "4", "--d-channels", "4", "--shared-dim", "3"]
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality"]


def tiny(**kw):
    gm.manual_seed(0)
    return BigGAN(BigGAN.Config(**{"g_channels": 4, "d_channels": 4, "latent_dim": 6, "shared_dim": 3, **kw}), DIGITS)


def test_config_and_defaults():
    c = BigGAN.Config()
    assert (c.loss, c.ortho_weight, c.beta1, c.d_lr_mult) == ("hinge", 1e-4, 0.0, 4.0)
    assert BigGAN.train_defaults["ema"] == 0.999 and BigGAN.truncation == "threshold"
    assert latent_chunks(60, 2) == [20, 20, 20] and latent_chunks(7, 2) == [3, 2, 2]
    with pytest.raises(ValueError, match="--latent-dim >= 3"):
        latent_chunks(2, 2)


def test_each_block_is_conditioned_on_its_chunk_of_z_and_the_shared_embedding():
    m = tiny()
    g = m.generator
    assert g.chunks == [2, 2, 2] and g.linear.weight_orig.shape[1] == 2
    seen = []
    for block in g.blocks:
        for bn in (block.bn1.bn, block.bn2.bn):
            assert isinstance(bn, gm.nn.LinearConditionalBatchNorm2d) and bn.cond_features == 2 + 3
            bn.register_forward_pre_hook(lambda mod, args: seen.append(args[1].detach().numpy()))
    z, y = m.noise(4), gm.tensor([0, 3, 3, 9])
    m.generate(z, y)
    shared = g.shared(y).detach().numpy()
    for i, cond in enumerate(seen):   # block i's two BNs get [z chunk i+1, shared(y)]
        chunk = z.numpy()[:, 2 * (i // 2 + 1):2 * (i // 2 + 2)]
        np.testing.assert_array_equal(cond, np.concatenate([chunk, shared], 1))
    assert len(seen) == 4
    # the shared embedding is plain, the BN gain and bias maps are spectrally normalised
    assert "weight" in g.shared._parameters and "weight_orig" in g.blocks[0].bn1.bn.gain._parameters


def test_generator_loss_adds_beta_times_the_orthogonal_regulariser():
    m = tiny().eval()   # no power iteration between the two passes
    gm.manual_seed(3)
    loss, logs = m.generator_loss(4)
    m.config.ortho_weight = 0.0
    gm.manual_seed(3)
    plain, _ = m.generator_loss(4)
    ortho = gm.nn.gan.orthogonal_regularization(m.generator, exclude=m.generator.shared.parameters())
    assert logs["ortho"] == pytest.approx(ortho.item(), rel=1e-6)
    assert loss.item() == pytest.approx(plain.item() + 1e-4 * ortho.item(), rel=1e-5, abs=1e-7)


def test_truncation_resamples_the_entries_above_the_threshold():
    g = gm.Generator().manual_seed(0)
    z0 = gm.randn(200, 5, generator=gm.Generator().manual_seed(0)).numpy()
    z = truncated_normal(200, 5, 0.5, generator=g).numpy()
    assert np.abs(z).max() <= 0.5
    keep = np.abs(z0) <= 0.5                   # entries already inside are the first draw's
    np.testing.assert_array_equal(z[keep], z0[keep])
    assert 0.3 < keep.mean() < 0.47            # P(|z| <= 0.5) = 0.38: the others were redrawn
    m = tiny().eval()
    gen = gm.Generator().manual_seed(1)
    a = m.sample(4, generator=gen, truncation=0.0)          # 0: off
    b = m.sample(4, generator=gm.Generator().manual_seed(1))
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    assert m.sample(4, truncation=0.7).shape == (4, 1, 8, 8)
    with pytest.raises(ValueError, match="truncation must be >= 0"):
        m.sample(2, truncation=-1.0)
    with pytest.raises(ValueError, match="no truncation trick"):
        DCGAN(DCGAN.Config(g_channels=4, d_channels=4), DIGITS).sample(2, truncation=0.5)


def test_truncation_report_and_picture(tmp_path):
    from gmcore.data import get_dataset
    m = tiny().eval()
    with gm.no_grad():
        res = m.save_pictures(tmp_path, gm.Generator().manual_seed(0), test_set=get_dataset("digits", "test"))
    assert (tmp_path / "truncation.png").exists() and res["truncation_kind"] == "threshold"
    assert sorted(res["truncation"]) == ["0.5", "0.7", "1.0"]
    for figures in res["truncation"].values():
        assert {"digits_fid", "precision", "recall", "label_accuracy"} <= set(figures)


def test_biggan_trains_with_ema_from_the_cli_and_samples_truncated(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "biggan", "--out", str(out), "--steps", "2", *FAST, *TINY]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["ema"] == 0.999
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["ortho"]) for r in rows if r["split"] == "train")
    flags = ["--n", "3", "--label", "7", "--truncation", "0.5", "--out", str(tmp_path / "s.npy")]
    assert cli.main(["sample", str(out), *flags]) == 0
    assert np.load(tmp_path / "s.npy").shape == (3, 1, 8, 8)


def test_biggan_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "biggan", BigGAN, [*FAST, *TINY], method="training_step",
                       key="g_loss")


def test_biggan_needs_labels_and_a_latent_that_splits():
    with pytest.raises(ValueError, match="needs a data set with class labels"):
        BigGAN(BigGAN.Config(), DataInfo((1, 8, 8), 17, "folder"))
    with pytest.raises(ValueError, match="last 2 are equal"):
        tiny(latent_dim=8)
