"""Ordering ops: ``sort argsort topk searchsorted bincount unique``.

Index results never carry gradients. ``sort`` and ``topk`` return their values through
``gather`` on the computed indices, so the values' gradient scatters back into the input
positions they came from (and gradients of gradients work), as PyTorch's.

Sorting is always stable here (PyTorch leaves the order of ties unspecified unless
``stable=True``; a stable order is one of the allowed ones). NaN sorts as the largest value.
"""
import collections

import numpy as np

from ..backend import xp_of
from ..tensor import Tensor
from ._util import normalize_dim
from .indexing import gather, scatter_add

__all__ = ["sort", "argsort", "topk", "searchsorted", "bincount", "unique"]

sort_return_type = collections.namedtuple("sort", ["values", "indices"])
topk_return_type = collections.namedtuple("topk", ["values", "indices"])


def _check_tensor(x, name, op):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}(): {name} must be a Tensor, got {type(x).__name__}")


def _stable_argsort(a, axis, descending):
    """Stable argsort along ``axis``; descending keeps ties in their original order."""
    xp = xp_of(a)
    if not descending:
        return xp.argsort(a, axis=axis, kind="stable")
    # sort the reversed array ascending (stable), then reverse back: ties keep input order
    n = a.shape[axis]
    rev = xp.flip(xp.argsort(xp.flip(a, axis=axis), axis=axis, kind="stable"), axis=axis)
    return (n - 1) - rev


def _sort_indices(input, dim, descending, op):
    _check_tensor(input, "input", op)
    a = input.data
    if a.ndim == 0:
        return 0, xp_of(a).zeros((), dtype=np.int64)
    d = normalize_dim(int(dim), a.ndim)
    return d, _stable_argsort(a, d, descending).astype(np.int64)


def sort(input, dim=-1, descending=False, stable=False):
    """Sort along ``dim``; returns ``(values, indices)`` (a named tuple, as PyTorch).

    The values are differentiable: their gradient goes back to the positions they came from.

    >>> import gmcore as gm
    >>> v, i = gm.sort(gm.tensor([3.0, 1.0, 2.0]))
    >>> v.tolist(), i.tolist()
    ([1.0, 2.0, 3.0], [1, 2, 0])
    >>> gm.tensor([[1, 5, 5, 2]]).sort(descending=True).indices.tolist()
    [[1, 2, 3, 0]]
    """
    d, idx = _sort_indices(input, dim, descending, "sort")
    if input.ndim == 0:
        return sort_return_type(input.clone(), Tensor(idx))
    idx = Tensor(idx)
    return sort_return_type(gather(input, d, idx), idx)


def argsort(input, dim=-1, descending=False, stable=False):
    """Indices that sort ``input`` along ``dim`` (int64); ties keep their order.

    >>> import gmcore as gm
    >>> gm.argsort(gm.tensor([[2.0, 0.0, 1.0]]), dim=1).tolist()
    [[1, 2, 0]]
    """
    return Tensor(_sort_indices(input, dim, descending, "argsort")[1])


def topk(input, k, dim=-1, largest=True, sorted=True):
    """The ``k`` largest (``largest=False``: smallest) entries along ``dim``:
    ``(values, indices)``. The result is always in sorted order (allowed for ``sorted=False``).

    >>> import gmcore as gm
    >>> v, i = gm.tensor([1.0, 4.0, 2.0, 8.0]).topk(2)
    >>> v.tolist(), i.tolist()
    ([8.0, 4.0], [3, 1])
    """
    _check_tensor(input, "input", "topk")
    n = input.shape[normalize_dim(int(dim), input.ndim)] if input.ndim else 1
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise RuntimeError(f"topk(): k ({k!r}) must be an int in [0, {n}], the size of dim "
                           f"{dim} of the input of shape {tuple(input.shape)}")
    d, idx = _sort_indices(input, dim, largest, "topk")
    if input.ndim == 0:  # as PyTorch: a 0-d input gives itself, for k = 0 too
        return topk_return_type(input.clone(), Tensor(idx))
    idx = Tensor(xp_of(idx).ascontiguousarray(
        idx[(slice(None),) * d + (slice(0, int(k)),)]))
    return topk_return_type(gather(input, d, idx), idx)


def _count_below(seq, vals, right):
    """Batched searchsorted by counting: for each value, how many sequence entries are
    < it (left) or <= it (right). O(rows x M x N): the right tool for short sequences
    (spline-flow bin edges) and many rows."""
    xp = xp_of(seq)
    cmp = xp.less_equal if right else xp.less
    return cmp(seq[..., None, :], vals[..., :, None]).sum(axis=-1)


def searchsorted(sorted_sequence, values, *, out_int32=False, right=False, side=None,
                 sorter=None):
    """Indices where ``values`` would be inserted into ``sorted_sequence`` to keep it sorted
    (innermost dim). ``right=False`` (``side='left'``) gives the first such index, ``right=True``
    the last. A 1-d sequence applies to every value; an N-d sequence is batched: its leading
    dims must equal those of ``values`` (spline flows look up bins per element this way).

    >>> import gmcore as gm
    >>> edges = gm.tensor([0.0, 1.0, 2.0, 3.0])
    >>> gm.searchsorted(edges, gm.tensor([0.5, 2.0, 9.0])).tolist()
    [1, 2, 4]
    >>> gm.searchsorted(edges, gm.tensor([0.5, 2.0, 9.0]), right=True).tolist()
    [1, 3, 4]
    >>> gm.searchsorted(gm.tensor([[0.0, 1.0], [5.0, 6.0]]), gm.tensor([[0.5], [0.5]])).tolist()
    [[1], [0]]
    """
    op = "searchsorted"
    _check_tensor(sorted_sequence, "sorted_sequence", op)
    if side is not None:
        if side not in ("left", "right"):
            raise RuntimeError(f"{op}(): side must be 'left' or 'right', got {side!r}")
        if right and side == "left":
            raise RuntimeError(f"{op}(): side='left' and right=True contradict each other")
        right = side == "right"
    seq = sorted_sequence.data
    xp = xp_of(seq)
    scalar = not isinstance(values, Tensor)
    vals = xp.asarray(values, dtype=seq.dtype) if scalar else values.data
    if scalar and seq.ndim != 1:
        raise RuntimeError(f"{op}(): a scalar value needs a 1-d sorted_sequence, got shape "
                           f"{tuple(seq.shape)}")
    if seq.ndim == 0:
        raise RuntimeError(f"{op}(): sorted_sequence must have at least one dimension")
    if type(vals) is not type(seq):
        raise RuntimeError(f"{op}(): sorted_sequence and values must be on the same device")
    if sorter is not None:
        srt = sorter.data if isinstance(sorter, Tensor) else xp.asarray(sorter)
        if tuple(srt.shape) != tuple(seq.shape) or srt.dtype.kind not in "iu":
            raise RuntimeError(f"{op}(): sorter must be an integer tensor of the sequence's "
                               f"shape {tuple(seq.shape)}, got {srt.dtype} {tuple(srt.shape)}")
        seq = xp.take_along_axis(seq, srt.astype(np.int64), axis=-1)
    if seq.ndim > 1 and (vals.ndim != seq.ndim or vals.shape[:-1] != seq.shape[:-1]):
        raise RuntimeError(f"{op}(): the leading dims of sorted_sequence {tuple(seq.shape)} "
                           f"and values {tuple(vals.shape)} must match (or use a 1-d sequence)")
    dt = np.result_type(seq.dtype, vals.dtype)
    seq, vals = seq.astype(dt, copy=False), vals.astype(dt, copy=False)
    if seq.ndim == 1:
        out = xp.searchsorted(seq, vals, side="right" if right else "left")
    elif seq.shape[-1] * max(vals.shape[-1], 1) <= 4096:
        out = _count_below(seq, vals, right)
    else:  # long sequences: one binary search per row
        rows_s, rows_v = seq.reshape(-1, seq.shape[-1]), vals.reshape(-1, vals.shape[-1])
        out = xp.stack([xp.searchsorted(s, v, side="right" if right else "left")
                        for s, v in zip(rows_s, rows_v)]).reshape(vals.shape)
    return Tensor(xp.asarray(out).astype(np.int32 if out_int32 else np.int64))


def bincount(input, weights=None, minlength=0):
    """Count occurrences of each value in a 1-d non-negative integer tensor (``weights``:
    sum those instead). The result has ``max(input) + 1`` entries, at least ``minlength``.

    Int64 counts; with weights, the weights' dtype when floating (float64 for integer
    weights), as PyTorch. Unlike PyTorch, the weighted count is differentiable in the weights
    (each weight's gradient is the output gradient at its bin).

    >>> import gmcore as gm
    >>> gm.bincount(gm.tensor([0, 1, 1, 3])).tolist()
    [1, 2, 0, 1]
    >>> gm.bincount(gm.tensor([0, 1, 1]), weights=gm.tensor([0.5, 1.0, 2.0])).tolist()
    [0.5, 3.0]
    """
    op = "bincount"
    _check_tensor(input, "input", op)
    a = input.data
    if a.ndim != 1 or a.dtype.kind not in "iub":
        raise RuntimeError(f"{op}(): input must be a 1-d integer tensor, got {input.dtype} of "
                           f"shape {tuple(a.shape)}")
    if isinstance(minlength, bool) or not isinstance(minlength, (int, np.integer)) \
            or minlength < 0:
        raise RuntimeError(f"{op}(): minlength must be a non-negative int, got {minlength!r}")
    xp = xp_of(a)
    if a.size and int(a.min()) < 0:
        raise RuntimeError(f"{op}(): input must be non-negative, found {int(a.min())}")
    length = max(int(a.max()) + 1 if a.size else 0, int(minlength))
    idx = a.astype(np.int64)
    if weights is None:
        return Tensor(xp.bincount(idx, minlength=length).astype(np.int64))
    _check_tensor(weights, "weights", op)
    if tuple(weights.shape) != tuple(a.shape):
        raise RuntimeError(f"{op}(): weights of shape {tuple(weights.shape)} must match the "
                           f"input's shape {tuple(a.shape)}")
    if not weights.is_floating_point():
        weights = weights.to(np.float64)
    zeros = Tensor(xp.zeros(length, dtype=weights.data.dtype))
    return scatter_add(zeros, 0, Tensor(idx), weights)


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct values of ``input`` (flattened, or the distinct slices along ``dim``), in
    ascending order; optionally with the inverse map (``input == out[inverse]``) and counts.

    >>> import gmcore as gm
    >>> out, inv, cnt = gm.unique(gm.tensor([3, 1, 3, 2]), return_inverse=True,
    ...                           return_counts=True)
    >>> out.tolist(), inv.tolist(), cnt.tolist()
    ([1, 2, 3], [2, 0, 2, 1], [1, 1, 2])
    """
    op = "unique"
    _check_tensor(input, "input", op)
    a = input.data
    xp = xp_of(a)
    if dim is None:
        out, inv, cnt = xp.unique(a.reshape(-1), return_inverse=True, return_counts=True)
        inv = inv.reshape(a.shape)
    else:
        d = normalize_dim(int(dim), a.ndim)
        if a.shape[d] == 0:
            raise RuntimeError(f"{op}(): can't take the unique slices along dim {d} of size 0")
        moved = xp.moveaxis(a, d, 0).reshape(a.shape[d], -1)
        # lexicographic order of the slices; rows are compared as whole keys
        order = xp.lexsort(moved.T[::-1]) if moved.shape[1] else xp.arange(a.shape[d])
        srt = moved[order]
        new = xp.ones(srt.shape[0], dtype=bool)
        if srt.shape[0] > 1:
            new[1:] = (srt[1:] != srt[:-1]).any(axis=1)
        group = xp.cumsum(new) - 1
        inv = xp.empty_like(group)
        inv[order] = group
        first = xp.nonzero(new)[0]
        cnt = xp.diff(xp.concatenate([first, xp.asarray([srt.shape[0]])]))
        out = xp.moveaxis(xp.take(a, order[first], axis=d), d, d)
    results = [Tensor(xp.ascontiguousarray(out))]
    if return_inverse:
        results.append(Tensor(xp.asarray(inv).astype(np.int64)))
    if return_counts:
        results.append(Tensor(xp.asarray(cnt).astype(np.int64)))
    return results[0] if len(results) == 1 else tuple(results)
