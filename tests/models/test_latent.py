"""Latent-variable models: each overfits a tiny batch, its loss decreases, samples have the
right shape and range; PPCA's closed form and gradient fit agree; the CAE penalty is right."""
import math

import numpy as np
import pytest

import gmcore as gm
from helpers import fit_full_batch
from gmcore import autograd
from gmcore.models.base import DataInfo
from gmcore.models.latent import CAE, DAE, PPCA, VAE

INFO = DataInfo((1, 8, 8), 17, "digits")


def _digits(n=32, binary=False):
    from gmcore.data.digits import load_digits_arrays

    x, _ = load_digits_arrays("train")
    x = x[:n].astype(np.float32) / 16.0
    if binary:
        x = (x > 0.5).astype(np.float32)
    return gm.tensor(x)


def _fit(model, x, steps, lr=3e-3):
    return fit_full_batch(model, x, steps, lr)


@pytest.mark.parametrize("decoder", ["logistic", "bernoulli", "gaussian"])
def test_vae_overfits_tiny_batch(decoder):
    gm.manual_seed(0)
    info = DataInfo((1, 8, 8), 2 if decoder == "bernoulli" else 17)
    vae = VAE(VAE.Config(latent_dim=4, hidden=64, decoder=decoder, iw_samples=8), info)
    x = _digits(16, binary=decoder == "bernoulli")
    before = vae.nll((x,), generator=gm.Generator().manual_seed(1)).mean().item()
    losses = _fit(vae, x, 150)
    after = vae.nll((x,), generator=gm.Generator().manual_seed(1)).mean().item()
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    assert after < before - 0.3 * abs(before)
    s = vae.sample(5, generator=gm.Generator().manual_seed(0))
    assert s.shape == (5, 1, 8, 8) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    vae.config.sample_mode = "draw"
    d = vae.sample(5, generator=gm.Generator().manual_seed(0))
    assert d.shape == (5, 1, 8, 8) and float(d.min()) >= 0.0 and float(d.max()) <= 1.0
    if decoder == "logistic":   # draws lie on the 17-level grid
        lv = d.numpy() * 16
        np.testing.assert_allclose(lv, np.round(lv), atol=1e-4)


def test_vae_iwae_bound_tightens_with_k():
    gm.manual_seed(0)
    vae = VAE(VAE.Config(latent_dim=4, hidden=32, iw_samples=1), INFO)
    x = _digits(16)
    _fit(vae, x, 40)
    elbo = vae.nll((x,), generator=gm.Generator().manual_seed(3)).mean().item()
    vae.config.iw_samples = 64
    iwae = vae.nll((x,), generator=gm.Generator().manual_seed(3)).mean().item()
    assert iwae < elbo


def test_vae_free_bits_and_warmup():
    gm.manual_seed(0)
    vae = VAE(VAE.Config(latent_dim=3, hidden=16, kl_warmup=10, beta=2.0), INFO)
    assert vae._kl_weight() == pytest.approx(0.2)
    vae.loss((_digits(4),))
    assert int(vae.steps_done.item()) == 1 and vae._kl_weight() == pytest.approx(0.4)
    assert "steps_done" in vae.state_dict()
    fb = VAE(VAE.Config(latent_dim=3, hidden=16, free_bits=100.0), INFO)
    loss, logs = fb.loss((_digits(4),))
    # every dimension's KL sits far below the floor: the KL term is exactly 3 * 100
    assert loss.item() == pytest.approx(logs["recon"] + 300.0, rel=1e-5)


def test_vae_rejects_wrong_data():
    with pytest.raises(ValueError, match="binary data"):
        VAE(VAE.Config(decoder="bernoulli"), INFO)


def test_ppca_closed_form_and_gradient_agree():
    from gmcore.data.digits import load_digits_arrays

    levels = load_digits_arrays("train")[0][:400].astype(np.float64)
    info = DataInfo((1, 8, 8), 17)
    exact = PPCA(PPCA.Config(latent_dim=4), info).double()
    exact.fit_closed_form(levels)
    x = gm.tensor(levels / 16.0)
    nll_exact = exact.nll((x,)).mean().item()
    gm.manual_seed(0)
    learned = PPCA(PPCA.Config(latent_dim=4, fit="gradient"), info).double()
    learned.mu.data[...] = levels.reshape(400, -1).mean(0) / 16.0       # start near the mean
    opt = gm.optim.Adam(learned.parameters(), lr=0.01)
    for _ in range(600):
        loss, _ = learned.loss((x,))
        opt.zero_grad()
        loss.backward()
        opt.step()
    nll_learned = learned.nll((x,)).mean().item()
    # the closed form is the maximum: gradient ascent approaches it from above
    assert nll_exact <= nll_learned + 1e-6
    assert nll_learned - nll_exact < 0.01 * abs(nll_exact)
    ce = exact.weight.data @ exact.weight.data.T + np.exp(exact.log_var.item()) * np.eye(64)
    cl = learned.weight.data @ learned.weight.data.T + np.exp(learned.log_var.item()) * np.eye(64)
    assert np.abs(ce - cl).max() < 0.05 * np.abs(ce).max()
    # and the closed-form NLL equals a direct float64 Gaussian evaluation
    mean, cov = exact.dequantized_moments(levels)
    ybar = (levels.reshape(400, -1) + 0.5) / 17
    sign, logdet = np.linalg.slogdet(ce)
    inv = np.linalg.inv(ce)
    r = ybar - exact.mu.data
    quad = np.einsum("bi,ij,bj->b", r, inv, r) + np.trace(inv) / (12 * 17 ** 2)
    direct = 0.5 * (64 * math.log(2 * math.pi) + logdet + quad) + 64 * math.log(17)
    assert nll_exact == pytest.approx(direct.mean(), rel=1e-9)


def test_ppca_samples():
    m = PPCA(PPCA.Config(latent_dim=2), INFO)
    m.fit_closed_form(np.random.default_rng(0).integers(0, 17, (100, 1, 8, 8)))
    s = m.sample(7, generator=gm.Generator().manual_seed(0))
    assert s.shape == (7, 1, 8, 8) and float(s.min()) >= 0 and float(s.max()) <= 1
    with pytest.raises(ValueError, match="latent_dim"):
        PPCA(PPCA.Config(latent_dim=64), INFO)


@pytest.mark.parametrize("cls,kw", [(DAE, {}), (DAE, {"corruption": "masking"}), (CAE, {})])
def test_autoencoders_overfit_and_sample(cls, kw):
    gm.manual_seed(0)
    model = cls(cls.Config(code_dim=8, hidden=64, chain_steps=3, **kw), INFO)
    x = _digits(16)
    before = model.nll((x,)).mean().item()
    losses = _fit(model, x, 120)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    assert model.nll((x,)).mean().item() < before
    assert model.nll_kind.startswith("reconstruction")
    s = model.sample(4, generator=gm.Generator().manual_seed(0))
    assert s.shape == (4, 1, 8, 8) and float(s.min()) >= 0 and float(s.max()) <= 1


def test_cae_penalty_estimates_the_jacobian_norm():
    gm.manual_seed(0)
    cae = CAE(CAE.Config(code_dim=3, hidden=8, penalty_samples=400), INFO).double()
    x = _digits(2).double().requires_grad_(True)
    h = cae.encode(x)
    est = cae.jacobian_penalty(x, h).item()
    exact = 0.0                                  # rows of the Jacobian, one backward each
    for b in range(2):
        for j in range(3):
            (g,) = autograd.grad(h[b, j], x, retain_graph=True)
            exact += float((g.numpy() ** 2).sum())
    assert est == pytest.approx(exact / 2, rel=0.15)
    # the penalty is differentiable (double backward reaches the encoder weights)
    w = cae.encoder[0].weight
    (gw,) = autograd.grad(cae.jacobian_penalty(x, cae.encode(x)), w)
    assert float(np.abs(gw.numpy()).sum()) > 0


@pytest.mark.parametrize("decoder", ["logistic", "gaussian"])
def test_conv_vae_trains_and_samples(decoder):
    gm.manual_seed(0)
    vae = VAE(VAE.Config(arch="conv", channels=8, latent_dim=4, decoder=decoder, iw_samples=4), INFO)
    x = _digits(16)
    losses = _fit(vae, x, 60)
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert vae.nll((x,), generator=gm.Generator().manual_seed(0)).shape == (16,)
    s = vae.sample(3, generator=gm.Generator().manual_seed(0))
    assert s.shape == (3, 1, 8, 8) and float(s.min()) >= 0 and float(s.max()) <= 1
    rgb = VAE(VAE.Config(arch="conv", channels=4, latent_dim=2), DataInfo((3, 12, 8), 256))
    assert rgb.loss((gm.rand(2, 3, 12, 8).mul(255).round().div(255),))[0].ndim == 0  # 256 levels
    with pytest.raises(ValueError, match="divisible by 4"):
        VAE(VAE.Config(arch="conv"), DataInfo((1, 6, 6), 17))
