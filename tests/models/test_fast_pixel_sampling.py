"""Fast pixel sampling (cached activations, Ramachandran et al. 2017) draws what the naive
sampler draws: the same images for the same seed, for PixelCNN (grey, and RGB with colour
groups, dropout in the config) and Gated PixelCNN (unconditional, class-conditional, RGB).

What "the same" means: both samplers make the same categorical draws (same shapes, order and
generator); the logits they draw from agree to float32 rounding (the fast path sums each
convolution in another order), checked here against the full network's logits on the finished
images at every pixel. The images are then equal bit for bit unless a uniform draw lands within
rounding of a boundary of the cumulative distribution (probability ~1e-6 per draw): with these
fixed seeds they are equal, and the test asserts it.
"""
import numpy as np
import pytest

import gmcore as gm
from gmcore.models.autoregressive import GatedPixelCNN, PixelCNN
from gmcore.models.autoregressive import _fast_sampling
from gmcore.models.base import DataInfo

GREY = DataInfo((1, 7, 6), 9, "grey", num_classes=4)
RGB = DataInfo((3, 6, 6), 5, "rgb", num_classes=3)


def _model(cls, data, **kw):
    gm.manual_seed(0)
    model = cls(cls.Config(**kw), data)
    if getattr(model, "label_bias", None) is not None:   # zero at init: make the labels matter
        w = model.label_bias.weight
        w.data[...] = np.random.default_rng(1).standard_normal(w.shape).astype(w.data.dtype)
    return model


CASES = {
    "pixelcnn-grey": (PixelCNN, GREY, dict(channels=8, blocks=2, out_hidden=6, first_kernel=5, dropout=0.3)),
    "pixelcnn-rgb": (PixelCNN, RGB, dict(channels=12, blocks=2, out_hidden=6, first_kernel=3, dropout=0.3)),
    "gated-unconditional": (GatedPixelCNN, GREY, dict(channels=4, layers=3, out_hidden=6, first_kernel=5,
                                                      conditional=False)),
    "gated-conditional": (GatedPixelCNN, GREY, dict(channels=4, layers=3, out_hidden=6, first_kernel=5)),
    "gated-rgb-conditional": (GatedPixelCNN, RGB, dict(channels=4, layers=2, out_hidden=6, first_kernel=3)),
    # colour groups in every layer, unequal ones (6 maps: 2, 2, 2 per gate half; 7: 3, 2, 2)
    "gated-rgb-deeper": (GatedPixelCNN, RGB, dict(channels=6, layers=3, out_hidden=7, first_kernel=5,
                                                  conditional=False)),
}


def _logits(model, x, labels):
    with gm.no_grad():
        out = model.logits(x) if isinstance(model, PixelCNN) else model.logits(x, labels)
    return out.numpy()                                              # (n, C, L, H, W)


@pytest.mark.parametrize("case", list(CASES))
def test_fast_draws_what_naive_draws(case, monkeypatch):
    cls, data, kw = CASES[case]
    model = _model(cls, data, **kw)
    model.train()                            # sampling switches dropout off by itself
    n = 5
    conditional = isinstance(model, GatedPixelCNN) and model.num_classes
    labels = gm.tensor([0, 1, 2, 0, 1]) if conditional else None
    extra = {} if labels is None else {"labels": labels}
    naive = model.sample(n, generator=gm.Generator().manual_seed(7), sampler="naive", **extra)
    assert model.training                                           # its mode is restored

    drawn = []                               # every distribution the fast sampler draws from
    draw = _fast_sampling._draw
    monkeypatch.setattr(_fast_sampling, "_draw",
                        lambda logits, c, *a: drawn.append((np.array(logits), c)) or draw(logits, c, *a))
    fast = model.sample(n, generator=gm.Generator().manual_seed(7), **extra)   # fast is the default
    assert model.training

    np.testing.assert_array_equal(fast.numpy(), naive.numpy())    # the same images, bit for bit
    C, H, W = data.shape
    assert len(drawn) == H * W * (C if C == 3 else 1)
    model.eval()
    full = _logits(model, fast, labels)
    for k, (logits, c) in enumerate(drawn):
        i, j = divmod(k // (C if C == 3 else 1), W)
        want = full[:, :, :, i, j]
        if C == 3:                  # colour c is drawn before the later colours of its pixel
            assert c == k % 3
            logits, want = logits[:, c], want[:, c]
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{case}: logits at pixel ({i}, {j}) colour {c}")
    levels = fast.numpy() * (data.num_levels - 1)
    np.testing.assert_array_equal(levels, np.round(levels))        # values on the data's levels
    assert len(np.unique(levels)) > 1


def test_class_labels_reach_the_fast_sampler():
    model = _model(*CASES["gated-conditional"][:2], **CASES["gated-conditional"][2])
    a = model.sample(4, generator=gm.Generator().manual_seed(3), labels=[0, 0, 0, 0]).numpy()
    b = model.sample(4, generator=gm.Generator().manual_seed(3), labels=[3, 3, 3, 3]).numpy()
    assert not np.array_equal(a, b)


def test_fast_sampler_shows_progress(monkeypatch):
    updates = []

    class Bar:
        def __init__(self, total, desc=""):
            updates.append(("total", total))

        def update(self, done):
            updates.append(done)

        def close(self):
            updates.append("closed")

    monkeypatch.setattr(_fast_sampling, "Bar", Bar)
    model = _model(*CASES["gated-unconditional"][:2], **CASES["gated-unconditional"][2])
    model.sample(2)
    assert updates[0] == ("total", 42) and updates[1:] == list(range(1, 43)) + ["closed"]


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_unknown_sampler_is_a_clear_error(cls):
    model = _model(cls, GREY, **CASES["pixelcnn-grey" if cls is PixelCNN else "gated-unconditional"][2])
    with pytest.raises(ValueError, match=r"sampler must be one of fast, naive, got 'slow'"):
        model.sample(2, sampler="slow")


def test_cli_sampler_option(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from gmcore import cli

    run = tmp_path / "run"
    assert cli.main(["train", "pixelcnn", "--out", str(run), "--steps", "2", "--batch-size", "8",
                     "--channels", "6", "--blocks", "1", "--out-hidden", "6", "--no-progress",
                     "--num-samples", "2", "--no-sample-quality", "--eval-every", "0"]) == 0
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--help"]) == 0
    assert "--sampler" in capsys.readouterr().out
    out = {}
    for sampler in ("naive", "fast"):
        out[sampler] = tmp_path / f"{sampler}.npy"
        argv = ["sample", str(run), "--n", "3", "--sampler", sampler, "--out", str(out[sampler])]
        assert cli.main(argv) == 0
    np.testing.assert_array_equal(np.load(out["naive"]), np.load(out["fast"]))
    with pytest.raises(SystemExit) as exc:                       # argparse's choices
        cli.main(["sample", str(run), "--sampler", "slow"])
    assert exc.value.code == 2 and "invalid choice: 'slow'" in capsys.readouterr().err
