"""gmcore.dream (score distillation, DreamFusion's core): the voxel renderer against hand
computations, its rotations, its gradients; the SDS gradient against its formula on a fixed
noise draw; ``gmcore dream`` end to end on a tiny run."""
import json
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.dream import (SDS, DiffusionPrior, ImageScene, VoxelScene, composite, dream, render, rotate,
                          rotation_matrices, rotation_matrix, sds_surrogate)
from gmcore.models.base import DataInfo
from gmcore.models.diffusion.ddpm import DDPM, DDPMConfig
from gmcore.testing import gradcheck
from helpers import perturbed

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = dict(channels=8, num_res_blocks=1, timesteps=20, attention_resolutions="", num_heads=1, dropout=0.0)


def _f64(a, requires_grad=False):
    return gm.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


# ---- the renderer ------------------------------------------------------------------------------

def test_one_opaque_voxel_shows_its_intensity_and_hides_what_is_behind():
    H = W = D = 3
    density = np.zeros((H, W, D))
    density[1, 2, 1] = 1e6                                  # opaque, in the middle of its ray
    intensity = np.full((1, H, W, D), 0.2)
    intensity[0, 1, 2, 1] = 0.9
    intensity[0, 1, 2, 2] = 0.1                             # behind it: hidden
    view = render(_f64(density), _f64(intensity), rotation_matrices(W, D, [0.0], like=_f64(0.0)),
                  background=0.4).numpy()[0, 0]
    want = np.full((H, W), 0.4)                             # empty rays show the background
    want[1, 2] = 0.9
    np.testing.assert_allclose(view, want, atol=1e-12)


def test_uniform_slab_follows_beer_lambert():
    # density s over D voxels of length delta: T = exp(-s D delta) reaches the background, and
    # the slab emits c (1 - T)
    s, c, bg, delta, D = 0.3, 0.8, 0.1, 0.5, 4
    got = composite(_f64(np.full((2, D), s)), _f64(np.full((2, D), c)), background=bg, delta=delta).numpy()
    T = math.exp(-s * D * delta)
    np.testing.assert_allclose(got, [c * (1 - T) + bg * T] * 2, rtol=1e-12)


def test_compositing_matches_a_hand_loop_front_to_back():
    rng = np.random.default_rng(0)
    sigma, color = rng.uniform(0, 2, (5, 6)), rng.uniform(0, 1, (5, 6))
    got = composite(_f64(sigma), _f64(color), background=0.3, delta=0.7).numpy()
    for r in range(5):
        T, pixel = 1.0, 0.0
        for k in range(6):                                 # front to back
            alpha = 1.0 - math.exp(-sigma[r, k] * 0.7)
            pixel += T * alpha * color[r, k]
            T *= 1.0 - alpha
        assert got[r] == pytest.approx(pixel + T * 0.3, rel=1e-12)


def test_rotations_by_0_and_90_degrees_are_exact():
    W = D = 4
    assert np.array_equal(rotation_matrix(W, D, 0.0), np.eye(W * D))
    vol = np.random.default_rng(1).uniform(size=(3, W, D))                 # (rows, columns, depth)
    rotated = rotate(_f64(vol), rotation_matrices(W, D, [90.0, -90.0, 180.0], like=_f64(0.0))).numpy()
    # +90: the front face (depth 0) turns to +columns; out[x, z] = in[z, W-1-x]
    np.testing.assert_array_equal(rotated[0], np.stack([plane.T[::-1] for plane in vol]))
    np.testing.assert_array_equal(rotated[1], np.stack([plane[::-1].T for plane in vol]))   # -90
    np.testing.assert_array_equal(rotated[2], vol[:, ::-1, ::-1])                         # 180
    m = rotation_matrix(W, D, 90.0)
    assert set(np.unique(m)) == {0.0, 1.0} and (m.sum(0) == 1).all() and (m.sum(1) == 1).all()


def test_a_quarter_turn_shows_the_side_view():
    # seen from +90 degrees, a voxel at the front (depth 0) of column 1 sits at column W-1 (the
    # right edge), and the column order along the ray becomes the depth order
    W = D = 3
    density = np.zeros((1, W, D))
    density[0, 1, 0] = 1e6
    intensity = np.full((1, 1, W, D), 0.5)
    view = render(_f64(density), _f64(intensity), rotation_matrices(W, D, [90.0], like=_f64(0.0))).numpy()
    np.testing.assert_allclose(view[0, 0, 0], [0.0, 0.0, 0.5], atol=1e-12)


def test_small_rotations_keep_an_interior_plane_and_rows_apart():
    m = rotation_matrix(8, 8, 17.0)
    assert np.all(m >= 0) and np.all(m.sum(1) <= 1 + 1e-12)
    # bilinear weights of a point well inside the grid sum to one
    centre = 3 * 8 + 4
    assert m[centre].sum() == pytest.approx(1.0, abs=1e-12)


def test_renderer_gradients_by_gradcheck():
    rng = np.random.default_rng(2)
    density = _f64(rng.uniform(0.1, 1.5, (2, 3, 3)), requires_grad=True)
    intensity = _f64(rng.uniform(0, 1, (1, 2, 3, 3)), requires_grad=True)
    mats = rotation_matrices(3, 3, [23.0, -11.0], like=_f64(0.0))
    assert gradcheck(lambda d, c: render(d, c, mats, background=0.2, delta=0.8), (density, intensity))


# ---- score distillation ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prior_model():
    gm.manual_seed(0)
    return perturbed(DDPM(DDPMConfig(**TINY, class_cond=True), DIGITS))


@pytest.mark.parametrize("representation", ["image", "voxels"])
def test_sds_gradient_equals_the_formula_on_a_fixed_draw(prior_model, representation):
    w_guid, label = 3.0, 7
    prior = DiffusionPrior(prior_model, label=label, guidance=w_guid)
    sds = SDS(prior, weighting="sigma2")
    gen = gm.Generator().manual_seed(3)
    scene = (ImageScene if representation == "image" else VoxelScene)((1, 8, 8), generator=gen)
    az = np.array([-12.0, 25.0])
    t = np.array([4, 15])
    noise = gm.randn(2, 1, 8, 8, generator=gen)
    x = scene(az) * 2.0 - 1.0
    surrogate, _ = sds.loss(x, t=t, noise=noise)
    surrogate.backward()

    # the formula, every piece computed separately: x_t, eps_hat = (1 + w) eps(x_t, y) - w eps(x_t)
    abar = prior_model.schedule.alphas_cumprod[t].reshape(2, 1, 1, 1)
    x_np = x.detach().numpy().astype(np.float64)
    x_t = gm.tensor((np.sqrt(abar) * x_np + np.sqrt(1 - abar) * noise.numpy()).astype(np.float32))
    with gm.no_grad():
        tt = gm.tensor(t)
        cond = prior_model.net(x_t, tt, gm.full((2,), label).long()).numpy()
        uncond = prior_model.net(x_t, tt, gm.full((2,), 10).long()).numpy()
    eps_hat = (1 + w_guid) * cond - w_guid * uncond
    g_x = (1.0 - abar) * (eps_hat - noise.numpy())          # w(t) (eps_hat - eps), w = sigma_t^2
    if representation == "image":
        s = 1.0 / (1.0 + np.exp(-scene.logit.detach().numpy()))
        want = {"logit": (g_x * 2.0 * s * (1 - s)).sum(0)}   # x = 2 sigmoid(logit) - 1, the same each view
    else:
        fresh = scene(az) * 2.0 - 1.0                         # dx/dtheta^T g_x by the engine's vjp
        grads = gm.autograd.grad(fresh, [scene.density_logit, scene.intensity_logit],
                                 grad_outputs=gm.tensor(g_x.astype(np.float32)))
        want = {"density_logit": grads[0].numpy(), "intensity_logit": grads[1].numpy()}
    for name, p in scene.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), want[name], rtol=2e-4, atol=1e-6)
    # the prior is frozen: no gradient ever reaches the U-Net
    assert all(p.grad is None and not p.requires_grad for p in prior_model.parameters())


def test_sds_surrogate_gradient_is_the_weighted_residual():
    rng = np.random.default_rng(4)
    x = gm.tensor(rng.normal(size=(3, 2)), requires_grad=True)
    eps_hat, noise, w = (gm.tensor(rng.normal(size=s)) for s in ((3, 2), (3, 2), (3,)))
    sds_surrogate(x, eps_hat, noise, w).backward()
    np.testing.assert_allclose(x.grad.numpy(), w.numpy()[:, None] * (eps_hat.numpy() - noise.numpy()))


def test_prior_refuses_what_it_cannot_distill(prior_model):
    with pytest.raises(ValueError, match="one of them"):
        DiffusionPrior(prior_model)
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        DiffusionPrior(prior_model, label=10)
    with pytest.raises(ValueError, match="text-conditional"):
        DiffusionPrior(prior_model, prompt="a seven")
    with pytest.raises(ValueError, match="class-conditional"):
        DiffusionPrior(DDPM(DDPMConfig(**TINY), DIGITS), label=1)


def test_a_text_conditional_prior_reads_prompts_and_classes():
    glide = pytest.importorskip("gmcore.models.diffusion.glide_core")
    gm.manual_seed(0)
    config = glide.GlideCoreConfig(**{**TINY, "num_heads": 2}, text_width=8, text_heads=2)
    m = perturbed(glide.GlideCore(config, DIGITS))
    x_t, t = gm.randn(2, 1, 8, 8, generator=gm.Generator().manual_seed(5)), gm.tensor([3, 17])
    with pytest.raises(ValueError, match="unknown word 'eleven'"):
        DiffusionPrior(m, prompt="a handwritten eleven")
    by_prompt = DiffusionPrior(m, prompt="a drawing of the digit seven", guidance=2.0)
    with gm.no_grad():
        want = m.denoiser(m.tokens(["a drawing of the digit seven"] * 2), 2.0)(x_t, t).numpy()
    np.testing.assert_allclose(by_prompt.eps(x_t, t).numpy(), want, rtol=1e-5, atol=1e-6)
    by_class = DiffusionPrior(m, label=7, guidance=2.0)       # digit 7's training captions in turn
    with gm.no_grad():
        want = m.denoiser(m.tokens(["seven", "7"]), 2.0)(x_t, t).numpy()
    np.testing.assert_allclose(by_class.eps(x_t, t).numpy(), want, rtol=1e-5, atol=1e-6)


def test_dream_reduces_the_sds_residual_of_a_tiny_prior(prior_model):
    # a few steps move the scene: its views change and stay in the data's range
    gen = gm.Generator().manual_seed(0)
    scene, history = dream(DiffusionPrior(prior_model, label=2, guidance=2.0), steps=5, lr=0.1, generator=gen,
                           log_every=5, log=None)
    v = scene(np.array([0.0])).detach().numpy()
    assert len(history) == 1 and history[0]["step"] == 5
    assert v.min() >= 0 and v.max() <= 1
    untouched = VoxelScene((1, 8, 8), generator=gm.Generator().manual_seed(0))(np.array([0.0]))
    assert np.abs(v - untouched.detach().numpy()).max() > 1e-3


# ---- gmcore dream --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dream") / "run"
    flags = ["--channels", "8", "--num-res-blocks", "1", "--timesteps", "20", "--attention-resolutions", "",
             "--num-heads", "1", "--timesteps-subsample", "10", "--no-progress", "--batch-size", "16",
             "--num-samples", "4", "--no-sample-quality", "--steps", "2", "--class-cond"]
    with pytest.MonkeyPatch.context() as mp:       # a prior for the CLI, not a run to look at
        mp.setattr(DDPM, "save_pictures", lambda self, *a, **k: {})
        assert cli.main(["train", "ddpm", "--out", str(out), *flags]) == 0
    return out


@pytest.mark.parametrize("representation", ["voxels", "image"])
def test_gmcore_dream_writes_views_gif_and_the_class_rate(run, tmp_path, representation):
    from PIL import Image

    out = tmp_path / representation
    assert cli.main(["dream", str(run), "--class", "3", "--steps", "3", "--out", str(out), "--log-every", "0",
                     "--representation", representation, "--eval-views", "5"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["class"] == 3 and m["representation"] == representation and m["background"] == 0.0
    assert m["azimuths"] == [-30.0, -15.0, 0.0, 15.0, 30.0]
    assert len(m["predicted"]) == 5 and m["class_rate"] == np.mean(np.array(m["predicted"]) == 3)
    strip = Image.open(out / "views.png")
    assert strip.size[0] > 4 * strip.size[1]                   # one row of 5 views
    gif = Image.open(out / "views.gif")
    # there and back, 5 + 3 frames (Pillow merges equal frames: an image looks the same from everywhere)
    assert gif.n_frames == (8 if representation == "voxels" else 1)
    assert set(np.load(out / "scene.npz").files) >= {"azimuths"}


def test_gmcore_dream_refuses_bad_requests(run, tmp_path, capsys):
    assert cli.main(["dream", str(run), "--class", "11", "--out", str(tmp_path / "a")]) == 2
    assert "[0, 9]" in capsys.readouterr().err
    assert cli.main(["dream", str(run), "--prompt", "a seven", "--out", str(tmp_path / "b")]) == 2
    assert "text-conditional" in capsys.readouterr().err
    assert cli.main(["dream", str(run), "--class", "1", "--t-min", "0.9", "--t-max", "0.5",
                     "--out", str(tmp_path / "c")]) == 2
    assert cli.main(["dream", str(tmp_path / "nothing"), "--class", "1", "--out", str(tmp_path / "d")]) == 1
    assert "no run found" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
