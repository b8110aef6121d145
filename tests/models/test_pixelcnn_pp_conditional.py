"""PixelCNN++ class conditioning (``--conditional``, openai/pixel-cnn's conditional variant): a
per-block linear map of the one-hot label before every gate, p(x | y) normalised for every
label, causality kept, the label changes the likelihood and the samples, labels for sampling
(Python and ``gmcore sample RUN --labels``), clear errors, and bit-exact resume."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore.models.autoregressive import PixelCNNPP
from gmcore.models.base import DataInfo

GREY = DataInfo((1, 8, 8), 17, "digits", num_classes=10)


def _model(info, **kw):
    gm.manual_seed(0)
    kw = {"filters": 4, "resnets": 1, "mixtures": 2, "dropout": 0.0, "conditional": True, **kw}
    model = PixelCNNPP(PixelCNNPP.Config(**kw), info)
    for block in model.modules():               # larger label maps than at init: labels matter
        if getattr(block, "label_map", None) is not None:
            w = block.label_map.weight
            w.data[...] = w.data * 20.0
    return model


def test_every_gated_resnet_has_its_own_label_map():
    gm.manual_seed(0)
    model = PixelCNNPP(PixelCNNPP.Config(filters=6, conditional=True), GREY)
    assert model.nll_kind == "exact, class-conditional: -log p(x | y)" and model.class_conditional
    blocks = [m for m in model.modules() if type(m).__name__ == "GatedResnet"]
    maps = [b.label_map.weight.detach().numpy() for b in blocks]
    assert len(blocks) == 2 * (2 + 3) and all(w.shape == (10, 12) for w in maps)   # up + down, both streams
    # N(0, 0.05^2) at init, as openai/pixel-cnn's ``hw``; one map per block, not shared
    std = np.concatenate([w.ravel() for w in maps]).std()
    assert 0.04 < std < 0.06 and not np.array_equal(maps[0], maps[1])
    unc = PixelCNNPP(PixelCNNPP.Config(filters=6), GREY)      # off by default: the old model
    assert unc.nll_kind == "exact" and not unc.class_conditional
    assert not any(k.endswith("label_map.weight") for k in unc.state_dict())


def test_labels_change_the_likelihood_but_not_causality():
    model = _model(DataInfo((1, 4, 4), 5, num_classes=3)).double().eval()
    x = gm.tensor(np.random.default_rng(0).integers(0, 5, (3, 1, 4, 4)) / 4.0)
    y = gm.tensor([0, 1, 2])
    with gm.no_grad():
        a, b = model.nll((x, y)).numpy(), model.nll((x, (y + 1) % 3)).numpy()
    assert np.all(a != b)
    order = np.arange(16).reshape(4, 4)
    for i, j in [(0, 0), (1, 2), (3, 3), (2, 0)]:
        xg = x.detach().requires_grad_(True)
        out = model.mixture_params(xg, y)[:, :, i, j]
        (g,) = gm.autograd.grad((out * gm.tensor(np.random.default_rng(i + j).standard_normal(out.shape))).sum(), [xg])
        g = np.abs(g.numpy()).sum((0, 1))
        assert np.all(g[order >= order[i, j]] == 0.0), (i, j)
        if j > 0:
            assert g[i, j - 1] > 0


@pytest.mark.parametrize("shape,levels", [((1, 2, 2), 3), ((3, 2, 2), 2)])
def test_likelihood_sums_to_one_for_every_label(shape, levels):
    model = _model(DataInfo(shape, levels, num_classes=3), mixtures=3).double().eval()   # 81 or 4096 images
    n = int(np.prod(shape))
    grid = np.stack(np.meshgrid(*[np.arange(levels)] * n, indexing="ij"), -1).reshape(-1, *shape)
    x = gm.tensor(grid / (levels - 1))
    totals = []
    with gm.no_grad():
        for label in range(3):
            y = gm.tensor(np.full(len(grid), label))
            totals.append(np.exp(-model.nll((x, y)).numpy()).sum())
    np.testing.assert_allclose(totals, 1.0, atol=1e-6)


def test_sampling_with_labels():
    model = _model(DataInfo((1, 2, 4), 5, num_classes=3))
    gen = lambda: gm.Generator().manual_seed(0)  # noqa: E731
    a = model.sample(4, generator=gen(), labels="2")                 # the CLI form, repeated
    b = model.sample(4, generator=gen(), labels=gm.tensor([2, 2, 2, 2]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    default = model.sample(4, generator=gen())                        # the classes in turn
    np.testing.assert_array_equal(default.numpy(), model.sample(4, generator=gen(), labels="0,1,2").numpy())
    assert not np.array_equal(a.numpy(), default.numpy())             # the label changes the draw
    v = a.numpy() * 4
    np.testing.assert_allclose(v, np.round(v), atol=1e-5)
    assert model.training                                             # dropout off only inside


def test_errors_are_clear():
    with pytest.raises(ValueError, match="--conditional needs a data set with class labels"):
        PixelCNNPP(PixelCNNPP.Config(conditional=True), DataInfo((1, 8, 8), 17, "mnist-like"))
    model = _model(DataInfo((1, 4, 4), 5, num_classes=3))
    x = gm.rand(2, 1, 4, 4).mul(4).round().div(4)
    with pytest.raises(ValueError, match=r"batches must be \(images, labels\)"):
        model.nll((x,))
    with pytest.raises(ValueError, match=r"labels must be \(B,\)"):
        model.nll((x, gm.tensor([[0], [1]])))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model.sample(2, labels="3")
    with pytest.raises(ValueError, match=r"labels must be \(2,\)"):
        model.sample(2, labels=[0, 1, 2])
    with pytest.raises(ValueError, match="--labels must be comma-separated integers"):
        model.sample(2, labels="seven")
    unc = PixelCNNPP(PixelCNNPP.Config(filters=4, mixtures=2), DataInfo((1, 4, 4), 5, num_classes=3))
    with pytest.raises(ValueError, match="unconditional; labels are not used"):
        unc.sample(2, labels="1")


def test_cli_trains_samples_with_labels_and_resumes_exactly(tmp_path, capsys, monkeypatch):
    pytest.importorskip("safetensors")
    from gmcore import cli
    from resume_checks import check_crash_resume

    tiny = ["--filters", "4", "--mixtures", "2", "--conditional", "--batch-size", "8", "--no-progress",
            "--num-samples", "2", "--no-sample-quality", "--eval-every", "0"]
    check_crash_resume(tmp_path, monkeypatch, "pixelcnn++", PixelCNNPP, tiny, steps=4, ckpt_every=2, crash_at=4)
    run = tmp_path / "full"
    res = json.loads((run / "metrics.json").read_text())
    assert res["nll_kind"] == "exact, class-conditional: -log p(x | y)" and 0 < res["test_bits_per_dim"] < 8
    assert json.loads((run / "config.json").read_text())["model_config"]["conditional"] is True
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--help"]) == 0
    assert "--labels" in capsys.readouterr().out
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(run), "--n", "3", "--labels", "7", "--out", str(out)]) == 0
    assert np.load(out).shape == (3, 1, 8, 8)
