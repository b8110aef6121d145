"""WaveNet: causality, the incremental sampler against the full forward, conditioning, a tiny
overfit, samples, samples.wav, the registry and the training loop end to end."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import models
from gmcore.data.audio import read_wav
from gmcore.models.autoregressive.wavenet import WaveNet
from gmcore.models.base import DataInfo


def _model(length=24, dtype=None, **kw):
    cfg = dict(residual_channels=5, gate_channels=3, skip_channels=6, head_channels=7, layers=3,
               stacks=2, mixtures=2)
    cfg.update(kw)
    gm.manual_seed(0)
    m = WaveNet(WaveNet.Config(**cfg), DataInfo((length,), 256))
    return m.to(dtype=dtype) if dtype is not None else m


def _codes(B, T, seed=0):
    return gm.tensor(np.random.default_rng(seed).integers(0, 256, (B, T)))


def test_registered():
    spec = models.get("wavenet")
    assert (spec.family, spec.dataset, spec.cls) == ("autoregressive", "audio", WaveNet)
    assert WaveNet.dataset_options(WaveNet.Config(clip_length=1234)) == {"clip_length": 1234}


@pytest.mark.parametrize("output", ["softmax", "dlml"])
def test_causal(output):
    """Output t depends on codes < t only: changing codes >= t leaves outputs <= t exactly
    unchanged, and the gradient of output t reaches no input-layer position > t."""
    m = _model(output=output, input_kernel=3)
    T = 24
    codes = _codes(2, T)
    base = m(codes).data
    for t in (0, 5, 17, 23):
        c2 = codes.data.copy()
        c2[:, t:] = (c2[:, t:] + 77) % 256
        out = m(gm.tensor(c2)).data
        assert np.array_equal(out[:, :, :t + 1], base[:, :, :t + 1]), t
        if t + 1 < T:
            assert not np.allclose(out[:, :, t + 1:], base[:, :, t + 1:])
    h = m.inp(codes).detach().requires_grad_()
    _, skip = m.stack(h)
    out = m._head(skip)
    for t in (0, 9, 23):
        (g,) = gm.autograd.grad(out[:, :, t].sum(), [h], retain_graph=True)
        assert np.all(g.data[:, :, t + 1:] == 0), t
        assert np.any(g.data[:, :, t] != 0)
    assert m.receptive_field == 2 * 7 + 3


@pytest.mark.parametrize("output", ["softmax", "dlml"])
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_incremental_equals_forward(output, kernel_size):
    m = _model(output=output, kernel_size=kernel_size, dtype=gm.float64)
    codes = _codes(3, 24, seed=kernel_size)
    full = m(codes).data
    inc = m.incremental_outputs(codes).data
    assert inc.shape == full.shape == (3, m.out_channels, 24)
    np.testing.assert_allclose(inc, full, rtol=1e-5, atol=1e-5)
    assert np.abs(inc - full).max() < 1e-12


def test_conditioning_global_and_local():
    m = _model(num_classes=3, global_dim=4, local_channels=2, local_upsample=4, dtype=gm.float64)
    codes = _codes(2, 22, seed=4)
    labels = gm.tensor([0, 2])
    local = gm.tensor(np.random.default_rng(5).standard_normal((2, 2, 6)))
    full = m(codes, labels=labels, local=local).data
    inc = m.incremental_outputs(codes, labels=labels, local=local).data
    np.testing.assert_allclose(inc, full, rtol=1e-5, atol=1e-9)
    # the conditioning is used: other labels / features give other outputs
    assert not np.allclose(m(codes, labels=gm.tensor([1, 2]), local=local).data, full)
    local2 = local.data.copy()
    local2[:, :, 3] += 1.0                                   # frame 3 = samples 12..15
    out2 = m(codes, labels=labels, local=gm.tensor(local2)).data
    assert np.array_equal(out2[:, :, :12], full[:, :, :12])
    assert not np.allclose(out2[:, :, 12:16], full[:, :, 12:16])
    # batches carry them too, and the losses run
    loss, logs = m.loss((codes, labels, local))
    assert np.isfinite(loss.item()) and "bits_per_sample" in logs
    s = m.sample(2, generator=gm.Generator().manual_seed(1), labels=labels, local=local, length=22)
    assert s.shape == (2, 22)
    with pytest.raises(ValueError, match="pass labels"):
        m(codes, local=local)
    with pytest.raises(ValueError, match="local features"):
        m(codes, labels=labels)
    with pytest.raises(ValueError, match="covering"):
        m(codes, labels=labels, local=local[:, :, :4])
    plain = _model()
    with pytest.raises(ValueError, match="num_classes=0"):
        plain(codes, labels=labels)


@pytest.mark.parametrize("output", ["softmax", "dlml"])
def test_nll_is_exact_and_loss_per_sample(output):
    m = _model(output=output, dtype=gm.float64)
    codes = _codes(2, 24, seed=6)
    nll = m.nll((codes,))
    out = m(codes).data
    if output == "softmax":
        lp = out - out.max(1, keepdims=True)
        lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
        want = -np.take_along_axis(lp, codes.data[:, None], 1).sum((1, 2))
        np.testing.assert_allclose(nll.data, want, rtol=1e-12)
    assert nll.shape == (2,) and np.all(np.isfinite(nll.data))
    loss, logs = m.loss((codes,))
    np.testing.assert_allclose(loss.item(), nll.data.mean() / 24, rtol=1e-12)
    np.testing.assert_allclose(logs["bits_per_sample"], loss.item() / np.log(2), rtol=1e-12)


@pytest.mark.parametrize("output", ["softmax", "dlml"])
def test_overfits_a_tiny_batch(output):
    """Two short clips of a sampled sine: the loss falls far below uniform (log 256 = 5.55)."""
    t = np.arange(64)
    wave = np.stack([0.8 * np.sin(2 * np.pi * t / 16), 0.5 * np.sin(2 * np.pi * t / 9 + 1)])
    codes = gm.tensor(gm.data.mu_law_encode(wave))
    m = _model(length=64, output=output, residual_channels=8, gate_channels=8, skip_channels=16,
               head_channels=32, layers=4, stacks=1)
    # the mixture sharpens its scales slowly and noisily: more, smaller steps
    steps, lr, bound = (120, 1e-2, 1.5) if output == "softmax" else (200, 3e-3, 3.5)
    opt = gm.optim.Adam(m.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        loss, _ = m.loss((codes,))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 4.5
    assert loss.item() < bound, loss.item()


def test_samples_shape_range_and_determinism():
    m = _model(length=30)
    a = m.sample(3, generator=gm.Generator().manual_seed(4))
    b = m.sample(3, generator=gm.Generator().manual_seed(4))
    assert a.shape == (3, 30) and a.dtype == gm.int64
    assert int(a.data.min()) >= 0 and int(a.data.max()) <= 255
    assert np.array_equal(a.data, b.data)
    d = _model(length=30, output="dlml").sample(2, generator=gm.Generator().manual_seed(0), length=11)
    assert d.shape == (2, 11) and 0 <= int(d.data.min()) and int(d.data.max()) <= 255
    with pytest.raises(ValueError, match="n >= 1"):
        m.sample(0)


def test_save_samples_writes_wav(tmp_path):
    m = _model(length=40, samples=2, sample_length=100)

    class _Data:
        sample_rate = 8000
    info = m.save_samples(tmp_path, _Data(), generator=gm.Generator().manual_seed(0))
    assert info["samples_file"] == "samples.wav" and info["sample_rate"] == 8000
    wave, rate = read_wav(tmp_path / "samples.wav")
    assert rate == 8000 and wave.shape == (2 * 100 + 8000 // 4,)
    assert np.abs(wave).max() <= 1.0


def test_rejects_non_sequence_data():
    with pytest.raises(ValueError, match="discrete codes"):
        WaveNet(WaveNet.Config(), DataInfo((1, 8, 8), 17))
    with pytest.raises(ValueError, match="discrete codes"):
        WaveNet(WaveNet.Config(), DataInfo((100,), 0))
    with pytest.raises(ValueError, match="temperature"):
        WaveNet.Config(temperature=0.0)
    with pytest.raises(ValueError, match="codes must be"):
        _model().loss((gm.randn(2, 24),))


def test_trains_end_to_end(tmp_path):
    from gmcore.train import TrainConfig, train
    tc = TrainConfig(steps=3, batch_size=2, warmup=0, eval_every=0, ckpt_every=0, progress=False,
                     out=str(tmp_path / "run"), num_samples=1)
    mc = WaveNet.Config(residual_channels=4, gate_channels=4, skip_channels=4, head_channels=8,
                        layers=2, stacks=1, clip_length=200, samples=1, sample_length=50)
    res = train("wavenet", tc, mc, log=lambda *a: None)
    assert np.isfinite(res["test_bits_per_sample"]) and res["samples_file"] == "samples.wav"
    assert res["unit"] == "sample" and res["test_bits"] == res["test_bits_per_sample"]
    assert (tmp_path / "run" / "samples.wav").exists()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 3


def test_generation_state_reset_and_checks():
    gm.manual_seed(0)
    st = gm.nn.WaveNetStack(3, 2, 4, layers=3, kernel_size=3).to(dtype=gm.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 9))
    _, skip = st(gm.tensor(x))
    state = st.generation_state(2)
    first = [state.step(x[:, :, t]) for t in range(9)]
    state.reset()
    again = [state.step(x[:, :, t]) for t in range(9)]
    for t in range(9):
        np.testing.assert_allclose(first[t], skip.data[:, :, t], rtol=1e-12, atol=1e-12)
        assert np.array_equal(first[t], again[t])
    with pytest.raises(ValueError, match=r"x_t must be a raw \(2, 3\)"):
        state.step(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="global_channels=0"):
        st.generation_state(2, glob=np.zeros((2, 4)))
