"""InfoGAN (gmcore.models.gan.infogan): the information terms against hand computations, the
exact assignment against brute force, what each update computes and trains, the networks'
shapes, sampling by code, the code/label agreement, a CLI run with its pictures, exact resume,
and the errors on data and flags it does not take."""
import itertools
import json
import math

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import cli, feature_metrics, io
from gmcore.models.base import DataInfo
from gmcore.models.gan import InfoGAN
from gmcore.models.gan.infogan import best_assignment
from gmcore.nn import gan
from recording_step import RecordingStep
from resume_checks import check_crash_resume

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = ["--latent-dim", "4", "--g-channels", "4", "--d-channels", "4", "--q-hidden", "8"]
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality"]


def tiny(**kw):
    gm.manual_seed(0)
    kw = {"latent_dim": 3, "g_channels": 4, "d_channels": 4, "q_hidden": 8, **kw}
    return InfoGAN(InfoGAN.Config(**kw), DIGITS)


# ---- the information terms -----------------------------------------------------------------------

def test_information_terms_by_hand():
    logits, codes = gm.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]), gm.tensor([0, 2])
    lse0, lse1 = math.log(math.e + 1 + 1 / math.e), math.log(2 + math.e ** 2)
    expect_cat = ((1.0 - lse0) + (0.0 - lse1)) / 2
    assert gan.categorical_code_log_likelihood(logits, codes).item() == pytest.approx(expect_cat, rel=1e-6)

    mean, c = gm.tensor([[0.0, 1.0], [0.5, 0.0]]), gm.tensor([[1.0, 1.0], [0.5, -2.0]])
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    # unit variance: -1/2 (c - mu)^2 - 1/2 log 2 pi per code, summed over codes, mean over the batch
    unit = ((-0.5 - half_log_2pi - half_log_2pi) + (-half_log_2pi - 2.0 - half_log_2pi)) / 2
    assert gan.gaussian_code_log_likelihood(mean, c).item() == pytest.approx(unit, rel=1e-6)
    # a fixed std of 2: (c - mu) / 2, minus log 2 per code
    fixed = ((-0.125 - 2 * half_log_2pi) + (-0.5 - 2 * half_log_2pi)) / 2 - 2 * math.log(2.0)
    assert gan.gaussian_code_log_likelihood(mean, c, math.log(2.0)).item() == pytest.approx(fixed, rel=1e-6)
    # a learned log-std per example and code
    log_std = gm.tensor([[0.0, math.log(0.5)], [math.log(2.0), 0.0]])
    per = [[-0.5, -0.0 + math.log(2.0)], [-0.0 - math.log(2.0), -2.0]]
    learned = sum(sum(r) for r in per) / 2 - 2 * half_log_2pi
    assert gan.gaussian_code_log_likelihood(mean, c, log_std).item() == pytest.approx(learned, rel=1e-6)

    loss = gan.info_loss(logits, codes, mean, c, cont_weight=0.25)
    assert loss.item() == pytest.approx(-(expect_cat + 0.25 * unit), rel=1e-6)
    assert gan.info_loss(logits, codes).item() == pytest.approx(-expect_cat, rel=1e-6)
    with pytest.raises(ValueError, match="needs a categorical code"):
        gan.info_loss()
    with pytest.raises(ValueError, match="must have one shape"):
        gan.gaussian_code_log_likelihood(mean, c[:, :1])


def test_the_information_loss_trains_both_sides():
    logits = gm.tensor([[0.3, -0.2]], requires_grad=True)
    gan.info_loss(logits, gm.tensor([1])).backward()
    p = np.exp([0.3, -0.2]) / np.exp([0.3, -0.2]).sum()
    np.testing.assert_allclose(logits.grad.numpy(), [[p[0], p[1] - 1.0]], rtol=1e-5)   # softmax - onehot


# ---- the assignment ------------------------------------------------------------------------------

def _brute_force(s):
    n, m = s.shape
    if n <= m:
        return max(sum(s[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(m), n))
    return _brute_force(s.T)


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (5, 5), (6, 6), (3, 5), (5, 3), (1, 4), (4, 1)])
def test_best_assignment_matches_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        # small integers make ties (several optima) common; floats check the general case
        s = rng.integers(0, 4, shape) if trial % 2 else rng.normal(size=shape)
        cols = best_assignment(s)
        used = [j for j in cols if j >= 0]
        assert len(cols) == shape[0] and len(used) == len(set(used)) == min(shape)
        assert sum(s[i, j] for i, j in enumerate(cols) if j >= 0) == pytest.approx(_brute_force(s), abs=1e-9)


def test_best_assignment_refuses_bad_scores():
    with pytest.raises(ValueError, match="finite 2-D"):
        best_assignment([1, 2, 3])
    with pytest.raises(ValueError, match="finite 2-D"):
        best_assignment([[1.0, float("nan")], [0.0, 1.0]])


# ---- networks, sampling --------------------------------------------------------------------------

def test_networks_shapes_and_the_q_head_on_ds_body():
    m = tiny()
    m.requires_grad_(False)
    assert m.generator.project.in_features == 3 + 10 + 2           # [z, one-hot c_cat, c_cont]
    x = gm.rand(5, 1, 8, 8)
    d, logits, mean, log_std = m.discriminate_with_q(x)
    assert d.shape == (5, 1) and logits.shape == (5, 10) and mean.shape == (5, 2) and log_std == 0.0
    np.testing.assert_allclose(d.numpy(), m.discriminator(x).numpy(), rtol=1e-6)   # D's output unchanged
    q = m.q_head(m.discriminator.body(x))
    np.testing.assert_allclose(np.concatenate([logits.numpy(), mean.numpy()], 1), q.numpy(), rtol=1e-6)
    # a learned std: Q outputs a log-std per continuous code; a fixed one gives its log
    m = tiny(q_std=0.0, categories=4, continuous=3, q_hidden=0)
    m.requires_grad_(False)
    d, logits, mean, log_std = m.discriminate_with_q(x)
    assert logits.shape == (5, 4) and mean.shape == (5, 3) and log_std.shape == (5, 3)
    assert isinstance(m.q_head, gm.nn.Linear)
    assert tiny(q_std=0.5).discriminate_with_q(x)[3] == pytest.approx(math.log(0.5))
    # either kind of code alone
    m = tiny(categories=0)
    assert m.discriminate_with_q(x)[1] is None and m.sample(2).shape == (2, 1, 8, 8)
    m = tiny(continuous=0)
    assert m.discriminate_with_q(x)[2] is None and m.sample(2).shape == (2, 1, 8, 8)
    m = tiny(arch="mlp", hidden=16, layers=1)
    assert [t.shape for t in m.discriminate_with_q(x)[:3]] == [(5, 1), (5, 10), (5, 2)]
    assert m.sample(3).shape == (3, 1, 8, 8)


def test_the_discriminator_and_q_share_one_optimizer():
    from gmcore.train import TrainConfig
    m = tiny()
    opts = m.configure_optimizers(TrainConfig(lr=1e-3))
    ids = {name: {id(p) for g in o.param_groups for p in g["params"]} for name, o in opts.items()}
    assert ids["generator"] == {id(p) for p in m.generator.parameters()}
    assert ids["discriminator"] == {id(p) for p in [*m.discriminator.parameters(), *m.q_head.parameters()]}
    assert opts["discriminator"].param_groups[0]["lr"] == pytest.approx(2e-4)   # the paper's 1e-3 / 2e-4


def test_sampling_by_category():
    m = tiny()
    gm.manual_seed(1)
    a = m.sample(12)
    gm.manual_seed(1)
    b = m.sample(12, categories=gm.arange(12) % 10)
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())     # the codes in turn
    gm.manual_seed(2)
    c = m.sample(3, label=7)
    gm.manual_seed(2)
    d = m.sample(3, categories=gm.tensor([7, 7, 7]))
    np.testing.assert_array_equal(c.detach().numpy(), d.detach().numpy())
    # the code does change the picture
    z = m.noise(2)
    cont = gm.zeros(2, 2)
    assert not np.allclose(m.generate(z, gm.tensor([0, 0]), cont).detach().numpy(),
                           m.generate(z, gm.tensor([9, 9]), cont).detach().numpy())
    with pytest.raises(ValueError, match="not a category of the code"):
        m.sample(2, label=10)
    with pytest.raises(ValueError, match="takes no label"):
        tiny(categories=0).sample(2, label=1)
    assert not m.class_conditional          # codes are not labels: no label accuracy is reported


# ---- the training step ---------------------------------------------------------------------------

def test_each_update_adds_the_information_loss_to_its_gan_loss():
    m = tiny(lambda_cont=0.5)
    x = gm.rand(6, 1, 8, 8)
    step = RecordingStep(m)
    gm.manual_seed(1)
    logs = m.training_step((x,), step)
    assert step.trained["discriminator"] == {"discriminator", "q_head"}   # the samples are constants

    gm.manual_seed(1)   # the same draws in the same order: D's codes and noise, then G's
    def draw():
        cat = gm.randint(0, 10, (6,))
        cont = gm.rand(6, 2) * 2 - 1
        return cat, cont, m.noise(6)

    def info(fake, cat, cont):
        q = m.q_head(m.discriminator.body(fake))
        ll_cat = -F.cross_entropy(q[:, :10], cat)
        ll_cont = (-0.5 * (cont - q[:, 10:]) ** 2 - 0.5 * math.log(2 * math.pi)).sum(1).mean()
        return -(ll_cat + 0.5 * ll_cont), ll_cat, ll_cont
    cat, cont, z = draw()
    fake = m.generate(z, cat, cont).detach()
    d_info = info(fake, cat, cont)[0]
    d_gan = F.softplus(-m.discriminator(x)).mean() + F.softplus(m.discriminator(fake)).mean()
    assert step.losses["discriminator"] == pytest.approx((d_gan + d_info).item(), rel=1e-5)
    cat, cont, z = draw()
    fake = m.generate(z, cat, cont)
    g_info, ll_cat, ll_cont = info(fake, cat, cont)
    g_adv = F.softplus(-m.discriminator(fake)).mean()                 # non-saturating
    assert step.losses["generator"] == pytest.approx((g_adv + g_info).item(), rel=1e-5)
    assert logs["info_loss"] == pytest.approx(g_info.item(), rel=1e-5)
    assert logs["mi_cat"] == pytest.approx(math.log(10) + ll_cat.item(), rel=1e-5)
    assert logs["mi_cont"] == pytest.approx(2 * math.log(2) + ll_cont.item(), rel=1e-5)
    assert "generator" in step.trained["generator"]


# ---- the agreement of the categorical code with the digits ----------------------------------------

class StubClassifier:
    """Reads an image whose pixels all equal v as the digit round(10 v) (any digit for others)."""

    def predict(self, images):
        return np.rint(images.detach().numpy().reshape(len(images), -1).mean(1) * 10).astype(int)


def test_code_label_agreement_uses_the_best_matching(monkeypatch):
    m = tiny(continuous=1).eval()
    # category k draws the digit (3 k + 1) % 10, except category 0, which draws digit 5 on its
    # first 30 samples: the best matching sends 0 -> 1 (70 agree), 5 stays 5 -> 6
    truth = [(3 * k + 1) % 10 for k in range(10)]

    def generate(z, cat, cont):
        digit = np.array(truth, dtype=np.float32)[cat.numpy()]
        first = (np.arange(len(digit)) % 100) < 30
        digit[(cat.numpy() == 0) & first] = 5
        return gm.tensor(np.repeat(digit / 10, 64).reshape(-1, 1, 8, 8))
    monkeypatch.setattr(m, "generate", generate)
    monkeypatch.setattr(feature_metrics.DigitsFeatures, "get", classmethod(lambda cls: StubClassifier()))
    monkeypatch.setattr(m, "information", lambda x, cat, cont: (None, None, {"mi_cat": 1.5, "mi_cont": -0.2}))
    with gm.no_grad():
        res = m.code_agreement(per_code=100)
    assert res["code_permutation"] == truth
    assert res["code_label_agreement"] == pytest.approx(970 / 1000)
    assert res["code_label_counts"][0][5] == 30 and res["code_label_counts"][0][1] == 70
    assert res["mi_lower_bound_cat"] == 1.5 and res["mi_lower_bound_cont"] == -0.2


# ---- the CLI ---------------------------------------------------------------------------------------

def test_trains_from_the_cli_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "infogan", "--out", str(out), "--steps", "3", *FAST, *TINY,
                     "--ema", "0.9"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["nll_kind"] == "none" and "test_bits" not in res and "label_accuracy" not in res
    assert 0 <= res["code_label_agreement"] <= 1 and sorted(res["code_permutation"]) == list(range(10))
    assert res["mi_lower_bound_cat"] <= math.log(10) and res["code_agreement_samples"] == 1000
    for f in ("codes.png", "samples.png", "last.safetensors", "loss_curve.png"):
        assert (out / f).exists(), f
    from PIL import Image
    # 10 category rows, then 10 rows for each of the 2 continuous codes; 10 columns; 4x pixels + padding
    w, h = Image.open(out / "codes.png").size
    assert h / w == pytest.approx(3.0, rel=0.02)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 3 and all(np.isfinite(r[k]) for r in train_rows
                                        for k in ("d_loss", "g_loss", "info_loss", "mi_cat", "mi_cont"))
    steps = {name: {int(v["step"]) for v in opt["state"].values()}
             for name, opt in io.load_checkpoint(out / "last")["optimizers"].items()}
    assert steps == {"generator": {3}, "discriminator": {3}}
    assert cli.main(["sample", str(out), "--n", "5", "--label", "3", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (5, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    assert cli.main(["sample", str(out), "--label", "10", "--out", str(tmp_path / "t.npy")]) == 1
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--no-sample-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["nll_kind"] == "none"


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    # two D/Q updates per G update, each on a fresh batch: the loader's position is resumed too
    check_crash_resume(tmp_path, monkeypatch, "infogan", InfoGAN,
                       [*FAST, *TINY, "--ema", "0.9", "--n-critic", "2"], method="training_step",
                       key="g_loss")
    state = io.load_checkpoint(tmp_path / "full" / "last")
    steps = {name: {int(v["step"]) for v in opt["state"].values()}
             for name, opt in state["optimizers"].items()}
    assert steps == {"generator": {6}, "discriminator": {12}}


@pytest.mark.parametrize("flags, match", [
    (["--dataset", "8gaussians"], "models images"),
    (["--labels", "auxiliary"], "does not support --labels"),
    (["--gp-weight", "10"], "does not support --gp-weight"),
    (["--feature-matching"], "does not support --feature-matching"),
    (["--categories", "1"], "--categories 1 is a constant"),
    (["--categories", "0", "--continuous", "0"], "needs a latent code"),
])
def test_bad_data_and_flags_are_named(tmp_path, capsys, flags, match):
    out = str(tmp_path / "r")
    assert cli.main(["train", "infogan", "--out", out, "--steps", "1", *FAST, *TINY, *flags]) != 0
    assert match in capsys.readouterr().err
