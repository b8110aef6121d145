"""PixelCNN and Gated PixelCNN: causality by gradient (exactly zero gradient from every output
to the inputs it must not see, per colour channel for RGB), the Gated PixelCNN has no blind
spot while PixelCNN has one, overfitting a tiny batch, nll/loss agreement, samples, class
conditioning, errors, and a few CLI training steps."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore.models.autoregressive import GatedPixelCNN, PixelCNN
from gmcore.models.base import DataInfo

GREY = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
RGB = DataInfo((3, 5, 5), 4, "rgb")


def _digits(n=16):
    from gmcore.data.digits import load_digits_arrays

    x, y = load_digits_arrays("train")
    return gm.tensor(x[:n].astype(np.float32) / 16.0), gm.tensor(y[:n])


def _input_grad(model, x, i, j, c=None, labels=None):
    """d <r, logits at pixel (i, j) [channel c]> / d x for a random direction r, float64."""
    model.eval()                                                      # no dropout masks
    x = x.detach().requires_grad_(True)
    logits = model.logits(x) if labels is None else model.logits(x, labels)
    out = logits[:, :, :, i, j] if c is None else logits[:, c, :, i, j]
    r = gm.tensor(np.random.default_rng(i * 31 + j).standard_normal(out.shape))
    (g,) = gm.autograd.grad((out * r).sum(), [x])
    return np.abs(g.numpy()).sum(0)                                   # (C, H, W)


def _raster(H, W):
    return np.arange(H * W).reshape(H, W)


def _positions(H, W, n, seed):
    rng = np.random.default_rng(seed)
    picks = rng.choice(H * W, size=min(n, H * W), replace=False)
    return [divmod(int(p), W) for p in picks]


@pytest.mark.parametrize("cls,kw", [
    (PixelCNN, dict(channels=6, blocks=2, out_hidden=6, first_kernel=5)),
    (GatedPixelCNN, dict(channels=3, layers=3, out_hidden=4, first_kernel=5, conditional=False)),
])
def test_grey_causality_by_gradient(cls, kw):
    gm.manual_seed(0)
    model = cls(cls.Config(**kw), DataInfo((1, 7, 6), 5)).double()
    x = gm.tensor(np.random.default_rng(1).random((2, 1, 7, 6)))
    order = _raster(7, 6)
    for i, j in _positions(7, 6, 12, seed=2) + [(0, 0), (6, 5)]:
        g = _input_grad(model, x, i, j)[0]
        assert np.all(g[order >= order[i, j]] == 0.0), (i, j)      # exactly zero: itself and later
        if j > 0:
            assert g[i, j - 1] > 0                                   # the left neighbour is seen
        if i > 0:
            assert g[i - 1, j] > 0                                   # and the one above


@pytest.mark.parametrize("cls,kw", [
    (PixelCNN, dict(channels=12, blocks=1, out_hidden=6, first_kernel=3)),
    # the current pixel's colours reach the Gated PixelCNN's head through the horizontal stack
    # only (as in the paper), and with one or two maps per colour group a ReLU there can be dead
    # at every position: four maps per group keep every allowed path open in this draw
    (GatedPixelCNN, dict(channels=12, layers=2, out_hidden=12, first_kernel=3)),
])
def test_rgb_causality_per_channel(cls, kw):
    gm.manual_seed(0)
    model = cls(cls.Config(**kw), RGB).double()
    x = gm.tensor(np.random.default_rng(3).random((2, 3, 5, 5)))
    order = _raster(5, 5)
    for i, j in _positions(5, 5, 6, seed=4):
        for c in range(3):
            g = _input_grad(model, x, i, j, c)                        # (3, H, W)
            later = order > order[i, j]
            assert np.all(g[:, later] == 0.0), (i, j, c)
            assert np.all(g[c:, i, j] == 0.0), (i, j, c)             # not its own or later colours
            assert np.all(g[:c, i, j] > 0.0), (i, j, c)              # but every earlier colour


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_rows_cut_below_give_the_same_logits(cls):
    """The sampler runs the network on the rows so far: exact, as row i sees rows <= i only."""
    gm.manual_seed(0)
    model = cls(cls.Config(), DataInfo((3, 6, 5), 4)).double()
    model.eval()
    x = gm.tensor(np.random.default_rng(6).random((2, 3, 6, 5)))
    with gm.no_grad():
        full = model.logits(x).numpy()
        for rows in (1, 3, 4):
            cut = model.logits(x[:, :, :rows]).numpy()
            np.testing.assert_allclose(cut, full[..., :rows, :], rtol=1e-12, atol=1e-12)


def test_gated_stack_has_no_blind_spot_but_pixelcnn_has():
    gm.manual_seed(0)
    H = W = 6
    order = _raster(H, W)
    x = gm.tensor(np.random.default_rng(5).random((1, 1, H, W)))
    gated = GatedPixelCNN(GatedPixelCNN.Config(channels=3, layers=6, out_hidden=4, first_kernel=3,
                                               conditional=False), DataInfo((1, H, W), 5)).double()
    for i in range(H):
        for j in range(W):
            g = _input_grad(gated, x, i, j)[0]
            earlier = order < order[i, j]
            assert np.all(g[earlier] > 0.0), (i, j)                  # every earlier pixel is seen
            assert np.all(g[~earlier] == 0.0), (i, j)
    # 3x3 masked stacks never reach (i-1, j+2), however deep (van den Oord et al. 2016b, Fig. 1)
    plain = PixelCNN(PixelCNN.Config(channels=4, blocks=6, out_hidden=4, first_kernel=3),
                     DataInfo((1, H, W), 5)).double()
    g = _input_grad(plain, x, 4, 1)[0]
    assert g[3, 3] == 0.0 and g[3, 2] > 0.0 and g[2, 3] > 0.0


@pytest.mark.parametrize("cls,kw", [
    (PixelCNN, dict(channels=32, blocks=2, out_hidden=32, dropout=0.0)),
    (GatedPixelCNN, dict(channels=16, layers=3, out_hidden=32)),
])
def test_overfits_tiny_batch_and_nll_matches_loss(cls, kw):
    gm.manual_seed(0)
    model = cls(cls.Config(**kw), GREY)
    x, y = _digits(16)
    opt = gm.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, logs = model.loss((x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # uniform over 17 levels is log2(17) = 4.09 bits/dim; the batch is learned far below that
    assert losses[0] > 3.0 and np.mean(losses[-5:]) < 0.6 * losses[0]
    nll = model.nll((x, y)).detach()
    assert nll.shape == (16,) and np.all(np.isfinite(nll.numpy()))
    loss, logs = model.loss((x, y))
    assert loss.item() == pytest.approx(nll.mean().item() / (64 * np.log(2)), rel=1e-5)
    assert logs["bits_per_dim"] == pytest.approx(loss.item())


def test_nll_is_normalised_over_all_images():
    """Exact likelihood: summed over every image of a tiny space, p(x) is 1 (2x2, 2 levels, RGB)."""
    gm.manual_seed(0)
    info = DataInfo((3, 2, 2), 2)
    for model in (PixelCNN(PixelCNN.Config(channels=6, blocks=1, out_hidden=6, first_kernel=3), info),
                  GatedPixelCNN(GatedPixelCNN.Config(channels=3, layers=2, out_hidden=6, first_kernel=3),
                                info)):
        bits = (np.arange(2 ** 12)[:, None] >> np.arange(12)) & 1
        x = gm.tensor(bits.reshape(-1, 3, 2, 2).astype(np.float64))
        with gm.no_grad():
            total = np.exp(-model.double().eval().nll((x,)).numpy()).sum()
        assert total == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("info", [GREY, RGB])
def test_samples_shape_range_and_grid(info):
    gm.manual_seed(0)
    for model in (PixelCNN(PixelCNN.Config(channels=6, blocks=1, out_hidden=6), info),
                  GatedPixelCNN(GatedPixelCNN.Config(channels=4, layers=2, out_hidden=6), info)):
        s = model.sample(5, generator=gm.Generator().manual_seed(0))
        assert s.shape == (5, *info.shape) and s.dtype == gm.float32
        v = s.numpy() * (info.num_levels - 1)
        assert v.min() >= 0 and v.max() <= info.num_levels - 1
        np.testing.assert_allclose(v, np.round(v), atol=1e-5)
        again = model.sample(5, generator=gm.Generator().manual_seed(0))
        np.testing.assert_array_equal(s.numpy(), again.numpy())    # the generator fixes the draw
        assert model.training                                       # dropout is off only inside


def test_samples_follow_the_model():
    """A model that learned one image (near-deterministic conditionals) samples it back."""
    gm.manual_seed(0)
    model = PixelCNN(PixelCNN.Config(channels=16, blocks=1, out_hidden=16), DataInfo((1, 4, 4), 3))
    target = gm.tensor(np.array([0, 1, 2, 1, 2, 2, 0, 0, 1, 0, 2, 1, 0, 1, 1, 2],
                                np.float32).reshape(1, 1, 4, 4) / 2)
    opt = gm.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss, _ = model.loss((target,))
        opt.zero_grad()
        loss.backward()
        opt.step()
    s = model.sample(8, generator=gm.Generator().manual_seed(1))
    assert (np.abs(s.numpy() - target.numpy()).max(axis=(1, 2, 3)) == 0).mean() >= 0.75


def test_class_conditioning():
    gm.manual_seed(0)
    model = GatedPixelCNN(GatedPixelCNN.Config(channels=4, layers=2, out_hidden=6), GREY)
    assert model.nll_kind == "exact, class-conditional: -log p(x | y)"
    x, y = _digits(4)
    model.label_bias.weight.data[...] = np.random.default_rng(0).standard_normal(
        model.label_bias.weight.shape).astype(np.float32)
    with gm.no_grad():
        a = model.nll((x, y)).numpy()
        b = model.nll((x, (y + 1) % 10)).numpy()
    assert np.all(a != b)                                          # the label changes p(x | y)
    with pytest.raises(ValueError, match="labels"):
        model.nll((x,))
    with pytest.raises(ValueError, match=r"labels must lie"):
        model.sample(2, labels=gm.tensor([0, 10]))
    s = model.sample(3, generator=gm.Generator().manual_seed(0), labels=gm.tensor([7, 7, 7]))
    assert s.shape == (3, 1, 8, 8)
    same = model.sample(3, generator=gm.Generator().manual_seed(0), labels=[7, 7, 7])
    np.testing.assert_array_equal(s.numpy(), same.numpy())
    with pytest.raises(ValueError, match=r"labels must be \(3,\)"):
        model.sample(3, labels=[1, 2])
    # unconditional: labels are ignored, and there is no label embedding
    unc = GatedPixelCNN(GatedPixelCNN.Config(channels=4, layers=2, out_hidden=6, conditional=False), GREY)
    assert unc.nll_kind == "exact" and not hasattr(unc, "label_bias")
    with gm.no_grad():
        np.testing.assert_array_equal(unc.nll((x, y)).numpy(), unc.nll((x,)).numpy())
    # data without labels gives an unconditional model even with conditional=True
    nolabels = GatedPixelCNN(GatedPixelCNN.Config(channels=4, layers=2), DataInfo((1, 8, 8), 17))
    assert nolabels.nll_kind == "exact"


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_defaults_build_for_cifar_shaped_data(cls):
    model = cls(cls.Config(), DataInfo((3, 16, 16), 256, "cifar10", num_classes=10))
    x = gm.rand(2, 3, 16, 16).mul(255).round().div(255)
    loss, logs = model.loss((x, gm.tensor([3, 5])))
    # an untrained model is close to uniform over 256 levels: 8 bits per sub-pixel
    assert 7.0 < logs["bits_per_dim"] < 10.0


def test_rejects_data_it_cannot_model():
    with pytest.raises(ValueError, match="images"):
        PixelCNN(PixelCNN.Config(), DataInfo((64,), 17))
    with pytest.raises(ValueError, match="channels"):
        GatedPixelCNN(GatedPixelCNN.Config(), DataInfo((2, 8, 8), 17))
    with pytest.raises(ValueError, match="levels"):
        PixelCNN(PixelCNN.Config(), DataInfo((1, 8, 8), 0))
    with pytest.raises(ValueError, match="divisible by 6"):
        PixelCNN(PixelCNN.Config(channels=64), DataInfo((3, 8, 8), 256))
    with pytest.raises(ValueError, match="odd"):
        PixelCNN(PixelCNN.Config(kernel=4), GREY)


@pytest.mark.parametrize("name,flags,kind", [
    ("pixelcnn", ["--channels", "12", "--blocks", "1", "--out-hidden", "12"], "exact"),
    ("gated-pixelcnn", ["--channels", "4", "--layers", "2", "--out-hidden", "8"],
     "exact, class-conditional: -log p(x | y)"),
    ("gated-pixelcnn", ["--channels", "4", "--layers", "2", "--out-hidden", "8", "--no-conditional"],
     "exact"),
])
def test_cli_trains_a_few_steps(tmp_path, name, flags, kind):
    pytest.importorskip("safetensors")
    from gmcore import train
    from gmcore.cli_train import parse_train_args

    name, tcfg, mcfg = parse_train_args(name, [
        "--out", str(tmp_path / "run"), "--steps", "4", "--batch-size", "16", "--no-progress",
        "--no-sample-quality", "--num-samples", "4", "--eval-every", "0", *flags])
    res = train.train(name, tcfg, mcfg, log=lambda *a: None)
    assert res["step"] == 4 and res["nll_kind"] == kind
    assert 0 < res["test_bits_per_dim"] < 6
    assert (tmp_path / "run" / "samples.png").exists()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["model"] == name
