"""vqvae2: the grid of each level at digits / MNIST / CIFAR sizes, the "vq-codes" protocol, the
bound's arithmetic, the bottom's dependence on the top, per-level logs, the CLI run (pictures,
sample, eval), bit-exact resume and the 3x32x32 path."""
import json
import math

import numpy as np
import pytest

import gmcore as gm
from helpers import check_eval_and_sample, write_fake_cifar
from resume_checks import check_crash_resume
from gmcore import cli, train
from gmcore.models.base import DataInfo
from gmcore.models.latent import VQVAE2

DIGITS = DataInfo((1, 8, 8), 17, "digits")
TINY = dict(codes_top=8, codes_bottom=16, code_dim=4, hidden=8, res_hidden=4, res_blocks=1)
FAST = ["--batch-size", "32", "--no-progress", "--no-sample-quality", "--num-samples", "8",
        "--codes-top", "8", "--codes-bottom", "16", "--code-dim", "4", "--hidden", "8",
        "--res-hidden", "4", "--res-blocks", "1"]


def _digits(n=16):
    from gmcore.data.digits import load_digits_arrays

    x, _ = load_digits_arrays("train")
    return gm.tensor(x[:n].astype(np.float32) / 16.0)


def _model(info=DIGITS, **kw):
    gm.manual_seed(0)
    return VQVAE2(VQVAE2.Config(**{**TINY, **kw}), info)


@pytest.mark.parametrize("shape,levels,top,bottom,decoder", [
    ((1, 8, 8), 17, (2, 2), (4, 4), "logistic"), ((1, 8, 8), 17, (2, 2), (4, 4), "categorical"),
    ((1, 28, 28), 256, (7, 7), (14, 14), "logistic"), ((3, 32, 32), 256, (8, 8), (16, 16), "logistic")])
def test_each_level_at_every_data_size(shape, levels, top, bottom, decoder):
    model = _model(DataInfo(shape, levels, "x"), decoder=decoder)
    x = gm.rand(2, *shape).mul(levels - 1).round().div(levels - 1)
    loss, logs = model.loss((x,))
    assert loss.shape == () and np.isfinite(loss.item())
    loss.backward()
    # the top encoder learns through both straight-through paths (decoder, and the bottom's input)
    for part in (model.encoder_top, model.encoder_bottom, model.decoder_top, model.upsample_top,
                 model.pre_quantize_bottom, model.decoder):
        assert all(p.grad is not None and np.abs(p.grad.numpy()).sum() > 0 for p in part.parameters())
    assert model.code_levels == ((8, *top), (16, *bottom)) and model.latent_kind == "vq-codes"
    codes = model.encode(x)
    assert isinstance(codes, tuple) and [c.shape for c in codes] == [(2, *top), (2, *bottom)]
    assert all(c.dtype == gm.int64 for c in codes)
    out = model.decode(codes)
    assert out.shape == (2, *shape) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert model.nll((x,)).shape == (2,)
    assert model.sample(3, generator=gm.Generator().manual_seed(0)).shape == (3, *shape)


def test_bad_configs_and_codes_are_named():
    with pytest.raises(ValueError, match="divisible by 4"):
        _model(DataInfo((1, 10, 10), 17))
    with pytest.raises(ValueError, match="divisible by 8"):
        _model(DataInfo((1, 12, 12), 17), downsample=2)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        _model(DataInfo((2, 8, 8), 17))
    with pytest.raises(ValueError, match="discrete levels"):
        _model(DataInfo((2,), 0))
    model = _model()
    top, bottom = gm.zeros(1, 2, 2, dtype=gm.int64), gm.zeros(1, 4, 4, dtype=gm.int64)
    with pytest.raises(ValueError, match="tuple of 2"):
        model.decode(bottom)                       # a bare grid is only for one-level models
    with pytest.raises(ValueError, match=r"level 1 must be an int64 \(B, 4, 4\)"):
        model.decode((top, top))
    with pytest.raises(ValueError, match=r"level 0 must lie in \[0, 7\]"):
        model.decode((top + 8, bottom))
    with pytest.raises(ValueError, match=r"level 1 must lie in \[0, 15\]"):
        model.decode((top, bottom - 1))
    with pytest.raises(ValueError, match="same batch size"):
        model.decode((top, gm.zeros(2, 4, 4, dtype=gm.int64)))


def test_bound_arithmetic_by_hand():
    """All-zero logits are uniform over the 17 levels: the bound is then exactly 64 log 17 (the
    pixels) + 4 log 8 (the 2x2 top grid) + 16 log 16 (the 4x4 bottom grid)."""
    model = _model(decoder="categorical")
    last = model.decoder[-1]
    with gm.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    model.eval()
    x = _digits(5)
    prior = 4 * math.log(8) + 16 * math.log(16)
    assert model.prior_nats() == pytest.approx(prior)
    np.testing.assert_allclose(model.recon_nll(x).detach().numpy(), 64 * math.log(17), rtol=1e-5)
    np.testing.assert_allclose(model.nll((x,)).detach().numpy(), 64 * math.log(17) + prior, rtol=1e-5)
    res = train.evaluate(model, gm.data.get_dataset("digits", "test"))
    bits_per_dim = (64 * math.log(17) + prior) / (64 * math.log(2))
    assert res["test_bits_per_dim"] == pytest.approx(bits_per_dim, rel=1e-5)
    assert res["nll_kind"].startswith("bound")


def test_recon_nll_is_the_categorical_of_the_decoder_on_given_codes():
    model = _model(decoder="categorical")
    model.eval()
    x = _digits(4)
    codes = model.encode(x)
    logits = model.decoder_params(codes).detach().numpy().reshape(4, 1, 17, 8, 8)
    m = logits.max(2, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(2, keepdims=True))
    levels = np.round(x.numpy() * 16).astype(int)
    recon = -np.take_along_axis(logp, levels[:, :, None], 2).reshape(4, -1).sum(1)
    np.testing.assert_allclose(model.recon_nll(x).detach().numpy(), recon, rtol=1e-4)
    np.testing.assert_allclose(model.recon_nll(x, codes).detach().numpy(), recon, rtol=1e-4)
    other = (codes[0], (codes[1] + 1) % 16)
    assert not np.allclose(model.recon_nll(x, other).detach().numpy(), recon)


def test_encode_is_deterministic_stateless_and_matches_the_training_codes():
    model = _model()
    x = _digits(16)
    model.loss((x,))                               # seeds both codebooks (k-means++)
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with gm.no_grad():
        a = model.encode(x)
        b = model.encode(x)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k])
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    # in eval mode the quantizers change nothing either: encode's codes are the forward pass's
    model.eval()
    feats = model.encoder_bottom(x)
    q_top, _, info_top = model.quantizer_top(model.encoder_top(feats))
    _, _, info_bottom = model.quantizer_bottom(model._bottom_input(feats, q_top))
    np.testing.assert_array_equal(a[0].numpy(), info_top["indices"].numpy())
    np.testing.assert_array_equal(a[1].numpy(), info_bottom["indices"].numpy())


def test_the_bottom_depends_on_the_top():
    model = _model()
    x = _digits(16)
    for _ in range(3):
        model.loss((x,))
    model.eval()
    with gm.no_grad():
        top, bottom = model.encode(x)
        changed = (top + 1) % 8
        out = model.decode((top, bottom)).numpy()
        # the decoder sees the (upsampled) top codes beside the bottom codes ...
        assert np.abs(model.decode((changed, bottom)).numpy() - out).max() > 1e-4
        # ... and the bottom quantizer's input is conditioned on the top codes
        feats = model.encoder_bottom(x)
        z1 = model._bottom_input(feats, model.embed(0, top)).numpy()
        z2 = model._bottom_input(feats, model.embed(0, changed)).numpy()
    assert np.abs(z1 - z2).max() > 1e-4


def test_logs_each_level_from_the_batch_codes():
    model = _model()
    x = _digits(16)
    model.quantizer_top.kmeans_init = model.quantizer_bottom.kmeans_init = False
    top, bottom = (c.numpy() for c in model.encode(x))   # before the step: the codes loss uses
    _, logs = model.loss((x,))
    for name, idx, k in (("top", top, 8), ("bottom", bottom, 16)):
        counts = np.bincount(idx.reshape(-1), minlength=k)
        p = counts[counts > 0] / counts.sum()
        assert logs[f"perplexity_{name}"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-5)
        assert logs[f"usage_{name}"] == pytest.approx((counts > 0).mean())
        assert logs[f"dead_codes_{name}"] >= 0.0 and logs[f"commit_{name}"] >= 0.0
    assert logs["recon"] > 0.0


def test_cli_run_pictures_sample_eval(tmp_path, capsys):
    assert cli.main(["models"]) == 0
    assert any(line.split()[:2] == ["vqvae2", "latent"] for line in capsys.readouterr().out.splitlines())
    run = tmp_path / "vq2"
    assert cli.main(["train", "vqvae2", "--out", str(run), "--steps", "4", "--log-every", "2", *FAST]) == 0
    res = json.loads((run / "metrics.json").read_text())
    assert res["nll_kind"].startswith("bound") and np.isfinite(res["test_bits_per_dim"])
    assert 1 <= res["test_codes_used_top"] <= 8 and 1 <= res["test_codes_used_bottom"] <= 16
    assert (run / "reconstructions.png").exists() and (run / "samples.png").exists()
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    per_level = {f"{k}_{lv}" for k in ("perplexity", "usage", "dead_codes") for lv in ("top", "bottom")}
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 2 and all(per_level <= set(r) for r in train_rows)
    check_eval_and_sample(run, res, capsys, tmp_path)


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    # both codebooks' EMA statistics and k-means++ flags are state a resumed run must keep
    check_crash_resume(tmp_path, monkeypatch, "vqvae2", VQVAE2, FAST)


def test_trains_on_a_cifar_folder(tmp_path):
    write_fake_cifar(tmp_path)
    run = tmp_path / "run"
    assert cli.main(["train", "vqvae2", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out",
                     str(run), "--steps", "3", *FAST, "--batch-size", "4"]) == 0
    res = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(res["test_bits_per_dim"]) and res["test_codes_used_bottom"] >= 1
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_config"]["downsample"] == 1 and cfg["model_config"]["codes_top"] == 8
