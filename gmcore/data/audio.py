"""Audio: mu-law companding, WAV files through the stdlib ``wave`` module, a synthetic default.

``mu_law_encode`` / ``mu_law_decode`` implement ITU-T G.711-style mu-law with
``mu = quantization_channels - 1`` (255 for the 256-way softmax of WaveNet).
"""
import io
import os
import wave
from pathlib import Path

import numpy as np

from .loader import ArrayDataset
from ._images import check_split

__all__ = ["mu_law_encode", "mu_law_decode", "read_wav", "write_wav", "synthetic_signal", "Audio"]


def _unwrap(x):
    from ..tensor import Tensor
    if isinstance(x, Tensor):
        return x.detach().data, True
    return x, False


def _xp(a):
    from .. import backend
    return backend.xp_of(a) if backend._is_cupy_array(a) else np


def mu_law_encode(x, quantization_channels=256):
    """Map samples in ``[-1, 1]`` to integers ``0..quantization_channels-1`` (int64).

    ``f = sign(x) log(1 + mu |x|) / log(1 + mu)``, then ``f`` in ``[-1, 1]`` is quantized
    uniformly: ``q = floor((f + 1) / 2 * mu + 1/2)``. Values outside ``[-1, 1]`` are clipped.
    Accepts NumPy/CuPy arrays or gmcore Tensors (returns the same kind; no gradient).

    >>> import numpy as np
    >>> mu_law_encode(np.array([-1.0, 0.0, 1.0])).tolist()
    [0, 128, 255]
    """
    a, is_tensor = _unwrap(x)
    xp = _xp(a)
    a = xp.clip(xp.asarray(a, dtype=xp.float64), -1.0, 1.0)
    mu = float(quantization_channels - 1)
    f = xp.sign(a) * xp.log1p(mu * xp.abs(a)) / np.log1p(mu)
    q = xp.floor((f + 1.0) * (mu / 2.0) + 0.5).astype(xp.int64)
    if is_tensor:
        from ..tensor import Tensor
        return Tensor(q)
    return q


def mu_law_decode(q, quantization_channels=256):
    """Inverse of ``mu_law_encode``: integers ``0..Q-1`` to float32 samples in ``[-1, 1]``.

    >>> import numpy as np
    >>> x = np.linspace(-1, 1, 9)
    >>> bool(np.abs(mu_law_decode(mu_law_encode(x)) - x).max() < 0.03)
    True
    """
    a, is_tensor = _unwrap(q)
    xp = _xp(a)
    a = xp.asarray(a)
    mu = float(quantization_channels - 1)
    f = a.astype(xp.float64) * (2.0 / mu) - 1.0
    x = (xp.sign(f) * xp.expm1(xp.abs(f) * np.log1p(mu)) / mu).astype(xp.float32)
    if is_tensor:
        from ..tensor import Tensor
        return Tensor(x)
    return x


def read_wav(path):
    """A WAV file as ``(mono float32 samples in [-1, 1], sample_rate)``.

    8-bit (unsigned) and 16-bit (signed) PCM; stereo and multi-channel files are averaged to
    mono.
    """
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"WAV file not found: {path}")
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = (w.getnchannels(), w.getsampwidth(), w.getframerate(),
                                             w.getnframes())
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{path}: not a readable PCM WAV file ({e})") from None
    if width not in (1, 2):
        raise ValueError(f"{path}: sample width {width} bytes ({8 * width}-bit) is not supported; "
                         "convert it to 8- or 16-bit PCM")
    if channels < 1:
        raise ValueError(f"{path}: the header says {channels} channels")
    expected = frames * channels * width
    if len(raw) < expected:
        raise ValueError(f"{path}: truncated WAV data ({len(raw)} of {expected} bytes)")
    if width == 1:
        s = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        s = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    s = s.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return s, rate


def write_wav(path, samples, sample_rate, sample_width=2):
    """Write mono (1-D) or multi-channel ``(frames, channels)`` float samples in ``[-1, 1]``
    (atomically: a temporary file renamed into place)."""
    s = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    s = s[:, None] if s.ndim == 1 else s
    if s.ndim != 2:
        raise ValueError(f"samples must be (frames,) or (frames, channels), got shape {s.shape}")
    if sample_width == 1:
        data = np.round(s * 127.0 + 128.0).astype(np.uint8).tobytes()
    elif sample_width == 2:
        data = np.round(s * 32767.0).astype("<i2").tobytes()
    else:
        raise ValueError(f"sample_width must be 1 or 2 bytes, got {sample_width}")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(s.shape[1])
        w.setsampwidth(sample_width)
        w.setframerate(int(sample_rate))
        w.writeframes(data)
    from ..io import atomic_write_bytes  # a torn WAV never replaces a good one
    atomic_write_bytes(path, buf.getvalue())


def synthetic_signal(seconds=10.0, sample_rate=16000, seed=0):
    """Seeded music-like audio: harmonic notes (pentatonic, 110-880 Hz) and rising chirps.

    >>> s = synthetic_signal(1.0)
    >>> s.shape, s.dtype, bool(abs(s).max() <= 0.9 + 1e-6)
    ((16000,), dtype('float32'), True)
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    n = int(round(seconds * sample_rate))
    out = np.zeros(n)
    pentatonic = np.array([0, 3, 5, 7, 10])       # semitones above A of a minor pentatonic
    pos = 0
    while pos < n:
        length = min(int(rng.uniform(0.15, 0.5) * sample_rate), n - pos)
        t = np.arange(length) / sample_rate
        if rng.random() < 0.2:                    # a chirp: frequency rises linearly
            f0, f1 = rng.uniform(200, 500), rng.uniform(1000, 3000)
            dur = length / sample_rate
            phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * dur))
            note = 0.5 * np.sin(phase) * np.hanning(length)
        else:                                     # a note with 3 harmonics and a decay
            f = 110.0 * 2 ** ((pentatonic[rng.integers(5)] + 12 * rng.integers(3)) / 12)
            note = sum(a * np.sin(2 * np.pi * k * f * t) for k, a in ((1, 1.0), (2, 0.5), (3, 0.25)))
            attack = np.minimum(1.0, t / 0.01)
            note = note * attack * np.exp(-t * rng.uniform(3, 8))
        out[pos:pos + length] += note
        pos += length
    out *= 0.9 / max(np.abs(out).max(), 1e-12)
    return out.astype(np.float32)


def _resample(s, rate, target):
    """Linear interpolation (no anti-aliasing filter: fine for toy data, not for hi-fi)."""
    if rate == target:
        return s
    n = int(round(len(s) * target / rate))
    return np.interp(np.arange(n) * (rate / target), np.arange(len(s)), s).astype(np.float32)


class Audio(ArrayDataset):
    """Fixed-length clips of mono audio, as mu-law codes or float waveforms.

    Args:
        split: ``"train"`` (the first clips) or ``"test"`` (the last ``test_fraction`` of them).
        path: a WAV file or a folder of ``*.wav`` (sorted by name); ``None`` for
            ``synthetic_signal(seconds, sample_rate, seed)``.
        clip_length: samples per clip (a file's remainder is dropped).
        sample_rate: target rate; ``None`` keeps the files' rate (they must agree). Files at
            another rate are resampled by linear interpolation.
        quantization_channels: ``Q`` of the mu-law codes (``mu = Q - 1``).
        encoding: ``"mu_law"``: examples are ``(codes int64 (clip_length,),)`` in ``0..Q-1``;
            ``"float"``: ``(waveform float32 (1, clip_length),)`` in ``[-1, 1]``.

    >>> ds = Audio("train", seconds=2.0, clip_length=4000)
    >>> len(ds), ds.shape, ds.sample_rate, ds.quantization_channels
    (7, (4000,), 16000, 256)
    """

    def __init__(self, split="train", path=None, clip_length=4000, sample_rate=None,
                 quantization_channels=256, encoding="mu_law", test_fraction=0.1, seconds=10.0,
                 seed=0):
        check_split(split)
        if encoding not in ("mu_law", "float"):
            raise ValueError(f"encoding must be 'mu_law' or 'float', got {encoding!r}")
        if not 2 <= quantization_channels <= 65536:
            raise ValueError(f"quantization_channels must lie in 2..65536, got {quantization_channels}")
        clip_length = int(clip_length)
        if clip_length < 1:
            raise ValueError(f"clip_length must be positive, got {clip_length}")
        if path is None:
            sample_rate = 16000 if sample_rate is None else int(sample_rate)
            signals = [synthetic_signal(seconds, sample_rate, seed)]
            source = "synthetic"
        else:
            signals, sample_rate = self._load(Path(os.fspath(path)).expanduser(), sample_rate)
            source = str(path)
        clips = [s[:len(s) // clip_length * clip_length].reshape(-1, clip_length) for s in signals]
        clips = np.concatenate(clips) if clips else np.zeros((0, clip_length), np.float32)
        total = len(clips)
        n_test = 0 if total < 2 else min(total - 1, max(1, int(round(total * test_fraction))))
        part = clips[:total - n_test] if split == "train" else clips[total - n_test:]
        if len(part) == 0:
            raise ValueError(f"{source}: {total} clip(s) of {clip_length} samples leave none for "
                             f"the {split} split; use shorter clips or more audio")
        if encoding == "mu_law":
            codes = mu_law_encode(part, quantization_channels)
            small = np.uint8 if quantization_channels <= 256 else np.uint16
            super().__init__(codes.astype(small), transforms=(lambda c: c.astype(np.int64),),
                             name="audio")
        else:
            super().__init__(part[:, None, :].astype(np.float32), name="audio")
        self.sample_rate, self.quantization_channels = int(sample_rate), int(quantization_channels)
        self.encoding, self.clip_length, self.split, self.source = encoding, clip_length, split, source

    @staticmethod
    def _load(path, sample_rate):
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".wav")
            if not files:
                raise ValueError(f"no .wav files in {path}")
        elif path.exists():
            files = [path]
        else:
            raise FileNotFoundError(f"audio path not found: {path}")
        loaded = [(p, *read_wav(p)) for p in files]
        if sample_rate is None:
            rates = {r for _, _, r in loaded}
            if len(rates) > 1:
                raise ValueError(f"the WAV files in {path} have different sample rates "
                                 f"{sorted(rates)}; pass sample_rate= to resample them")
            sample_rate = rates.pop()
        return [_resample(s, r, int(sample_rate)) for _, s, r in loaded], int(sample_rate)

    @property
    def shape(self):
        return (self.clip_length,) if self.encoding == "mu_law" else (1, self.clip_length)

    @property
    def num_levels(self):
        """Values one sample can take: the mu-law quantization channels (0 for float audio)."""
        return self.quantization_channels if self.encoding == "mu_law" else 0
