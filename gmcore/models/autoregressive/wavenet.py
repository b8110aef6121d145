"""WaveNet (van den Oord et al., 2016, "WaveNet: A Generative Model for Raw Audio") with
fast incremental generation (Paine et al., 2016, "Fast Wavenet Generation Algorithm").

p(x) = prod_t p(x_t | x_<t) over the mu-law codes of an audio clip (the ``audio`` data set:
int64 codes (B, T) in 0..Q-1, Q = ``num_levels``, 256 by default). The network:

* a causal input layer on the codes: output t = bias + sum_{j=1..input_kernel} E_j[x_{t-j}]
  (:class:`gmcore.nn.CausalEmbedding`, the same function as a causal conv on the one-hot codes
  shifted by one step, computed as table lookups; before the clip a learned start row);
* ``stacks`` x ``layers`` gated residual blocks with dilations 1, 2, ..., 2^(layers-1)
  (:class:`gmcore.nn.WaveNetStack`, each block one fused
  :func:`gmcore.nn.functional.wavenet_residual_block`);
* the skip outputs summed -> ReLU -> 1x1 -> ReLU -> 1x1 -> the output distribution:

  - ``--output softmax`` (default): a Q-way softmax over the mu-law codes;
  - ``--output dlml``: a mixture of ``mixtures`` discretized logistics over the Q code bins,
    the code c mapped to 2c/(Q-1) - 1 in [-1, 1] (PixelCNN++'s likelihood through
    :func:`gmcore.nn.functional.discretized_logistic_mixture_nll` on (B, 3K, T) parameters).
    The mixture lives on the companded (mu-law) axis, where the bins are uniform, so its
    likelihood is exactly that of the discrete codes, comparable with the softmax's.

Conditioning (optional; the audio set has no labels, so the API takes them as arguments):
global, ``num_classes`` > 0: a class embedding (``global_dim``) projected into every block's
gate; local, ``local_channels`` F > 0: features (B, F, T / local_upsample) repeated
``local_upsample`` times along time to the sample rate and projected by a 1x1 into each block's
gate. Batches may carry them as ``(codes, labels)`` or ``(codes, labels, features)``, or they
are passed as keyword arguments.

``loss`` is the mean NLL in nats per sample; ``nll(batch)`` is the exact -log p(x) in nats per
clip (the trainer reports it as bits per sample). ``sample`` draws code by code with the
incremental sampler: one :class:`gmcore.nn.WaveNetGenerationState` queue per block, so a sample
costs O(layers) matrix-vector products, not a pass over the receptive field.
``save_samples`` writes ``samples.wav``.

Suggested CPU run (2 cores, about 2 minutes, the synthetic default audio)::

    gmcore train wavenet --steps 300 --batch-size 8 --lr 3e-3 --warmup 20 --eval-every 0
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import creation as gc
from ... import functional as gf
from ... import nn
from ..._dtype import float64, int64
from ...autograd import no_grad
from ...nn import functional as F
from ...progress import Bar
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register

__all__ = ["WaveNet", "WaveNetConfig"]

_LOG2 = math.log(2.0)


@dataclass
class WaveNetConfig:
    residual_channels: int = field(default=32, metadata={"help": "channels of the residual stream",
                                                         "min": 1})
    gate_channels: int = field(default=32, metadata={"help": "channels G of each gate (the dilated "
                                                     "conv outputs 2G)", "min": 1})
    skip_channels: int = field(default=64, metadata={"help": "channels of the skip outputs", "min": 1})
    head_channels: int = field(default=64, metadata={"help": "width of the 1x1 output layers", "min": 1})
    layers: int = field(default=8, metadata={"help": "blocks per stack (dilations 1 .. 2^(layers-1))",
                                             "min": 1})
    stacks: int = field(default=2, metadata={"help": "repetitions of the dilation pattern", "min": 1})
    kernel_size: int = field(default=2, metadata={"help": "taps of the dilated convolutions", "min": 1})
    input_kernel: int = field(default=2, metadata={"help": "past codes the causal input layer sees",
                                                   "min": 1})
    output: str = field(default="softmax", metadata={
        "help": "output distribution: Q-way softmax, or a discretized logistic mixture over the "
                "mu-law bins", "choices": ["softmax", "dlml"]})
    mixtures: int = field(default=10, metadata={"help": "dlml output: logistic components", "min": 1})
    num_classes: int = field(default=0, metadata={"help": "global conditioning classes (0 = off)",
                                                  "min": 0})
    global_dim: int = field(default=16, metadata={"help": "size of the class embedding", "min": 1})
    local_channels: int = field(default=0, metadata={"help": "local conditioning feature channels "
                                                     "(0 = off)", "min": 0})
    local_upsample: int = field(default=1, metadata={"help": "samples per local feature frame "
                                                     "(upsampling by repetition)", "min": 1})
    clip_length: int = field(default=2000, metadata={"help": "samples per training clip (audio data "
                                                     "set option)", "min": 2})
    temperature: float = field(default=1.0, metadata={"help": "softmax sampling temperature (> 0)",
                                                      "min": 0.0})
    samples: int = field(default=4, metadata={"help": "clips written to samples.wav", "min": 1})
    sample_length: int = field(default=0, metadata={"help": "samples per clip in samples.wav "
                                                    "(0 = clip_length)", "min": 0})

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.output not in ("softmax", "dlml"):
            raise ValueError(f"output must be 'softmax' or 'dlml', got {self.output!r}")


@register("wavenet", family="autoregressive", dataset="audio",
          description="WaveNet: dilated causal gated residual stacks on mu-law audio (softmax or "
                      "logistic-mixture output), fused block kernels, fast incremental sampling")
class WaveNet(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> cfg = WaveNet.Config(residual_channels=4, gate_channels=4, skip_channels=8,
    ...                      head_channels=8, layers=3, stacks=1)
    >>> m = WaveNet(cfg, DataInfo((16,), 256))
    >>> codes = gm.tensor([[128] * 16, list(range(100, 116))])
    >>> loss, logs = m.loss((codes,))
    >>> m.nll((codes,)).shape, m.sample(2, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([2]), gmcore.Size([2, 16]))
    """

    Config = WaveNetConfig
    # a base for a second stage (gmcore.models.stages): a density over audio codes whose
    # per-step output parameters forward(codes) gives; parallel-wavenet distills it
    latent_kind = "audio-density"
    # A step is a full pass over batch x clip_length samples: fewer, smaller steps than the
    # image models' defaults train it in minutes on a 2-core CPU (gmcore train flags override).
    train_defaults = {"steps": 300, "batch_size": 8, "lr": 3e-3, "warmup": 20, "eval_every": 0}

    @classmethod
    def dataset_options(cls, config) -> dict:
        return {"clip_length": config.clip_length}

    def __init__(self, config: WaveNetConfig, data: DataInfo):
        super().__init__(config, data)
        if len(data.shape) != 1 or int(data.num_levels) < 2:
            raise ValueError(f"wavenet models sequences of discrete codes (the audio data set, "
                             f"mu-law encoded): got examples of shape {data.shape} with "
                             f"{data.num_levels} levels")
        c = config
        Q = self.levels = int(data.num_levels)
        self.out_channels = Q if c.output == "softmax" else 3 * c.mixtures
        self.inp = nn.CausalEmbedding(Q, c.residual_channels, c.input_kernel)
        self.label_embedding = nn.Embedding(c.num_classes, c.global_dim) if c.num_classes else None
        self.stack = nn.WaveNetStack(c.residual_channels, c.gate_channels, c.skip_channels, c.layers,
                                     c.stacks, c.kernel_size, local_channels=c.local_channels,
                                     global_channels=c.global_dim if c.num_classes else 0)
        self.out1 = nn.Conv1d(c.skip_channels, c.head_channels, 1)
        self.out2 = nn.Conv1d(c.head_channels, self.out_channels, 1)

    @property
    def receptive_field(self) -> int:
        """Past samples an output sees: the stack's receptive field plus the input layer's taps."""
        return self.stack.receptive_field - 1 + self.config.input_kernel

    # ---- inputs -----------------------------------------------------------------------------
    def _unpack(self, batch, labels=None, local=None):
        if not isinstance(batch, (tuple, list)) or not batch:
            raise ValueError("wavenet needs batches (codes,) of int64 mu-law codes (B, T)")
        codes = batch[0]
        if len(batch) > 1 and labels is None and self.label_embedding is not None:
            labels = batch[1]
        if len(batch) > 2 and local is None and self.config.local_channels:
            local = batch[2]
        if codes.dtype.is_floating_point or codes.ndim != 2:
            raise ValueError(f"wavenet: codes must be (B, T) integers, got {codes.dtype} of shape "
                             f"{tuple(codes.shape)}")
        return codes, labels, local

    def _conditioning(self, B, T, labels, local):
        """(global vector (B, D) or None, local features at the sample rate (B, F, T) or None)."""
        c = self.config
        glob = loc = None
        if self.label_embedding is not None:
            if labels is None:
                raise ValueError(f"wavenet was built with num_classes={c.num_classes}: pass labels "
                                 "(B,) (batch (codes, labels) or labels=...)")
            if tuple(labels.shape) != (B,):
                raise ValueError(f"wavenet: labels must be ({B},), got {tuple(labels.shape)}")
            glob = self.label_embedding(labels)
        elif labels is not None:
            raise ValueError("wavenet: got labels but the model has num_classes=0")
        if c.local_channels:
            if local is None:
                raise ValueError(f"wavenet was built with local_channels={c.local_channels}: pass "
                                 "local features (B, F, frames)")
            if local.ndim != 3 or local.shape[0] != B or local.shape[1] != c.local_channels \
                    or local.shape[2] * c.local_upsample < T:
                raise ValueError(f"wavenet: local features must be (B, F, frames) = ({B}, "
                                 f"{c.local_channels}, >= {-(-T // c.local_upsample)}) covering "
                                 f"{T} samples, got {tuple(local.shape)}")
            loc = local
            if c.local_upsample > 1:  # repetition: frame f covers samples [f*u, (f+1)*u)
                Bf, Fc, Nf = local.shape
                loc = local.unsqueeze(-1).expand(Bf, Fc, Nf, c.local_upsample).reshape(
                    Bf, Fc, Nf * c.local_upsample)
            loc = loc[:, :, :T]
        elif local is not None:
            raise ValueError("wavenet: got local features but the model has local_channels=0")
        return glob, loc

    # ---- the network ------------------------------------------------------------------------
    def forward(self, codes, labels=None, local=None) -> Tensor:
        """Output parameters (B, O, T) (O = Q logits, or 3*mixtures); column t sees codes < t."""
        B, T = codes.shape
        glob, loc = self._conditioning(B, T, labels, local)
        _, skip = self.stack(self.inp(codes), loc, glob)
        return self._head(skip)

    def _head(self, skip):
        h = self.out1.weight.squeeze(-1).matmul(skip.relu()) + self.out1.bias.unsqueeze(-1)
        return self.out2.weight.squeeze(-1).matmul(h.relu()) + self.out2.bias.unsqueeze(-1)

    def _nll_from_outputs(self, out, codes) -> Tensor:
        if self.config.output == "softmax":
            return F.cross_entropy(out, codes, reduction="none").sum(1)
        x = codes.to(out.dtype) * (2.0 / (self.levels - 1)) - 1.0
        # the data check costs a GPU sync: first training batch and evaluation batches only
        validate = not (self.training and getattr(self, "_dlml_checked", False))
        self._dlml_checked = getattr(self, "_dlml_checked", False) or self.training
        return F.discretized_logistic_mixture_nll(x, out, num_bins=self.levels, validate=validate)

    # ---- the model interface ----------------------------------------------------------------
    def nll(self, batch, generator=None, labels=None, local=None) -> Tensor:
        """Exact -log p(x) in nats per clip (B,)."""
        codes, labels, local = self._unpack(batch, labels, local)
        return self._nll_from_outputs(self(codes, labels, local), codes)

    def loss(self, batch, labels=None, local=None):
        """Mean NLL in nats per sample; logs bits per sample."""
        codes, labels, local = self._unpack(batch, labels, local)
        loss = self.nll((codes,), labels=labels, local=local).mean() / codes.shape[1]
        return loss, {"bits_per_sample": loss.item() / _LOG2}

    def _head_step(self, skip):
        """One step's outputs (n, O) from the skip sum (n, S): the 1x1 head as linear maps."""
        h = F.linear(skip.relu(), self.out1.weight.squeeze(-1), self.out1.bias)
        return F.linear(h.relu(), self.out2.weight.squeeze(-1), self.out2.bias)

    def _draw(self, out, generator):
        """Codes (n,) int64 drawn from one step's outputs (n, O)."""
        n, top = out.shape[0], self.levels - 1
        if self.config.output == "dlml":
            params = out.reshape(n, -1, 1).contiguous()
            x = F.sample_discretized_logistic_mixture(params, self.levels, generator=generator)
            x = x[:, 0]
            return ((x + 1.0) * (0.5 * top)).round().clamp(0, top).long()
        # inverse CDF of the softmax: one uniform per row, the first bin whose CDF passes it
        logits = out.double() / self.config.temperature
        cdf = gf.cumsum((logits - logits.amax(1, keepdim=True)).exp(), 1)
        u = gc.rand(n, 1, generator=generator, dtype=float64, device=out.device) * cdf[:, -1:]
        return (cdf < u).sum(1).clamp(max=top).long()

    def _run(self, n, length, generator=None, labels=None, local=None, teacher=None):
        """The incremental sampler: (codes (n, length), outputs (n, O, length) if teacher)."""
        dev = self.inp.weight.device
        K, Q = self.config.input_kernel, self.levels
        with no_grad():
            glob, loc = self._conditioning(n, length, labels, local)
            state = self.stack.generation_state(n, glob)
            loc = None if loc is None else loc.permute(2, 0, 1).contiguous()   # (length, n, F)
            history = gc.full((n, K), Q, dtype=int64, device=dev)  # the last K codes, oldest first
            codes, outs = [], ([] if teacher is not None else None)
            bar = Bar(length if teacher is None else 0, "samples")   # under gmcore.progress.show_progress()
            for t in range(length):
                # the generation state and the input layer's step work on raw arrays: their
                # queues live outside the graph
                x_t = self.inp.step_arrays(history.data)
                skip = Tensor(state.step(x_t, None if loc is None else loc.data[t]))
                out = self._head_step(skip)
                if teacher is not None:
                    outs.append(out)
                    c = teacher[:, t]
                else:
                    c = self._draw(out, generator)
                codes.append(c)
                history = gf.cat([history[:, 1:], c.reshape(n, 1)], 1)
                bar.update(t + 1)
            bar.close()
        return gf.stack(codes, 1), (None if outs is None else gf.stack(outs, 2))

    def incremental_outputs(self, codes, labels=None, local=None) -> Tensor:
        """Teacher-forced outputs (B, O, T) computed step by step with the generation queues
        (equal to ``forward(codes)`` up to rounding: the check that the sampler is right)."""
        codes_, labels, local = self._unpack((codes,), labels, local)
        _, outs = self._run(codes_.shape[0], codes_.shape[1], None, labels, local, teacher=codes_)
        return outs

    def sample(self, n, generator=None, labels=None, local=None, length=None) -> Tensor:
        """(n, length) int64 mu-law codes (``length`` defaults to the data's clip length),
        drawn code by code with the incremental sampler. With ``num_classes`` > 0 and no
        ``labels``, clip i gets class i mod num_classes."""
        length = self.data.shape[0] if length is None else int(length)
        if n < 1 or length < 1:
            raise ValueError(f"sample needs n >= 1 and length >= 1, got n={n}, length={length}")
        if self.label_embedding is not None and labels is None:
            labels = gc.arange(n, dtype=int64, device=self.inp.weight.device)
            labels = labels % self.config.num_classes
        codes, _ = self._run(int(n), length, generator, labels, local)
        return codes

    def save_samples(self, out_dir, dataset, generator=None, labels=None, local=None) -> dict:
        """Write ``samples.wav``: ``samples`` clips (mu-law decoded, 16-bit) separated by 0.25 s
        of silence, at the data set's sample rate."""
        from ...data.audio import mu_law_decode, write_wav

        c = self.config
        length = c.sample_length or self.data.shape[0]
        rate = int(getattr(dataset, "sample_rate", 16000))
        codes = self.sample(c.samples, generator=generator, labels=labels, local=local, length=length)
        wave = mu_law_decode(codes.cpu().numpy(), self.levels)
        gap = np.zeros((wave.shape[0], rate // 4), np.float32)
        audio = np.concatenate([wave, gap], axis=1).reshape(-1)[:-(rate // 4) or None]
        path = Path(out_dir) / "samples.wav"
        write_wav(path, audio, rate)
        return {"samples_file": path.name, "sample_rate": rate, "sample_clips": int(c.samples),
                "sample_seconds": round(len(audio) / rate, 3)}
