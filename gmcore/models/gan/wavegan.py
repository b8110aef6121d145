"""WaveGAN (Donahue, McAuley & Puckette 2019, "Adversarial Audio Synthesis"): DCGAN flattened to
one dimension for raw waveforms, trained as a WGAN-GP.

* Generator: z -> linear -> (C0, l0) -> ReLU -> stride-4 transposed 1-D convolutions of length
  25, halving the channels, ReLU between, the last to one channel and tanh into [-1, 1].
* Discriminator (critic): stride-4 1-D convolutions of length 25 doubling the channels from
  ``d_channels``, LeakyReLU(0.2), no normalisation, :class:`gmcore.nn.gan.PhaseShuffle` (n = 2) after every
  layer but the last, then a linear layer to one critic value. Phase shuffle moves each layer's
  activations by a random integer in [-n, n] (reflect padding), so the critic cannot tell real
  from fake by the phase of the generator's periodic upsampling artefacts.
* Loss: WGAN-GP with lambda 10, five critic updates per generator update, Adam at 1e-4 with
  betas (0.5, 0.9), as the paper.

Differences from the paper, for a 2-core CPU and gmcore's synthetic audio: 2048-sample clips at
8 kHz (0.26 s; the paper: 16384 at 16 kHz, about 1 s), so four stride-4 stages from length 8,
not five from 16 (the depth follows ``clip_length``: as many stages as keep the start >= 4, at
most five); ``g_channels`` = ``d_channels`` = 16 (the paper's d = 64), latent 64 (100), batch
32 (64). The paper's optional learned post-processing filter is left out. Phase shuffle draws
one shift per example (the authors' TensorFlow code draws one per batch).

No likelihood (``nll_kind`` "none"). The figure of a run's samples, in ``metrics.json``:
``spectral_distance_db``, the RMS over frequency of the difference, in dB, between the mean
power spectra of generated and held-out clips (:func:`spectral_distance`), beside
``spectral_distance_floor_db``, the same between the training and held-out clips (what a
perfect generator would score, up to sampling noise). It compares long-term spectra only: it
says nothing of timing, onsets or phase coherence; listen to ``samples.wav``. Every bin counts
alike in dB, so near-silent bands weigh as much as loud ones: the default run (500 steps) matches
the synthetic audio's loud band below 2 kHz to 4.9 dB (floor 2.0) but leaves broadband noise
above 2.5 kHz, where the data is near silent, 36 dB louder than the data's; all bins: 22.8 dB
(floor 2.4, untrained 23.0, whose output is quieter everywhere). 1000 steps: 22.1 (4.6 below
2 kHz, 34.9 above 2.5 kHz); kernels of 24 (even overlap of the stride-4 stages) and a learned
65-tap output filter (the paper's post-processing) did no better in short trials. The critic's
input gradient is about 15 dB weaker above 2.5 kHz than below 1 kHz, so little pushes the
generator there in a CPU-sized run (the paper trains for days).

Suggested CPU run (2 cores; 14 min with other jobs sharing the cores, 1.7 s a step)::

    gmcore train wavegan --out runs/wavegan
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import nn
from ...tensor import Tensor
from ..base import DataInfo
from ..registry import register
from ._adversarial import AdversarialModel, config_with_defaults
from ._nets import _minibatch

__all__ = ["WaveGAN", "WaveGANConfig", "WaveGenerator", "WaveDiscriminator",
           "mean_log_spectrum", "spectral_distance", "wave_stages"]

STRIDE = 4          # the paper's stride; the kernel length is a flag (25)
MAX_STAGES = 5      # the paper's depth (16 -> 16384)


def wave_stages(length: int) -> int:
    """The stride-4 stages between the generator's start and a clip of ``length``: as many as
    keep the start at least 4 long, at most five. 2048: 4 (from 8), 16384: 5 (from 16), 100: 1
    (from 25); 0 when ``length`` is not a multiple of 4 of at least 16."""
    s = 0
    while s < MAX_STAGES and length % STRIDE ** (s + 1) == 0 and length // STRIDE ** (s + 1) >= 4:
        s += 1
    return s


def _padding(kernel: int) -> tuple:
    """(padding, output_padding) with which a stride-4 conv divides a length by 4 and the
    transposed conv multiplies it by 4 (TensorFlow's "same")."""
    p = (kernel - STRIDE + 1) // 2
    return p, STRIDE + 2 * p - kernel


class WaveGenerator(nn.Module):
    """z (B, latent) -> (B, 1, length) in [-1, 1]: a linear layer to (channels * 2^(S-1),
    length / 4^S), ReLU, then S transposed convolutions (``kernel``, stride 4) halving the
    channels to ``channels`` and the last to 1, ReLU between, tanh at the end."""

    def __init__(self, latent_dim: int, length: int, channels: int, kernel: int = 25):
        super().__init__()
        s = wave_stages(length)
        self.start = (channels * 2 ** (s - 1), length // STRIDE ** s)
        self.project = nn.Linear(latent_dim, self.start[0] * self.start[1])
        pad, out_pad = _padding(kernel)
        mods, ch = [nn.ReLU()], self.start[0]
        for i in range(s):
            out = 1 if i == s - 1 else ch // 2
            mods += [nn.ConvTranspose1d(ch, out, kernel, stride=STRIDE, padding=pad, output_padding=out_pad),
                     nn.Tanh() if i == s - 1 else nn.ReLU()]
            ch = out
        self.body = nn.Sequential(*mods)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.project(z).reshape(z.shape[0], *self.start))


class WaveDiscriminator(nn.Module):
    """(B, 1, length) -> (B, 1): S convolutions (``kernel``, stride 4) doubling the channels from
    ``channels``, each followed by LeakyReLU(0.2) (after a layer norm with ``norm="layer"``) and,
    but for the last, :class:`gmcore.nn.gan.PhaseShuffle` (``shuffle``); flattened, then a linear layer
    (minibatch discrimination before it with ``minibatch_kernels`` > 0). ``features(x)`` is the
    flattened last layer (for feature matching)."""

    def __init__(self, length: int, channels: int, kernel: int = 25, shuffle: int = 2, norm: str = "none",
                 minibatch_kernels: int = 0):
        super().__init__()
        s = wave_stages(length)
        pad, _ = _padding(kernel)
        mods, ch_in, ch = [], 1, channels
        for i in range(s):
            mods += [nn.Conv1d(ch_in, ch, kernel, stride=STRIDE, padding=pad),
                     nn.GroupNorm(1, ch) if norm == "layer" and i > 0 else nn.Identity(), nn.LeakyReLU(0.2)]
            if i < s - 1:
                mods.append(nn.gan.PhaseShuffle(shuffle))
            ch_in, ch = ch, ch * 2
        self.body = nn.Sequential(*mods, nn.Flatten())
        feats = ch_in * (length // STRIDE ** s)
        self.minibatch = _minibatch(feats, minibatch_kernels)
        self.head = nn.Linear(feats + minibatch_kernels, 1)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.minibatch(self.body(x)))


# ---- the figure of the samples --------------------------------------------------------------------

N_FFT, HOP = 256, 128     # 32 ms frames at 8 kHz, 129 frequency bins
POWER_FLOOR = 1e-10       # -100 dB: a silent bin counts as this quiet, not as minus infinity


def mean_log_spectrum(clips, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """The long-term spectrum of ``clips`` (N, T) (or (N, 1, T)) in dB: Hann-windowed frames of
    ``n_fft`` samples every ``hop``, power ``|rfft|^2 / sum(window^2)`` averaged over every frame
    of every clip, then ``10 log10(mean power + 1e-10)``; (n_fft // 2 + 1,) bins.

    >>> import numpy as np
    >>> t = np.arange(2048)
    >>> int(np.argmax(mean_log_spectrum(np.sin(2 * np.pi * 32 * t / 256)[None])))   # bin 32
    32
    """
    x = np.asarray(clips, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] < n_fft:
        raise ValueError(f"mean_log_spectrum: clips of {x.shape[1]} samples are shorter than a frame "
                         f"({n_fft})")
    starts = np.arange(0, x.shape[1] - n_fft + 1, hop)
    window = np.hanning(n_fft)
    frames = x[:, starts[:, None] + np.arange(n_fft)] * window          # (N, frames, n_fft)
    power = (np.abs(np.fft.rfft(frames, axis=-1)) ** 2).mean((0, 1)) / (window ** 2).sum()
    return 10.0 * np.log10(power + POWER_FLOOR)


def spectral_distance(a, b, n_fft: int = N_FFT, hop: int = HOP) -> float:
    """``sqrt(mean_f (S_a(f) - S_b(f))^2)`` in dB, with S the :func:`mean_log_spectrum` of each
    set of clips: how far apart their long-term spectra are (0 for sets alike; 6.02 dB when one
    set is the other at twice the amplitude).

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(4, 1024))
    >>> round(spectral_distance(x, 2 * x), 2)
    6.02
    """
    return float(np.sqrt(np.mean((mean_log_spectrum(a, n_fft, hop) - mean_log_spectrum(b, n_fft, hop)) ** 2)))


# ---- the model ---------------------------------------------------------------------------------

_WaveGANBase = config_with_defaults("_WaveGANBase", loss="wasserstein", gp_weight=10.0, n_critic=5,
                                    beta1=0.5, beta2=0.9, d_norm="none", latent_dim=64, g_channels=16,
                                    d_channels=16)


@dataclass
class WaveGANConfig(_WaveGANBase):
    """GANConfig's fields (``hidden``, ``layers``, ``arch``, ``labels`` and ``vbn_reference`` do
    not apply) and the audio's."""

    kernel_size: int = field(default=25, metadata={"help": "length of every (transposed) convolution "
                                                           "(the paper: 25)", "min": 4})
    phase_shuffle: int = field(default=2, metadata={"help": "critic's phase shuffle: shifts in [-n, n] "
                                                            "(0 = off)", "min": 0})
    clip_length: int = field(default=2048, metadata={"help": "samples per clip (a multiple of 4, >= 16; "
                                                             "audio data set option)", "min": 16})
    sample_rate: int = field(default=8000, metadata={"help": "Hz; the synthetic audio is made at this rate, "
                                                             "WAV files resampled to it (0 = the files' own)",
                                                     "min": 0})
    seconds: float = field(default=120.0, metadata={"help": "length of the synthetic default audio (no "
                                                            "effect with --data-root)", "min": 1.0})
    samples: int = field(default=8, metadata={"help": "clips written to samples.wav", "min": 1})
    figure_clips: int = field(default=256, metadata={"help": "generated clips whose spectrum is compared "
                                                             "with the held-out clips' (metrics.json)",
                                                     "min": 1})


@register("wavegan", family="gan", dataset="audio",
          description="WaveGAN: 1-D DCGAN with phase shuffle on raw audio, WGAN-GP; writes samples.wav")
class WaveGAN(AdversarialModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = WaveGAN(WaveGAN.Config(g_channels=2, d_channels=2, latent_dim=4, kernel_size=8),
    ...             DataInfo((1, 256), 0, "audio"))
    >>> x = m.sample(3, generator=gm.Generator().manual_seed(0))
    >>> x.shape, m.discriminator(x).shape
    (gmcore.Size([3, 1, 256]), gmcore.Size([3, 1]))
    """

    Config = WaveGANConfig
    # the paper's lr and batch 32; a step is five critic updates with the penalty's double backward
    train_defaults = {**AdversarialModel.train_defaults, "lr": 1e-4, "batch_size": 32, "steps": 500,
                      "eval_every": 0}

    @classmethod
    def dataset_options(cls, config) -> dict:
        return {"clip_length": config.clip_length, "encoding": "float",
                "sample_rate": config.sample_rate or None, "seconds": config.seconds}

    def _check_data(self, data: DataInfo) -> None:
        c = self.config
        if len(data.shape) != 2 or data.shape[0] != 1 or data.num_levels != 0:
            raise ValueError(f"wavegan models float waveforms (1, length) (the audio data set with encoding "
                             f"'float'), not {data.name or 'data'} of shape {tuple(data.shape)} with "
                             f"{data.num_levels} levels")
        if wave_stages(int(data.shape[1])) == 0:
            raise ValueError(f"wavegan: clips of {data.shape[1]} samples; --clip-length must be a multiple "
                             "of 4 of at least 16 (the networks go by stride-4 stages from a length >= 4)")
        for name, ok in (("arch", c.arch == "auto"), ("labels", c.labels == "none"),
                         ("vbn_reference", c.vbn_reference == 0)):
            if not ok:
                raise ValueError(f"wavegan: --{name.replace('_', '-')} does not apply (1-D convolutional "
                                 "networks, unconditional)")
        if c.d_norm == "batch":
            raise ValueError("wavegan: --d-norm batch is not offered (it would break the per-example "
                             "gradient penalty); use none (the paper) or layer")
        if c.kernel_size < STRIDE:
            raise ValueError(f"wavegan: --kernel-size must be >= the stride {STRIDE}, got {c.kernel_size}")

    def _build_networks(self) -> None:
        c, length = self.config, int(self.data.shape[1])
        self.generator = WaveGenerator(c.latent_dim, length, c.g_channels, c.kernel_size)
        self.discriminator = WaveDiscriminator(length, c.d_channels, c.kernel_size, c.phase_shuffle, c.d_norm,
                                               c.minibatch_kernels)

    def save_samples(self, out_dir, dataset, generator=None) -> dict:
        """Write ``samples.wav`` (``samples`` clips, 16-bit at the data's rate, 0.25 s of silence
        between them) and return it with the figure: the spectral distance of ``figure_clips``
        generated clips to the held-out split of ``dataset``'s audio, and the training clips'
        distance to it (the floor)."""
        from ...data import get_dataset
        from ...data.audio import write_wav

        c = self.config
        rate = int(getattr(dataset, "sample_rate", 0) or c.sample_rate or 16000)
        n = max(c.samples, c.figure_clips)
        fake = np.concatenate([self.sample(min(64, n - i), generator=generator).cpu().numpy()
                               for i in range(0, n, 64)])[:, 0]
        gap = np.zeros((c.samples, rate // 4), np.float32)
        audio = np.concatenate([fake[:c.samples], gap], axis=1).reshape(-1)[:-(rate // 4) or None]
        fake = fake[:c.figure_clips]
        path = Path(out_dir) / "samples.wav"
        write_wav(path, audio, rate)
        res = {"samples_file": path.name, "sample_rate": rate, "sample_clips": int(c.samples),
               "sample_seconds": round(len(audio) / rate, 3)}
        source = getattr(dataset, "source", None)
        if source is None:   # not the audio data set: no held-out split to compare with
            return res
        held_out = get_dataset("audio", "test", root=None if source == "synthetic" else source,
                               **self.dataset_options(c)).arrays[0]
        train = dataset.arrays[0]
        n_fft = min(N_FFT, fake.shape[-1])     # short clips: one frame per clip
        res.update({"spectral_distance_db": spectral_distance(fake, held_out, n_fft, n_fft // 2),
                    "spectral_distance_floor_db": spectral_distance(train, held_out, n_fft, n_fft // 2),
                    "spectral_figure": f"RMS over {n_fft // 2 + 1} frequency bins of the difference of the "
                                       f"mean power spectra (dB) of {len(fake)} generated and "
                                       f"{len(held_out)} held-out clips; floor: {len(train)} training clips "
                                       "vs the same"})
        return res

