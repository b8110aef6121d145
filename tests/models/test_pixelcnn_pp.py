"""PixelCNN++: causality by gradient through the U-Net (several resolutions, grey and RGB), no
blind spot, exact normalisation over a tiny image space, overfitting a tiny batch, nll/loss
agreement, dropout and weight norm, samples, errors, and a few CLI training steps."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore.models.autoregressive import PixelCNNPP
from gmcore.models.base import DataInfo

GREY = DataInfo((1, 8, 8), 17, "digits", num_classes=10)


def _model(info, **kw):
    gm.manual_seed(0)
    kw = {"filters": 4, "resnets": 1, "mixtures": 2, "dropout": 0.0, **kw}
    return PixelCNNPP(PixelCNNPP.Config(**kw), info)


def _digits(n=16):
    from gmcore.data.digits import load_digits_arrays

    x, y = load_digits_arrays("train")
    return gm.tensor(x[:n].astype(np.float32) / 16.0), gm.tensor(y[:n])


def _input_grad(model, x, i, j):
    """|d <r, params at pixel (i, j)> / d x| summed over the batch, (C, H, W)."""
    model.eval()                                                      # no dropout masks
    x = x.detach().requires_grad_(True)
    out = model.mixture_params(x)[:, :, i, j]
    r = gm.tensor(np.random.default_rng(i * 17 + j).standard_normal(out.shape))
    (g,) = gm.autograd.grad((out * r).sum(), [x])
    return np.abs(g.numpy()).sum(0)


@pytest.mark.parametrize("shape,resolutions", [((1, 8, 8), 2), ((1, 8, 8), 3), ((3, 4, 6), 2)])
def test_causality_by_gradient(shape, resolutions):
    C, H, W = shape
    model = _model(DataInfo(shape, 5), resolutions=resolutions).double()
    x = gm.tensor(np.random.default_rng(0).random((2, *shape)))
    order = np.arange(H * W).reshape(H, W)
    rng = np.random.default_rng(1)
    picks = [divmod(int(p), W) for p in rng.choice(H * W, 8, replace=False)] + [(0, 0), (H - 1, W - 1)]
    for i, j in picks:
        g = _input_grad(model, x, i, j)
        # exactly zero: every colour of the pixel itself (the mixture handles R -> G -> B) and later
        assert np.all(g[:, order >= order[i, j]] == 0.0), (i, j)
        if j > 0:
            assert np.all(g[:, i, j - 1] > 0.0)
        if i > 0:
            assert np.all(g[:, i - 1, j] > 0.0)


def test_rows_cut_below_give_the_same_params():
    """The sampler runs the network on the rows so far (a multiple of 2**(resolutions-1)):
    exact, because row i depends on rows <= i only and the strides line up."""
    model = _model(DataInfo((1, 8, 8), 5), resolutions=3).double()
    model.eval()
    x = gm.tensor(np.random.default_rng(3).random((2, 1, 8, 8)))
    with gm.no_grad():
        full = model.mixture_params(x).numpy()
        for rows in (4, 8):
            cut = model.mixture_params(x[:, :, :rows]).numpy()
            np.testing.assert_allclose(cut, full[:, :, :rows], rtol=1e-12, atol=1e-12)


def test_receptive_field_covers_every_earlier_pixel_with_two_resnets():
    # Two resnets per scale reach every earlier pixel of an 8x8 image, even from the bottom-left
    # corner (the last row never reaches the 4x4 scale: the full-resolution convolutions must
    # carry it across). One resnet per scale (the default) falls short only there.
    model = _model(DataInfo((1, 8, 8), 5), resolutions=2, resnets=2).double()
    x = gm.tensor(np.random.default_rng(2).random((1, 1, 8, 8)))
    order = np.arange(64).reshape(8, 8)
    for i, j in [(7, 0), (7, 7), (5, 3), (2, 6), (1, 0), (6, 1)]:
        g = _input_grad(model, x, i, j)[0]
        assert np.all(g[order < order[i, j]] > 0.0), (i, j)        # every earlier pixel
    g = _input_grad(_model(DataInfo((1, 8, 8), 5), resnets=1).double(), x, 7, 0)[0]
    assert g[6, 7] == 0.0


@pytest.mark.parametrize("shape,levels", [((1, 2, 2), 3), ((3, 2, 2), 2)])
def test_likelihood_sums_to_one_over_all_images(shape, levels):
    model = _model(DataInfo(shape, levels), mixtures=3).double()
    n = int(np.prod(shape))
    grid = np.stack(np.meshgrid(*[np.arange(levels)] * n, indexing="ij"), -1).reshape(-1, *shape)
    x = gm.tensor(grid / (levels - 1))
    with gm.no_grad():
        total = np.exp(-model.nll((x,)).numpy()).sum()
    assert total == pytest.approx(1.0, abs=1e-6)


def test_overfits_tiny_batch_and_nll_matches_loss():
    model = _model(GREY, filters=8, mixtures=3)
    x, y = _digits(16)
    opt = gm.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        loss, logs = model.loss((x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * losses[0]
    with gm.no_grad():
        nll = model.nll((x, y))
        loss, logs = model.loss((x, y))
    assert nll.shape == (16,) and np.all(np.isfinite(nll.numpy()))
    assert loss.item() == pytest.approx(nll.mean().item() / (64 * np.log(2)), rel=1e-5)
    assert logs["bits_per_dim"] == pytest.approx(loss.item())


def test_dropout_only_in_training_and_weight_norm():
    model = _model(GREY, dropout=0.5, weight_norm=True)
    assert hasattr(model.out, "parametrizations")
    assert hasattr(model.up_u[0].conv1, "parametrizations")
    x, y = _digits(4)
    with gm.no_grad():
        model.eval()
        a, b = model.nll((x,)).numpy(), model.nll((x,)).numpy()
        model.train()
        c = model.nll((x,)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    opt = gm.optim.Adam(model.parameters(), lr=1e-3)
    loss, _ = model.loss((x,))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert np.isfinite(model.loss((x,))[0].item())


@pytest.mark.parametrize("info", [GREY, DataInfo((3, 4, 4), 256)])
def test_samples_shape_range_and_grid(info):
    model = _model(info)
    s = model.sample(3, generator=gm.Generator().manual_seed(0))
    assert s.shape == (3, *info.shape) and s.dtype == gm.float32
    v = s.numpy() * (info.num_levels - 1)
    assert v.min() >= 0 and v.max() <= info.num_levels - 1
    np.testing.assert_allclose(v, np.round(v), atol=1e-4)


def test_defaults_build_for_cifar_shaped_data():
    gm.manual_seed(0)
    model = PixelCNNPP(PixelCNNPP.Config(), DataInfo((3, 16, 16), 256, "cifar10"))
    loss, logs = model.loss((gm.rand(2, 3, 16, 16).mul(255).round().div(255),))
    assert 6.0 < logs["bits_per_dim"] < 12.0


def test_rejects_data_it_cannot_model():
    with pytest.raises(ValueError, match="divisible by 4"):
        PixelCNNPP(PixelCNNPP.Config(resolutions=3), DataInfo((1, 6, 6), 17))
    with pytest.raises(ValueError, match="channels"):
        PixelCNNPP(PixelCNNPP.Config(), DataInfo((2, 8, 8), 17))
    with pytest.raises(ValueError, match="images"):
        PixelCNNPP(PixelCNNPP.Config(), DataInfo((100,), 65))
    with pytest.raises(ValueError, match="dropout"):
        PixelCNNPP(PixelCNNPP.Config(dropout=1.0), GREY)


def test_cli_trains_a_few_steps(tmp_path):
    pytest.importorskip("safetensors")
    from gmcore import train
    from gmcore.cli_train import parse_train_args

    name, tcfg, mcfg = parse_train_args("pixelcnn++", [
        "--out", str(tmp_path / "run"), "--steps", "3", "--batch-size", "16", "--no-progress",
        "--no-sample-quality", "--num-samples", "4", "--eval-every", "0",
        "--filters", "4", "--resnets", "1", "--mixtures", "2", "--weight-norm"])
    res = train.train(name, tcfg, mcfg, log=lambda *a: None)
    assert res["step"] == 3 and res["nll_kind"] == "exact" and 0 < res["test_bits_per_dim"] < 8
    assert (tmp_path / "run" / "samples.png").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == "pixelcnn++"
