"""Generated and text/audio data: 2-D toys, character text, mu-law, WAV files."""
import wave

import numpy as np
import pytest

from gmcore.data import (Audio, CharText, DataLoader, Toy2D, get_dataset, make_8gaussians,
                         make_checkerboard, make_circles, make_moons, make_swiss_roll,
                         mu_law_decode, mu_law_encode, read_wav, synthetic_signal, write_wav)
import gmcore as gm

# ---- toy 2-D ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [make_moons, make_circles, make_swiss_roll, make_8gaussians,
                                  make_checkerboard])
def test_toy_shapes_and_seeds(make):
    x, y = make(501, seed=4)
    assert x.shape == (501, 2) and x.dtype == np.float32 and y.shape == (501,) and y.dtype == np.int64
    np.testing.assert_array_equal(x, make(501, seed=4)[0])
    assert not np.array_equal(x, make(501, seed=5)[0])
    assert make(0)[0].shape == (0, 2)


def test_toy_geometry():
    x, y = make_circles(2000, noise=0.0)
    r = np.hypot(*x.T)
    np.testing.assert_allclose(r[y == 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(r[y == 1], 0.5, atol=1e-5)
    x, y = make_moons(2000, noise=0.0)
    np.testing.assert_allclose(np.hypot(*x[y == 0].T), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.hypot(x[y == 1, 0] - 1, x[y == 1, 1] - 0.5), 1.0, atol=1e-5)
    assert (x[y == 0, 1] >= -1e-6).all() and (x[y == 1, 1] <= 0.5 + 1e-6).all()
    x, y = make_8gaussians(4000, noise=0.05)
    for k in range(8):
        centre = 2.0 * np.array([np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)])
        np.testing.assert_allclose(x[y == k].mean(0), centre, atol=0.02)
        assert np.abs(x[y == k].std(0) - 0.05).max() < 0.01
    x, y = make_checkerboard(4000)
    assert np.abs(x).max() <= 2.0
    cells = np.floor(x + 2.0).astype(int)
    assert ((cells.sum(1) % 2) == 0).all(), "every point lies on a black square"
    assert len(np.unique(y)) == 8
    x, _ = make_swiss_roll(4000, noise=0.0)
    r = np.hypot(*x.T) * 5
    assert r.min() >= 1.5 * np.pi - 1e-3 and r.max() <= 4.5 * np.pi + 1e-3


def test_toy_dataset_splits_differ():
    tr, te = Toy2D("moons", n=300, seed=1), get_dataset("moons", split="test", n=300, seed=1)
    assert len(tr) == len(te) == 300 and tr.shape == (2,)
    assert not np.isin(tr.points[:, 0], te.points[:, 0]).any()
    with pytest.raises(ValueError, match="unknown toy"):
        Toy2D("spiral")
    with pytest.raises(ValueError, match="non-negative integer"):
        make_moons(-1)


# ---- text ---------------------------------------------------------------------------------

TEXT = "the quick brown fox jumps over the lazy dog. " * 20 + "QXZ!"


def test_text_vocab_and_alignment():
    ds = CharText(text=TEXT, seq_len=16, train_fraction=0.9)
    assert ds.name == "text" and ds.shape == (16,)
    assert ds.vocab == "".join(sorted(set(TEXT[:int(len(TEXT) * 0.9)]))) + "\ufffd"
    assert all(ds.itos[ds.stoi[c]] == c for c in ds.vocab)
    x, y = ds[3]
    assert x.dtype == y.dtype == np.int64 and x.shape == y.shape == (16,)
    assert ds.decode(x) == TEXT[48:64] and ds.decode(y) == TEXT[49:65]
    np.testing.assert_array_equal(x[1:], y[:-1])              # target = input shifted by one
    bx, by = ds.get_batch(np.array([3, 0]))
    np.testing.assert_array_equal(bx[0], x)
    np.testing.assert_array_equal(by[0], y)
    assert len(ds) == (int(len(TEXT) * 0.9) - 1 - 16) // 16 + 1
    last = ds[len(ds) - 1]
    assert len(last[1]) == 16


def test_text_test_split_uses_train_vocab_and_unk():
    tr = CharText("train", text=TEXT, seq_len=8)
    te = CharText("test", text=TEXT, seq_len=8)
    assert te.vocab == tr.vocab
    cut = int(len(TEXT) * 0.9)
    tail = te.decode(te.ids)
    assert tail.replace("\ufffd", "?") == "".join(c if c in tr.stoi else "?" for c in TEXT[cut:])
    assert "\ufffd" in tail                                    # Q, X, Z, ! never seen in training
    assert te.decode(gm.tensor(te.ids[:5])) == tail[:5]


def test_text_stride_loader_and_default(tmp_path):
    ds = CharText(text=TEXT, seq_len=10, stride=3)
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 10) and x.dtype == gm.int64
    np.testing.assert_array_equal(x.data[1], ds.encode(TEXT[3:13]))
    default = get_dataset("text", seq_len=32)
    from pydoc_data.topics import topics
    joined = "\n".join(topics[k] for k in sorted(topics))
    assert default.decode(default[0][0]) == joined[:32]
    f = tmp_path / "t.txt"
    f.write_text("abcdefghij" * 5, encoding="utf-8")
    assert get_dataset("text", root=str(f), seq_len=4).vocab_size == 11


def test_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="text file not found"):
        CharText(path=tmp_path / "none.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(ValueError, match=r"bin\.txt: not UTF-8"):
        CharText(path=tmp_path / "bin.txt")
    (tmp_path / "short.txt").write_text("abc")
    with pytest.raises(ValueError, match=r"short\.txt.*too few"):
        CharText(path=tmp_path / "short.txt", seq_len=8)


# ---- audio --------------------------------------------------------------------------------

def test_mu_law_round_trip_bound():
    mu = 255
    x = np.linspace(-1, 1, 20001)
    q = mu_law_encode(x)
    assert q.dtype == np.int64 and q.min() == 0 and q.max() == 255
    assert np.all(np.diff(q) >= 0)                                         # monotone
    err = np.abs(mu_law_decode(q).astype(np.float64) - x)
    # half a quantization step in the companded domain, through the slope of the expander
    bound = np.log1p(mu) * (1 + mu * np.abs(x)) * (1 + mu) ** (1 / mu) / mu ** 2
    assert np.all(err <= bound + 1e-6)
    assert err.max() < 0.022 and err[np.abs(x) < 0.01].max() < 1e-3
    codes = np.arange(256)
    np.testing.assert_array_equal(mu_law_encode(mu_law_decode(codes)), codes)   # exact on codes
    np.testing.assert_array_equal(mu_law_encode(np.array([-3.0, 3.0])), [0, 255])  # clipped
    t = mu_law_encode(gm.tensor([0.0, 0.5]))
    assert isinstance(t, gm.Tensor) and t.dtype == gm.int64
    assert mu_law_encode(np.array([0.3]), quantization_channels=16).max() < 16


@pytest.mark.parametrize("width", [1, 2])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_read(tmp_path, width, channels):
    rng = np.random.default_rng(0)
    frames = rng.uniform(-0.9, 0.9, (1000, channels))
    p = tmp_path / "a.wav"
    write_wav(p, frames if channels == 2 else frames[:, 0], 8000, sample_width=width)
    with wave.open(str(p)) as w:
        assert (w.getsampwidth(), w.getnchannels(), w.getframerate()) == (width, channels, 8000)
    s, rate = read_wav(p)
    assert rate == 8000 and s.dtype == np.float32 and s.shape == (1000,)
    tol = 1.5 / 128 if width == 1 else 1.5 / 32768
    np.testing.assert_allclose(s, frames.mean(1), atol=tol)


def test_audio_dataset_default_and_files(tmp_path):
    ds = Audio("train", seconds=3.0, clip_length=4000)
    te = Audio("test", seconds=3.0, clip_length=4000)
    assert (len(ds), len(te), ds.sample_rate, ds.quantization_channels) == (11, 1, 16000, 256)
    (c,) = ds[0]
    assert c.dtype == np.int64 and c.shape == (4000,) and 0 <= c.min() and c.max() <= 255
    s = synthetic_signal(3.0)
    np.testing.assert_array_equal(te[0][0], mu_law_encode(s[44000:48000]))
    fl = get_dataset("audio", encoding="float", clip_length=1000, seconds=1.0)
    assert fl.shape == (1, 1000) and fl[0][0].dtype == np.float32
    (tmp_path / "clips").mkdir()
    write_wav(tmp_path / "clips" / "a.wav", s[:5000], 16000)
    write_wav(tmp_path / "clips" / "b.wav", s[5000:9000], 16000)
    fd = Audio("train", path=tmp_path / "clips", clip_length=2000)
    assert len(fd) == 3 and fd.sample_rate == 16000          # 2 + 2 clips, the last is test
    rs = Audio("train", path=tmp_path / "clips" / "a.wav", clip_length=500, sample_rate=8000)
    assert rs.sample_rate == 8000 and len(rs) + 1 == 5


def test_audio_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="WAV file not found"):
        read_wav(tmp_path / "none.wav")
    (tmp_path / "text.wav").write_text("definitely not RIFF")
    with pytest.raises(ValueError, match=r"text\.wav: not a readable PCM WAV"):
        read_wav(tmp_path / "text.wav")
    with wave.open(str(tmp_path / "w24.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(8000)
        w.writeframes(b"\x00" * 300)
    with pytest.raises(ValueError, match=r"w24\.wav: sample width 3 bytes \(24-bit\) is not supported"):
        read_wav(tmp_path / "w24.wav")
    write_wav(tmp_path / "ok.wav", np.zeros(1000), 8000)
    blob = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(blob[:-500])
    with pytest.raises(ValueError, match=r"cut\.wav: truncated WAV data"):
        read_wav(tmp_path / "cut.wav")
    with pytest.raises(FileNotFoundError, match="audio path not found"):
        Audio(path=tmp_path / "missing")
    with pytest.raises(ValueError, match="none for the test split"):
        Audio("test", path=tmp_path / "ok.wav", clip_length=1000)
    with pytest.raises(ValueError, match="encoding"):
        Audio(encoding="alaw")
