"""Gated PixelCNN with the R -> G -> B order in every layer (van den Oord et al. 2016b): the
colour masks themselves, every logit's exact dependence on (pixel, colour) by gradient,
normalisation over every image of tiny RGB spaces, sampling colour by colour (a learned image
comes back), and a few CLI steps on a CIFAR-10-format folder (labels, sampling, eval)."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore.models.autoregressive import GatedPixelCNN
from gmcore.models.autoregressive._pixel_layers import (ColourMaskedConv2d, ColourMaskedRowConv2d,
                                                        GatedStackLayer, colour_groups, colour_mask)
from gmcore.models.base import DataInfo
from helpers import logit_dependence, raster_colour_order


def _model(shape, levels, classes=0, **kw):
    gm.manual_seed(0)
    kw = {"channels": 8, "layers": 3, "out_hidden": 7, "first_kernel": 5, "kernel": 3, **kw}
    model = GatedPixelCNN(GatedPixelCNN.Config(**kw), DataInfo(shape, levels, "rgb", num_classes=classes))
    if classes:                                 # zero at init: make the labels matter
        w = model.label_bias.weight
        w.data[...] = 0.5 * np.random.default_rng(1).standard_normal(w.shape).astype(w.data.dtype)
    return model.double().eval()


def test_colour_groups_and_masks():
    assert colour_groups(32) == [11, 11, 10] and colour_groups(9) == [3, 3, 3]
    with pytest.raises(ValueError, match="at least 3"):
        colour_groups(2)
    np.testing.assert_array_equal(colour_mask([0, 1, 2], [0, 0, 1, 2], "B"),
                                  [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="mask_type"):
        colour_mask([0], [0], "C")
    # the masked weights get no gradient and the mask is not state
    gm.manual_seed(0)
    conv = ColourMaskedConv2d(5, 4, "A")
    conv(gm.randn(2, 5, 3, 3)).square().sum().backward()
    assert np.all(conv.weight.grad.numpy()[conv.mask == 0] == 0)
    assert np.all(conv.weight.grad.numpy()[conv.mask == 1] != 0)
    assert set(conv.state_dict()) == {"weight", "bias"}
    row = ColourMaskedRowConv2d(3, 6, 3, "B")
    assert np.all(row.mask[:, :, 0, :2] == 1)                      # pixels to the left: every colour
    with pytest.raises(ValueError, match="even"):
        ColourMaskedRowConv2d(3, 5, 2, "A")
    with pytest.raises(ValueError, match="colours must be 1 or 3"):
        GatedStackLayer(3, 6, 3, colours=2)


@pytest.mark.parametrize("classes", [0, 3])
def test_every_logit_depends_exactly_on_earlier_pixels_and_colours(classes):
    """Exactly zero gradient from logit (pixel i, colour c) to input (pixel j, colour c') unless
    j is before i, or j == i and c' before c; and a nonzero one to some allowed input (every
    logit but R of the first pixel, which has none). Unequal colour groups (8 maps: 3, 3, 2)."""
    C, H, W = 3, 3, 4
    model = _model((C, H, W), 3, classes)
    x = gm.tensor(np.random.default_rng(0).integers(0, 3, (2, C, H, W)) / 2.0)
    labels = gm.tensor([0, 2]) if classes else None
    D = logit_dependence(lambda xg: model.logits(xg, labels), x)
    allowed = raster_colour_order(C, H, W)
    assert np.all(D[~allowed] == 0.0)
    reach = (D * allowed).reshape(C * H * W, -1).sum(1).reshape(C, H, W)
    assert reach[0, 0, 0] == 0.0
    reach[0, 0, 0] = 1.0
    assert np.all(reach > 0.0)


def test_wide_model_sees_every_earlier_pixel_and_colour():
    """No blind spot and no lost colour: with enough layers and maps every allowed (pixel,
    colour) reaches every logit (the vertical stack covers the rows above, the horizontal one
    the row so far, the colour masks the current pixel). Narrow random models can have a colour
    group whose head units are dead (ReLU) at a position for every input: 8 maps per group."""
    C, H, W = 3, 3, 4
    model = _model((C, H, W), 2, channels=24, layers=4, out_hidden=24, first_kernel=3)
    x = gm.tensor(np.random.default_rng(1).random((2, C, H, W)))
    D = logit_dependence(model.logits, x)
    allowed = raster_colour_order(C, H, W)
    assert np.all(D[~allowed] == 0.0) and np.all(D[allowed] > 0.0)


@pytest.mark.parametrize("shape,levels,classes", [((3, 1, 1), 4, 0), ((3, 1, 2), 3, 0), ((3, 1, 2), 2, 2)])
def test_likelihood_sums_to_one_over_every_image(shape, levels, classes):
    model = _model(shape, levels, classes, channels=4, layers=2, out_hidden=5, first_kernel=3)
    n = int(np.prod(shape))
    grid = np.stack(np.meshgrid(*[np.arange(levels)] * n, indexing="ij"), -1).reshape(-1, *shape)
    x = gm.tensor(grid / (levels - 1))
    with gm.no_grad():
        for label in range(max(classes, 1)):
            batch = (x, gm.tensor(np.full(len(grid), label))) if classes else (x,)
            assert np.exp(-model.nll(batch).numpy()).sum() == pytest.approx(1.0, abs=1e-9)


def test_learns_an_rgb_image_and_samples_it_back():
    """Colours in order: G and B of each pixel follow R exactly in the target, so a model that
    learned it must use the current pixel's earlier colours (and sampling must feed them). Wide
    enough that no colour group's head is dead at a position (with 4 maps per group it can be)."""
    gm.manual_seed(0)
    model = GatedPixelCNN(GatedPixelCNN.Config(channels=24, layers=2, out_hidden=24, first_kernel=3),
                          DataInfo((3, 2, 3), 3, "rgb"))
    r = np.array([[0, 2, 1], [2, 0, 1]])
    target = gm.tensor((np.stack([r, (r + 1) % 3, (r + 2) % 3])[None] / 2.0).astype(np.float32))
    opt = gm.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(80):
        loss, _ = model.loss((target,))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for sampler in ("fast", "naive"):
        s = model.sample(8, generator=gm.Generator().manual_seed(1), sampler=sampler).numpy()
        assert (np.abs(s - target.numpy()).max(axis=(1, 2, 3)) == 0).mean() >= 0.75, sampler


def test_cli_on_a_cifar_folder(tmp_path, capsys):
    """A few steps on CIFAR-10-format batches (32x32 RGB, 256 levels): train, eval, sample with
    --labels (the fast sampler: the naive one reruns the network 3072 times here)."""
    pytest.importorskip("safetensors")
    from gmcore import cli
    from helpers import write_fake_cifar

    write_fake_cifar(tmp_path, per_batch=4)
    run = tmp_path / "run"
    assert cli.main(["train", "gated-pixelcnn", "--dataset", "cifar10", "--data-root", str(tmp_path),
                     "--out", str(run), "--steps", "2", "--batch-size", "4", "--channels", "4", "--layers", "2",
                     "--out-hidden", "5", "--no-progress", "--num-samples", "0", "--no-sample-quality",
                     "--eval-every", "0"]) == 0
    res = json.loads((run / "metrics.json").read_text())
    assert res["nll_kind"] == "exact, class-conditional: -log p(x | y)"
    assert 7.0 < res["test_bits_per_dim"] < 9.0                   # about uniform over 256 levels
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--no-sample-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["test_bits"] == pytest.approx(res["test_bits"], rel=1e-12)
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(run), "--n", "2", "--labels", "3", "--out", str(out)]) == 0
    s = np.load(out) * 255
    assert s.shape == (2, 3, 32, 32) and np.array_equal(s, np.round(s)) and len(np.unique(s)) > 10
