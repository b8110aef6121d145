"""char-RNN (LSTM, GRU) and the neural n-gram: position t never sees later characters (and the
n-gram sees only its last `context` ones), exactly; step-by-step sampling carries the same state
as the full-sequence pass; nll agrees with the loss; both overfit a tiny text; samples and
samples.txt; clear errors; CLI training end to end."""
import json
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore.data import CharText
from gmcore.models.autoregressive import CharRNN, NeuralNGram
from gmcore.models.base import DataInfo

TEXT = ("the quick brown fox jumps over the lazy dog. " * 6 + "pack my box with five dozen "
        "liquor jugs! " * 5)

MODELS = {
    "lstm": (CharRNN, dict(cell="lstm", hidden=24, embed_dim=8, layers=2)),
    "gru": (CharRNN, dict(cell="gru", hidden=24, embed_dim=8)),
    "ngram2": (NeuralNGram, dict(context=2, hidden=32, embed_dim=8)),
    "ngram4": (NeuralNGram, dict(context=4, hidden=32, embed_dim=8, direct=False)),
    "ngram1": (NeuralNGram, dict(context=1, hidden=16, embed_dim=4)),
}


def _data(seq_len=12):
    return CharText(text=TEXT, seq_len=seq_len, train_fraction=0.8)


def _model(key, seq_len=12, vocab=None, seed=0, **extra):
    cls, kw = MODELS[key]
    gm.manual_seed(seed)
    v = vocab or _data(seq_len).vocab_size
    return cls(cls.Config(seq_len=seq_len, **{**kw, **extra}), DataInfo((seq_len,), v, "text"))


def _batch(ds, n):
    x, y = ds.get_batch(np.arange(n))
    return gm.tensor(x), gm.tensor(y)


@pytest.mark.parametrize("key", list(MODELS))
def test_position_t_sees_only_the_allowed_inputs(key):
    m = _model(key).double()
    m.eval()
    x, _ = _batch(_data(), 3)
    feats = m.embed(x).detach().requires_grad_(True)
    logits = m.head(feats)
    T = x.shape[1]
    offset = feats.shape[1] - T               # the n-gram's leading padding slots
    ctx = m.config.context if isinstance(m, NeuralNGram) else None
    for t in np.random.default_rng(0).permutation(T)[:6].tolist() + [0, T - 1]:
        feats.grad = None
        logits[:, t].sum().backward(retain_graph=True)
        g = np.abs(feats.grad.numpy()).sum((0, 2))           # per feature position
        assert np.all(g[offset + t + 1:] == 0.0), t          # later characters: exactly zero
        assert g[offset + t] > 0                             # the current one matters
        if ctx is not None:                                  # and nothing beyond the window
            assert np.all(g[:offset + t - ctx + 1] == 0.0), t


@pytest.mark.parametrize("key", list(MODELS))
def test_stepping_reproduces_the_full_pass(key):
    m = _model(key).double()
    m.eval()
    x, _ = _batch(_data(), 2)
    full = m.logits(x).detach().numpy()
    with gm.no_grad():
        state = m.start_state(2, "cpu")
        for t in range(x.shape[1]):
            step, state = m.step(x[:, t], state)
            np.testing.assert_allclose(step.numpy(), full[:, t], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("key", ["lstm", "ngram2"])
def test_nll_agrees_with_loss_and_is_bits_per_char(key):
    m = _model(key).double()
    m.eval()
    batch = _batch(_data(), 5)
    loss, logs = m.loss(batch)
    nll = m.nll(batch)
    assert nll.shape == (5,) and np.all(np.isfinite(nll.detach().numpy()))
    assert loss.item() == pytest.approx(nll.sum().item() / (5 * 12), rel=1e-12)
    assert "zero initial state" in m.nll_kind
    assert float(m.char_counts.sum().item()) == 0           # counts only update in training
    m.train()
    m.loss(batch)
    assert float(m.char_counts.sum().item()) == 5 * 12


@pytest.mark.parametrize("key", ["lstm", "gru", "ngram2"])
def test_overfits_a_tiny_text(key):
    ds = _data(16)
    m = _model(key, seq_len=16)
    batch = _batch(ds, 8)
    opt = gm.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss, _ = m.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.8 * math.log(ds.vocab_size)         # starts near uniform
    assert np.mean(losses[-5:]) < 0.35 * losses[0]


@pytest.mark.parametrize("key", ["gru", "ngram2"])
def test_samples(key, tmp_path):
    ds = _data()
    m = _model(key)
    m.train()
    m.loss(_batch(ds, 4))                                    # fills the unigram counts
    m.eval()
    s = m.sample(5, generator=gm.Generator().manual_seed(0))
    assert s.shape == (5, 12) and s.dtype == gm.int64
    assert 0 <= int(s.min()) and int(s.max()) < ds.vocab_size
    counts = m.char_counts.numpy()
    assert np.all(counts[s.numpy()[:, 0]] > 0)               # first chars come from training text
    again = m.sample(5, generator=gm.Generator().manual_seed(0))
    assert np.array_equal(s.numpy(), again.numpy())          # the generator decides
    long = m.sample(2, generator=gm.Generator().manual_seed(1), length=30)
    assert long.shape == (2, 30)
    # near-zero temperature: greedy decoding, each char the argmax given the prefix
    m.config.temperature = 1e-4
    g = m.sample(3, generator=gm.Generator().manual_seed(2)).numpy()
    pred = m.logits(gm.tensor(g)).detach().numpy().argmax(-1)
    assert np.array_equal(pred[:, :-1], g[:, 1:])
    m.config.temperature = 1.0
    out = m.save_samples(tmp_path, ds, gm.Generator().manual_seed(0))
    text = (tmp_path / "samples.txt").read_text("utf-8")
    assert out == {"samples_file": "samples.txt"}
    assert text.count("-" * 72) == m.config.samples - 1
    assert set(text) <= set(ds.vocab) | {"\n", "-"}


def test_rejects_data_it_cannot_model():
    with pytest.raises(ValueError, match="text data set"):
        CharRNN(CharRNN.Config(), DataInfo((1, 8, 8), 17, "digits"))
    with pytest.raises(ValueError, match="seq_len"):
        NeuralNGram(NeuralNGram.Config(seq_len=32), DataInfo((64,), 50, "text"))
    m = _model("ngram2")
    with pytest.raises(ValueError, match="integer ids"):
        m.loss((gm.zeros(2, 12), gm.zeros(2, 12)))
    with pytest.raises(ValueError, match=r"\(inputs, targets\)"):
        m.loss((gm.zeros(2, 12, dtype=gm.int64),))
    with pytest.raises(ValueError, match="temperature"):
        CharRNN.Config(temperature=0.0)
    assert CharRNN.dataset_options(CharRNN.Config(seq_len=33)) == {"seq_len": 33}


@pytest.mark.parametrize("model,flags", [
    ("char-rnn", ["--cell", "gru", "--hidden", "16", "--embed-dim", "8"]),
    ("trigram-mlp", ["--hidden", "16", "--embed-dim", "8", "--context", "3"]),
])
def test_cli_trains_end_to_end(tmp_path, model, flags):
    pytest.importorskip("safetensors")
    from gmcore import train
    from gmcore.cli_train import parse_train_args

    src = tmp_path / "corpus.txt"
    src.write_text(TEXT * 3, encoding="utf-8")
    name, tcfg, mcfg = parse_train_args(model, [
        "--out", str(tmp_path / "run"), "--data-root", str(src), "--seq-len", "16",
        "--steps", "6", "--batch-size", "8", "--eval-every", "3", "--no-progress",
        "--num-samples", "4", "--sample-length", "40", "--samples", "2", *flags])
    res = train.train(name, tcfg, mcfg, log=lambda *a: None)
    run = tmp_path / "run"
    final = json.loads((run / "metrics.json").read_text())
    assert final["dataset"] == "text" and final["step"] == 6
    assert final["test_bits_per_char"] == res["test_bits_per_char"] == final["test_bits"]
    assert final["unit"] == "char" and "test_bits_per_dim" not in final
    vocab = CharText(path=src, seq_len=16).vocab_size
    assert 0 < final["test_bits_per_char"] < 1.5 * math.log2(vocab)
    assert final["samples_file"] == "samples.txt"
    assert len((run / "samples.txt").read_text("utf-8")) >= 80
