"""``scaled_dot_product_attention``: ``softmax(q k^T * scale + mask) v``, as PyTorch's.

The softmax is max-shifted (no overflow) and *safe*: a row whose keys are all masked (-inf)
gives zero weights rather than NaN, which is what ``torch.nn.functional.scaled_dot_product_
attention`` returns for such rows. A row with at least one allowed key never sees NaN: masked
scores become exactly 0 after the softmax, and so do their gradients.

Two paths compute it. The fused one (:mod:`gmcore.functional.attention`: the ``attention``
kernel family, flash-attention style, saving only the per-row logsumexp for backward) runs
whenever it can: float32/float64, no dropout, and a mask (bool or additive) that needs no
gradient and broadcasts to the batch of query/key/value. Otherwise the tensor-op path below
runs (it holds the (L, S) weights for backward, and returns them to ``nn.MultiheadAttention``).
"""
import math

import numpy as np

from ... import backend
from ...functional.activation import dropout as _dropout
from ...functional.attention import fusable as _fusable
from ...functional.attention import fused_attention as _fused_attention
from ...functional.attention import safe_softmax as _safe_softmax
from ...tensor import Tensor
from ._util import check_float

__all__ = ["scaled_dot_product_attention"]


def _check_mask(attn_mask, scores_shape, dtype, op):
    """Raise the error naming the problem if ``attn_mask`` cannot mask scores of this shape."""
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"{op}: attn_mask must be a Tensor or None, got "
                        f"{type(attn_mask).__name__}")
    if attn_mask.is_floating_point():
        if attn_mask.dtype != dtype:
            raise RuntimeError(f"{op}: Expected attn_mask dtype to be bool or float or to match "
                               f"query dtype, got {attn_mask.dtype} (query {dtype})")
    elif attn_mask.data.dtype != np.bool_:
        raise RuntimeError(f"{op}: Expected attn_mask dtype to be bool or float, got "
                           f"{attn_mask.dtype}")
    try:
        np.broadcast_shapes(tuple(attn_mask.shape), tuple(scores_shape))
    except ValueError:
        raise RuntimeError(f"{op}: attn_mask of shape {tuple(attn_mask.shape)} does not "
                           f"broadcast to the attention scores' shape "
                           f"{tuple(scores_shape)}") from None


def _merge_mask(scores, attn_mask, allowed_when_true, op):
    """Apply a bool mask (True = allowed if ``allowed_when_true`` else True = masked) or an
    additive float mask to ``scores``; None passes through."""
    if attn_mask is None:
        return scores
    _check_mask(attn_mask, scores.shape, scores.dtype, op)
    if attn_mask.is_floating_point():
        return scores + attn_mask
    masked = ~attn_mask if allowed_when_true else attn_mask
    return scores.masked_fill(masked, float("-inf"))


def _causal_mask(L, S, like):
    """Bool (L, S) lower-triangular mask aligned to the top-left corner, True = allowed."""
    xp = like._xp()
    return Tensor(xp.tril(xp.ones((L, S), dtype=bool)))


def _as_additive(attn_mask, allowed_when_true, like):
    """A bool mask as an additive 0 / -inf Tensor of ``like``'s dtype; a float one unchanged."""
    if attn_mask is None or attn_mask.is_floating_point():
        return attn_mask
    xp = like._xp()
    blocked = ~attn_mask.data if allowed_when_true else attn_mask.data
    return Tensor(backend.where(blocked, xp.asarray(-np.inf, dtype=like.data.dtype),
                                xp.zeros((), dtype=like.data.dtype)))


def _attention(q, k, v, attn_mask, dropout_p, is_causal, scale, allowed_when_true, op,
               generator=None, need_weights=True):
    """Shared body: returns ``(output, weights)``. With ``need_weights=False`` the fused path
    runs when it can (no dropout, a mask that needs no gradient) and ``weights`` is None."""
    L, S = q.shape[-2], k.shape[-2]
    if not need_weights and dropout_p == 0:
        if attn_mask is not None:
            scores_shape = np.broadcast_shapes(tuple(q.shape[:-2]), tuple(k.shape[:-2])) + (L, S)
            _check_mask(attn_mask, scores_shape, q.dtype, op)
        mask = _as_additive(attn_mask, allowed_when_true, q)
        if _fusable(q, k, v, mask):
            return _fused_attention(q, k, v, mask, scale, is_causal), None
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = (q @ k.mT) * scale
    if is_causal:
        scores = _merge_mask(scores, _causal_mask(L, S, q), True, op)
    scores = _merge_mask(scores, attn_mask, allowed_when_true, op)
    w = _safe_softmax(scores)
    if dropout_p > 0:
        w = _dropout(w, dropout_p, True, generator)
    return w @ v, w


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, generator=None):
    """Attention ``softmax(query @ key^T * scale + mask) @ value``, as PyTorch's function.

    Shapes: ``query`` (..., L, E), ``key`` (..., S, E), ``value`` (..., S, Ev) -> (..., L, Ev);
    leading dims broadcast. ``scale`` defaults to ``1 / sqrt(E)``.

    ``attn_mask`` broadcasts to (..., L, S): a **bool** mask marks the keys that *take part*
    (True = allowed, PyTorch's convention for this function; ``nn.MultiheadAttention`` uses the
    opposite), a float mask is added to the scores. ``is_causal=True`` applies the top-left
    aligned lower-triangular mask (query i sees keys j <= i) and excludes ``attn_mask``.
    ``dropout_p`` drops attention weights whenever it is > 0 (pass 0.0 in evaluation, as with
    PyTorch). Rows whose keys are all masked give zero output (PyTorch's behaviour), never NaN.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> q = k = v = gm.eye(3).reshape(1, 3, 3)
    >>> out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    >>> [round(x, 4) for x in out[0, 0].tolist()]
    [1.0, 0.0, 0.0]
    """
    op = "scaled_dot_product_attention"
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_float(t, name, op)
        if t.ndim < 2:
            raise RuntimeError(f"{op}: {name} must have at least 2 dims (..., seq, features), "
                               f"got shape {tuple(t.shape)}")
    if not (query.dtype == key.dtype == value.dtype):
        raise RuntimeError(f"{op}: Expected query, key, and value to have the same dtype, but "
                           f"got query.dtype: {query.dtype} key.dtype: {key.dtype} and "
                           f"value.dtype: {value.dtype} instead.")
    if query.shape[-1] != key.shape[-1]:
        raise RuntimeError(f"{op}: query and key must have the same feature size, got "
                           f"{query.shape[-1]} and {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise RuntimeError(f"{op}: key and value must have the same sequence length, got "
                           f"{key.shape[-2]} and {value.shape[-2]}")
    if is_causal and attn_mask is not None:
        raise RuntimeError(f"{op}: Explicit attn_mask should not be set when is_causal=True")
    if not 0 <= dropout_p <= 1:
        raise ValueError(f"{op}: dropout_p must be in [0, 1], got {dropout_p!r}")
    return _attention(query, key, value, attn_mask, dropout_p, is_causal, scale, True, op,
                      generator, need_weights=False)[0]
