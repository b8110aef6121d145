"""Neural n-gram language model (Bengio, Ducharme, Vincent & Jauvin, 2003), on characters.

The next character is predicted from the previous ``context`` characters only (``--context 2``
is a trigram model): their embeddings, concatenated, go through one tanh hidden layer to
vocabulary logits, ``y = b + W x + U tanh(d + H x)``, where the direct connections ``W x``
(``--direct``) are optional as in the paper.

Same data, loss, NLL and sampling contract as :mod:`.char_rnn` (:class:`CharModel`), so the
bits/char of the two compare directly. Positions before the start of a window read a dedicated
padding id (its own embedding row, id ``vocab_size``), so every window is scored on its own,
given its first character. The loss is vectorized over positions: each position's embedding
is looked up once and the ``context`` shifted copies are concatenated (no loop over time);
only sampling steps through time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ... import creation as gc
from ... import functional as gf
from ... import nn
from ..._dtype import int64
from ..base import DataInfo
from ..registry import register
from .char_rnn import CharModel, TextConfig

__all__ = ["NeuralNGram", "NeuralNGramConfig"]


@dataclass
class NeuralNGramConfig(TextConfig):
    context: int = field(default=2, metadata={"help": "previous characters seen (2 = trigram)", "min": 1})
    embed_dim: int = field(default=64, metadata={"help": "character embedding size", "min": 1})
    hidden: int = field(default=1024, metadata={"help": "tanh hidden units", "min": 1})
    direct: bool = field(default=True, metadata={
        "help": "direct linear connections from the embeddings to the logits (Bengio et al.'s W)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the hidden layer", "min": 0.0})


@register("trigram-mlp", family="autoregressive", dataset="text",
          description="neural n-gram (Bengio et al. 2003): MLP on the previous --context characters")
class NeuralNGram(CharModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> m = NeuralNGram(NeuralNGram.Config(hidden=16, seq_len=5), DataInfo((5,), 11, "text"))
    >>> x = gm.randint(11, (3, 5))
    >>> m.logits(x).shape, m.sample(2, generator=gm.Generator().manual_seed(0)).shape
    (gmcore.Size([3, 5, 11]), gmcore.Size([2, 5]))
    """

    Config = NeuralNGramConfig
    train_defaults = {"lr": 3e-3}   # 2.47 bits/char at 2000 steps, against 2.50 with lr 1e-3

    def __init__(self, config: NeuralNGramConfig, data: DataInfo):
        super().__init__(config, data)
        c, v = config, self.vocab_size
        self.pad_id = v                                  # a row of its own, after the vocabulary
        self.embedding = nn.Embedding(v + 1, c.embed_dim)
        width = c.context * c.embed_dim
        self.hidden = nn.Linear(width, c.hidden)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden, v)
        self.direct = nn.Linear(width, v, bias=False) if c.direct else None

    def embed(self, inputs):
        """(B, T) ids -> (B, context - 1 + T, E): the padding slots, then every input position."""
        b, k = inputs.shape[0], self.config.context
        if k > 1:
            pad = gc.full((b, k - 1), self.pad_id, dtype=int64, device=inputs.device)
            inputs = gf.cat([pad, inputs], 1)
        return self.embedding(inputs)

    def _mlp(self, x):
        y = self.out(self.drop(self.hidden(x).tanh()))
        return y if self.direct is None else y + self.direct(x)

    def head(self, features):
        """(B, context - 1 + T, E) -> (B, T, V): position t reads features t .. t+context-1,
        i.e. inputs t-context+1 .. t, oldest first (one shifted slice per context slot)."""
        k = self.config.context
        t = features.shape[1] - (k - 1)
        x = gf.cat([features[:, j:j + t] for j in range(k)], 2)           # (B, T, k*E)
        return self._mlp(x)

    def start_state(self, n, device):
        return gc.full((n, self.config.context), self.pad_id, dtype=int64, device=device)

    def step(self, ids, state):
        state = gf.cat([state[:, 1:], ids.unsqueeze(1)], 1)            # the last `context` ids
        x = self.embedding(state).reshape(state.shape[0], -1)
        return self._mlp(x), state
