"""Attention modules: ``MultiheadAttention`` (PyTorch's names, shapes and semantics) and
``SelfAttention2d``, the spatial self-attention block of SAGAN and DDPM U-Nets.

Both run on :func:`gmcore.nn.functional.scaled_dot_product_attention`'s body: a max-shifted,
mask-safe softmax, so rows with at least one allowed key never produce NaN.
"""
from __future__ import annotations

import math

import numpy as np

from ..creation import zeros
from ..tensor import Tensor
from .. import functional as _F
from . import init
from .functional.attention import _attention
from .functional.linear import linear
from .functional.normalization import group_norm
from .linear import Linear
from .module import Module
from .parameter import _param

__all__ = ["MultiheadAttention", "SelfAttention2d"]


def _positive_int(v, name, op):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    return int(v)


def _additive(mask, like, name, op):
    """A bool mask (True = not allowed) becomes 0 / -inf of ``like``'s dtype; a float mask
    passes (it must have that dtype)."""
    dtype = like.dtype
    if not isinstance(mask, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(mask).__name__}")
    if mask.device != like.device:
        raise RuntimeError(f"{op}: {name} is on {mask.device} but the query is on {like.device}")
    if mask.data.dtype == np.bool_:
        xp = mask._xp()
        return Tensor(xp.where(mask.data, -np.inf, 0.0).astype(like.data.dtype))
    if not mask.is_floating_point():
        raise RuntimeError(f"{op}: only bool and floating types of {name} are supported, got "
                           f"{mask.dtype}")
    if mask.dtype != dtype:
        raise RuntimeError(f"{op}: {name} dtype {mask.dtype} does not match the query dtype "
                           f"{dtype}")
    return mask


def _pad_last(mask):
    """Append one allowed (0) column to an additive mask (for bias_k / add_zero_attn)."""
    return mask if mask is None else _F.pad(mask, (0, 1))


class MultiheadAttention(Module):
    """Multi-head attention, as ``torch.nn.MultiheadAttention`` (same argument order, parameter
    names and shapes, so a PyTorch ``state_dict`` loads unchanged).

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` takes (L, N, E) / (S, N, kdim) / (S, N, vdim)
    inputs ((N, L, E) ... with ``batch_first``; unbatched (L, E) ... too) and returns
    ``(output (L, N, E), weights)``; weights are (N, L, S) averaged over heads, (N, heads, L, S)
    with ``average_attn_weights=False``, or None when ``need_weights=False``.

    Masks: ``key_padding_mask`` (N, S) and ``attn_mask`` (L, S) or (N * num_heads, L, S); a bool
    mask marks positions that are **not allowed** (True = masked), a float mask is added to the
    scores. ``is_causal`` is only a hint, as in PyTorch: it requires ``attn_mask``.
    Rows whose keys are all masked get zero weights and an output equal to ``out_proj.bias``
    (PyTorch returns NaN there when ``need_weights=True`` and zeros when it is False).

    Parameters: ``in_proj_weight`` (3E, E) and ``in_proj_bias`` (3E,) when ``kdim == vdim ==
    embed_dim``, else ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``; ``out_proj`` (a
    ``Linear``); ``bias_k``/``bias_v`` (1, 1, E) with ``add_bias_kv``. Initialisation as PyTorch:
    xavier-uniform in-projection, zero biases, ``out_proj.weight`` ~ U(-1/sqrt(E), 1/sqrt(E)).

    >>> import gmcore as gm
    >>> mha = gm.nn.MultiheadAttention(8, 2, batch_first=True)
    >>> x = gm.randn(3, 5, 8)
    >>> out, w = mha(x, x, x)
    >>> out.shape, w.shape
    (gmcore.Size([3, 5, 8]), gmcore.Size([3, 5, 5]))
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None):
        super().__init__()
        op = "MultiheadAttention"
        self.embed_dim = E = _positive_int(embed_dim, "embed_dim", op)
        self.num_heads = _positive_int(num_heads, "num_heads", op)
        self.kdim = E if kdim is None else _positive_int(kdim, "kdim", op)
        self.vdim = E if vdim is None else _positive_int(vdim, "vdim", op)
        self._qkv_same_embed_dim = self.kdim == E and self.vdim == E
        if E % self.num_heads:
            raise ValueError(f"{op}: embed_dim must be divisible by num_heads (got embed_dim={E},"
                             f" num_heads={num_heads})")
        if not 0 <= dropout <= 1:
            raise ValueError(f"{op}: dropout must be in [0, 1], got {dropout!r}")
        self.head_dim = E // self.num_heads
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        self.add_zero_attn = bool(add_zero_attn)
        if self._qkv_same_embed_dim:
            self.in_proj_weight = _param((3 * E, E), device, dtype)
            for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(n, None)
        else:
            self.q_proj_weight = _param((E, E), device, dtype)
            self.k_proj_weight = _param((E, self.kdim), device, dtype)
            self.v_proj_weight = _param((E, self.vdim), device, dtype)
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = _param((3 * E,), device, dtype)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(E, E, bias=bias, device=device, dtype=dtype)
        if add_bias_kv:
            self.bias_k = _param((1, 1, E), device, dtype)
            self.bias_v = _param((1, 1, E), device, dtype)
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_v", None)
        self._reset_parameters()

    def _reset_parameters(self):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def _check_inputs(self, query, key, value, key_padding_mask, attn_mask):
        op = "MultiheadAttention"
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
            if t.dtype != self.out_proj.weight.dtype:
                raise RuntimeError(f"{op}: {name} dtype {t.dtype} does not match the parameters'"
                                   f" dtype {self.out_proj.weight.dtype}")
        if query.ndim not in (2, 3):
            raise RuntimeError(f"{op}: query should be unbatched 2D or batched 3D tensor but "
                               f"received {query.ndim}-D query tensor")
        batched = query.ndim == 3
        if key.ndim != query.ndim or value.ndim != query.ndim:
            raise RuntimeError(f"{op}: for {query.ndim}-D query, key and value should be "
                               f"{query.ndim}-D too, but got {key.ndim}-D and {value.ndim}-D")
        if key_padding_mask is not None and key_padding_mask.ndim != (2 if batched else 1):
            raise RuntimeError(f"{op}: for {'batched 3' if batched else 'unbatched 2'}-D query, "
                               f"key_padding_mask should be {2 if batched else 1}-D, but got "
                               f"{key_padding_mask.ndim}-D")
        if attn_mask is not None and attn_mask.ndim not in (2, 3):
            raise RuntimeError(f"{op}: attn_mask should be 2-D or 3-D, got {attn_mask.ndim}-D")
        return batched

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        op = "MultiheadAttention"
        batched = self._check_inputs(query, key, value, key_padding_mask, attn_mask)
        if is_causal and attn_mask is None:
            raise RuntimeError(f"{op}: Need attn_mask if specifying the is_causal hint (it is "
                               "only a hint that attn_mask is causal, as in PyTorch)")
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        L, N, E = query.shape
        S = key.shape[0]
        nh, hd = self.num_heads, self.head_dim
        if E != self.embed_dim:
            raise RuntimeError(f"{op}: was expecting embedding dimension of {self.embed_dim}, "
                               f"but got {E}")
        if key.shape[-1] != self.kdim or value.shape[-1] != self.vdim:
            raise RuntimeError(f"{op}: expected key / value feature sizes {self.kdim} / "
                               f"{self.vdim}, got {key.shape[-1]} / {value.shape[-1]}")
        if tuple(key.shape[:2]) != tuple(value.shape[:2]) or key.shape[1] != N:
            raise RuntimeError(f"{op}: key shape {tuple(key.shape)} does not match value shape "
                               f"{tuple(value.shape)} / batch size {N}")

        # projections (in_proj rows are q, k, v in this order)
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3, 0)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b = self.in_proj_bias
        b_q, b_k, b_v = (None, None, None) if b is None else b.chunk(3, 0)
        q, k, v = linear(query, w_q, b_q), linear(key, w_k, b_k), linear(value, w_v, b_v)

        # masks -> one additive float mask broadcastable to (N, heads, L, S')
        dt = q.dtype
        if attn_mask is not None:
            attn_mask = _additive(attn_mask, q, "attn_mask", op)
            want = (L, S) if attn_mask.ndim == 2 else (N * nh, L, S)
            if tuple(attn_mask.shape) != want:
                raise RuntimeError(f"{op}: The shape of the {attn_mask.ndim}D attn_mask is "
                                   f"{tuple(attn_mask.shape)}, but should be {want}.")
            if attn_mask.ndim == 3:
                attn_mask = attn_mask.reshape(N, nh, L, S)
        if key_padding_mask is not None:
            key_padding_mask = _additive(key_padding_mask, q, "key_padding_mask", op)
            if tuple(key_padding_mask.shape) != (N, S):
                raise RuntimeError(f"{op}: expected key_padding_mask of shape {(N, S)}, got "
                                   f"{tuple(key_padding_mask.shape)}")
        if self.bias_k is not None:
            k = _F.cat([k, self.bias_k.expand(1, N, E)], 0)
            v = _F.cat([v, self.bias_v.expand(1, N, E)], 0)
            attn_mask, key_padding_mask = _pad_last(attn_mask), _pad_last(key_padding_mask)
        # (seq, N, E) -> (N, heads, seq, head_dim)
        q = q.reshape(L, N, nh, hd).permute((1, 2, 0, 3))
        k = k.reshape(k.shape[0], N, nh, hd).permute((1, 2, 0, 3))
        v = v.reshape(v.shape[0], N, nh, hd).permute((1, 2, 0, 3))
        if self.add_zero_attn:
            z = zeros(N, nh, 1, hd, dtype=dt, device=q.device)
            k, v = _F.cat([k, z], 2), _F.cat([v, z], 2)
            attn_mask, key_padding_mask = _pad_last(attn_mask), _pad_last(key_padding_mask)
        mask = attn_mask
        if key_padding_mask is not None:
            kpm = key_padding_mask.reshape(N, 1, 1, -1)
            mask = kpm if mask is None else mask + kpm

        p = self.dropout if self.training else 0.0
        out, w = _attention(q, k, v, mask, p, False, None, False, op, need_weights=need_weights)
        out = out.permute((2, 0, 1, 3)).reshape(L, N, E)
        out = self.out_proj(out)
        if need_weights:
            w = w.mean(1) if average_attn_weights else w
        else:
            w = None
        if not batched:
            out = out.squeeze(1)
            w = None if w is None else w.squeeze(0)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, w

    def extra_repr(self):
        s = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.batch_first:
            s += ", batch_first=True"
        return s


class SelfAttention2d(Module):
    """Spatial self-attention over the H*W positions of an (N, C, H, W) feature map, with a
    residual connection: the attention block of DDPM U-Nets (Ho et al. 2020) and SAGAN (Zhang
    et al. 2019).

    ``GroupNorm`` (its own affine ``norm_weight``/``norm_bias``; ``norm=None`` skips it) -> 1x1
    projections to q, k (``qk_channels`` each, default ``channels``) and v (``channels``) as one
    fused ``qkv_weight`` -> multi-head attention over positions -> 1x1 output projection
    (``proj_weight``) -> residual add. ``num_groups`` (default 32) is lowered to the largest
    divisor of ``channels`` not above it.

    The block starts as the identity in both residual styles:

    * ``residual="ddpm"``: ``x + proj(attn)`` with ``proj_weight``/``proj_bias`` initialised to
      zero (improved-diffusion's ``zero_module``);
    * ``residual="sagan"``: ``x + gamma * proj(attn)`` with a learnable scalar ``gamma``
      initialised to zero and the projection at PyTorch's conv default (SAGAN's ``gamma``; use
      ``qk_channels=channels // 8`` for SAGAN's reduced query/key width).

    >>> import gmcore as gm
    >>> block = gm.nn.SelfAttention2d(16, num_heads=2)
    >>> x = gm.randn(2, 16, 4, 4)
    >>> bool((block(x) - x).abs().max() == 0)
    True
    """

    def __init__(self, channels, num_heads=1, norm="group", num_groups=32, residual="ddpm",
                 qk_channels=None, eps=1e-5, device=None, dtype=None):
        super().__init__()
        op = "SelfAttention2d"
        C = self.channels = _positive_int(channels, "channels", op)
        self.num_heads = _positive_int(num_heads, "num_heads", op)
        self.qk_channels = C if qk_channels is None else _positive_int(qk_channels,
                                                                        "qk_channels", op)
        if C % self.num_heads or self.qk_channels % self.num_heads:
            raise ValueError(f"{op}: channels ({C}) and qk_channels ({self.qk_channels}) must be "
                             f"divisible by num_heads ({self.num_heads})")
        if norm not in ("group", None):
            raise ValueError(f"{op}: norm must be 'group' or None, got {norm!r}")
        if residual not in ("ddpm", "sagan"):
            raise ValueError(f"{op}: residual must be 'ddpm' or 'sagan', got {residual!r}")
        self.norm, self.residual, self.eps = norm, residual, float(eps)
        g = min(_positive_int(num_groups, "num_groups", op), C)
        while C % g:
            g -= 1
        self.num_groups = g
        if norm == "group":
            self.norm_weight = _param((C,), device, dtype)
            self.norm_bias = _param((C,), device, dtype)
        self.qkv_weight = _param((2 * self.qk_channels + C, C), device, dtype)
        self.qkv_bias = _param((2 * self.qk_channels + C,), device, dtype)
        self.proj_weight = _param((C, C), device, dtype)
        self.proj_bias = _param((C,), device, dtype)
        if residual == "sagan":
            self.gamma = _param((1,), device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.channels)  # PyTorch's 1x1-conv default, U(-1/sqrt(C), ..)
        init.uniform_(self.qkv_weight, -bound, bound)
        init.uniform_(self.qkv_bias, -bound, bound)
        if self.norm == "group":
            init.ones_(self.norm_weight)
            init.zeros_(self.norm_bias)
        if self.residual == "ddpm":
            init.zeros_(self.proj_weight)
            init.zeros_(self.proj_bias)
        else:
            init.uniform_(self.proj_weight, -bound, bound)
            init.uniform_(self.proj_bias, -bound, bound)
            init.zeros_(self.gamma)

    def forward(self, x):
        op = "SelfAttention2d"
        if not isinstance(x, Tensor):
            raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise RuntimeError(f"{op}: expected input of shape (N, {self.channels}, H, W), got "
                               f"{tuple(x.shape)}")
        N, C, H, W = x.shape
        nh, dqk = self.num_heads, self.qk_channels
        h = x
        if self.norm == "group":
            h = group_norm(x, self.num_groups, self.norm_weight, self.norm_bias, self.eps)
        h = h.reshape(N, C, H * W).transpose(1, 2)             # (N, HW, C)
        qkv = linear(h, self.qkv_weight, self.qkv_bias)        # 1x1 convs as one matmul
        q, k, v = qkv.split([dqk, dqk, C], 2)

        def heads(t):  # (N, HW, c) -> (N, heads, HW, c / heads)
            return t.reshape(N, H * W, nh, -1).transpose(1, 2)
        out, _ = _attention(heads(q), heads(k), heads(v), None, 0.0, False, None, True, op,
                            need_weights=False)
        out = out.transpose(1, 2).reshape(N, H * W, C)
        out = linear(out, self.proj_weight, self.proj_bias).transpose(1, 2).reshape(N, C, H, W)
        if self.residual == "sagan":
            out = self.gamma * out
        return x + out

    def extra_repr(self):
        return (f"{self.channels}, num_heads={self.num_heads}, norm={self.norm!r}, "
                f"num_groups={self.num_groups}, residual={self.residual!r}")
