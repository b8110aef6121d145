"""latent-diffusion (gmcore.models.diffusion.latent_diffusion): the "continuous" latents of the
vae, vqvae and vqvae2 bases (encode -> decode goes through the codes for the VQ ones), the
latent scale set once from the first training batch and kept in the checkpoint, the MLP
denoiser of vector latents, unclamped sampling in latent space, clear errors for a wrong base,
and a CLI run on a tiny vqvae run with an exact crash-resume."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli, train
from gmcore.cli_train import parse_train_args
from gmcore.models import stages
from gmcore.models.base import DataInfo
from gmcore.models.diffusion.latent_diffusion import LatentDiffusion, MLPDenoiser
from gmcore.models.latent.vae import VAE
from gmcore.models.latent.vq_prior import VQPrior
from gmcore.models.latent.vqvae import VQVAE
from gmcore.models.latent.vqvae2 import VQVAE2
from resume_checks import check_crash_resume

pytest.importorskip("safetensors")

INFO = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY_VQ = dict(codes=8, code_dim=4, hidden=8, res_hidden=4, res_blocks=1, downsample=1)
TINY_LD = dict(timesteps=20, channels=8, num_res_blocks=1, num_heads=1, attention_resolutions="2",
               dropout=0.0, mlp_width=16, mlp_blocks=1)
TINY_VQ_FLAGS = ["--codes", "8", "--code-dim", "4", "--hidden", "8", "--res-hidden", "4", "--res-blocks", "1",
                 "--downsample", "1"]
TINY_LD_FLAGS = ["--timesteps", "20", "--channels", "8", "--num-res-blocks", "1", "--num-heads", "1",
                 "--dropout", "0"]
FAST = ["--no-progress", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality"]


def _digits(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = gm.tensor((rng.integers(0, 17, (n, 1, 8, 8)) / 16).astype(np.float32))
    return x, gm.tensor(rng.integers(0, 10, n))


def _vqvae():
    gm.manual_seed(0)
    base = VQVAE(VQVAE.Config(**TINY_VQ), INFO)
    base.loss(_digits(32))          # k-means++ seeding of the codebook from a batch
    return base.eval()


def test_vq_bases_decode_continuous_latents_through_their_codes():
    x, _ = _digits()
    base = _vqvae()
    with gm.no_grad():
        z = base.encode_latents(x)
        assert tuple(z.shape) == (6, *base.continuous_latent_shape) == (6, 4, 4, 4)
        np.testing.assert_array_equal(base.latent_codes(z)[0].numpy(), base.encode(x)[0].numpy())
        np.testing.assert_array_equal(base.decode_latents(z).numpy(), base.decode(base.encode(x)).numpy())
    gm.manual_seed(0)
    small = dict(hidden=8, res_hidden=4, res_blocks=1)
    two = VQVAE2(VQVAE2.Config(codes_top=8, codes_bottom=16, code_dim=8, **small), INFO).eval()
    with gm.no_grad():
        z = two.encode_latents(x)
        assert tuple(z.shape) == (6, *two.continuous_latent_shape) == (6, 10, 4, 4)
        for mine, theirs in zip(two.latent_codes(z), two.encode(x)):   # top and bottom, losslessly
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert stages.latent_kinds(base) == ("vq-codes", "continuous") and base.latent_kind == "vq-codes"
    odd = VQVAE2(VQVAE2.Config(codes_top=8, codes_bottom=8, code_dim=6, **small), INFO)
    with pytest.raises(ValueError, match="code-dim divisible by 4"):
        odd.encode_latents(x)


def test_vae_latents_are_the_posterior_mean():
    gm.manual_seed(0)
    vae = VAE(VAE.Config(latent_dim=3, hidden=16), INFO).eval()
    x, _ = _digits()
    with gm.no_grad():
        np.testing.assert_array_equal(vae.encode_latents(x).numpy(), vae.encode(x)[0].numpy())
        img = vae.decode_latents(gm.zeros(2, 3))
    assert vae.continuous_latent_shape == (3,) and tuple(img.shape) == (2, 1, 8, 8)
    assert stages.latent_kinds(vae) == ("continuous",)


def test_vq_prior_still_takes_a_vqvae_and_refuses_a_vae():
    VQPrior(VQPrior.Config(channels=8, layers=2, heads=2, out_hidden=8), INFO, base=_vqvae())
    with pytest.raises(ValueError, match="'vq-codes' latents; a .* model has latents of kind 'continuous'"):
        VQPrior(VQPrior.Config(), INFO, base=VAE(VAE.Config(latent_dim=2, hidden=8), INFO))


def test_mlp_denoiser_conditions_on_time_and_label():
    gm.manual_seed(0)
    net = MLPDenoiser(5, 10, width=16, blocks=2, num_classes=3)
    x = gm.randn(4, 5)
    assert float(net(x, gm.tensor([0, 1, 2, 3])).abs().max()) == 0.0        # zero-initialised output
    for p in net.parameters():
        p.data[...] = p.data + 0.3 * np.random.default_rng(0).standard_normal(p.shape).astype(np.float32)
    with gm.no_grad():
        t = gm.tensor([5, 5, 5, 5])
        base = net(x, t, gm.tensor([0, 0, 0, 0])).numpy()
        assert base.shape == (4, 10)
        assert not np.allclose(base, net(x, gm.tensor([6, 6, 6, 6]), gm.tensor([0, 0, 0, 0])).numpy())
        assert not np.allclose(base, net(x, t, gm.tensor([1, 1, 1, 1])).numpy())
        np.testing.assert_array_equal(net(x, t).numpy(), net(x, t, gm.full((4,), 3).long()).numpy())
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        net(gm.randn(4, 6), t)


def test_latent_scale_is_set_once_from_the_first_training_batch():
    base = _vqvae()
    gm.manual_seed(0)
    ld = LatentDiffusion(LatentDiffusion.Config(**TINY_LD), INFO, base=base)
    assert ld.diffusion_shape == (4, 4, 4) and float(ld.latent_scale) == 0.0
    x, y = _digits(16)
    ld.eval()
    ld.loss((x, y))                                   # not a training step: the scale stays unset
    assert float(ld.latent_scale) == 0.0
    ld.train()
    with gm.no_grad():
        z = base.encode_latents(x).numpy().astype(np.float64)
    ld.loss((x, y, gm.tensor(z.astype(np.float32))))  # a batch that carries its latents
    np.testing.assert_allclose(float(ld.latent_scale), 1.0 / z.std(), rtol=1e-5)
    first = float(ld.latent_scale)
    ld.loss(_digits(16, seed=1))                      # later batches do not move it
    assert float(ld.latent_scale) == first
    with gm.no_grad():                                # images -> scaled latents -> images
        np.testing.assert_allclose(ld.to_diffusion(x).numpy(), z * first, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ld.from_diffusion(ld.to_diffusion(x)).numpy(),
                                      base.decode_latents(base.encode_latents(x)).numpy())
    with pytest.raises(ValueError, match="latents must be"):
        ld.loss((x, y, gm.zeros(16, 3)))


def test_sampling_runs_in_latent_space_without_clamping(monkeypatch):
    gm.manual_seed(0)
    info = DataInfo((1, 8, 8), 17, "digits")
    vae = VAE(VAE.Config(latent_dim=3, hidden=16), info)
    ld = LatentDiffusion(LatentDiffusion.Config(**TINY_LD), info, base=vae).eval()
    assert isinstance(ld.net, MLPDenoiser)
    ld.latent_scale.data[...] = 0.25
    seen = []
    monkeypatch.setattr(vae, "decode_latents", lambda z: (seen.append(z.numpy()), vae.decode_mean(z))[1])
    # a denoiser that predicts x0 = 40 everywhere (eps from it): unclamped, x0 stays 40, 40 / 0.25 unscaled
    ld.denoiser = lambda labels=None, guidance=0.0: (
        lambda x, t: ld.diffusion.eps_from_x0(x, t, gm.full(tuple(x.shape), 40.0)))
    with gm.no_grad():
        img = ld.sample(3, generator=gm.Generator().manual_seed(0), steps=5)
    assert tuple(img.shape) == (3, 1, 8, 8) and 0 <= float(img.min()) and float(img.max()) <= 1
    np.testing.assert_allclose(seen[-1], 160.0, rtol=1e-3)


def test_a_base_without_continuous_latents_is_refused():
    with pytest.raises(ValueError, match="'continuous' latents; a .* model has no latents"):
        LatentDiffusion(LatentDiffusion.Config(**TINY_LD), INFO, base=gm.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ldvq") / "vqvae"
    name, tcfg, mcfg = parse_train_args("vqvae", ["--out", str(out), "--steps", "3", "--batch-size", "32",
                                                  "--eval-every", "0", "--num-samples", "0",
                                                  "--no-sample-quality", "--no-progress", "--ema", "0.9",
                                                  *TINY_VQ_FLAGS])
    train.train(name, tcfg, mcfg, log=lambda *a: None)
    return out


def test_a_cli_run_samples_decoded_images(vq_run, tmp_path):
    out = tmp_path / "ld"
    assert cli.main(["train", "latent-diffusion", "--base-run", str(vq_run), "--out", str(out),
                     "--steps", "3", *FAST, *TINY_LD_FLAGS, "--class-cond"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nll_kind"] == "none" and (out / "chain.png").exists() and (out / "guidance.png").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["base_run"]["model_name"] == "vqvae" and cfg["model_config"]["attention_resolutions"] == "2"
    assert cfg["model_config"]["predict"] == "v"                           # the model's default
    state = gm.io.load_checkpoint(out / "last")
    assert float(state["model"]["latent_scale"].numpy()) > 0                  # kept for sampling
    npy = tmp_path / "s.npy"
    assert cli.main(["sample", str(out), "--n", "3", "--steps", "4", "--label", "2", "--guidance", "2",
                     "--out", str(npy)]) == 0
    s = np.load(npy)
    assert s.shape == (3, 1, 8, 8) and s.min() >= 0 and s.max() <= 1


def test_resume_is_bit_exact(vq_run, tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "latent-diffusion", LatentDiffusion,
                       ["--base-run", str(vq_run), *FAST, "--num-samples", "0", "--eval-every", "0",
                        *TINY_LD_FLAGS], crash_at=2, ckpt_every=1, steps=3)
    full = gm.io.load_checkpoint(tmp_path / "full" / "last")["model"]["latent_scale"].numpy()
    part = gm.io.load_checkpoint(tmp_path / "part" / "last")["model"]["latent_scale"].numpy()
    assert full == part and full > 0
