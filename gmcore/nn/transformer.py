"""Transformer layers (Vaswani et al. 2017), as ``torch.nn``: ``TransformerEncoderLayer``,
``TransformerEncoder``, ``TransformerDecoderLayer``, ``TransformerDecoder``.

Constructor arguments, forward signatures and submodule names match PyTorch's, so a PyTorch
``state_dict`` loads unchanged (``self_attn.in_proj_weight``, ``linear1.weight``,
``norm1.weight`` ..., and ``layers.{i}.`` in the stacks). Attention is the existing
``MultiheadAttention``; masks follow its conventions (bool True = not allowed, or additive
float). One difference: ``is_causal=True`` without a mask builds the causal mask here, where
PyTorch requires the mask too.
"""
from __future__ import annotations

import copy

from ..functional.pointwise import gelu, relu
from ..tensor import Tensor
from .container import ModuleList
from .dropout import Dropout
from .linear import Linear
from .module import Module
from .normalization import LayerNorm
from .attention import MultiheadAttention

__all__ = ["TransformerEncoderLayer", "TransformerEncoder", "TransformerDecoderLayer",
           "TransformerDecoder", "generate_square_subsequent_mask"]


def generate_square_subsequent_mask(sz, device=None, dtype=None):
    """The (sz, sz) causal mask: 0 on and below the diagonal, -inf above (PyTorch's
    ``Transformer.generate_square_subsequent_mask``).

    >>> import gmcore as gm
    >>> gm.nn.generate_square_subsequent_mask(3).tolist()
    [[0.0, -inf, -inf], [0.0, 0.0, -inf], [0.0, 0.0, 0.0]]
    """
    from ..creation import full
    return full((sz, sz), float("-inf"), dtype=dtype, device=device).triu(1)


def _activation(activation, op):
    if callable(activation):
        return activation
    if activation == "relu":
        return relu
    if activation == "gelu":
        return gelu
    raise RuntimeError(f"{op}: activation should be 'relu', 'gelu' or a callable, not "
                       f"{activation!r}")


def _causal_if_needed(mask, is_causal, x, batch_first):
    """``is_causal`` without a mask: build the (L, L) causal mask for the sequence dim."""
    if mask is not None or not is_causal:
        return mask
    L = x.shape[1] if (batch_first and x.ndim == 3) else x.shape[0]
    return generate_square_subsequent_mask(L, device=x.device, dtype=x.dtype)


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with a residual connection and
    ``LayerNorm`` (after the residual by default; before it with ``norm_first=True``).

    >>> import gmcore as gm
    >>> layer = gm.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16,
    ...                                       batch_first=True)
    >>> layer(gm.randn(3, 5, 8)).shape
    gmcore.Size([3, 5, 8])
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation, "TransformerEncoderLayer")
        self.batch_first = bool(batch_first)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        if not isinstance(src, Tensor):
            raise TypeError(f"TransformerEncoderLayer: src must be a Tensor, got "
                            f"{type(src).__name__}")
        src_mask = _causal_if_needed(src_mask, is_causal, src, self.batch_first)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerDecoderLayer(Module):
    """Self-attention, cross-attention over ``memory``, then a feed-forward block; each with a
    residual connection and ``LayerNorm`` (post-norm by default, ``norm_first`` for pre-norm).

    >>> import gmcore as gm
    >>> layer = gm.nn.TransformerDecoderLayer(8, 2, dim_feedforward=16)
    >>> layer(gm.randn(4, 2, 8), gm.randn(6, 2, 8)).shape
    gmcore.Size([4, 2, 8])
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, **kw)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _activation(activation, "TransformerDecoderLayer")
        self.batch_first = bool(batch_first)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        for name, t in (("tgt", tgt), ("memory", memory)):
            if not isinstance(t, Tensor):
                raise TypeError(f"TransformerDecoderLayer: {name} must be a Tensor, got "
                                f"{type(t).__name__}")
        tgt_mask = _causal_if_needed(tgt_mask, tgt_is_causal, tgt, self.batch_first)
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask,
                                    memory_key_padding_mask)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False)[0]
        return self.dropout1(x)

    def _mha_block(self, x, mem, attn_mask, key_padding_mask):
        x = self.multihead_attn(x, mem, mem, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, need_weights=False)[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))


def _clones(layer, n, op):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{op}: num_layers must be a positive int, got {n!r}")
    return ModuleList([copy.deepcopy(layer) for _ in range(n)])


class TransformerEncoder(Module):
    """A stack of ``num_layers`` independent copies of ``encoder_layer`` (then ``norm`` if
    given). ``enable_nested_tensor`` and ``mask_check`` are accepted for PyTorch compatibility.

    >>> import gmcore as gm
    >>> layer = gm.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    >>> enc = gm.nn.TransformerEncoder(layer, num_layers=2)
    >>> enc(gm.randn(5, 3, 8), is_causal=True).shape
    gmcore.Size([5, 3, 8])
    """

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers, "TransformerEncoder")
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        if mask is None and is_causal:
            mask = _causal_if_needed(None, True, src, self.layers[0].batch_first)
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask)
        return self.norm(x) if self.norm is not None else x


class TransformerDecoder(Module):
    """A stack of ``num_layers`` independent copies of ``decoder_layer`` (then ``norm`` if
    given), all attending to the same ``memory``.

    >>> import gmcore as gm
    >>> layer = gm.nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    >>> dec = gm.nn.TransformerDecoder(layer, num_layers=2)
    >>> dec(gm.randn(2, 4, 8), gm.randn(2, 6, 8), tgt_is_causal=True).shape
    gmcore.Size([2, 4, 8])
    """

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers, "TransformerDecoder")
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        if tgt_mask is None and tgt_is_causal:
            tgt_mask = _causal_if_needed(None, True, tgt, self.layers[0].batch_first)
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask)
        return self.norm(x) if self.norm is not None else x
