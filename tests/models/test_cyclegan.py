"""CycleGAN (gmcore.models.gan.cyclegan): the paper's settings, the domains (maps, disjoint halves),
the networks' shapes and patch size, every loss term against a hand computation, the image pool,
a CLI run with its pictures and metrics, exact resume, sampling and evaluation, clear errors."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.data import get_dataset
from gmcore.data.loader import ArrayDataset
from gmcore.models.base import DataInfo
from gmcore.models.gan import CycleGAN
from gmcore.models.gan._cyclegan_domains import (DOMAIN_MAPS, from_domain_b, map_levels, to_domain_b,
                                                  unpaired_domains)
from gmcore.models.gan._cyclegan_nets import PatchDiscriminator, ResnetGenerator, receptive_field
from gmcore.nn.gan import ImagePool
from resume_checks import check_crash_resume

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = ["--g-channels", "4", "--g-blocks", "1", "--d-channels", "4"]
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "8", "--num-samples", "4",
        "--no-sample-quality"]


def tiny(**kw):
    gm.manual_seed(0)
    return CycleGAN(CycleGAN.Config(g_channels=4, g_blocks=1, d_channels=4, **kw), DIGITS)


def test_config_is_the_papers_setting():
    c = CycleGAN.Config()
    assert (c.cycle_weight, c.pool_size, c.beta1, c.beta2) == (10.0, 50, 0.5, 0.999)
    # the measured departures (module docstring): no identity term, a local generator on 8x8
    assert (c.domain_b, c.identity_weight, c.g_kernel, c.g_blocks) == ("invert", 0.0, 3, 1)
    assert CycleGAN.train_defaults["lr"] == 2e-4 and CycleGAN.nll_kind == "none"

    class T:
        lr = 2e-4
    opts = tiny().configure_optimizers(T)
    assert sorted(opts) == ["discriminator", "generator"]
    assert all(o.param_groups[0]["lr"] == 2e-4 and o.param_groups[0]["betas"] == (0.5, 0.999)
               for o in opts.values())


@pytest.mark.parametrize("kind", DOMAIN_MAPS)
def test_domain_maps_on_levels_and_tensors_agree_and_invert(kind):
    levels = np.random.default_rng(0).integers(0, 17, (3, 1, 5, 5)).astype(np.uint8)
    expect = {"rotate90": np.rot90(levels, 1, axes=(2, 3)), "transpose": levels.transpose(0, 1, 3, 2),
              "invert": 16 - levels}[kind]
    np.testing.assert_array_equal(map_levels(kind, levels, 17), expect)
    x = gm.tensor(levels / 16.0)
    np.testing.assert_allclose(to_domain_b(kind, x).numpy(), expect / 16.0, atol=1e-12)
    np.testing.assert_array_equal(from_domain_b(kind, to_domain_b(kind, x)).numpy(), x.numpy())


def test_domains_come_from_disjoint_halves_with_their_labels():
    n = 11
    levels = np.arange(n * 4, dtype=np.uint8).reshape(n, 1, 2, 2)   # image i holds 4i .. 4i+3
    ds = ArrayDataset(levels, np.arange(n) % 10)
    ds.num_levels = 256
    rows = unpaired_domains(ds, "rotate90")
    a, ya, b, yb = rows.arrays
    assert len(rows) == 5 and a.shape == b.shape == (5, 1, 2, 2)
    ids_a = a[:, 0, 0, 0] // 4
    ids_b = np.rot90(b, -1, axes=(2, 3))[:, 0, 0, 0] // 4    # undo the map to find the source image
    assert not set(ids_a) & set(ids_b)
    np.testing.assert_array_equal(ya, ids_a % 10)
    np.testing.assert_array_equal(yb, ids_b % 10)
    np.testing.assert_array_equal(b, np.rot90(levels[ids_b], 1, axes=(2, 3)))
    # the digits: 750 rows, scaled to [0, 1] as the data set scales them
    d = unpaired_domains(get_dataset("digits", "train"), "invert")
    x = d.get_batch(np.arange(4))
    assert len(d) == 750 and x[0].dtype == np.float32 and 0 <= x[2].min() and x[2].max() <= 1


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_networks_fit_the_image_sizes(shape):
    gm.manual_seed(0)
    m = CycleGAN(CycleGAN.Config(g_channels=4, g_blocks=1, d_channels=4), DataInfo(shape, 256, "x", 10))
    x = gm.rand(2, *shape)
    for d in ("a2b", "b2a"):
        y = m.translate(x, d)
        assert y.shape == x.shape and 0 <= float(y.min().item()) and float(y.max().item()) <= 1
    side = shape[-1]
    ups = [mod for mod in m.generators["a2b"].modules() if isinstance(mod, gm.nn.ConvTranspose2d)]
    assert len(ups) == (0 if side < 16 else 2)    # no stride-2 stage on 8x8 digits, the paper's two above
    layers = 1 if side < 16 else 2
    assert all(p.layers == layers for p in m.discriminators.values())
    out = m.discriminators["a"](x)
    size = side // 2 ** layers - 2    # two stride-1 4x4 convolutions with padding 1
    assert out.shape == (2, 1, size, size)


def test_patch_size_is_the_receptive_field():
    assert receptive_field(3) == 70 and receptive_field(1) == 16 and receptive_field(2) == 34
    # one output of a 2-layer net on a 64x64 image depends on a 34x34 window of the input through
    # its convolutions (instance norm's statistics reach further: taken out here)
    gm.manual_seed(0)
    d = PatchDiscriminator(1, channels=2, layers=2)
    for key, mod in list(d.net._modules.items()):
        if isinstance(mod, gm.nn.InstanceNorm2d):
            d.net._modules[key] = gm.nn.Identity()
    x = gm.rand(1, 1, 64, 64, requires_grad=True)
    out = d(x)
    out[0, 0, 6, 6].backward()
    rows, cols = np.nonzero(np.abs(x.grad.numpy()[0, 0]) > 0)
    assert rows.max() - rows.min() + 1 <= 34 and cols.max() - cols.min() + 1 <= 34
    assert rows.max() - rows.min() + 1 >= 30   # (the window's border taps may meet zero weights)


def test_generator_is_the_papers_resnet_layout():
    g = ResnetGenerator(1, channels=8, blocks=3, down=2)
    convs = [mod for mod in g.modules() if isinstance(mod, (gm.nn.Conv2d, gm.nn.ConvTranspose2d))]
    kinds = [(type(c).__name__, c.kernel_size, c.stride, c.out_channels) for c in convs]
    assert kinds[0] == ("Conv2d", (7, 7), (1, 1), 8) and kinds[-1] == ("Conv2d", (7, 7), (1, 1), 1)
    assert kinds[1:3] == [("Conv2d", (3, 3), (2, 2), 16), ("Conv2d", (3, 3), (2, 2), 32)]
    assert [k[0] for k in kinds[-3:-1]] == ["ConvTranspose2d"] * 2 and len(kinds) == 3 + 6 + 3
    assert isinstance(list(g.net)[-1], gm.nn.Tanh)


def test_loss_terms_against_a_hand_computation():
    m = tiny(identity_weight=0.5)
    a, b = gm.rand(3, 1, 8, 8) * 2 - 1, gm.rand(3, 1, 8, 8) * 2 - 1
    g, d = m.generators, m.discriminators
    with gm.no_grad():
        t = m.generator_losses(a, b)
        fb, fa = g["a2b"](a).numpy(), g["b2a"](b).numpy()
        na, nb = a.numpy(), b.numpy()
        adv = ((d["b"](gm.tensor(fb)).numpy() - 1) ** 2).mean() + ((d["a"](gm.tensor(fa)).numpy() - 1) ** 2).mean()
        cyc = np.abs(g["b2a"](gm.tensor(fb)).numpy() - na).mean() + np.abs(g["a2b"](gm.tensor(fa)).numpy() - nb).mean()
        idt = np.abs(g["a2b"](b).numpy() - nb).mean() + np.abs(g["b2a"](a).numpy() - na).mean()
        assert t["adv"].item() == pytest.approx(adv, rel=1e-5)
        assert t["cycle"].item() == pytest.approx(cyc, rel=1e-5)
        assert t["identity"].item() == pytest.approx(idt, rel=1e-5)
        assert m.generator_objective(t).item() == pytest.approx(adv + 10 * cyc + 5 * idt, rel=1e-5)
        total, la, lb = m.discriminator_loss(a, b, gm.tensor(fa), gm.tensor(fb))
        ra, fka = d["a"](a).numpy(), d["a"](gm.tensor(fa)).numpy()
        assert la.item() == pytest.approx(0.5 * ((ra - 1) ** 2).mean() + 0.5 * (fka ** 2).mean(), rel=1e-5)
        assert total.item() == pytest.approx(la.item() + lb.item(), rel=1e-6)
        assert "identity" not in tiny(identity_weight=0.0).generator_losses(a, b)


def test_image_pool_fills_then_swaps_half_the_time():
    gm.manual_seed(0)
    pool = ImagePool(4, (1, 1, 1))
    first = gm.arange(4).float().reshape(4, 1, 1, 1)
    np.testing.assert_array_equal(pool.query(first).numpy(), first.numpy())     # filling: shown as is
    np.testing.assert_array_equal(pool.images.numpy(), first.numpy())
    seen_old, total = 0, 0
    for k in range(50):
        before = set(pool.images.numpy().ravel().tolist())
        new = 100.0 + 8 * k + gm.arange(8).float().reshape(8, 1, 1, 1)
        out, fresh = pool.query(new).numpy().ravel(), new.numpy().ravel()
        for i, v in enumerate(out):   # each shown image is its new one, or one stored before it
            assert v == fresh[i] or v in before or v in fresh[:i]
        seen_old += int((out != fresh).sum())
        total += 8
        assert int(pool.count.item()) == 4
    assert 0.35 < seen_old / total < 0.65
    assert set(pool.state_dict()) == {"images", "count"}
    x = gm.rand(3, 1, 1, 1)
    assert ImagePool(0, (1, 1, 1)).query(x) is not x
    np.testing.assert_array_equal(ImagePool(0, (1, 1, 1)).query(x).numpy(), x.numpy())
    with pytest.raises(ValueError, match="holds images of shape"):
        pool.query(gm.rand(2, 1, 2, 2))


def test_training_step_updates_both_sides_and_the_pools():
    m = tiny(identity_weight=0.5)
    opts = m.configure_optimizers(type("T", (), {"lr": 1e-3}))
    g0 = [p.detach().numpy().copy() for p in m.generators.parameters()]
    d0 = [p.detach().numpy().copy() for p in m.discriminators.parameters()]

    class Step:
        def update(self, name, loss):
            opts[name].zero_grad()
            loss.backward()
            if name == "generator":    # the discriminators' weights took no gradient from it
                assert all(p.grad is None for p in m.discriminators.parameters())
            opts[name].step()
            return loss.item()
    batch = (gm.rand(4, 1, 8, 8), gm.zeros(4).long(), gm.rand(4, 1, 8, 8), gm.zeros(4).long())
    logs = m.training_step(batch, Step())
    assert {"g_loss", "d_loss", "g_adv", "cycle", "identity", "d_a", "d_b"} <= set(logs)
    assert all(not np.array_equal(p.detach().numpy(), q) for p, q in zip(m.generators.parameters(), g0))
    assert all(not np.array_equal(p.detach().numpy(), q) for p, q in zip(m.discriminators.parameters(), d0))
    assert int(m.pools["a"].count.item()) == int(m.pools["b"].count.item()) == 4
    assert all(p.requires_grad for p in m.discriminators.parameters())


def test_cli_run_writes_translations_and_metrics_then_samples_and_evaluates(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "cyclegan", "--out", str(out), "--steps", "2", *FAST, *TINY]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["nll_kind"] == "none" and res["domain_b"] == "invert" and res["num_translated"] == 297
    assert (out / "translations.png").exists() and (out / "samples.png").exists()
    for k in ("cycle_l1_a2b2a", "cycle_l1_b2a2b", "digits_fid_a2b", "digits_fid_b2a"):
        assert res[k] > 0
    for k in ("class_agreement_a2b", "class_agreement_b2a", "class_agreement_identity_a2b"):
        assert 0 <= res[k] <= 1
    # gmcore sample: translations of test digits, the classes in turn; the same seed picks the same digits
    assert cli.main(["sample", str(out), "--n", "6", "--show", "input", "--out", str(tmp_path / "i.npy")]) == 0
    assert cli.main(["sample", str(out), "--n", "6", "--out", str(tmp_path / "t.npy")]) == 0
    assert cli.main(["sample", str(out), "--n", "6", "--direction", "a2b", "--show", "input",
                     "--out", str(tmp_path / "a.npy")]) == 0
    inputs, trans, a = (np.load(tmp_path / f) for f in ("i.npy", "t.npy", "a.npy"))
    assert inputs.shape == trans.shape == (6, 1, 8, 8) and 0 <= trans.min() and trans.max() <= 1
    np.testing.assert_allclose(inputs, 1 - a, atol=1e-6)   # B inputs: the inverted A inputs
    net = gm.feature_metrics.DigitsFeatures.get()
    assert net.accuracy(a, np.arange(6)) >= 5 / 6    # test digits of the classes 0, 1, ..., 5
    model, _ = gm.train.load_run_model(out / "last")
    with gm.no_grad():
        trans2 = model.translate(gm.tensor(inputs), "b2a").numpy()
    np.testing.assert_allclose(trans, trans2, atol=1e-6)
    with pytest.raises(SystemExit) as exc:   # argparse refuses the choice
        cli.main(["sample", str(out), "--show", "everything"])
    assert exc.value.code == 2
    capsys.readouterr()
    assert cli.main(["eval", str(out)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["nll_kind"] == "none" and ev["digits_fid"] > 0 and 0 <= ev["label_accuracy"] <= 1
    for k in ("cycle_l1_a2b2a", "class_agreement_a2b", "class_agreement_b2a", "digits_fid_a2b"):
        assert ev[k] == res[k]   # the model's own figures, reproduced


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "cyclegan", CycleGAN, [*FAST, *TINY, "--pool-size", "6"],
                       method="training_step", key="g_loss")


def test_clear_errors_on_bad_data_and_flags(tmp_path):
    with pytest.raises(ValueError, match="translates images"):
        CycleGAN(CycleGAN.Config(), DataInfo((2,), 0, "moons"))
    with pytest.raises(ValueError, match="needs square images"):
        CycleGAN(CycleGAN.Config(domain_b="rotate90"), DataInfo((1, 8, 12), 17, "x"))
    with pytest.raises(ValueError, match="must be odd"):
        CycleGAN(CycleGAN.Config(g_kernel=4), DIGITS)
    CycleGAN(CycleGAN.Config(domain_b="invert", g_channels=2, g_blocks=0, d_channels=2), DataInfo((1, 8, 12), 17, "x"))
    with pytest.raises(ValueError, match="unknown --domain-b"):
        CycleGAN(CycleGAN.Config(domain_b="flip"), DIGITS)
    with pytest.raises(ValueError, match="divisible by 8"):
        CycleGAN(CycleGAN.Config(g_down=3), DataInfo((1, 12, 12), 17, "x"))
    with pytest.raises(ValueError, match="leaves no patches"):
        CycleGAN(CycleGAN.Config(d_layers=3), DIGITS)
    with pytest.raises(ValueError, match="direction must be"):
        tiny().translate(gm.rand(1, 1, 8, 8), "sideways")
    with pytest.raises(SystemExit) as exc:   # argparse refuses the choice
        cli.main(["train", "cyclegan", "--out", str(tmp_path / "x"), "--domain-b", "flip", *FAST])
    assert exc.value.code == 2
    assert cli.main(["train", "cyclegan", "--out", str(tmp_path / "y"), "--dataset", "moons", *FAST]) == 1
