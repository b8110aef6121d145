"""PixelRNN (Row LSTM and Diagonal BiLSTM): the autoregressive property by gradient (exactly
zero from every output to itself and later pixels, per colour channel for RGB), the Diagonal
BiLSTM's context, exact normalisation over a tiny image space, rows cut below, samples, errors,
a few CLI training steps and samples, and a bit-exact resume."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli
from gmcore.models.autoregressive import PixelRNN
from gmcore.models.base import DataInfo

from resume_checks import check_crash_resume

CELLS = ["diagonal-bilstm", "row-lstm"]
TINY = dict(hidden=3, layers=2, out_hidden=6, first_kernel=3)
FAST = ["--no-progress", "--eval-every", "0", "--log-every", "1", "--batch-size", "16", "--num-samples", "4",
        "--no-sample-quality", "--hidden", "4", "--layers", "1", "--out-hidden", "8"]


def _model(cell, info, **kw):
    gm.manual_seed(0)
    return PixelRNN(PixelRNN.Config(cell=cell, **{**TINY, **kw}), info).double().eval()


def _input_grad(model, x, i, j, c=None):
    """|d <r, logits at pixel (i, j) [channel c]> / d x| summed over the batch, (C, H, W)."""
    x = x.detach().requires_grad_(True)
    out = model.logits(x)[:, :, :, i, j] if c is None else model.logits(x)[:, c, :, i, j]
    r = gm.tensor(np.random.default_rng(i * 31 + j).standard_normal(out.shape))
    (g,) = gm.autograd.grad((out * r).sum(), [x])
    return np.abs(g.numpy()).sum(0)


@pytest.mark.parametrize("cell", CELLS)
def test_autoregressive_by_gradient(cell):
    H, W = 6, 5
    model = _model(cell, DataInfo((1, H, W), 5))
    x = gm.tensor(np.random.default_rng(1).random((2, 1, H, W)))
    order = np.arange(H * W).reshape(H, W)
    for i in range(H):
        for j in range(W):
            seen = _input_grad(model, x, i, j)[0] > 0
            assert not seen[order >= order[i, j]].any(), (i, j)     # itself and later: exactly 0
            if (i, j) == (0, 0):
                continue
            assert seen[order < order[i, j]].any(), (i, j)
            if j > 0:
                assert seen[i, j - 1], (i, j)                       # the left neighbour
            if i > 0:
                assert seen[i - 1, j], (i, j)                       # the one above
            if cell == "diagonal-bilstm":
                # every earlier pixel but one: the right-to-left LSTM reaches pixel (i-1, W-1) only
                # through inputs at row i-1, which never hold it (mask A), and the row-i inputs
                # that do (the first conv's reach, k // 2 = 1 columns back) lie right of j for
                # j <= W - 3. The paper's design has this one-pixel gap too.
                want = order < order[i, j]
                if i > 0 and j <= W - 3:
                    want[i - 1, W - 1] = False
                np.testing.assert_array_equal(seen, want, err_msg=str((i, j)))


@pytest.mark.parametrize("cell", CELLS)
def test_rgb_causality_per_channel(cell):
    model = _model(cell, DataInfo((3, 4, 4), 4), hidden=6)
    x = gm.tensor(np.random.default_rng(3).random((2, 3, 4, 4)))
    order = np.arange(16).reshape(4, 4)
    for i, j in [(0, 0), (1, 2), (3, 3), (2, 0)]:
        for c in range(3):
            g = _input_grad(model, x, i, j, c)                      # (3, H, W)
            assert np.all(g[:, order > order[i, j]] == 0.0), (i, j, c)
            assert np.all(g[c:, i, j] == 0.0), (i, j, c)           # not its own or later colours
            assert np.all(g[:c, i, j] > 0.0), (i, j, c)            # every earlier colour


@pytest.mark.parametrize("cell", CELLS)
def test_rows_cut_below_give_the_same_logits(cell):
    """The sampler runs the network on the rows so far: exact, as row i sees rows <= i only."""
    model = _model(cell, DataInfo((3, 5, 4), 4), hidden=6)
    x = gm.tensor(np.random.default_rng(6).random((2, 3, 5, 4)))
    with gm.no_grad():
        full = model.logits(x).numpy()
        for rows in (1, 3):
            np.testing.assert_allclose(model.logits(x[:, :, :rows]).numpy(), full[..., :rows, :],
                                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_nll_is_normalised_and_loss_is_bits_per_dim(cell):
    """Exact likelihood: over every image of a tiny space, p(x) sums to 1 (2x2 RGB, 2 levels)."""
    model = _model(cell, DataInfo((3, 2, 2), 2), hidden=3)
    bits = (np.arange(2 ** 12)[:, None] >> np.arange(12)) & 1
    x = gm.tensor(bits.reshape(-1, 3, 2, 2).astype(np.float64))
    with gm.no_grad():
        nll = model.nll((x,)).numpy()
        loss, logs = model.loss((x[:7],))
    assert nll.shape == (4096,)
    assert np.exp(-nll).sum() == pytest.approx(1.0, rel=1e-9)
    assert loss.item() == pytest.approx(nll[:7].mean() / (12 * np.log(2)), rel=1e-12)
    assert logs["bits_per_dim"] == pytest.approx(loss.item())


@pytest.mark.parametrize("info", [DataInfo((1, 4, 3), 17), DataInfo((3, 3, 3), 4)])
def test_samples_shape_levels_and_generator(info):
    for cell in CELLS:
        gm.manual_seed(0)
        model = PixelRNN(PixelRNN.Config(cell=cell, hidden=6, layers=1, out_hidden=6, dropout=0.2), info)
        assert model.training
        s = model.sample(3, generator=gm.Generator().manual_seed(0))
        assert s.shape == (3, *info.shape) and s.dtype == gm.float32
        v = s.numpy() * (info.num_levels - 1)
        assert v.min() >= 0 and v.max() <= info.num_levels - 1
        np.testing.assert_allclose(v, np.round(v), atol=1e-5)
        again = model.sample(3, generator=gm.Generator().manual_seed(0))
        np.testing.assert_array_equal(s.numpy(), again.numpy())      # the generator fixes the draw
        assert model.training                                         # dropout is off only inside


def test_samples_follow_the_model():
    """Trained on one image, the conditionals become near-deterministic and sample it back."""
    gm.manual_seed(0)
    model = PixelRNN(PixelRNN.Config(hidden=8, layers=1, out_hidden=16), DataInfo((1, 3, 3), 3))
    target = gm.tensor(np.array([0, 1, 2, 1, 2, 2, 0, 0, 1], np.float32).reshape(1, 1, 3, 3) / 2)
    opt = gm.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(80):
        loss, _ = model.loss((target,))
        opt.zero_grad()
        loss.backward()
        opt.step()
    s = model.sample(8, generator=gm.Generator().manual_seed(1))
    assert (np.abs(s.numpy() - target.numpy()).max(axis=(1, 2, 3)) == 0).mean() >= 0.75


def test_rejects_what_it_cannot_model():
    grey = DataInfo((1, 8, 8), 17)
    with pytest.raises(ValueError, match="images"):
        PixelRNN(PixelRNN.Config(), DataInfo((64,), 17))
    with pytest.raises(ValueError, match="channels"):
        PixelRNN(PixelRNN.Config(), DataInfo((2, 8, 8), 17))
    with pytest.raises(ValueError, match="levels"):
        PixelRNN(PixelRNN.Config(), DataInfo((1, 8, 8), 0))
    with pytest.raises(ValueError, match="--cell must be one of diagonal-bilstm, row-lstm"):
        PixelRNN(PixelRNN.Config(cell="grid-lstm"), grey)
    with pytest.raises(ValueError, match="divisible by 3"):
        PixelRNN(PixelRNN.Config(hidden=32), DataInfo((3, 8, 8), 256))
    with pytest.raises(ValueError, match="odd"):
        PixelRNN(PixelRNN.Config(cell="row-lstm", kernel=2), grey)
    with pytest.raises(ValueError, match="dropout"):
        PixelRNN(PixelRNN.Config(dropout=1.0), grey)


def test_cifar_shaped_data_builds():
    gm.manual_seed(0)
    model = PixelRNN(PixelRNN.Config(hidden=6, layers=1, out_hidden=12), DataInfo((3, 6, 6), 256, "cifar10"))
    loss, logs = model.loss((gm.rand(2, 3, 6, 6).mul(255).round().div(255),))
    assert 7.0 < logs["bits_per_dim"] < 10.0       # an untrained model: about 8 bits per sub-pixel


def test_cli_trains_samples_and_evaluates(tmp_path, capsys):
    """The Row LSTM through the CLI; the default cell trains in the resume test below."""
    cell = "row-lstm"
    pytest.importorskip("safetensors")
    out = tmp_path / "run"
    assert cli.main(["train", "pixelrnn", "--cell", cell, "--out", str(out), "--steps", "3", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "pixelrnn" and metrics["nll_kind"] == "exact"
    assert 0 < metrics["test_bits_per_dim"] < 6
    assert json.loads((out / "config.json").read_text())["model_config"]["cell"] == cell
    assert (out / "samples.png").exists()
    assert cli.main(["sample", str(out), "--n", "2", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (2, 1, 8, 8) and np.allclose(s * 16, np.round(s * 16), atol=1e-5)
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--no-sample-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["test_bits_per_dim"] == pytest.approx(metrics["test_bits_per_dim"])
    with pytest.raises(SystemExit):
        cli.main(["train", "pixelrnn", "--cell", "grid", "--out", str(tmp_path / "bad")])
    assert "invalid choice: 'grid'" in capsys.readouterr().err


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    check_crash_resume(tmp_path, monkeypatch, "pixelrnn", PixelRNN, [*FAST, "--num-samples", "0"])
