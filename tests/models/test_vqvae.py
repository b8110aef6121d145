"""vqvae: shapes at digits / MNIST / CIFAR sizes, the bound's arithmetic, codebook logging,
dead-code restarts, encode/decode, the CLI run (pictures, sample, eval) and bit-exact resume."""
import json
import math

import numpy as np
import pytest

import gmcore as gm
from helpers import check_eval_and_sample, write_fake_cifar
from resume_checks import check_crash_resume
from gmcore import cli, train
from gmcore.models.base import DataInfo
from gmcore.models.latent import VQVAE

DIGITS = DataInfo((1, 8, 8), 17, "digits")
TINY = dict(codes=8, code_dim=4, hidden=8, res_hidden=4, res_blocks=1)
FAST = ["--batch-size", "32", "--no-progress", "--no-sample-quality", "--num-samples", "8",
        "--codes", "8", "--code-dim", "4", "--hidden", "8", "--res-hidden", "4", "--res-blocks", "1"]


def _digits(n=16):
    from gmcore.data.digits import load_digits_arrays

    x, _ = load_digits_arrays("train")
    return gm.tensor(x[:n].astype(np.float32) / 16.0)


def _model(info=DIGITS, downsample=1, **kw):
    gm.manual_seed(0)
    return VQVAE(VQVAE.Config(**{**TINY, "downsample": downsample, **kw}), info)


@pytest.mark.parametrize("shape,levels,downsample,grid", [
    ((1, 8, 8), 17, 1, (4, 4)), ((1, 28, 28), 256, 2, (7, 7)), ((3, 32, 32), 256, 2, (8, 8))])
@pytest.mark.parametrize("decoder", ["logistic", "categorical"])
def test_shapes_at_every_data_size(shape, levels, downsample, grid, decoder):
    model = _model(DataInfo(shape, levels, "x"), downsample, decoder=decoder)
    x = gm.rand(2, *shape).mul(levels - 1).round().div(levels - 1)
    loss, logs = model.loss((x,))
    assert loss.shape == () and np.isfinite(loss.item())
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    codes = model.encode(x)
    assert isinstance(codes, tuple) and len(codes) == 1
    idx = codes[0]
    assert idx.shape == (2, *grid) and idx.dtype == gm.int64 and model.latent_shape == grid
    assert model.code_levels == ((8, *grid),) and model.latent_kind == "vq-codes"
    out = model.decode(codes)
    assert out.shape == (2, *shape) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    np.testing.assert_array_equal(model.decode(idx).detach().numpy(), out.detach().numpy())
    assert model.nll((x,)).shape == (2,)
    assert model.sample(3, generator=gm.Generator().manual_seed(0)).shape == (3, *shape)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="divisible by 4"):
        _model(DataInfo((1, 10, 10), 17), downsample=2)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        _model(DataInfo((2, 8, 8), 17))
    with pytest.raises(ValueError, match="discrete levels"):
        _model(DataInfo((2,), 0))
    model = _model()
    with pytest.raises(ValueError, match=r"lie in \[0, 7\]"):
        model.decode(gm.full((1, 4, 4), 8, dtype=gm.int64))
    with pytest.raises(ValueError, match="int64"):
        model.decode(gm.zeros(1, 4, 4))
    with pytest.raises(ValueError, match=r"int64 \(B, 4, 4\)"):
        model.decode(gm.zeros(1, 2, 2, dtype=gm.int64))
    with pytest.raises(ValueError, match="tuple of 1"):
        model.decode((gm.zeros(1, 4, 4, dtype=gm.int64),) * 2)


def test_bound_arithmetic_by_hand():
    """A decoder that outputs all-zero logits is uniform over the 17 levels: the bound is then
    exactly 64 log 17 (the pixels) + 16 log K (the 4x4 code grid, uniform prior)."""
    model = _model(decoder="categorical", codes=8)
    last = model.decoder[-1]
    with gm.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    model.eval()
    x = _digits(5)
    expected = 64 * math.log(17) + 16 * math.log(8)
    np.testing.assert_allclose(model.nll((x,)).detach().numpy(), expected, rtol=1e-5)
    test = gm.data.get_dataset("digits", "test")
    res = train.evaluate(model, test)
    assert res["test_bits_per_dim"] == pytest.approx(expected / (64 * math.log(2)), rel=1e-5)
    assert res["nll_kind"].startswith("bound")


def test_bound_is_recon_nll_plus_log_k_per_position():
    model = _model(decoder="categorical")
    model.eval()
    x = _digits(4)
    idx = model.encode(x)
    logits = model.decoder_params(idx).detach().numpy().reshape(4, 1, 17, 8, 8)
    logp = logits - np.log(np.exp(logits - logits.max(2, keepdims=True)).sum(2, keepdims=True)) \
        - logits.max(2, keepdims=True)
    levels = np.round(x.detach().numpy() * 16).astype(int)                    # (4, 1, 8, 8)
    recon = -np.take_along_axis(logp, levels[:, :, None], 2).reshape(4, -1).sum(1)
    np.testing.assert_allclose(model.recon_nll(x).detach().numpy(), recon, rtol=1e-4)
    np.testing.assert_allclose(model.nll((x,)).detach().numpy(), recon + 16 * math.log(8), rtol=1e-4)
    np.testing.assert_allclose(model.recon_nll(x, idx[0]).detach().numpy(), recon, rtol=1e-4)
    assert model.prior_nats() == pytest.approx(16 * math.log(8))
    with gm.no_grad():   # the protocol's encode works without autograd and moves no codebook state
        before = model.quantizer.cluster_size.detach().numpy().copy()
        model.train()
        again = model.encode(x)[0]
    np.testing.assert_array_equal(again.numpy(), idx[0].numpy())
    np.testing.assert_array_equal(model.quantizer.cluster_size.detach().numpy(), before)


def test_logs_perplexity_usage_from_the_batch_codes():
    model = _model()
    x = _digits(16)
    idx = model.encode(x)[0].detach().numpy()      # before the step: the codes the loss will use
    model.quantizer.kmeans_init = False  # keep the codebook where encode() saw it
    _, logs = model.loss((x,))
    counts = np.bincount(idx.reshape(-1), minlength=8)
    p = counts / counts.sum()
    assert logs["perplexity"] == pytest.approx(math.exp(-(p[p > 0] * np.log(p[p > 0])).sum()), rel=1e-5)
    assert logs["usage"] == pytest.approx((counts > 0).mean())
    assert logs["dead_codes"] == 0.0 and logs["commit"] >= 0.0 and logs["recon"] > 0.0


def test_dead_code_is_restarted_from_the_batch():
    model = _model(dead_code_threshold=0.5)
    vq = model.quantizer
    x = _digits(16)
    model.loss((x,))                      # k-means++ seeding happens in this first call
    assert float(vq.initialized.item()) == 1.0
    with gm.no_grad():
        vq.embedding.data[3] = 1e3        # far from every encoder output: never chosen
        vq.embed_sum.data[3] = 1e3
        vq.cluster_size.data[3] = 0.1     # and its usage already below the threshold
    assert vq.dead_codes() == 1
    _, logs = model.loss((x,))
    z = model.encoder(x).movedim(1, -1).reshape(-1, 4).detach().numpy()
    assert any(np.allclose(vq.embedding.detach().numpy()[3], row, atol=1e-6) for row in z)
    assert vq.dead_codes() == 0 and logs["dead_codes"] == 0.0


def test_kmeans_init_puts_codes_on_encoder_outputs():
    model = _model(decay=0.999999)   # the EMA step after the seeding then barely moves the codes
    x = _digits(16)
    model.loss((x,))
    z = model.encoder(x).movedim(1, -1).reshape(-1, 4).detach().numpy()
    codes = model.quantizer.embedding.detach().numpy()
    for c in codes:   # every code is one of the first batch's vectors (encoder unchanged since)
        assert np.abs(z - c).max(1).min() < 1e-4
    assert "quantizer.initialized" in model.state_dict()


def test_encode_decode_round_trip_of_indices():
    model = _model()
    model.eval()
    x = _digits(8)
    z = model.encoder(x)
    q, _, info = model.quantizer(z)
    (idx,) = model.encode(x)
    np.testing.assert_array_equal(idx.detach().numpy(), info["indices"].detach().numpy())
    np.testing.assert_allclose(model.embed(0, idx).detach().numpy(), q.detach().numpy(), rtol=1e-6)
    # decode(indices) is the decoder's mean on those codes, and the codes of any grid come back
    # through the embedding unchanged
    np.testing.assert_allclose(model.decode(idx).detach().numpy(),
                               model._mean(model.decoder(q)).detach().numpy(), rtol=1e-5)
    grid = gm.randint(0, 8, (3, 4, 4), generator=gm.Generator().manual_seed(1), dtype=gm.int64)
    emb = model.embed(0, grid).movedim(1, -1).reshape(-1, 4)
    back, _ = gm.nn.functional.vq_nearest(emb, model.quantizer.embedding)
    np.testing.assert_array_equal(back.detach().numpy(), grid.detach().numpy().reshape(-1))


def test_cli_run_writes_reconstructions_and_figures(tmp_path, capsys):
    assert cli.main(["models"]) == 0
    assert any(line.split()[:2] == ["vqvae", "latent"] for line in capsys.readouterr().out.splitlines())
    run = tmp_path / "vq"
    assert cli.main(["train", "vqvae", "--out", str(run), "--steps", "4", "--log-every", "2", *FAST]) == 0
    res = json.loads((run / "metrics.json").read_text())
    assert res["nll_kind"].startswith("bound") and np.isfinite(res["test_bits_per_dim"])
    assert res["test_codes_used"] >= 1 and 1.0 <= res["test_code_perplexity"] <= 8.0
    assert (run / "reconstructions.png").exists() and (run / "samples.png").exists()
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 2 and all({"perplexity", "usage", "dead_codes"} <= set(r) for r in train_rows)
    check_eval_and_sample(run, res, capsys, tmp_path)


def test_save_pictures_takes_the_test_set(tmp_path):
    model = _model()
    model.eval()
    assert model.save_pictures(tmp_path, gm.Generator().manual_seed(0)) == {}   # no test set
    with gm.no_grad():
        res = model.save_pictures(tmp_path, gm.Generator().manual_seed(0),
                                  test_set=gm.data.get_dataset("digits", "test"))
    assert (tmp_path / "reconstructions.png").exists() and res["codes"] == 8
    assert res["code_usage_examples"] == 297 and 1 <= res["test_codes_used"] <= 8


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    # the codebook's EMA statistics and the k-means++ flag are state: a resumed run must neither
    # seed the codebook again nor lose the statistics between checkpoints
    check_crash_resume(tmp_path, monkeypatch, "vqvae", VQVAE, FAST)


def test_trains_on_a_cifar_folder(tmp_path):
    write_fake_cifar(tmp_path)
    run = tmp_path / "run"
    assert cli.main(["train", "vqvae", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out",
                     str(run), "--steps", "3", *FAST, "--batch-size", "4"]) == 0
    res = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(res["test_bits_per_dim"]) and res["test_codes_used"] >= 1
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_config"]["downsample"] == 2     # 32x32 -> an 8x8 code grid
