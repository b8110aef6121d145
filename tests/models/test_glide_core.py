"""glide-core (gmcore/models/diffusion/glide_core.py) and the U-Net's text context
(gmcore/models/diffusion/unet.py, ContextAttention2d): padding never attended to, the caption
reaching the output through attention and the pooled token, classifier-free guidance's formula
with the empty caption as the null condition, caption dropout, the CLI (--prompt, .npy and .png
out, unknown words), the run's held-out figure, and bit-exact resume."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.data import captions as cap
from gmcore.models.base import DataInfo
from gmcore.models.diffusion.glide_core import GlideCore, GlideCoreConfig
from gmcore.models.diffusion.unet import ContextAttention2d, UNet
from helpers import check_eval_and_sample, perturbed
from resume_checks import check_crash_resume

pytest.importorskip("safetensors")

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TINY = dict(channels=8, timesteps=20, num_heads=2, dropout=0.0, text_width=8, text_layers=1, text_heads=2)
TINY_FLAGS = ["--channels", "8", "--timesteps", "10", "--timesteps-subsample", "5", "--num-heads", "2",
              "--text-width", "8", "--text-layers", "1", "--text-heads", "2"]
FAST = ["--no-progress", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality"]


# ---- the U-Net's context --------------------------------------------------------------------------

def test_context_attention_ignores_padding_and_reads_the_tokens():
    gm.manual_seed(0)
    block = perturbed(ContextAttention2d(8, context_dim=6, num_heads=2))
    x, c = gm.randn(2, 8, 4, 4), gm.randn(2, 3, 6)
    mask = gm.tensor(np.array([[True, False, False], [False, False, False]]))
    moved = c.numpy().copy()
    moved[0, 0] += 100.0                           # a padded token of example 0
    with gm.no_grad():
        out = block(x, c, mask)
        assert float((block(x, gm.tensor(moved), mask) - out).abs().max()) == 0.0
        moved[0, 1] += 1.0                         # a real one
        assert float((block(x, gm.tensor(moved), mask) - out)[0].abs().max()) > 1e-3
        plain = block(x)                           # no context: the parent's self-attention
        assert float((plain - gm.nn.SelfAttention2d.forward(block, x)).abs().max()) == 0.0


def test_unet_without_context_keeps_its_layers_and_errors():
    names = set(UNet(1, 1, channels=8, num_heads=2).state_dict())
    assert not any("context" in n for n in names)  # the plain U-Net's checkpoints load unchanged
    net = UNet(1, 1, channels=8, num_heads=2, context_dim=6)
    assert set(net.state_dict()) > names and "context_pool.weight" in net.state_dict()
    x, t = gm.randn(2, 1, 8, 8), gm.tensor([1, 5])
    with pytest.raises(ValueError, match="context_dim=0"):
        UNet(1, 1, channels=8, num_heads=2)(x, t, context=gm.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"context must be a Tensor \(2, L, 6\)"):
        net(x, t, context=gm.randn(2, 3, 5))
    with pytest.raises(ValueError, match="bool Tensor"):
        net(x, t, context=gm.randn(2, 3, 6), context_mask=gm.zeros(2, 3))


def test_the_caption_reaches_the_output_by_attention_and_by_the_pooled_token():
    net = perturbed(UNet(1, 1, channels=8, num_heads=2, context_dim=6)).eval()
    x, t, c = gm.randn(2, 1, 8, 8), gm.tensor([3, 9]), gm.randn(2, 4, 6)
    with gm.no_grad():
        out = net(x, t, context=c)
        early, last = c.numpy().copy(), c.numpy().copy()
        early[:, 0] += 1.0                          # seen only by the attention layers
        last[:, -1] += 1.0                          # also pooled into the time embedding
        assert float((net(x, t, context=gm.tensor(early)) - out).abs().max()) > 1e-4
        assert float((net(x, t, context=gm.tensor(last)) - out).abs().max()) > 1e-4


# ---- the model --------------------------------------------------------------------------------

def test_guidance_mixes_the_caption_and_the_empty_caption():
    m = perturbed(GlideCore(GlideCoreConfig(**TINY, learn_sigma=True), DIGITS))
    x, t = gm.randn(3, 1, 8, 8), gm.tensor([0, 7, 19])
    tokens = m.tokens(["a handwritten seven", "the digit 1", "9"])
    with gm.no_grad():
        cond = m.denoiser(tokens)(x, t)
        uncond = m.denoiser(m.tokens([""] * 3))(x, t)
        assert float((m.denoiser(None)(x, t) - uncond).abs().max()) == 0.0   # None: the empty caption
        guided = m.denoiser(tokens, guidance=3.0)(x, t)
    np.testing.assert_allclose(guided[:, :1].numpy(), (4.0 * cond[:, :1] - 3.0 * uncond[:, :1]).numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(guided[:, 1:].numpy(), cond[:, 1:].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(cond.numpy(), uncond.numpy())            # the caption does reach the net
    with gm.no_grad():                                              # numeral and word forms differ
        other = m.denoiser(m.tokens(["a handwritten 7", "the digit 1", "9"]))(x, t)
    assert not np.allclose(other[0].numpy(), cond[0].numpy())
    assert np.allclose(other[1:].numpy(), cond[1:].numpy())


def test_training_captions_use_training_templates_and_drop_to_empty(monkeypatch):
    m = GlideCore(GlideCoreConfig(**TINY, label_dropout=0.5), DIGITS)
    seen = []
    real = m.tokens
    monkeypatch.setattr(m, "tokens", lambda texts: (seen.append(list(texts)), real(texts))[1])
    gm.manual_seed(0)
    m.loss((gm.rand(400, 1, 8, 8), gm.zeros(400).long() + 3))
    texts = seen[0]
    allowed = {cap.caption(3, t) for t in cap.TRAIN_TEMPLATES}
    assert set(texts) <= allowed | {""} and len(set(texts) - {""}) == len(allowed)   # every template
    assert 0.4 < texts.count("") / len(texts) < 0.6


def test_bad_prompts_data_and_flags_are_clear_errors():
    m = GlideCore(GlideCoreConfig(**TINY), DIGITS).eval()
    with pytest.raises(ValueError, match="unknown words 'purple', 'cat'"):
        m.sample(2, prompt="a purple cat")
    with pytest.raises(ValueError, match="--prompt or --label, not both"):
        m.sample(2, prompt="seven", label=7)
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        m.sample(2, label=10)
    with pytest.raises(ValueError, match="drop --class-cond"):
        GlideCore(GlideCoreConfig(**TINY, class_cond=True), DIGITS)
    with pytest.raises(ValueError, match="digit labels"):
        GlideCore(GlideCoreConfig(**TINY), DataInfo((3, 32, 32), 256, "cifar10", num_classes=10))
    with pytest.raises(ValueError, match="labels"):
        m.loss((gm.rand(2, 1, 8, 8),))


def test_samples_without_a_prompt_cycle_over_the_digits():
    m = GlideCore(GlideCoreConfig(**TINY), DIGITS)
    texts = cap.digit_captions(np.arange(12) % 10, np.arange(12) // 10)
    assert np.array_equal(m._sample_labels(12, -1, 0.0).numpy(), cap.encode(texts))
    assert texts[7] == "seven" and texts[10] == "0" and texts[11] == "1"   # templates {word}, then {num}
    assert np.array_equal(m._sample_labels(3, 4, 0.0).numpy(),                # --label 4
                          cap.encode(["four", "4", "a handwritten four"]))


# ---- a run and the CLI ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("glide") / "run"
    names = ("GUIDANCE_ACCURACY_SAMPLES", "HELD_OUT_SAMPLES", "PROMPT_ROW")
    saved = {k: getattr(GlideCore, k) for k in names}
    for k, v in zip(names, (10, 60, 2)):      # a smoke run
        setattr(GlideCore, k, v)
    try:
        assert cli.main(["train", "glide-core", "--out", str(out), "--steps", "3", *FAST, *TINY_FLAGS]) == 0
    finally:
        for k, v in saved.items():
            setattr(GlideCore, k, v)
    return out


def test_a_run_writes_the_held_out_figure_and_pictures(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["nll_kind"].startswith("variational bound on -log p(x | caption)")
    assert "each block of 5 of the 10" in metrics["nll_kind"] and 0 < metrics["test_bits_per_dim"] < 100
    acc = metrics["held_out_accuracy_by_guidance"]
    assert sorted(acc) == ["0.0", "1.0", "3.0"] and all(0 <= a <= 1 for a in acc.values())
    assert metrics["held_out_templates"] == list(cap.HELD_OUT_TEMPLATES)
    assert sorted(metrics["held_out_accuracy_by_template_at_guidance_3.0"]) == sorted(cap.HELD_OUT_TEMPLATES)
    assert len(metrics["prompts_png_rows"]) == 10 and metrics["prompts_png_rows"][7] == "the digit seven"
    for png in ("prompts.png", "chain.png", "guidance.png", "samples.png"):
        assert (run / png).exists()


def test_cli_eval_reproduces_the_figure(run, tmp_path, capsys):
    check_eval_and_sample(run, json.loads((run / "metrics.json").read_text()), capsys, tmp_path)


def test_cli_sample_with_a_prompt(run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(run), "--prompt", "a handwritten seven", "--guidance", "3", "--n", "5",
                     "--steps", "4", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (5, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    png = tmp_path / "s.png"
    assert cli.main(["sample", str(run), "--n", "4", "--steps", "3", "--out", str(png)]) == 0 and png.exists()
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--prompt", "a handwritten dog", "--n", "2", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown word 'dog'" in err, err


def test_cli_edit_towards_a_prompt(run, tmp_path, capsys):
    out = tmp_path / "edit.png"
    assert cli.main(["edit", str(run), "--from-test", "3", "--strength", "0.4", "--steps", "5",
                     "--prompt", "the digit 4", "--guidance", "1", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["edited"] == 3 and out.exists()


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    check_crash_resume(tmp_path, monkeypatch, "glide-core", GlideCore,
                       [*FAST, *TINY_FLAGS, "--num-samples", "0", "--eval-every", "0", "--ema", "0.9"])
