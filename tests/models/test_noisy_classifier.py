"""The ``noisy-classifier`` second stage (gmcore.models.diffusion.noisy_classifier) and classifier
guidance in ``ddpm``: cond_fn is grad_x log p(y | x_t, t), guidance moves samples towards their
label, a classifier of another schedule is refused, the accuracy falls with t, the CLI path."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.models.base import DataInfo
from gmcore.models.diffusion.ddpm import DDPM, DDPMConfig
from gmcore.models.diffusion.noisy_classifier import (NoisyClassifier, NoisyClassifierConfig,
                                                      classifier_guidance)
from resume_checks import check_crash_resume
from helpers import perturbed

pytest.importorskip("safetensors")

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY_DDPM = dict(channels=8, num_res_blocks=1, timesteps=20, attention_resolutions="", num_heads=1, dropout=0.0,
                 schedule="cosine")
TINY_CLS = dict(channels=8, num_res_blocks=1, attention_resolutions="", num_heads=2, dropout=0.0)
# T = 8 keeps the fixture's end-of-run guided sampling short (8 steps a sample)
DDPM_FLAGS = ["--channels", "8", "--num-res-blocks", "1", "--timesteps", "8", "--attention-resolutions", "",
              "--num-heads", "1", "--timesteps-subsample", "4", "--schedule", "cosine"]
CLS_FLAGS = ["--channels", "8", "--num-res-blocks", "1", "--attention-resolutions", "", "--num-heads", "2",
             "--dropout", "0"]
FAST = ["--no-progress", "--log-every", "1", "--num-samples", "4", "--no-sample-quality"]


def _classifier(info=DIGITS, **ddpm):
    base = DDPM(DDPMConfig(**{**TINY_DDPM, **ddpm}), info)
    return NoisyClassifier(NoisyClassifierConfig(**TINY_CLS), info, base=base)


def test_cond_fn_is_the_gradient_of_log_p_of_the_label():
    clf = perturbed(_classifier()).double()
    y, t = gm.tensor([3, 7]), gm.tensor([4, 15])
    x = gm.randn(2, 1, 8, 8, dtype="float64", generator=gm.Generator().manual_seed(1))
    v = gm.randn(2, 1, 8, 8, dtype="float64", generator=gm.Generator().manual_seed(2))
    with gm.no_grad():     # as inside a sampler: cond_fn turns grad mode on itself
        g = clf.cond_fn(y)(x, t)

        def log_p(z):
            return clf.logits(z, t).log_softmax(1).gather(1, y.reshape(-1, 1)).sum()
        h = 1e-5
        fd = (log_p(x + v * h) - log_p(x - v * h)).item() / (2 * h)
    assert g.shape == x.shape and float(g.abs().max()) > 1e-3
    assert abs(float((g * v).sum()) - fd) < 1e-6 * max(1.0, abs(fd))


def test_guidance_moves_samples_towards_their_label():
    # A toy with a known classifier: class 1 = bright, class 0 = dark (the sign of the mean of
    # x_t). The base's untrained U-Net predicts eps = 0, so unguided samples are a coin flip.
    info = DataInfo((1, 8, 8), 17, "toy", num_classes=2)
    clf = _classifier(info).eval()
    clf.logits = lambda x, t: gm.stack([-x.mean((1, 2, 3)), x.mean((1, 2, 3))], 1) * 20.0
    labels = np.arange(40) % 2

    def accuracy(scale):
        with gm.no_grad():
            x = clf.base.sample(40, generator=gm.Generator().manual_seed(0), steps=10, guidance=scale,
                                classifier=clf)
        return float(((x.mean((1, 2, 3)).numpy() > 0.5) == labels).mean())
    unguided, guided = accuracy(0.0), accuracy(1.0)
    assert 0.2 < unguided < 0.8 and guided >= 0.95


def test_a_classifier_of_another_schedule_is_refused():
    clf = _classifier()
    for other in (dict(schedule="linear"), dict(timesteps=30)):
        ddpm = DDPM(DDPMConfig(**{**TINY_DDPM, **other}), DIGITS)
        with pytest.raises(ValueError, match="another noise schedule"):
            ddpm.sample(2, steps=5, guidance=1.0, label=3, classifier=clf)
    ddpm = DDPM(DDPMConfig(**TINY_DDPM), DIGITS)
    with pytest.raises(ValueError, match="--label must be in"):
        classifier_guidance(ddpm, clf, 2, 10, 1.0)
    with pytest.raises(ValueError, match="give --label"):
        ddpm.edit(gm.rand(2, 1, 8, 8), 0.5, steps=5, guidance=1.0, classifier=clf)


def test_it_needs_a_diffusion_base_and_labels():
    with pytest.raises(ValueError, match="second stage"):
        NoisyClassifier(NoisyClassifierConfig(**TINY_CLS), DIGITS)
    from gmcore.models.latent.vqvae import VQVAE
    vq = VQVAE(VQVAE.Config(codes=8, code_dim=4, hidden=8, res_hidden=4, res_blocks=1, downsample=1), DIGITS)
    with pytest.raises(ValueError, match="'diffusion'"):
        NoisyClassifier(NoisyClassifierConfig(**TINY_CLS), DIGITS, base=vq)
    with pytest.raises(ValueError, match="class labels"):
        _classifier(DataInfo((1, 8, 8), 17, "nolabels"))

    class Unguidable(DDPM):      # a diffusion whose sampler has no guidance hook (bit-diffusion's)
        def sample(self, n, generator=None):
            raise NotImplementedError
    with pytest.raises(ValueError, match="cannot be sampled with classifier guidance"):
        NoisyClassifier(NoisyClassifierConfig(**TINY_CLS), DIGITS, base=Unguidable(DDPMConfig(**TINY_DDPM), DIGITS))


def test_training_resumes_bit_for_bit(tmp_path, monkeypatch, runs):
    check_crash_resume(tmp_path, monkeypatch, "noisy-classifier", NoisyClassifier,
                       ["--base-run", str(runs[0]), *CLS_FLAGS, "--no-progress", "--batch-size", "16",
                        "--num-samples", "0", "--no-sample-quality"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("noisy_classifier")
    base, clf = root / "ddpm", root / "cls"
    assert cli.main(["train", "ddpm", "--out", str(base), "--steps", "2", "--batch-size", "16", *FAST,
                     *DDPM_FLAGS]) == 0
    assert cli.main(["train", "noisy-classifier", "--base-run", str(base), "--out", str(clf), "--steps", "80",
                     "--batch-size", "64", "--lr", "3e-3", "--warmup", "10", "--weight-decay", "0", *FAST,
                     *CLS_FLAGS]) == 0
    return base, clf


def test_the_run_reports_accuracy_falling_with_t(runs):
    base, clf = runs
    metrics = json.loads((clf / "metrics.json").read_text())
    acc = [metrics[f"test_accuracy_t{t}"] for t in (0, 2, 4, 6)]     # t = 0, T/4, T/2, 3T/4
    assert metrics["nll_kind"] == "none"
    # 80 steps of a tiny net: far above chance (0.1) on clean digits, less and less with noise
    assert acc[0] > 0.3 and acc[0] > acc[2] > acc[3] and acc[0] > acc[3] + 0.15, acc
    assert (clf / "guidance.png").exists() and metrics["guidance_scales"][0] == 0.0
    recorded = json.loads((clf / "config.json").read_text())["base_run"]
    assert recorded["model_name"] == "ddpm" and len(recorded["checkpoint_sha256"]) == 64


def test_cli_sampling_with_a_classifier(runs, tmp_path, capsys):
    base, clf = runs
    out = tmp_path / "s.npy"
    for sampler in ("ddim", "ddpm"):
        assert cli.main(["sample", str(base), "--n", "3", "--steps", "5", "--sampler", sampler,
                         "--classifier", str(clf), "--label", "3", "--guidance", "2", "--out", str(out)]) == 0
        x = np.load(out)
        assert x.shape == (3, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert cli.main(["sample", str(clf), "--n", "2", "--steps", "5", "--guidance", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    for args, words in ((["--classifier", str(base)], "not a noisy-classifier run"),
                        (["--classifier", str(tmp_path / "none")], "no such run folder"),
                        (["--classifier", str(clf), "--label", "12"], "--label must be in")):
        assert cli.main(["sample", str(base), "--n", "2", "--steps", "5", "--guidance", "1", *args]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
