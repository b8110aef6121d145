"""delta-vae: the committed rate against a brute-force minimisation of the dense Gaussian KL, the
O(n) KL and log-density against their dense n x n forms, alpha from delta, the decoder's
causality given z, shapes and errors, the IWAE bound's chunking, the auxiliary prior (its
gradient stops at z, so the model's own path is unchanged), and the CLI (train, kl_min, sample,
eval, bit-exact resume)."""
import json

import numpy as np
import pytest

import gmcore as gm
from helpers import logit_dependence, raster_colour_order, write_fake_cifar
from resume_checks import check_crash_resume
from gmcore import cli
from gmcore.models.base import DataInfo
from gmcore.models.latent import DeltaVAE
from gmcore.models.latent import delta_vae as dv

DIGITS = DataInfo((1, 8, 8), 17, "digits")
TINY = dict(latent_channels=2, enc_hidden=4, channels=4, layers=2, first_kernel=3, out_hidden=6,
            iw_samples=3, aux_hidden=8, aux_components=2)
FAST = ["--batch-size", "16", "--no-progress", "--no-sample-quality", "--num-samples", "4",
        "--latent-channels", "2", "--enc-hidden", "4", "--channels", "4", "--layers", "2",
        "--out-hidden", "6", "--iw-samples", "2", "--eval-every", "0", "--aux-hidden", "8",
        "--aux-components", "2"]


def _cov(alpha, n):
    i = np.arange(n)
    return alpha ** np.abs(i[:, None] - i[None, :])


def _dense_kl(mu, var, alpha):
    """KL(N(mu, diag var) || N(0, Sigma)) per channel and summed, with Sigma's dense inverse."""
    total = 0.0
    for m, v in zip(mu, var):                                   # channels
        n = m.shape[0]
        S = _cov(alpha, n)
        P = np.linalg.inv(S)
        total += 0.5 * (np.trace(P @ np.diag(v)) + m @ P @ m - n + np.linalg.slogdet(S)[1]
                        - np.log(v).sum())
    return total


def _digits(n=8):
    from gmcore.data.digits import load_digits_arrays

    x, _ = load_digits_arrays("train")
    return gm.tensor(x[:n].astype(np.float32) / 16.0)


def _model(**kw):
    gm.manual_seed(0)
    return DeltaVAE(DeltaVAE.Config(**{**TINY, **kw}), DIGITS)


@pytest.mark.parametrize("alpha,n", [(0.3, 2), (0.6, 5), (0.9, 7)])
def test_committed_rate_is_the_minimum_of_the_dense_kl(alpha, n):
    # brute force: gradient descent on log-variances of the dense KL (mu = 0: the mean term is
    # a positive definite quadratic), from a random start
    u = np.random.default_rng(0).standard_normal(n)
    P = np.linalg.inv(_cov(alpha, n))
    for _ in range(3000):
        u -= 0.5 * (0.5 * (np.diag(P) * np.exp(u) - 1.0))
    best = _dense_kl(np.zeros((1, n)), np.exp(u)[None], alpha)
    assert dv.committed_rate(alpha, n) == pytest.approx(best, rel=1e-10, abs=1e-12)
    # and no diagonal Gaussian does better, means included
    rng = np.random.default_rng(1)
    for _ in range(200):
        mu, var = 0.3 * rng.standard_normal((1, n)), np.exp(u + 0.5 * rng.standard_normal(n))[None]
        assert _dense_kl(mu, var, alpha) > dv.committed_rate(alpha, n)
    assert dv.committed_rate(alpha, n, channels=3) == pytest.approx(3 * best, rel=1e-10)


def test_closed_form_kl_and_log_prob_match_the_dense_formulas():
    rng = np.random.default_rng(2)
    B, d, n, alpha = 3, 2, 6, 0.7
    mu, log_var = rng.standard_normal((B, d, n)), rng.standard_normal((B, d, n))
    kl = dv.ar1_kl(gm.tensor(mu), gm.tensor(log_var), alpha).numpy()
    want = [_dense_kl(mu[b], np.exp(log_var[b]), alpha) for b in range(B)]
    np.testing.assert_allclose(kl, want, rtol=1e-12)
    # alpha = 0 is the standard VAE's KL against N(0, I)
    kl0 = dv.ar1_kl(gm.tensor(mu), gm.tensor(log_var), 0.0).numpy()
    np.testing.assert_allclose(kl0, 0.5 * (mu ** 2 + np.exp(log_var) - 1 - log_var).sum((1, 2)), rtol=1e-12)
    z = rng.standard_normal((4, B, d, n))
    S = _cov(alpha, n)
    P, logdet = np.linalg.inv(S), np.linalg.slogdet(S)[1]
    dense = -0.5 * (np.einsum("...i,ij,...j->...", z, P, z) + logdet + n * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(dv.ar1_log_prob(gm.tensor(z), alpha).numpy(), dense, rtol=1e-12)


@pytest.mark.parametrize("delta,n,d", [(0.0, 16, 8), (0.5, 2, 1), (8.0, 16, 8), (30.0, 49, 4)])
def test_alpha_from_delta_round_trip(delta, n, d):
    a = dv.alpha_for_delta(delta, n, d)
    assert 0.0 <= a < 1.0
    assert dv.committed_rate(a, n, d) == pytest.approx(delta, abs=1e-9)
    with pytest.raises(ValueError, match="n >= 2"):
        dv.alpha_for_delta(delta, 1, d)
    with pytest.raises(ValueError, match="delta"):
        dv.alpha_for_delta(-1.0, n, d)


def test_prior_samples_have_the_ar1_covariance():
    z = dv.ar1_sample((40000, 1, 5), 0.6, generator=gm.Generator().manual_seed(0)).numpy()[:, 0]
    np.testing.assert_allclose(np.cov(z.T.astype(np.float64)), _cov(0.6, 5), atol=0.03)


def test_kl_never_falls_below_kl_min():
    model = _model(delta=4.0)
    assert model.kl_min == pytest.approx(4.0, abs=1e-9) and 0 < model.alpha < 1
    rng = np.random.default_rng(3)
    for scale in (0.01, 1.0, 5.0):
        mu = gm.tensor(scale * rng.standard_normal((16, 2, 16)))
        lv = gm.tensor(scale * rng.standard_normal((16, 2, 16)))
        assert float(model.kl(mu, lv).min().item()) >= model.kl_min
    _, logs = model.loss((_digits(),))
    assert logs["kl"] >= model.kl_min
    plain = _model(prior="normal")
    assert plain.kl_min == 0.0 and plain.alpha == 0.0


def test_decoder_is_causal_given_z():
    model = _model(layers=3, first_kernel=5).double()
    model.eval()
    x = gm.tensor(np.random.default_rng(4).random((2, 1, 8, 8))).requires_grad_(True)
    z = gm.tensor(np.random.default_rng(5).standard_normal((2, 2, 16)))
    cond = model.conditioning(z).detach()
    order = np.arange(64).reshape(8, 8)
    for i, j in [(0, 0), (0, 5), (3, 0), (4, 4), (7, 7)]:
        out = model.logits(x, cond)[:, 0, :, i, j]
        r = gm.tensor(np.random.default_rng(i * 8 + j).standard_normal(out.shape))
        (g,) = gm.autograd.grad((out * r).sum(), [x])
        g = np.abs(g.numpy()).sum((0, 1))
        assert np.all(g[order >= order[i, j]] == 0.0), (i, j)      # itself and later: exactly zero
        if j > 0:
            assert g[i, j - 1] > 0
        if i > 0:
            assert g[i - 1, j] > 0


def test_shapes_errors_and_chunked_bound(monkeypatch):
    model = _model()
    x = _digits(5)
    mu, lv = model.encode(x)
    assert mu.shape == (5, 2, 16) and lv.shape == (5, 2, 16) and model.latent_shape == (2, 4, 4)
    loss, logs = model.loss((x,))
    assert set(logs) == {"kl", "recon", "bits_per_dim", "aux_nats"}
    assert loss.item() == pytest.approx(logs["kl"] + logs["recon"] + logs["aux_nats"], rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with gm.no_grad():
        whole = model.nll((x,), generator=gm.Generator().manual_seed(1)).numpy()
        monkeypatch.setattr(dv, "IW_CHUNK", 5)                        # one sample per decoder call
        chunked = model.nll((x,), generator=gm.Generator().manual_seed(1)).numpy()
        s = model.sample(3, generator=gm.Generator().manual_seed(0))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5)
    assert whole.shape == (5,) and model.nll_kind.startswith("IWAE bound (k=3), autoregressive auxiliary")
    assert s.shape == (3, 1, 8, 8)
    levels = s.numpy() * 16
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-5)
    mnist = DeltaVAE(DeltaVAE.Config(**TINY, downsample=2), DataInfo((1, 28, 28), 256, "mnist"))
    xm = gm.rand(2, 1, 28, 28).mul(255).round().div(255)
    assert mnist.encode(xm)[0].shape == (2, 2, 49) and mnist.loss((xm,))[0].shape == ()
    with pytest.raises(ValueError, match="1 or 3 image channels"):
        DeltaVAE(DeltaVAE.Config(**TINY), DataInfo((2, 8, 8), 256))
    with pytest.raises(ValueError, match="divisible by 4"):
        DeltaVAE(DeltaVAE.Config(**TINY, downsample=2), DataInfo((1, 6, 6), 17))
    with pytest.raises(ValueError, match=">= 2 positions"):
        DeltaVAE(DeltaVAE.Config(**TINY, downsample=3), DIGITS)


def test_aux_prior_stops_at_z_and_is_the_bound_prior():
    with_aux, without = _model(), _model(aux_prior="none")
    assert without.aux is None and with_aux.aux is not None
    shared = dict(without.named_parameters())
    x = _digits(6)
    for m in (with_aux, without):
        gm.manual_seed(1)                                   # the same reparameterisation noise
        loss, logs = m.loss((x,))
        loss.backward()
    # built last, drawing no noise, its loss detached from z: the model's own weights start and
    # move exactly as without it
    moved = False
    for name, p in with_aux.named_parameters():
        if name.startswith("aux."):       # (its output layer starts at zero: the rest gets none yet)
            assert p.grad is not None
            moved = moved or float(p.grad.abs().sum().item()) > 0
            continue
        np.testing.assert_array_equal(p.detach().numpy(), shared[name].detach().numpy())
        np.testing.assert_array_equal(p.grad.numpy(), shared[name].grad.numpy())
    assert moved
    # the bound's prior: the MADE over (position, channel) rows; own_prior_only goes back to AR(1)
    z = gm.tensor(np.random.default_rng(6).standard_normal((3, 2, 2, 16)).astype(np.float32))
    rows = z.numpy().transpose(0, 1, 3, 2).reshape(6, 32)
    with gm.no_grad():
        want = with_aux.aux.log_prob(gm.tensor(rows)).numpy().reshape(3, 2)
        np.testing.assert_allclose(with_aux._log_prior(z).numpy(), want, rtol=1e-6)
        with_aux.own_prior_only = True
        np.testing.assert_allclose(with_aux._log_prior(z).numpy(),
                                   dv.ar1_log_prob(z, with_aux.alpha).numpy(), rtol=1e-6)
        assert with_aux.nll_kind == "IWAE bound (k=3), ar1 prior"
        with_aux.own_prior_only = False
    assert "autoregressive auxiliary prior" in with_aux.nll_kind
    assert without.nll_kind == "IWAE bound (k=3), ar1 prior"


def test_cli_train_sample_eval(tmp_path, capsys):
    run = tmp_path / "dv"
    assert cli.main(["train", "delta-vae", "--out", str(run), "--steps", "4", "--log-every", "2",
                     "--delta", "3", *FAST]) == 0
    res = json.loads((run / "metrics.json").read_text())
    assert res["kl_min"] == pytest.approx(3.0, abs=1e-9) and res["test_kl"] >= res["kl_min"]
    assert res["nll_kind"].startswith("IWAE bound (k=2), autoregressive auxiliary prior")
    assert np.isfinite(res["test_bits_per_dim"])
    assert (run / "reconstructions.png").exists() and (run / "samples.png").exists()
    assert np.isfinite(res["test_bits_per_dim_own_prior"]) and res["own_prior_nll_kind"] == "IWAE bound (k=2), ar1 prior"
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 2 and all(r["kl"] >= 3.0 and "recon" in r for r in train_rows)
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--no-sample-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["test_bits"] == pytest.approx(res["test_bits"], rel=1e-12)
    out = tmp_path / "s.npy"
    for flags in ([], ["--own-prior"]):
        assert cli.main(["sample", str(run), "--n", "2", "--out", str(out), *flags]) == 0
        assert np.load(out).shape == (2, 1, 8, 8)


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "delta-vae", DeltaVAE, FAST)


def test_rgb_decoder_reads_earlier_pixels_and_colours_only():
    """On RGB data each logit of colour c at (i, j) depends on pixels before (i, j) and on the
    colours before c at (i, j), nothing else, given z (the colour order of gated-pixelcnn)."""
    gm.manual_seed(0)
    C, H, W = 3, 4, 4
    model = DeltaVAE(DeltaVAE.Config(**{**TINY, "channels": 24, "out_hidden": 24, "layers": 3}),
                     DataInfo((C, H, W), 3, "rgb")).double()
    model.eval()
    x = gm.tensor(np.random.default_rng(0).integers(0, 3, (2, C, H, W)) / 2.0)
    cond = model.conditioning(gm.tensor(np.random.default_rng(1).standard_normal((2, 2, 4)))).detach()
    D = logit_dependence(lambda xg: model.logits(xg, cond), x)
    allowed = raster_colour_order(C, H, W)
    assert np.all(D[~allowed] == 0.0)
    reach = (D * allowed).reshape(C * H * W, -1).sum(1)
    assert reach[0] == 0.0 and np.all(reach[1:] > 0.0)      # every logit but the first R reads something


def test_rgb_samples_lie_on_the_levels():
    gm.manual_seed(0)
    model = DeltaVAE(DeltaVAE.Config(**{**TINY, "channels": 6}), DataInfo((3, 4, 4), 5, "rgb")).eval()
    with gm.no_grad():
        s = model.sample(3, generator=gm.Generator().manual_seed(0)).numpy()
    assert s.shape == (3, 3, 4, 4) and np.allclose(s * 4, np.round(s * 4), atol=1e-6)


def test_trains_and_evaluates_on_a_cifar_folder(tmp_path):
    # a 32x32 RGB sample is 3072 network passes: sampling is checked at 4x4 above, and the run
    # draws none (--num-samples 0 also skips the pictures)
    write_fake_cifar(tmp_path)
    run = tmp_path / "run"
    assert cli.main(["train", "delta-vae", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out",
                     str(run), "--steps", "3", *FAST, "--batch-size", "4", "--downsample", "3",
                     "--num-samples", "0"]) == 0
    res = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(res["test_bits_per_dim"]) and 0 < res["test_bits_per_dim"] < 20
    assert json.loads((run / "config.json").read_text())["data"] == "cifar10"


def test_rgb_needs_three_maps_per_colour_group():
    with pytest.raises(ValueError, match="channels and out_hidden must be >= 3"):
        DeltaVAE(DeltaVAE.Config(**{**TINY, "channels": 2}), DataInfo((3, 8, 8), 256, "cifar10"))
