"""The ``bit-diffusion`` model (gmcore.models.diffusion.bit_diffusion): the analog-bit code of
digits and text, self-conditioning in training and at sampling, the asymmetric time interval
td, exact resume, and the CLI around digits and text runs."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.models.base import DataInfo
from gmcore.models.diffusion.bit_diffusion import BitDiffusion, BitDiffusionConfig, words_known
from resume_checks import check_crash_resume
from helpers import perturbed

pytest.importorskip("safetensors")

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
TEXT = DataInfo((16,), 100, "text")
TINY = dict(channels=8, num_res_blocks=1, timesteps=20, attention_resolutions="", num_heads=1,
            dropout=0.0)
TINY_FLAGS = ["--channels", "8", "--num-res-blocks", "1", "--timesteps", "20",
              "--attention-resolutions", "", "--num-heads", "1"]
FAST = ["--no-progress", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality"]


def _record_net(model, monkeypatch):
    """Record every network call's (input, t, output) as NumPy arrays."""
    calls = []
    real = model.net.forward

    def forward(x, t, y=None):
        out = real(x, t, y)
        calls.append((x.detach().numpy().copy(), t.numpy().copy(), out.detach().numpy().copy(),
                      gm.is_grad_enabled()))
        return out
    monkeypatch.setattr(model.net, "forward", forward)
    return calls


def test_digits_and_text_codes_round_trip_and_clamp():
    m = BitDiffusion(BitDiffusionConfig(**TINY), DIGITS)
    assert m.diffusion_shape == (5, 8, 8) and m.net_in_channels == 10
    levels = np.arange(64) % 17
    x = gm.tensor(levels.reshape(1, 1, 8, 8) / 16.0, dtype="float32")
    bits = m.to_diffusion(x).numpy()
    assert set(np.unique(bits)) == {-1.0, 1.0}
    want = np.array([[(v >> k) & 1 for k in (4, 3, 2, 1, 0)] for v in levels]).T.reshape(5, 8, 8)
    np.testing.assert_array_equal(bits[0] > 0, want == 1)                      # MSB first
    np.testing.assert_array_equal(m.from_diffusion(gm.tensor(bits)).numpy(), x.numpy())
    # codes beyond the last level (17 .. 31) decode to it; the threshold is at 0
    assert float(m.from_diffusion(gm.full((1, 5, 8, 8), 0.01)).min()) == 1.0
    assert float(m.from_diffusion(gm.full((1, 5, 8, 8), -0.01)).max()) == 0.0

    t = BitDiffusion(BitDiffusionConfig(**TINY, self_cond=0.0), TEXT)       # 100 ids: 7 bits, 4x4
    assert t.diffusion_shape == (7, 4, 4) and t.net_in_channels == 7
    ids = gm.tensor(np.arange(32).reshape(2, 16) * 3)
    back = t.from_diffusion(t.to_diffusion(ids))
    assert back.dtype == gm.int64 and back.tolist() == ids.tolist()
    assert t.from_diffusion(gm.ones(1, 7, 4, 4)).tolist() == [[99] * 16]      # 127 -> the last id


def test_bad_data_is_refused():
    with pytest.raises(ValueError, match="square number"):
        BitDiffusion(BitDiffusionConfig(**TINY), DataInfo((15,), 100, "text"))
    with pytest.raises(ValueError, match="discrete data"):
        BitDiffusion(BitDiffusionConfig(**TINY), DataInfo((2,), 0, "moons"))
    with pytest.raises(ValueError, match="probability"):
        BitDiffusionConfig(self_cond=1.5)


def test_training_self_conditions_on_a_gradient_free_first_pass(monkeypatch):
    m = perturbed(BitDiffusion(BitDiffusionConfig(**TINY, self_cond=1.0), DIGITS)).train()
    calls = _record_net(m, monkeypatch)
    loss, _ = m.loss((gm.rand(4, 1, 8, 8),))
    (x1, t1, out1, grad1), (x2, t2, _, grad2) = calls
    assert not grad1 and grad2                                 # the estimate's pass takes no gradient
    np.testing.assert_array_equal(x1[:, :5], x2[:, :5])         # the same x_t and t
    np.testing.assert_array_equal(t1, t2)
    assert not x1[:, 5:].any()                                 # first pass: a zero estimate
    np.testing.assert_allclose(x2[:, 5:], np.clip(out1, -1, 1), rtol=1e-6)   # x0 prediction, clipped
    loss.backward()
    assert all(p.grad is not None for p in m.net.parameters())

    # p = 0.5: about half the batches run the first pass (one draw per batch)
    m = BitDiffusion(BitDiffusionConfig(**TINY), DIGITS)
    calls = _record_net(m, monkeypatch)
    gm.manual_seed(0)
    for _ in range(40):
        m.loss((gm.rand(1, 1, 8, 8),))
    assert 10 <= len(calls) - 40 <= 30

    m = BitDiffusion(BitDiffusionConfig(**TINY, self_cond=0.0), DIGITS)     # off: one pass, no extra input
    calls = _record_net(m, monkeypatch)
    m.loss((gm.rand(2, 1, 8, 8),))
    assert len(calls) == 1 and calls[0][0].shape == (2, 5, 8, 8)


def test_sampling_feeds_each_call_the_previous_estimate(monkeypatch):
    m = perturbed(BitDiffusion(BitDiffusionConfig(**TINY), DIGITS))
    calls = _record_net(m, monkeypatch)
    with gm.no_grad():
        m.sample(3, generator=gm.Generator().manual_seed(0), steps=4)
    assert len(calls) == 4 and not calls[0][0][:, 5:].any()
    for (_, _, prev_out, _), (x, _, _, _) in zip(calls, calls[1:]):
        np.testing.assert_allclose(x[:, 5:], np.clip(prev_out, -1, 1), rtol=1e-6)
        assert np.abs(x[:, 5:]).max() > 0


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "pndm"])
def test_td_asks_the_network_at_a_later_time(monkeypatch, sampler):
    # T = 20, 4 steps visit 19, 14, 9, 4 (trailing); td = 1 shifts by round(1 * 20 / 4) = 5
    m = perturbed(BitDiffusion(BitDiffusionConfig(**TINY), DIGITS))
    calls = _record_net(m, monkeypatch)
    seen = {}
    for td in (0.0, 1.0, 0.5):
        calls.clear()
        with gm.no_grad():
            x = m.sample(2, generator=gm.Generator().manual_seed(1), sampler=sampler, steps=4, td=td)
        seen[td] = [int(c[1][0]) for c in calls]
        np.testing.assert_allclose(x.numpy() * 16, np.round(x.numpy() * 16), atol=1e-5)   # on the levels
    if sampler == "pndm":   # its Runge-Kutta warm start also asks at half steps: every ask shifted
        assert seen[1.0] == [min(t + 5, 19) for t in seen[0.0]]
        assert seen[0.5] == [min(t + 2, 19) for t in seen[0.0]]    # round(2.5) = 2
        return
    assert seen[0.0] == [19, 14, 9, 4]
    assert seen[1.0] == [19, 19, 14, 9]
    assert seen[0.5] == [19, 16, 11, 6]


def test_td_keeps_the_update_at_the_state_time(monkeypatch):
    # eps prediction: the x0 estimate (and the sampler's update) read the output at the state's
    # own t, whatever time the network was asked at
    m = perturbed(BitDiffusion(BitDiffusionConfig(**TINY, predict="eps"), DIGITS))
    calls = _record_net(m, monkeypatch)
    fn = m.self_conditioned(td=1.0, steps=4)
    x_t, t = gm.randn(2, 5, 8, 8), gm.tensor([9, 9])
    with gm.no_grad():
        out = fn(x_t, t)
        fn(x_t, t)
    assert calls[0][1].tolist() == [14, 14]
    x0 = m.diffusion.x0_from_eps(x_t, t, out).clamp(-1, 1)
    np.testing.assert_allclose(calls[1][0][:, 5:], x0.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="td"):
        m.sample(1, td=-0.5)


def test_words_known():
    assert words_known(["xx the cat sat qzv"], {"the", "cat"}) == pytest.approx(2 / 3)
    assert words_known(["word"], {"word"}) == 0.0      # cut by the edges: not counted


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    # the self-conditioning draw comes from the run's generator: a resumed run repeats it
    check_crash_resume(tmp_path, monkeypatch, "bit-diffusion", BitDiffusion,
                       [*FAST, *TINY_FLAGS, "--eval-every", "0", "--ema", "0.9", "--num-samples", "0"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bitdiff") / "run"
    assert cli.main(["train", "bit-diffusion", "--out", str(out), "--steps", "2", *FAST, *TINY_FLAGS]) == 0
    return out


def test_a_digits_run_writes_samples_and_the_chain(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["nll_kind"] == "none" and "test_bits_per_dim" not in metrics
    assert (run / "samples.png").exists() and (run / "chain.png").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["model_config"]["predict"] == "x0" and config["model_config"]["schedule"] == "cosine"


def test_cli_sample_and_edit_take_td(run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert cli.main(["sample", str(run), "--n", "3", "--steps", "5", "--td", "0.5", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (3, 1, 8, 8) and np.allclose(x * 16, np.round(x * 16), atol=1e-5)
    capsys.readouterr()
    assert cli.main(["edit", str(run), "--from-test", "2", "--strength", "0.5", "--steps", "5", "--td", "1",
                     "--out", str(tmp_path / "e.png")]) == 0
    assert json.loads(capsys.readouterr().out)["edited"] == 2


def test_a_text_run_writes_samples_txt(tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text("the cat sat on the mat and the dog sat on the log. " * 40)
    out = tmp_path / "text"
    assert cli.main(["train", "bit-diffusion", "--dataset", "text", "--data-root", str(src),
                     "--seq-len", "16", "--text-samples", "4", "--out", str(out), "--steps", "2", *FAST,
                     *TINY_FLAGS]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    texts = (out / "samples.txt").read_text().split("\n" + "-" * 72 + "\n")
    assert len(texts) == 4 and texts[-1].endswith("\n")
    assert all(len(t) == 16 for t in texts[:-1] + [texts[-1][:-1]])
    assert 0 <= metrics["sample_words_known"] <= 1 and metrics["test_words_known"] > 0.9
    capsys.readouterr()
    assert cli.main(["sample", str(out), "--steps", "3", "--td", "0.5", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "samples.txt").exists()
