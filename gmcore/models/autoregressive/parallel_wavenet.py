"""Parallel WaveNet (van den Oord et al. 2018, "Parallel WaveNet: Fast High-Fidelity Speech
Synthesis"): an inverse-autoregressive-flow student distilled from a finished WaveNet.

A second stage: ``gmcore train parallel-wavenet --base-run RUN``, where RUN is a finished
``wavenet --output dlml`` run (unconditional) on the ``audio`` data. The teacher is frozen; its
weights are kept inside this run's checkpoint.

* Student (:mod:`._parallel_wavenet_flow`): ``flows`` (4, as the paper's 4 stacks) inverse
  autoregressive flows, each a small WaveNet over the previous flow's output predicting
  (mu_t, log s_t) from x_{<t}; x_t <- x_t * s_t + mu_t, starting from logistic noise z. The
  output at step t is a logistic with the composed mean and scale (Sec. 2.2), so one parallel
  pass gives the sample and its exact log-density. Values live on the teacher's axis
  y = 2c/(Q-1) - 1 of the mu-law codes c; samples are rounded to the nearest code.
* Loss: probability density distillation KL(P_S || P_T) = H(P_S, P_T) - H(P_S) (Sec. 3.1), in
  nats per sample. H(P_S) is analytic: sum_t (log S_t + 2), a logistic's entropy, with S_t from
  the one noise draw. The cross-entropy follows the paper's estimator: one student sample x
  gives every step's context x_{<t}; the teacher is run once on it (in parallel) for every step's
  mixture p_T(. | x_{<t}); then ``ce_samples`` extra draws x'_t = M_t + S_t eps per step from the
  student's own p_S(x_t | x_{<t}) are scored under that mixture, -mean log p_T(x'_t | x_{<t}).
  The gradient reaches the student through the draws (reparameterized) and through the context
  x_{<t} into the teacher. Plus ``power_weight`` times the power loss (Sec. 3.2,
  :mod:`._parallel_wavenet_power`): ``--power-loss linear`` (the paper's squared difference of
  average |STFT|^2, the default), ``log`` (squared log-spectral distance) or ``loudness``
  (squared log-ratio of the total power), against a reference spectrum: ``--power-target
  teacher`` (the default) the average spectrum of 64 of the teacher's own samples, drawn once
  from seed 0, or ``data`` the batch of real clips (the paper's). Plus ``loudness_weight``
  times the loudness term against the same reference, a barrier against silence (below).
* The teacher as a continuous density (:mod:`._parallel_wavenet_teacher`): its table-lookup
  input layer is interpolated linearly between neighbouring codes, and its discretized mixture
  is scored as the continuous mixture (log-density + log(bin width) ~ log-probability of an
  interior bin). Both equal the teacher on the code grid.

Evaluation. ``nll`` is the student's own bound on the test codes' NLL: the flow is inverted step
by step for the exact log-density of uniformly dequantized codes,
-log P(c) <= -log p_S(y_c + u) - T log(2/(Q-1)) (Jensen; the edge bins are cut to their width,
which only loosens it). The run's ``metrics.json`` also gets (in bits per sample, the teacher's
unit): the teacher's NLL on the test clips, the teacher's NLL of the student's samples (rounded
to codes: the issue's target is within 10% of the teacher's own), the teacher's NLL of its own
samples (what a perfect student would get), the student's exact log-density of its samples, the
average power of the test clips, the student's and the teacher's samples (with the student's
power ratio and log-spectral distance to the test clips: the NLL alone rewards silence, see
below), and samples/s at batch 1 for the student's one parallel pass and the teacher's
incremental generation, on the same length (target >= 20x).

What differs from the paper: no conditioning (the audio set has no features), small flows
(8 layers each, not 10/10/10/30), the distillation in the mu-law companded domain where the
teacher lives, the power loss on that axis against the teacher's samples' average spectrum
(not the data's clip by clip), a loudness barrier, and no perceptual or contrastive loss.

Why the teacher's spectrum: the paper's teacher is good enough that its samples have the data's
spectrum, so the power loss and the KL agree. Ours (a 300-step ``wavenet --output dlml``: 4.73
test bits/sample) is not: its own samples carry 79-87% of the test clips' power, with too much
below 500 Hz, so a power loss towards the data pulls the student away from the teacher and costs
KL. Against the teacher's samples the KL's minimiser (the student equal to the teacher) also
zeroes the power loss. Why the barrier: the teacher's density is highest at silence (all-mid-code
clips: 2.67 bits/sample, far *below* the data), so the mode-seeking KL pulls the student towards
it, and the linear power loss, whose gradient vanishes with the student's amplitude, cannot pull
a student back once it has fallen quiet: at seed 1 the default without the barrier fell silent by
step 175 (the power loss stuck at its value for silence, 0.0044) and stayed there, scored by the
teacher at ~4.93 bits/sample in training, a figure that beats the teacher's own and means nothing
(6 flows did the same at seed 0: 0.6% of the power, 5.02 bits/sample in the report). The
squared log-ratio of the total powers grows without bound as the power falls (weight 1: ~0.005
at the power the student settles at, 21 at 1%).

What it does on the synthetic default audio (2000 steps): audible samples at 79-81% of the test
clips' power, scored by the teacher at 5.57 / 5.60 / 5.48 bits/sample at seeds 0 / 1 / 2 (1.18x,
1.18x, 1.16x the teacher's test NLL; the issue's 1.1x is not reached; the paper's data-target
loss at 600 steps, the earlier default, gave 6.15, 1.30x), 81-92x faster than the teacher's
incremental sampler at batch 1. Where the rest is lost: ``python benchmarks/parallel_wavenet_floor.py RUN`` fits, on the
student's own contexts, the best single logistic to each step's teacher conditional: its KL is
0.11 nats/sample against the student's 0.73, so the one-logistic output form is not the limit;
the student's networks do not find (M_t, S_t) that close. Neither more steps (5000: 1.14x), 32
channels, 6 flows, a lower or higher learning rate, batch 8, 16 cross-entropy draws, an EMA
of the weights, another power weight (0, 3000, 10000) nor a Gaussian moment-matching guide
(ClariNet's closed-form KL at the teacher mixture's moments) moved the KL below ~0.73
nats/sample at the power the barrier holds; a better teacher (1000 steps, 2.92 bits/sample) gave
a worse ratio (1.33x), and so did 10 layers per flow (receptive field 1024: 1.215x). The student's
own bound on the test clips is poor (12-13 bits/sample): reverse KL puts little mass where the
student's samples are not.

Suggested CPU run (after ``gmcore train wavenet --output dlml --out runs/wavenet``)::

    gmcore train parallel-wavenet --base-run runs/wavenet
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import creation as gc
from ..._dtype import int64
from ...autograd import no_grad
from ...random import Generator
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register
from ._parallel_wavenet_flow import IAFStudent, logistic_noise
from ._parallel_wavenet_power import average_power, spectrum_loss
from ._parallel_wavenet_teacher import continuous_outputs, mixture_log_density, to_axis, to_codes

__all__ = ["ParallelWaveNet", "ParallelWaveNetConfig"]

_LOG2 = math.log(2.0)


@dataclass
class ParallelWaveNetConfig:
    base_run: str = field(default="", metadata={
        "help": "the finished 'wavenet --output dlml' run to distill (required)"})
    flows: int = field(default=4, metadata={"help": "inverse autoregressive flows (the paper's stacks)",
                                            "min": 1})
    channels: int = field(default=16, metadata={"help": "residual channels of each flow's WaveNet", "min": 1})
    gate_channels: int = field(default=16, metadata={"help": "gate channels of each flow", "min": 1})
    skip_channels: int = field(default=32, metadata={"help": "skip channels of each flow", "min": 1})
    head_channels: int = field(default=32, metadata={"help": "width of each flow's 1x1 head", "min": 1})
    layers: int = field(default=8, metadata={"help": "blocks per flow (dilations 1 .. 2^(layers-1))",
                                             "min": 1})
    kernel_size: int = field(default=2, metadata={"help": "taps of the dilated convolutions", "min": 1})
    init_scale: float = field(default=0.36, metadata={
        "help": "the student's logistic scale at the start (on the [-1, 1] code axis; 0.36 gives the "
                "default audio's std, 0.645)", "min": 0.0})
    ce_samples: int = field(default=4, metadata={
        "help": "student draws per step scored under the teacher (the cross-entropy estimate)", "min": 1})
    power_weight: float = field(default=1000.0, metadata={
        "help": "weight of the power loss (0 = off; the linear loss is ~0.01 on mu-law audio, so it "
                "needs ~1000 to keep the student from whispering)", "min": 0.0})
    power_loss: str = field(default="linear", metadata={
        "help": "the power loss: log = mean squared log-spectral distance (scale-aware), loudness = "
                "squared log-ratio of the total power, linear = the paper's squared difference of "
                "|STFT|^2", "choices": ["log", "loudness", "linear"]})
    loudness_weight: float = field(default=1.0, metadata={
        "help": "weight of a loudness barrier added to the power loss: the squared log-ratio of the "
                "student's total power to the reference's. The linear power loss has no gradient at "
                "silence, so a student that falls quiet early stays silent; this term's gradient grows "
                "as the power falls (0 = off)", "min": 0.0})
    power_target: str = field(default="teacher", metadata={
        "help": "the spectrum the power loss matches: data = the batch of real clips (the paper's), "
                "teacher = the average spectrum of power_reference_clips of the teacher's own samples "
                "(drawn once, seed 0), which the KL's minimiser (the student equal to the teacher) "
                "also has", "choices": ["data", "teacher"]})
    power_reference_clips: int = field(default=64, metadata={
        "help": "teacher clips for --power-target teacher", "min": 1})
    fft_size: int = field(default=256, metadata={"help": "frame of the power loss's STFT (hop = 1/4)",
                                                 "min": 4})
    clip_length: int = field(default=2000, metadata={"help": "samples per training clip (must match the "
                                                     "base run's)", "min": 2})
    samples: int = field(default=4, metadata={"help": "clips written to samples.wav", "min": 1})
    sample_length: int = field(default=0, metadata={"help": "samples per clip in samples.wav and the "
                                                    "speed test (0 = clip_length)", "min": 0})

    def __post_init__(self):
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {self.init_scale}")


@register("parallel-wavenet", family="autoregressive", dataset="audio",
          description="Parallel WaveNet: an IAF student (WaveNet flows) distilled from a wavenet --output "
                      "dlml run (--base-run) by probability density distillation + power loss; "
                      "one-pass sampling")
class ParallelWaveNet(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> from gmcore.models.autoregressive.wavenet import WaveNet
    >>> _ = gm.manual_seed(0)
    >>> info = DataInfo((64,), 256, "audio")
    >>> teacher = WaveNet(WaveNet.Config(residual_channels=4, gate_channels=4, skip_channels=8,
    ...                                  head_channels=8, layers=3, stacks=1, output="dlml",
    ...                                  mixtures=2), info)
    >>> pw = ParallelWaveNet(ParallelWaveNet.Config(flows=2, channels=4, gate_channels=4,
    ...                      skip_channels=4, head_channels=4, layers=2, fft_size=16), info,
    ...                      base=teacher)
    >>> codes = gm.tensor(np.random.default_rng(0).integers(0, 256, (2, 64)))
    >>> loss, logs = pw.loss((codes,))
    >>> sorted(logs)[:3], pw.sample(3, generator=gm.Generator().manual_seed(0)).shape
    (['cross_entropy', 'entropy', 'kl'], gmcore.Size([3, 64]))
    """

    Config = ParallelWaveNetConfig
    base_kinds = ("audio-density",)
    nll_kind = ("bound: the student's exact density of uniformly dequantized codes (flow inverted "
                "step by step)")
    train_defaults = {"steps": 2000, "batch_size": 4, "lr": 1e-3, "warmup": 20, "eval_every": 0}

    @classmethod
    def dataset_options(cls, config) -> dict:
        return {"clip_length": config.clip_length}

    def __init__(self, config: ParallelWaveNetConfig, data: DataInfo, base=None):
        super().__init__(config, data, base=base)
        c, teacher = config, self.base
        where = f"--base-run {c.base_run}: " if c.base_run else ""
        tc = getattr(teacher, "config", None)
        if getattr(tc, "output", None) != "dlml":
            raise ValueError(f"{where}parallel-wavenet distills a WaveNet with a logistic-mixture output "
                             f"(gmcore train wavenet --output dlml); this base has --output "
                             f"{getattr(tc, 'output', None)}")
        if tc.num_classes or tc.local_channels:
            raise ValueError(f"{where}parallel-wavenet distills an unconditional WaveNet; this base has "
                             f"num_classes={tc.num_classes}, local_channels={tc.local_channels}")
        if len(data.shape) != 1 or int(data.num_levels) != teacher.levels:
            raise ValueError(f"{where}the teacher models {teacher.levels}-level codes; the data are "
                             f"{data.num_levels}-level examples of shape {data.shape}")
        if (c.power_weight or c.loudness_weight) and data.shape[0] < c.fft_size:
            raise ValueError(f"parallel-wavenet: --fft-size {c.fft_size} is longer than the clips "
                             f"({data.shape[0]} samples); lower it or set --power-weight 0 --loudness-weight 0")
        self.levels = teacher.levels
        self.student = IAFStudent(c.flows, c.channels, c.gate_channels, c.skip_channels, c.head_channels,
                                  c.layers, c.kernel_size, c.init_scale)

    @property
    def bin_width(self) -> float:
        """Width 2/(Q-1) of one code's bin on the [-1, 1] axis."""
        return 2.0 / (self.levels - 1)

    def _noise(self, n, length, generator=None, extra=()):
        p = self.student.flows[0].out2.bias
        return logistic_noise((n, *extra, length), generator=generator, dtype=p.dtype, device=p.device)

    def _codes(self, batch) -> Tensor:
        if not isinstance(batch, (tuple, list)) or not batch:
            raise ValueError("parallel-wavenet needs batches (codes,) of int64 mu-law codes (B, T)")
        codes = batch[0]
        if codes.dtype.is_floating_point or codes.ndim != 2:
            raise ValueError(f"parallel-wavenet: codes must be (B, T) integers, got {codes.dtype} of "
                             f"shape {tuple(codes.shape)}")
        return codes

    # ---- training ---------------------------------------------------------------------------
    def loss(self, batch):
        """KL(P_S || P_T) estimate + power_weight * power loss, in nats per sample."""
        c = self.config
        codes = self._codes(batch)
        B, T = codes.shape
        z = self._noise(B, T)
        x, mean, log_scale = self.student(z)
        params = continuous_outputs(self.base, x)                     # p_T(. | x_<t) for every t
        draws = mean.unsqueeze(1) + log_scale.exp().unsqueeze(1) * self._noise(B, T, extra=(c.ce_samples,))
        cross = -mixture_log_density(params, draws).mean(1).mean()    # H(p_S, p_T) per step
        entropy = (log_scale + 2.0).mean()                            # H(p_S) per step
        kl = cross - entropy
        logs = {"kl": kl.item(), "cross_entropy": cross.item(), "entropy": entropy.item(),
                # the teacher's NLL of the student's draws as bits per sample of a code bin
                "teacher_bits": (cross.item() - math.log(self.bin_width)) / _LOG2}
        loss = kl
        if c.power_weight or c.loudness_weight:
            hop = max(1, c.fft_size // 4)
            p_student, p_ref = average_power(x, c.fft_size, hop), self._reference_power(codes)
            power = spectrum_loss(c.power_loss, p_student, p_ref)
            loss = loss + c.power_weight * power
            logs["power"] = power.item()
            if c.loudness_weight:
                loudness = spectrum_loss("loudness", p_student, p_ref)
                loss = loss + c.loudness_weight * loudness
                logs["loudness"] = loudness.item()
        return loss, logs

    def _reference_power(self, codes: Tensor) -> Tensor:
        """The average spectrum the power loss matches (``--power-target``): the batch's real
        clips, or the teacher's own samples. Those are drawn once, from a fixed seed, and cached
        outside the state: a resumed run recomputes exactly the same spectrum."""
        c = self.config
        hop = max(1, c.fft_size // 4)
        if c.power_target == "data":
            with no_grad():
                return average_power(to_axis(codes, self.levels, self.student_dtype), c.fft_size, hop)
        cached = getattr(self, "_teacher_power", None)
        if cached is None or cached.dtype != self.student_dtype or cached.device != codes.device:
            with no_grad():
                clips = self.base.sample(c.power_reference_clips, Generator(codes.device).manual_seed(0),
                                         length=codes.shape[1])
                cached = average_power(to_axis(clips, self.levels, self.student_dtype), c.fft_size, hop)
            object.__setattr__(self, "_teacher_power", cached)
        return cached

    @property
    def student_dtype(self):
        """The student's floating dtype (the reference spectrum is computed in it)."""
        return self.student.flows[0].out2.bias.dtype

    # ---- the model interface ----------------------------------------------------------------
    def nll(self, batch, generator=None) -> Tensor:
        """Upper bound on -log P(codes) in nats per clip (B,) (see the module docstring)."""
        codes = self._codes(batch)
        T = codes.shape[1]
        p = self.student.flows[0].out2.bias
        y = to_axis(codes, self.levels, p.dtype)
        u = gc.rand(*codes.shape, generator=generator, dtype=p.dtype, device=p.device) - 0.5
        _, log_p = self.student.inverse(y + u * self.bin_width)
        return -log_p - T * math.log(self.bin_width)

    def sample_with_density(self, n, generator=None, length=None):
        """(codes (n, length) int64, exact log p_S of the continuous samples (n,) in nats): one
        parallel pass of the student."""
        length = self.data.shape[0] if length is None else int(length)
        if n < 1 or length < 1:
            raise ValueError(f"sample needs n >= 1 and length >= 1, got n={n}, length={length}")
        with no_grad():
            z = self._noise(int(n), length, generator)
            x, _, log_scale = self.student(z)
            return to_codes(x, self.levels), self.student.log_prob_of_noise(z, log_scale)

    def sample(self, n, generator=None, length=None) -> Tensor:
        """(n, length) int64 mu-law codes from one parallel pass of the student."""
        return self.sample_with_density(n, generator, length)[0]

    # ---- the end-of-run report ----------------------------------------------------------------
    def teacher_bits(self, codes: Tensor) -> float:
        """The teacher's exact NLL of codes (B, T), bits per sample."""
        with no_grad():
            nats = self.base.nll((codes,)).sum().item()
        return nats / (codes.shape[0] * codes.shape[1]) / _LOG2

    def speed(self, length, generator=None, repeats=3) -> dict:
        """Samples/s at batch 1 over ``length`` samples: the student's one pass against the
        teacher's incremental sampler (best of ``repeats``, after a short warm-up of each)."""
        def best(fn, k):
            fn(min(length, 64))
            times = []
            for _ in range(k):
                t0 = time.perf_counter()
                fn(length)
                times.append(time.perf_counter() - t0)
            return min(times)

        with no_grad():
            t_student = best(lambda L: self.sample(1, generator, length=L).cpu(), repeats)
            t_teacher = best(lambda L: self.base.sample(1, generator, length=L).cpu(), max(1, repeats // 2))
        return {"speed_length": int(length), "student_samples_per_s": round(length / t_student, 1),
                "teacher_samples_per_s": round(length / t_teacher, 1),
                "speedup": round(t_teacher / t_student, 2)}

    def report(self, test_codes: Tensor, generator=None, length=None, split="test") -> dict:
        """The distillation figures (bits per sample): the teacher on ``test_codes``, on as many
        student clips and on as many of its own (incremental) samples, the student's own density
        of its clips, the average power (summed over the power loss's frequency bins) of the
        three sets of clips, and the speed test.

        The teacher's NLL alone does not rank students: it scores silence far *better* than the
        data (a near-silent student "whispers" its way to a low figure, Sec. 3.2). Its own samples
        show what a student that matches it would get: their NLL and their power."""
        n, T = test_codes.shape
        codes, log_p = self.sample_with_density(n, generator, T)
        own = -log_p.sum().item() / (n * T)                  # nats per sample, continuous density
        with no_grad():
            teacher_codes = self.base.sample(n, generator, length=T)
        teacher_test = self.teacher_bits(test_codes)
        teacher_student = self.teacher_bits(codes)
        c, dtype = self.config, log_p.dtype
        n_fft = min(c.fft_size, T)

        def power(x):
            with no_grad():
                return average_power(to_axis(x, self.levels, dtype), n_fft, max(1, n_fft // 4))

        p_test, p_student, p_teacher = power(test_codes), power(codes), power(teacher_codes)
        return {f"teacher_{split}_bits_per_sample": teacher_test,
                "student_samples_teacher_bits_per_sample": teacher_student,
                "student_vs_teacher_ratio": teacher_student / teacher_test,
                "teacher_samples_teacher_bits_per_sample": self.teacher_bits(teacher_codes),
                "teacher_samples_power": p_teacher.sum().item(),
                "student_samples_own_nll_nats_per_sample": own,
                # the same density per code bin, comparable with the teacher's bits
                "student_samples_own_bits_per_sample": (own - math.log(self.bin_width)) / _LOG2,
                f"{split}_power": p_test.sum().item(), "student_samples_power": p_student.sum().item(),
                "student_vs_test_power_ratio": p_student.sum().item() / max(p_test.sum().item(), 1e-30),
                "student_samples_power_loss": ((p_student - p_test) ** 2).sum().item(),
                "student_samples_log_spectral_distance": math.sqrt(max(0.0, _log_distance(p_student, p_test))),
                "report_clips": int(n), **self.speed(length or T, generator)}

    def save_samples(self, out_dir, dataset, generator=None) -> dict:
        """Write ``samples.wav`` (as wavenet does) and return the distillation report
        (:meth:`report`) on the test split of ``dataset``'s audio."""
        from ...data.audio import mu_law_decode, write_wav

        c = self.config
        length = c.sample_length or self.data.shape[0]
        rate = int(getattr(dataset, "sample_rate", 16000))
        codes = self.sample(c.samples, generator=generator, length=length)
        wave = mu_law_decode(codes.cpu().numpy(), self.levels)
        gap = np.zeros((wave.shape[0], rate // 4), np.float32)
        audio = np.concatenate([wave, gap], axis=1).reshape(-1)[:-(rate // 4) or None]
        path = Path(out_dir) / "samples.wav"
        write_wav(path, audio, rate)
        test, split = _test_split(dataset)
        p = self.student.flows[0].out2.bias
        test_codes = gc.tensor(np.asarray(test.arrays[0]).astype(np.int64), dtype=int64, device=p.device)
        return {"samples_file": path.name, "sample_rate": rate, "sample_clips": int(c.samples),
                "sample_seconds": round(len(audio) / rate, 3),
                **self.report(test_codes, generator, length, split)}


def _log_distance(p_student: Tensor, p_test: Tensor) -> float:
    """The (unweighted) log power loss between two average spectra: mean squared log-ratio, the
    test spectrum's mean bin power times 1e-3 as the floor (as :func:`log_power_loss`)."""
    eps = 1e-3 * p_test.mean().item()
    return (((p_student + eps).log() - (p_test + eps).log()) ** 2).mean().item()


def _test_split(dataset):
    """(the test split of the audio ``dataset`` came from, "test"), or (``dataset``, its split)
    when it cannot be rebuilt (an array data set made in code)."""
    from ...data import get_dataset

    source = getattr(dataset, "source", None)
    if getattr(dataset, "split", None) == "test" or source is None:
        return dataset, getattr(dataset, "split", "given")
    try:
        test = get_dataset(getattr(dataset, "name", "audio") or "audio", "test",
                           root=None if source == "synthetic" else source,
                           clip_length=dataset.clip_length)
    except (TypeError, ValueError, OSError):
        return dataset, getattr(dataset, "split", "given")
    return test, "test"
