"""Flow posteriors of the VAE (``--posterior-flow iaf|planar|radial``): the transforms' inverses
and log-determinants, log q(z_K|x) against the change-of-variables density computed from the
autodiff Jacobian, the IWAE bound against a brute-force importance-sampling estimate on the same
draws, k = 1 against the ELBO, and short CLI runs (with a bit-exact resume)."""
import json

import numpy as np
import pytest
from flow_checks import check_invertible, check_logdet, jacobian_logdets

import gmcore as gm
from gmcore.models.base import DataInfo
from gmcore.models.latent import VAE
from gmcore.models.latent.vae import AmortisedPlanar, AmortisedRadial
from gmcore.nn.flows import FlowSequential, IAFStep, iaf_flow

FLOWS = ["iaf", "planar", "radial"]


def _randn(*shape, seed=0, dtype=gm.float64):
    return gm.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


# ---- the transforms -------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
def test_iaf_step_inverts_and_its_logdet_is_the_jacobians(reverse):
    gm.manual_seed(0)
    step = IAFStep(4, hidden=16, context_dim=3, layers=2, reverse=reverse)
    check_invertible(step, _randn(6, 4, dtype=gm.float32), _randn(6, 3, seed=1, dtype=gm.float32))
    step.double()
    check_logdet(step, _randn(3, 4, seed=2), _randn(3, 3, seed=3))


def test_iaf_step_is_autoregressive_in_its_ordering():
    gm.manual_seed(0)
    for reverse in (False, True):
        step = IAFStep(5, hidden=32, reverse=reverse).double()
        z = _randn(2, 5)
        with gm.no_grad():
            y, _ = step(z)
        for j in range(5):
            bumped = z.clone()
            bumped.data[:, j] += 1.0
            with gm.no_grad():
                y2, _ = step(bumped)
            changed = np.abs(y2.numpy() - y.numpy()).max(0) > 0
            before = np.arange(5) < j if not reverse else np.arange(5) > j   # earlier in the order
            assert not changed[before].any() and changed[j]


def test_iaf_flow_reverses_the_order_and_inverts():
    gm.manual_seed(0)
    flow = iaf_flow(3, steps=3, hidden=8, context_dim=2)
    assert [f.order.tolist() for f in flow] == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]
    check_invertible(flow, _randn(5, 3, dtype=gm.float32), _randn(5, 2, seed=1, dtype=gm.float32))
    flow.double()
    check_logdet(flow, _randn(2, 3, seed=4), _randn(2, 2, seed=5))


def test_iaf_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        IAFStep(1)
    step = IAFStep(3, hidden=4, context_dim=2)
    with pytest.raises(ValueError, match=r"shape \(4, 2\)"):
        step(gm.randn(4, 3))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        step(gm.randn(4, 5), gm.randn(4, 2))
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        VAE(VAE.Config(latent_dim=1, posterior_flow="iaf"), DataInfo((1, 8, 8), 17))


@pytest.mark.parametrize("cls,size", [(AmortisedPlanar, 2 * 3 + 1), (AmortisedRadial, 3 + 2)])
def test_amortised_planar_radial_logdets(cls, size):
    # two steps with their own slices of a per-example context: each example its own flow
    flow = FlowSequential(cls(3, 0), cls(3, size))
    ctx = _randn(4, 2 * size, seed=7)
    check_logdet(flow, _randn(4, 3, seed=8), ctx)


def test_amortised_steps_are_the_planar_and_radial_layers_per_example():
    from gmcore.nn.flows.planar import Planar
    from gmcore.nn.flows.radial import Radial

    gm.manual_seed(3)
    z = _randn(5, 3, seed=9)
    for layer, step, params in [(Planar(3), AmortisedPlanar(3, 0), ("u", "w", "b")),
                                (Radial(3), AmortisedRadial(3, 0), ("z0", "a", "b"))]:
        layer.double()
        row = gm.cat([getattr(layer, p).detach() for p in params]).reshape(1, -1)
        with gm.no_grad():
            y, ld = layer(z)
            y2, ld2 = step(z, row.expand(5, row.shape[1]))
        np.testing.assert_allclose(y2.numpy(), y.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ld2.numpy(), ld.numpy(), rtol=1e-12, atol=1e-12)


# ---- the VAE with a flow posterior ---------------------------------------------------------

def _tiny_vae(flow, k=4):
    gm.manual_seed(0)
    cfg = VAE.Config(latent_dim=3, hidden=8, layers=1, mixtures=1, iw_samples=k,
                     posterior_flow=flow, flow_steps=2, flow_hidden=8)
    vae = VAE(cfg, DataInfo((1, 2, 2), 17)).double()
    vae.eval()
    # an untrained encoder's outputs are small, leaving planar/radial steps near the identity:
    # random output biases make every step (and the Gaussian) bend for real
    head = vae.encoder[-1].bias
    head.data[...] = np.random.default_rng(2).standard_normal(head.shape)
    x = gm.tensor(np.random.default_rng(1).integers(0, 17, (3, 1, 2, 2)) / 16.0)
    return vae, x


@pytest.mark.parametrize("flow", FLOWS)
def test_iwae_bound_equals_brute_force_importance_sampling(flow):
    """The bound from ``nll`` equals an estimate built example by example from the same draws,
    with log q(z_K|x) = log N(eps) - log|det dz_K/deps| from the autodiff Jacobian of the whole
    map eps -> z_K (the Gaussian's scale and every flow step): change of variables, computed
    without any of the flow's own log-determinants."""
    vae, x = _tiny_vae(flow)
    k, n, L = 4, x.shape[0], 3
    with gm.no_grad():
        bound = vae.nll((x,), generator=gm.Generator().manual_seed(9)).numpy()
    eps = gm.randn(k, n, L, generator=gm.Generator().manual_seed(9), dtype=gm.float64)
    with gm.no_grad():
        mu, log_var, ctx = vae._encode(x)
        _, z_all, log_q0, logdet = vae._posterior(mu, log_var, ctx, eps)
        log_q_model = log_q0 - logdet
    params = gm.cat([mu, log_var, ctx], 1).detach()            # per-example inputs of the map

    def eps_to_z(e, p):                                         # (1, L), (1, P) -> z_K
        m, lv, c = p[:, :L], p[:, L:2 * L], p[:, 2 * L:]
        z, _ = vae.posterior(m + (0.5 * lv).exp() * e, c)
        return z, None

    log_w = np.zeros((k, n))
    for j in range(k):
        e = eps[j].detach()
        log_det = jacobian_logdets(eps_to_z, e, params)        # (n,)
        e_np = e.numpy()
        log_q = (-0.5 * e_np ** 2 - 0.5 * np.log(2 * np.pi)).sum(1) - log_det
        np.testing.assert_allclose(log_q_model[j].numpy(), log_q, rtol=1e-9, atol=1e-9)
        z = z_all[j]
        log_pz = (-0.5 * z.numpy() ** 2 - 0.5 * np.log(2 * np.pi)).sum(1)
        with gm.no_grad():
            log_px = vae._log_px(vae._decoder_out(z), x, None).numpy()
        log_w[j] = log_px + log_pz - log_q
    brute = -(np.logaddexp.reduce(log_w, 0) - np.log(k))
    np.testing.assert_allclose(bound, brute, rtol=1e-9, atol=1e-9)


def _log_normal(z):
    return (-0.5 * z * z - 0.5 * np.log(2 * np.pi)).sum(-1)


@pytest.mark.parametrize("flow", FLOWS)
def test_iwae_with_one_sample_is_the_elbo_estimate(flow):
    vae, x = _tiny_vae(flow, k=1)
    gm.manual_seed(5)                       # loss draws eps from the global stream ...
    _, logs = vae.loss((x,))
    with gm.no_grad():
        nll = vae.nll((x,), generator=gm.Generator().manual_seed(5)).numpy()   # ... nll from this
        eps = gm.randn(3, 3, generator=gm.Generator().manual_seed(5), dtype=gm.float64)
        mu, log_var, ctx = vae._encode(x)
        _, zk, log_q0, logdet = vae._posterior(mu, log_var, ctx, eps)
        log_px = vae._log_px(vae._decoder_out(zk), x, None).numpy()
        sample_kl = (log_q0 - logdet).numpy() - _log_normal(zk.numpy())
    np.testing.assert_allclose(nll, -log_px + sample_kl, rtol=1e-12)   # -(log p(x,z) - log q)
    assert logs["recon"] == pytest.approx(-log_px.mean(), rel=1e-12)    # the loss used that draw


@pytest.mark.parametrize("flow", FLOWS)
def test_training_kl_estimate_is_unbiased(flow):
    """The loss's KL (closed-form Gaussian KL + a sampled flow part) minus the plain one-sample
    estimate log q(z_K|x) - log p(z_K) is, draw by draw, KL_gauss - (log N(z0) - log p(z0)): the
    flow cancels, and that difference averages to zero."""
    vae, x = _tiny_vae(flow)
    n = 20000
    with gm.no_grad():
        mu, log_var, ctx = vae._encode(x[:1])
        eps = gm.randn(n, 1, 3, generator=gm.Generator().manual_seed(2), dtype=gm.float64)
        z0, zk, log_q0, logdet = vae._posterior(mu, log_var, ctx, eps)
        ours = vae._flow_kl(mu, log_var, z0, zk, logdet).numpy().reshape(-1)
        plain = (log_q0 - logdet).numpy().reshape(-1) - _log_normal(zk.numpy()).reshape(-1)
    m, v = mu.numpy()[0], np.exp(log_var.numpy()[0])
    kl_gauss = 0.5 * (m * m + v - 1.0 - np.log(v)).sum()
    gauss_sample = log_q0.numpy().reshape(-1) - _log_normal(z0.numpy()).reshape(-1)
    np.testing.assert_allclose(ours - plain, kl_gauss - gauss_sample, rtol=1e-9, atol=1e-9)
    assert abs(gauss_sample.mean() - kl_gauss) < 4 * gauss_sample.std() / np.sqrt(n)


def test_plain_vae_builds_no_flow():
    vae = VAE(VAE.Config(latent_dim=4, hidden=8), DataInfo((1, 8, 8), 17))
    assert vae.posterior is None and vae.context_size == 0
    assert not any("posterior" in k for k in vae.state_dict())
    assert vae.encoder[-1].out_features == 8
    assert vae.nll_kind == "IWAE bound (k=64)"


def test_flow_free_bits_floor_the_total_kl():
    vae, x = _tiny_vae("iaf")
    vae.config.free_bits = 100.0            # far above any KL here: the term is 3 * 100
    loss, logs = vae.loss((x,))
    assert loss.item() == pytest.approx(logs["recon"] + 300.0, rel=1e-12)


# ---- the CLI ----------------------------------------------------------------------------------

def _cli_run(out, flow, steps, *extra):
    from gmcore import train
    from gmcore.cli_train import parse_train_args

    name, tcfg, mcfg = parse_train_args("vae", [
        "--out", str(out), "--steps", str(steps), "--batch-size", "16", "--no-progress",
        "--no-sample-quality", "--log-every", "1", "--lr-schedule", "constant", "--warmup", "0",
        "--hidden", "32", "--latent-dim", "4", "--iw-samples", "2", "--posterior-flow", flow,
        "--flow-steps", "2", "--flow-hidden", "16", *extra])
    return train.train(name, tcfg, mcfg, log=lambda *a: None)


@pytest.mark.parametrize("flow", FLOWS)
def test_cli_trains_each_posterior_flow(tmp_path, flow):
    pytest.importorskip("safetensors")
    _cli_run(tmp_path / "run", flow, 4, "--eval-every", "2", "--num-samples", "4")
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert final["step"] == 4 and np.isfinite(final["test_bits_per_dim"])
    assert f"{flow} posterior (2 steps)" in final["nll_kind"]
    assert 0 < final["test_bits_per_dim"] < 10
    assert (tmp_path / "run" / "samples.png").exists()


def test_flow_vae_resumes_bit_for_bit(tmp_path):
    pytest.importorskip("safetensors")

    def losses(out, steps, *extra):
        _cli_run(out, "iaf", steps, "--eval-every", "0", "--num-samples", "0", *extra)
        rows = (out / "metrics.jsonl").read_text().splitlines()
        return [json.loads(r)["loss"] for r in rows if '"train"' in r]

    full = losses(tmp_path / "full", 5)
    losses(tmp_path / "part", 3)
    assert losses(tmp_path / "part", 5, "--resume") == full
