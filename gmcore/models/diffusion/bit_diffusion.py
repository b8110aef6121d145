"""Bit diffusion (Chen, Zhang & Hinton 2022, "Analog Bits: Generating Discrete Data using
Diffusion Models with Self-Conditioning").

Discrete data become *analog bits*: each value's binary code (most significant bit first), each
bit mapped to {-1, +1}, and a Gaussian diffusion (:class:`.gaussian_diffusion.GaussianDiffusion`)
runs over those real numbers. Decoding thresholds at 0 (bits -> integer); a code beyond the last
level (digits have 17 levels, 5 bits code 0 .. 31) is clamped to the last level.

* images with L levels per value: ``ceil(log2 L)`` bits per value, the bits of channel c in
  channels ``c * nbits .. (c + 1) * nbits - 1``; digits (17 levels): (1, 8, 8) -> (5, 8, 8);
* text (the ``text`` data set): ``ceil(log2 V)`` bits per character id (V the vocabulary; the
  pydoc text's ~ 100 characters: 7 bits), a window of ``seq_len`` characters (a square number)
  laid out row by row as a square grid: 64 characters -> (7, 8, 8), so the same U-Net
  diffuses it (its convolutions see neighbouring characters, and the ones 8 apart).

Self-conditioning (the paper's main trick, sec. 3.2): the network also reads its previous x0
estimate, as extra input channels. In training, with probability ``--self-cond`` (0.5) a first
pass without gradient (on the same x_t and t) gives the estimate, otherwise it is zeros (one
draw per batch, as the paper's Algorithm 1). At sampling each network call feeds the estimate
of the call before (zeros at the first). The estimate is clipped to [-1, 1], the bits' range,
as the samplers clip their x0.

Asymmetric time intervals (sec. 3.3): the paper steps from time ``t_now`` to
``t_next = t_now - (1 + td) / steps`` in its continuous time but labels the next state with
``t_now - 1 / steps``: the network is told a time ``td / steps`` *later* (noisier) than the
state's own. In discrete time this is: the sampler visits its spaced timesteps as usual (the
DDIM / DDPM update uses the state's own t), and the network is evaluated at
``min(t + round(td * T / steps), T - 1)`` (``gmcore sample RUN --td 0.5``; td = 0: the plain
sampler).

The paper's choices kept: x0 prediction trained with the MSE (``--predict x0``), the cosine
schedule (``--schedule cosine``), bits scaled to {-1, +1}. Differences: discrete T = 1000
rather than continuous time; the DDIM sampler of :mod:`.samplers` (the paper uses DDIM too, and
DDPM); a U-Net sized for 8x8 (the DDPM's) trained for minutes on a CPU.

No likelihood (``nll_kind = "none"``): the sampled process is not the Markov chain a
variational bound is taken over (each step reads the previous step's estimate, and with td the
network's time is not the state's), and the threshold decoder has no density. Digits runs
report digits-FID; text runs write ``samples.txt`` and the fraction of the sampled words found
in the training text (``sample_words_known``, beside the same fraction for test windows).

>>> import gmcore as gm
>>> from gmcore.models.base import DataInfo
>>> m = BitDiffusion(BitDiffusionConfig(channels=8, timesteps=20), DataInfo((1, 8, 8), 17, "digits"))
>>> m.diffusion_shape
(5, 8, 8)
>>> x = gm.tensor([0, 1, 16, 9], dtype="float32").reshape(1, 1, 2, 2) / 16
>>> bits = m.to_diffusion(x)                     # 9 = 01001 -> -1 +1 -1 -1 +1
>>> bits[0, :, 1, 1].tolist()
[-1.0, 1.0, -1.0, -1.0, 1.0]
>>> bool((m.from_diffusion(bits) == x).all())
True
>>> m.eval().sample(2, steps=5, td=0.5).shape
gmcore.Size([2, 1, 8, 8])
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ... import autograd
from ... import creation as gc
from ... import functional as gf
from ...io import atomic_write_text
from ...tensor import Tensor
from ..base import DataInfo
from ..registry import register
from . import samplers
from .ddpm import DDPM, DDPMConfig, DDPMSampleOptions

__all__ = ["BitDiffusion", "BitDiffusionConfig", "BitDiffusionSampleOptions"]


def _redefault(cls, name, default):
    """A field of dataclass ``cls`` with a new default (its help and choices kept)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return field(default=default, metadata=f.metadata)


@dataclass
class BitDiffusionConfig(DDPMConfig):
    # a smaller U-Net than ddpm's: each training step may run the network twice
    channels: int = _redefault(DDPMConfig, "channels", 32)
    num_res_blocks: int = _redefault(DDPMConfig, "num_res_blocks", 1)
    schedule: str = _redefault(DDPMConfig, "schedule", "cosine")
    predict: str = _redefault(DDPMConfig, "predict", "x0")
    self_cond: float = field(default=0.5, metadata={
        "help": "self-conditioning: probability that a training batch gets the network's own x0 "
                "estimate as input (0: off, and no estimate channels)", "min": 0.0})
    seq_len: int = field(default=0, metadata={
        "help": "text data: characters per window, a square number laid out as a square grid "
                "(0: the data set's default, 64 -> 8x8)", "min": 0})
    text_samples: int = field(default=64, metadata={
        "help": "text data: windows written to samples.txt (and judged by their words)", "min": 1})

    def __post_init__(self):
        if not 0.0 <= self.self_cond <= 1.0:
            raise ValueError(f"bit-diffusion: --self-cond is a probability in [0, 1], got {self.self_cond}")


@dataclass
class BitDiffusionSampleOptions(DDPMSampleOptions):
    td: float = field(default=0.0, metadata={
        "help": "asymmetric time interval: the network is asked at t + round(td * T / steps), a "
                "later time than the state's (Chen et al. sec. 3.3; 0: off)", "min": 0.0})


@register("bit-diffusion", family="diffusion", dataset="digits",
          description="bit diffusion: discrete data as analog bits, self-conditioning, asymmetric "
                      "time intervals (digits, text)")
class BitDiffusion(DDPM):
    """See the module docstring."""

    Config = BitDiffusionConfig
    SampleOptions = BitDiffusionSampleOptions
    EvalOptions = None
    nll_kind = "none"
    # not a base for noisy-classifier (ddpm's classifier guidance): sample() takes no classifier
    latent_kind = None
    supports_levels = False     # it diffuses analog bits, not the data's levels
    train_defaults = {"lr": 1e-3, "warmup": 100, "lr_schedule": "cosine", "batch_size": 64,
                      "steps": 2000, "eval_every": 0, "ema": 0.999}

    @classmethod
    def dataset_options(cls, config) -> dict:
        return {"seq_len": config.seq_len} if config.seq_len else {}

    # ---- the bits ------------------------------------------------------------------------------
    @property
    def nbits(self) -> int:
        """Bits per value: ceil(log2(levels)) (digits' 17 levels: 5)."""
        return (int(self.data.num_levels) - 1).bit_length()

    @property
    def is_text(self) -> bool:
        return len(self.data.shape) == 1

    def check_data(self, data: DataInfo) -> None:
        """Images with levels, or text windows of a square number of characters."""
        if data.num_levels < 2 or len(data.shape) not in (1, 3):
            raise ValueError(f"{self.model_name} models discrete data (images with levels, text), not "
                             f"{data.name or 'data'} of shape {tuple(data.shape)}")
        if len(data.shape) == 1:
            n = int(data.shape[0])
            if math.isqrt(n) ** 2 != n:
                raise ValueError(f"{self.model_name}: text windows are laid out as a square grid, so "
                                 f"--seq-len must be a square number (64, 100, 256), got {n}")

    @property
    def diffusion_shape(self) -> tuple:
        """(channels * nbits, H, W) for images; (nbits, s, s) for text windows of s * s."""
        if self.is_text:
            s = math.isqrt(int(self.data.shape[0]))
            return (self.nbits, s, s)
        C, H, W = (int(v) for v in self.data.shape)
        return (C * self.nbits, H, W)

    @property
    def net_in_channels(self) -> int:
        """The noisy bits, and with self-conditioning the previous x0 estimate beside them."""
        C = self.diffusion_shape[0]
        return 2 * C if self.config.self_cond > 0 else C

    def _powers(self, like):
        """2^(nbits-1) ... 1, shaped (1, 1, nbits, 1, 1): the bits' weights, MSB first."""
        n = self.nbits
        return gc.tensor([2.0 ** k for k in reversed(range(n))], dtype=self._dtype,
                         device=like.device).reshape(1, 1, n, 1, 1)

    def _grid(self, x):
        """Data -> integer levels (B, C, H, W) as floats (text ids as a (B, 1, s, s) grid)."""
        if self.is_text:
            s = self.diffusion_shape[1]
            return x.to(self._dtype).reshape(x.shape[0], 1, s, s)
        return (x.to(self._dtype) * (self.data.num_levels - 1)).round()

    def to_diffusion(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (or text ids) -> their analog bits in {-1, +1}, (B, *diffusion_shape)."""
        v = self._grid(x)
        B, C, H, W = v.shape
        bits = (v.reshape(B, C, 1, H, W) / self._powers(v)).floor() % 2
        return (bits * 2.0 - 1.0).reshape(B, C * self.nbits, H, W)

    def from_diffusion(self, x: Tensor) -> Tensor:
        """Analog bits -> data: each bit thresholded at 0, the code read as an integer and
        clamped to the last level; images in [0, 1], text as int64 ids (B, seq_len)."""
        B, _, H, W = x.shape
        n, L = self.nbits, self.data.num_levels - 1
        bits = (x.reshape(B, -1, n, H, W) > 0).to(x.dtype)
        levels = (bits * self._powers(x)).sum(2).clamp(None, float(L))
        if self.is_text:
            return levels.reshape(B, -1).long()
        return levels / L

    # ---- self-conditioning and the asymmetric time -----------------------------------------------
    def _x0_estimate(self, out, x_t, t):
        """The network's x0 from its output (its prediction channels), clipped, no gradient."""
        pred = out[:, :x_t.shape[1]]
        x0 = pred if self.config.predict == "x0" else self.diffusion.eps_and_x0(pred, x_t, t)[1]
        return x0.detach().clamp(-1.0, 1.0)

    def denoiser(self, labels=None, guidance: float = 0.0):
        """``model_fn(x_t, t)`` as the process sees it: in training mode (the loss) the
        estimate input is drawn as in training; in eval mode it is
        :meth:`self_conditioned`'s (each call feeds the previous call's estimate)."""
        if self.training:
            return self._training_denoiser(labels)
        return self.self_conditioned(labels, guidance)

    def _training_denoiser(self, labels):
        net = super().denoiser(labels)
        p = self.config.self_cond
        if not p:
            return net

        def fn(x_t, t):
            est = gc.zeros_like(x_t)
            # one draw per batch (Algorithm 1); from the global generator, so resume is exact
            if float(gc.rand(1, device=x_t.device).item()) < p:
                with autograd.no_grad():
                    est = self._x0_estimate(net(gf.cat([x_t, est], 1), t), x_t, t)
            return net(gf.cat([x_t, est], 1), t)
        return fn

    def self_conditioned(self, labels=None, guidance: float = 0.0, td: float = 0.0, steps: int = 0):
        """The sampling ``model_fn(x_t, t)``: a fresh closure whose first call reads a zero
        estimate and every later call the x0 estimate of the call before (use one closure per
        sampling run). With ``td`` > 0 the network is asked at
        ``min(t + round(td * T / steps), T - 1)`` (asymmetric time intervals); the estimate is
        read off the output at the state's own ``t``.

        >>> import gmcore as gm
        >>> from gmcore.models.base import DataInfo
        >>> m = BitDiffusion(BitDiffusionConfig(channels=8, timesteps=100), DataInfo((1, 8, 8), 17)).eval()
        >>> seen = []
        >>> real = m.net.forward
        >>> m.net.forward = lambda x, t, y=None: (seen.append(t.tolist()), real(x, t, y))[1]
        >>> fn = m.self_conditioned(td=1.0, steps=10)   # shift round(1 * 100 / 10) = 10
        >>> _ = fn(gm.zeros(1, 5, 8, 8), gm.tensor([50])); _ = fn(gm.zeros(1, 5, 8, 8), gm.tensor([95]))
        >>> seen
        [[60], [99]]
        """
        if td < 0:
            raise ValueError(f"{self.model_name}: --td must be >= 0, got {td}")
        T = self.config.timesteps
        shift = int(round(td * T / steps)) if td and steps else 0
        if td and not steps:
            raise ValueError(f"{self.model_name}: td needs the sampler's step count")
        net = super().denoiser(labels, guidance)
        use_est = self.config.self_cond > 0
        state = {"est": None}

        def fn(x_t, t):
            t_net = (t + shift).clamp(None, T - 1) if shift else t
            if use_est:
                est = state["est"] if state["est"] is not None else gc.zeros_like(x_t)
                out = net(gf.cat([x_t, est], 1), t_net)
                state["est"] = self._x0_estimate(out, x_t, t)
                return out
            return net(x_t, t_net)
        return fn

    # ---- sampling --------------------------------------------------------------------------------
    def sample(self, n, generator=None, sampler="ddim", steps=50, eta=0.0, spacing="trailing",
               guidance=0.0, label=-1, td=0.0, return_chain=False):
        """``n`` examples (images in [0, 1] on the levels, or text ids (n, seq_len)); the options
        are :class:`BitDiffusionSampleOptions`; ``return_chain`` also returns x_T ... x_0 (bits)."""
        labels = self._sample_labels(n, label, guidance)
        steps = self._steps(steps)
        fn = self.self_conditioned(labels, guidance, td=td, steps=steps)
        out = samplers.sample(self.diffusion, fn, (n, *self.diffusion_shape), sampler, steps=steps, eta=eta,
                              spacing=spacing, generator=generator, return_chain=return_chain,
                              device=next(self.parameters()).device, dtype=self._dtype)
        if return_chain:
            return self.from_diffusion(out[0]), out[1]
        return self.from_diffusion(out)

    def edit(self, x, strength: float, generator=None, sampler="ddim", steps=50, eta=0.0,
             spacing="trailing", guidance=0.0, label=-1, td=0.0):
        """SDEdit on the bits: images ``x`` in [0, 1] noised to ``strength * T`` and denoised."""
        if self.is_text or tuple(x.shape[1:]) != tuple(self.data.shape):
            raise ValueError(f"{self.model_name} edit: images must be (B, "
                             f"{', '.join(map(str, self.data.shape))}), got {tuple(x.shape)}")
        labels = self._sample_labels(x.shape[0], label, guidance, edit=True)
        steps = self._steps(steps)
        fn = self.self_conditioned(labels, guidance, td=td, steps=steps)
        out = samplers.sdedit(self.diffusion, fn, self.to_diffusion(x), strength, sampler=sampler,
                              steps=steps, eta=eta, spacing=spacing, generator=generator)
        return self.from_diffusion(out)

    def invert(self, *args, **kwargs):
        raise NotImplementedError(f"{self.model_name}: no DDIM inversion: thresholded bits are not a "
                                  "continuous image, and self-conditioning makes each step depend on "
                                  "the one before")

    decode = invert

    # ---- pictures and text samples ---------------------------------------------------------------
    def chain_image(self, x: Tensor) -> Tensor:
        """chain.png shows each state of the chain decoded by thresholding its bits."""
        return self.from_diffusion(x)

    def save_samples(self, out_dir, dataset, generator=None) -> dict:
        """Text runs: ``samples.txt`` (``text_samples`` windows) and ``sample_words_known``, the
        fraction of the sampled words (letter runs of 2+ not cut by a window's edge) that occur
        in the training text, beside ``test_words_known``, the same for as many test windows."""
        if not self.is_text:
            raise ValueError(f"{self.model_name}: samples.txt is for text runs; image runs write samples.png")
        n = self.config.text_samples
        texts = [dataset.decode(row) for row in self.sample(n, generator=generator)]
        sep = "\n" + "-" * 72 + "\n"
        path = Path(out_dir) / "samples.txt"
        atomic_write_text(path, sep.join(texts) + "\n")
        vocab = set(_words(dataset.decode(dataset.ids)))
        res = {"samples_file": path.name, "sample_words_known": words_known(texts, vocab)}
        try:   # the test split of the same source (CharText's default train fraction)
            from ...data.text import CharText

            src = getattr(dataset, "text_source", "<text>")
            test = CharText("test", path=None if src == "<text>" else src, seq_len=int(self.data.shape[0]))
            k = min(n, len(test))
            res["test_words_known"] = words_known([test.decode(test[i][0]) for i in range(k)], vocab)
        except (ValueError, TypeError):   # a data set other than CharText: the samples' figure only
            pass
        return res


_WORD = re.compile(r"[A-Za-z]{2,}")


def _words(text: str) -> list:
    return _WORD.findall(text)


def words_known(windows, vocab) -> float:
    """The fraction of the words (letter runs of 2+) inside ``windows`` (strings) found in
    ``vocab``, a word touching a window's edge left out (it may be cut).

    >>> words_known(["xx the cat sat qzv", "dog"], {"the", "cat", "dog"})
    0.6666666666666666
    """
    found = total = 0
    for w in windows:
        for m in _WORD.finditer(w):
            if m.start() == 0 or m.end() == len(w):
                continue
            total += 1
            found += m.group() in vocab
    return found / total if total else 0.0

