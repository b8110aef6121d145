"""Indexing: ``getitem`` (basic, advanced and boolean), ``index_put`` (what ``x[i] = v`` runs),
``index_select``, ``gather``, ``scatter``, ``scatter_add``, ``masked_fill``, ``masked_select``,
``one_hot``, ``embedding``, ``nonzero``.

Every gradient is an index op again, so double backward works:
``getitem`` <-> ``IndexScatter`` (scatter-add into zeros; repeated indices accumulate), and
``index_put``'s backward is ``index_put`` (zeroing the written positions) plus ``getitem``.
``gather``/``scatter``/``scatter_add`` are composites: they build an advanced index grid
``(arange, ..., index, ..., arange)`` and go through the same two Functions.

Index arrays are validated here, not left to the backend: NumPy checks integer bounds but CuPy
wraps out-of-range indices silently, so every path raises ``IndexError`` naming the dimension
and its size.
"""
import operator

import numpy as np

from .. import autograd, backend
from ..autograd import Function
from ..backend import xp_of
from ._util import normalize_dim, reduce_grad, shape_of

__all__ = ["getitem", "index_put", "index_select", "gather", "scatter", "scatter_add",
           "masked_fill", "masked_select", "one_hot", "embedding", "nonzero", "argwhere"]


# ---- index normalisation and validation -------------------------------------------------------

def _tensor_cls():
    from ..tensor import Tensor
    return Tensor


def _on_device(arr, input):
    """An index array on the input's device (PyTorch accepts cpu indices for cuda tensors)."""
    if type(arr) is np.ndarray and type(input.data) is np.ndarray:
        return arr
    return backend.to_device(arr, input.device)


def _as_index_array(part, input):
    Tensor = _tensor_cls()
    if isinstance(part, Tensor):
        arr = part.data
    elif isinstance(part, (list, tuple)):
        if any(isinstance(p, Tensor) for p in part):
            part = [p.tolist() if isinstance(p, Tensor) else p for p in part]
        arr = np.asarray(part)
        if arr.size == 0 and arr.dtype.kind == "f":
            arr = arr.astype(np.int64)  # ``x[[]]``: an empty integer index
    else:
        arr = part
    if arr.dtype.kind not in "biu":
        raise IndexError(f"tensors used as indices must be integer or bool, got dtype "
                         f"{arr.dtype}")
    return _on_device(arr, input)


def _check_range(arr, n, dim, op, allow_negative=True):
    """IndexError unless every integer in ``arr`` indexes a dim of size ``n``."""
    if arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())
    low = -n if allow_negative else 0
    if lo < low or hi >= n:
        bad = hi if hi >= n else lo
        head = f"{op}: " if op else ""
        raise IndexError(f"{head}index {bad} is out of bounds for dimension {dim} with size {n}")


def _slice_part(s):
    def conv(v):
        return None if v is None else operator.index(v)
    step = conv(s.step)
    if step == 0:
        raise ValueError("slice step cannot be zero")
    return slice(conv(s.start), conv(s.stop), step)


def _normalize_index(input, index):
    """-> (index tuple of raw parts ending in Ellipsis, advanced?, has integer arrays?)."""
    parts = index if isinstance(index, tuple) else (index,)
    Tensor = _tensor_cls()
    out = []
    advanced = int_arrays = False
    for p in parts:
        if p is None or p is Ellipsis:
            out.append(p)
        elif isinstance(p, slice):
            out.append(_slice_part(p))
        elif isinstance(p, (bool, np.bool_)):  # before int: True is an int to Python
            out.append(_on_device(np.asarray(bool(p)), input))
            advanced = True
        elif isinstance(p, (int, np.integer)):
            out.append(int(p))
        elif isinstance(p, (Tensor, list, tuple, np.ndarray)) or \
                hasattr(p, "__cuda_array_interface__"):
            arr = _as_index_array(p, input)
            if arr.ndim == 0 and arr.dtype.kind in "iu":
                out.append(int(arr))  # a 0-d integer tensor selects, as an int does (torch)
                continue
            advanced = True
            int_arrays = int_arrays or arr.dtype.kind != "b"
            out.append(arr)
        else:
            raise TypeError(f"invalid index of type {type(p).__name__}: only integers, slices, "
                            "None, Ellipsis, and integer or bool tensors/lists are valid indices")
    ndim = input.ndim
    if sum(p is Ellipsis for p in out) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")

    def width(p):
        if p is None or p is Ellipsis:
            return 0
        if hasattr(p, "dtype") and p.dtype.kind == "b":
            return p.ndim
        return 1

    used = sum(width(p) for p in out)
    if used > ndim:
        raise IndexError(f"too many indices for a tensor of dimension {ndim} "
                         f"(the index covers {used} dimensions)")
    shape = tuple(input.shape)
    d = 0
    for p in out:
        if p is Ellipsis:
            d += ndim - used
        elif p is None:
            continue
        elif isinstance(p, slice):
            d += 1
        elif isinstance(p, int):
            if not -shape[d] <= p < shape[d]:
                raise IndexError(f"index {p} is out of bounds for dimension {d} with size "
                                 f"{shape[d]}")
            d += 1
        elif p.dtype.kind == "b":
            if tuple(p.shape) != shape[d:d + p.ndim]:
                raise IndexError(f"the shape of the mask {tuple(p.shape)} does not match the "
                                 f"shape {shape[d:d + p.ndim]} of the indexed tensor at "
                                 f"dimension {d} (tensor shape {shape})")
            d += p.ndim
        else:
            _check_range(p, shape[d], d, None)
            d += 1
    if not any(p is Ellipsis for p in out):
        # a trailing ellipsis makes NumPy return a 0-d array view instead of a scalar copy
        out.append(Ellipsis)
    if advanced and any(type(p) is int for p in out):
        return _Split.of(out), advanced, int_arrays
    return tuple(out), advanced, int_arrays


class _Split(tuple):
    """``(pre, post)``: an index that mixes integers with index arrays, in torch's order.

    NumPy counts an integer as an advanced index, so in ``x[0, :, [1, 2]]`` the two "advanced"
    indices are separated by a slice and their result dim goes first: shape (2, 3) for x of
    shape (2, 3, 4). PyTorch applies integers first as basic indexing (``select``) and then the
    index arrays, by NumPy's rule, to what is left: shape (3, 2). ``pre`` is that basic part (a
    view: ints, slices, None), ``post`` the advanced part on the view's dims.
    """

    @classmethod
    def of(cls, parts):
        pre, post = [], []
        for p in parts:
            if p is None or p is Ellipsis or isinstance(p, slice):
                pre.append(p)
                post.append(slice(None) if p is not Ellipsis else p)
            elif type(p) is int:
                pre.append(p)  # the dim is gone: nothing of it in post
            elif p.ndim == 0:  # a bool scalar: a new dim of size 1, indexed by [0] or []
                pre.append(None)
                post.append(xp_of(p).nonzero(p.reshape(1))[0])
            else:
                pre.extend([slice(None)] * (p.ndim if p.dtype.kind == "b" else 1))
                post.append(p)
        return cls((tuple(pre), tuple(post)))


def _index(a, idx):
    """``a[idx]`` for a normalised index (a plain tuple or a ``_Split``)."""
    return a[idx[0]][idx[1]] if type(idx) is _Split else a[idx]


def _dest(out, idx):
    """(array, index) to write ``out[idx]`` through: a basic view of ``out`` for a ``_Split``."""
    return (out[idx[0]], idx[1]) if type(idx) is _Split else (out, idx)


# ---- getitem and its adjoint --------------------------------------------------------------

class GetItem(Function):
    """Advanced indexing (a copy)."""

    @staticmethod
    def forward(ctx, a, idx, accumulate):
        ctx.in_shape, ctx.idx, ctx.accumulate = a.shape, idx, accumulate
        return _index(a, idx)

    @staticmethod
    def backward(ctx, g):
        return IndexScatter.apply(g, ctx.in_shape, ctx.idx, ctx.accumulate), None, None


class GetItemView(GetItem):
    """Basic indexing (ints, slices, None, Ellipsis): a view sharing memory and version."""
    _is_view = True


class IndexScatter(Function):
    """``zeros(shape)[idx] += g``: the adjoint of ``getitem`` (repeated indices accumulate)."""

    @staticmethod
    def forward(ctx, g, shape, idx, accumulate):
        ctx.idx, ctx.accumulate = idx, accumulate
        out = xp_of(g).zeros(shape, dtype=g.dtype)
        view, sub = _dest(out, idx)
        if accumulate:
            backend.scatter_add(view, sub, g)
        else:
            view[sub] = g  # no index repeats: plain assignment is exact and faster
        return out

    @staticmethod
    def backward(ctx, gg):
        return _getitem_raw(gg, ctx.idx, ctx.accumulate), None, None, None


def _getitem_raw(input, idx, int_arrays):
    """getitem with an already normalised and validated index."""
    basic = type(idx) is not _Split and not any(hasattr(p, "dtype") for p in idx)
    return (GetItemView if basic else GetItem).apply(input, idx, int_arrays)


def getitem(input, index):
    """``input[index]`` with NumPy/PyTorch semantics: ints, slices (negative steps too), None,
    ``...``, integer lists/tensors (broadcast together, repeats allowed) and bool masks.

    Basic indexing returns a view; advanced indexing a copy. Out-of-range integers raise
    ``IndexError`` naming the dimension and its size.

    >>> import gmcore as gm
    >>> x = gm.arange(6.0).reshape(2, 3)
    >>> x[:, [0, 0, 2]].tolist()
    [[0.0, 0.0, 2.0], [3.0, 3.0, 5.0]]
    >>> x[x > 2].tolist()
    [3.0, 4.0, 5.0]
    """
    idx, advanced, int_arrays = _normalize_index(input, index)
    return (GetItem if advanced else GetItemView).apply(input, idx, int_arrays)


# ---- index_put ------------------------------------------------------------------------------

class IndexPut(Function):
    @staticmethod
    def forward(ctx, a, idx, values, accumulate):
        ctx.idx, ctx.accumulate = idx, accumulate
        ctx.v_shape = shape_of(values)
        if hasattr(values, "dtype") and values.dtype != a.dtype:
            values = values.astype(a.dtype)
        out = a.copy()
        view, sub = _dest(out, idx)
        target_shape = view[sub].shape
        extra = values.ndim - len(target_shape) if ctx.v_shape is not None else 0
        if extra > 0 and all(k == 1 for k in values.shape[:extra]):
            values = values.reshape(values.shape[extra:])  # NumPy drops leading 1s here too
        try:
            vb = xp_of(a).broadcast_to(values, target_shape) if ctx.v_shape is not None \
                else values
        except ValueError:
            raise RuntimeError(f"index_put: values of shape {tuple(ctx.v_shape)} cannot be "
                               f"broadcast to the indexed shape {tuple(target_shape)}") from None
        ctx.target_shape = target_shape
        if accumulate:
            backend.scatter_add(view, sub, vb)
        else:
            view[sub] = vb
        return out

    @staticmethod
    def backward(ctx, g):
        ga = gv = None
        if ctx.needs_input_grad[0]:
            # written positions no longer depend on the input (unless accumulating)
            ga = g if ctx.accumulate else IndexPut.apply(g, ctx.idx, 0, False)
        if ctx.needs_input_grad[2]:
            gi = _getitem_raw(g, ctx.idx, True)
            vs = tuple(ctx.v_shape)
            if len(vs) > gi.ndim:  # NumPy lets values carry extra leading 1s
                gi = gi.reshape((1,) * (len(vs) - gi.ndim) + tuple(gi.shape))
            gv = reduce_grad(gi, vs)
        return ga, None, gv, None


def _values_operand(values, input):
    """A Python number stays a number; anything else becomes a tensor on input's device."""
    Tensor = _tensor_cls()
    if isinstance(values, (bool, int, float, np.number, np.bool_)):
        return values.item() if isinstance(values, (np.number, np.bool_)) else values
    if isinstance(values, Tensor):
        if values.device != input.device and not values.requires_grad:
            return values.to(input.device)
        return values
    return Tensor(input._xp().asarray(values))


def index_put(input, index, values, accumulate=False):
    """Out of place ``input[index] = values`` (``values`` broadcast); with ``accumulate=True``,
    ``+=`` where repeated indices all add. ``Tensor.__setitem__`` writes this result in place.

    Gradients: to ``input``, ``g`` with the written positions zeroed (all of ``g`` when
    accumulating); to ``values``, ``g[index]`` summed to ``values``' shape.

    >>> import gmcore as gm
    >>> gm.index_put(gm.zeros(4), gm.tensor([1, 3]), gm.tensor(5.0)).tolist()
    [0.0, 5.0, 0.0, 5.0]
    """
    idx, _, _ = _normalize_index(input, index)
    return IndexPut.apply(input, idx, _values_operand(values, input), bool(accumulate))


# ---- dim-wise index ops: index_select, gather, scatter, scatter_add -------------------------

def _int_index(index, input, op):
    Tensor = _tensor_cls()
    if not isinstance(index, Tensor):
        index = Tensor(input._xp().asarray(index))
    arr = _on_device(index.data, input)
    if arr.dtype.kind not in "iu":
        raise RuntimeError(f"{op}: index must be an integer tensor, got {index.dtype}")
    return arr


def index_select(input, dim, index):
    """Entries of ``input`` along ``dim`` at the positions in the 1-d ``index`` (repeats allowed).

    >>> import gmcore as gm
    >>> gm.arange(6).reshape(2, 3).index_select(1, gm.tensor([2, 0])).tolist()
    [[2, 0], [5, 3]]
    """
    idx = _int_index(index, input, "index_select")
    if idx.ndim > 1:
        raise IndexError(f"index_select: index must be 0-d or 1-d, got shape {tuple(idx.shape)}")
    nd = max(input.ndim, 1)
    d = normalize_dim(int(dim), nd)
    scalar = input.ndim == 0
    if scalar:
        if idx.size != 1:
            raise RuntimeError(f"index_select(): index to a 0-d tensor can have only 1 value, "
                               f"got {idx.size}")
        input = input.reshape((1,))
    _check_range(idx, input.shape[d], d, "index_select", allow_negative=False)
    out = GetItem.apply(input, (slice(None),) * d + (idx.reshape(-1), Ellipsis), True)
    return out.reshape(()) if scalar else out  # torch: a 0-d input gives a 0-d result


def _dim_grid(input, dim, index, op, src=None):
    """Validate a gather/scatter index; return (dim, advanced index tuple of index's shape)."""
    nd = input.ndim
    if index.ndim != nd:
        raise RuntimeError(f"{op}: index must have as many dimensions as input ({nd}), got "
                           f"index of shape {tuple(index.shape)}")
    d = normalize_dim(int(dim), max(nd, 1))
    for k in range(nd):
        if k != d and index.shape[k] > input.shape[k]:
            raise RuntimeError(f"{op}: size of index {tuple(index.shape)} must not exceed the "
                               f"input's {tuple(input.shape)} in dimension {k} (dim {d} aside)")
        if src is not None and index.shape[k] > src.shape[k]:
            raise RuntimeError(f"{op}: size of index {tuple(index.shape)} must not exceed the "
                               f"src's {tuple(src.shape)} in dimension {k}")
    if nd == 0:
        _check_range(index.reshape(1), 1, 0, op, allow_negative=False)
        return d, (Ellipsis,)
    _check_range(index, input.shape[d], d, op, allow_negative=False)
    xp = xp_of(index)
    parts = []
    for k in range(nd):
        if k == d:
            parts.append(index)
        else:
            shape = [1] * nd
            shape[k] = index.shape[k]
            parts.append(xp.arange(index.shape[k]).reshape(shape))
    return d, tuple(parts) + (Ellipsis,)


def gather(input, dim, index):
    """``out[i][j][k] = input[i][index[i][j][k]][k]`` for ``dim=1`` (PyTorch's gather).

    >>> import gmcore as gm
    >>> gm.tensor([[1, 2], [3, 4]]).gather(1, gm.tensor([[0, 0], [1, 0]])).tolist()
    [[1, 1], [4, 3]]
    """
    idx = _int_index(index, input, "gather")
    _, grid = _dim_grid(input, dim, idx, "gather")
    return GetItem.apply(input, grid, True)


def _src_part(src, index_shape):
    """The leading ``index_shape`` block of ``src`` (PyTorch reads only that much of src)."""
    if tuple(src.shape) == tuple(index_shape):
        return src
    return getitem(src, tuple(slice(0, k) for k in index_shape))


def scatter_add(input, dim, index, src):
    """Out of place: ``out = input.clone(); out[i][index[i][j]] += src[i][j]`` (``dim=1``);
    repeated indices all add.

    >>> import gmcore as gm
    >>> gm.zeros(3).scatter_add(0, gm.tensor([0, 2, 0]), gm.tensor([1.0, 2.0, 3.0])).tolist()
    [4.0, 0.0, 2.0]
    """
    if not isinstance(src, _tensor_cls()):
        raise TypeError(f"scatter_add: src must be a tensor, got {type(src).__name__} "
                        "(use scatter(..., value) or a filled tensor)")
    idx = _int_index(index, input, "scatter_add")
    _, grid = _dim_grid(input, dim, idx, "scatter_add", src)
    if src.dtype != input.dtype:
        src = src.to(input.dtype)
    return IndexPut.apply(input, grid, _src_part(src, idx.shape), True)


def scatter(input, dim, index, src=None, *, value=None):
    """Out of place: ``out[i][index[i][j]] = src[i][j]`` (``dim=1``); ``src`` may be a number.
    Which write wins at repeated indices is unspecified (as PyTorch).

    Gradients as PyTorch: to ``input``, ``g`` with scattered positions zeroed; to ``src``,
    ``g.gather(dim, index)``.

    >>> import gmcore as gm
    >>> gm.zeros(2, 3).scatter(1, gm.tensor([[2], [0]]), 7.0).tolist()
    [[0.0, 0.0, 7.0], [7.0, 0.0, 0.0]]
    """
    Tensor = _tensor_cls()
    if src is None:
        src = value
    if src is None:
        raise TypeError("scatter: give src (a tensor or a number) or value=")
    idx = _int_index(index, input, "scatter")
    if isinstance(src, Tensor):
        _, grid = _dim_grid(input, dim, idx, "scatter", src)
        if src.dtype != input.dtype:
            src = src.to(input.dtype)
        return IndexPut.apply(input, grid, _src_part(src, idx.shape), False)
    _, grid = _dim_grid(input, dim, idx, "scatter")
    return IndexPut.apply(input, grid, _values_operand(src, input), False)


# ---- masks ------------------------------------------------------------------------------------

def _mask_array(mask, input, op):
    Tensor = _tensor_cls()
    arr = mask.data if isinstance(mask, Tensor) else mask
    if not hasattr(arr, "dtype"):
        arr = np.asarray(arr)
    if arr.dtype != np.bool_:
        raise RuntimeError(f"{op}: mask must be a bool tensor, got dtype {arr.dtype} "
                           "(compare first, e.g. mask = x > 0)")
    return _on_device(arr, input)


class MaskedFill(Function):
    @staticmethod
    def forward(ctx, a, mask, value):
        xp = xp_of(a)
        ctx.mask, ctx.v_shape = mask, shape_of(value)
        return backend.where(mask, xp.asarray(value, dtype=a.dtype), a)

    @staticmethod
    def backward(ctx, g):
        ga = gv = None
        if ctx.needs_input_grad[0]:
            ga = MaskedFill.apply(g, ctx.mask, 0)
        if ctx.needs_input_grad[2]:
            # the value receives the gradient of every filled position
            gv = MaskedFill.apply(g, ~ctx.mask, 0).sum().reshape(ctx.v_shape)
        return ga, None, gv


def masked_fill(input, mask, value):
    """``value`` where ``mask`` (bool, broadcast to ``input``'s shape) is True, else ``input``.

    ``value`` is a number or a 0-d tensor (which then receives gradient).

    >>> import gmcore as gm
    >>> x = gm.tensor([1.0, 2.0, 3.0])
    >>> x.masked_fill(gm.tensor([True, False, True]), -1.0).tolist()
    [-1.0, 2.0, -1.0]
    """
    Tensor = _tensor_cls()
    m = _mask_array(mask, input, "masked_fill")
    try:
        ok = np.broadcast_shapes(tuple(m.shape), tuple(input.shape)) == tuple(input.shape)
    except ValueError:
        ok = False
    if not ok:
        raise RuntimeError(f"masked_fill: mask of shape {tuple(m.shape)} can't be broadcast to "
                           f"the input's shape {tuple(input.shape)}")
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise RuntimeError(f"masked_fill only supports a 0-dimensional value tensor, got "
                               f"shape {tuple(value.shape)}")
        value = _values_operand(value, input)
    elif not isinstance(value, (bool, int, float, np.number, np.bool_)):
        raise TypeError(f"masked_fill: value must be a number or a 0-d tensor, got "
                        f"{type(value).__name__}")
    return MaskedFill.apply(input, m, value)


def masked_select(input, mask):
    """The entries of ``input`` where ``mask`` is True, as a 1-d tensor (both broadcast).

    >>> import gmcore as gm
    >>> gm.tensor([[1, 2], [3, 4]]).masked_select(gm.tensor([True, False])).tolist()
    [1, 3]
    """
    m = _mask_array(mask, input, "masked_select")
    try:
        shape = np.broadcast_shapes(tuple(m.shape), tuple(input.shape))
    except ValueError:
        raise RuntimeError(f"masked_select: mask of shape {tuple(m.shape)} and input of shape "
                           f"{tuple(input.shape)} can't be broadcast together") from None
    if tuple(input.shape) != shape:
        input = input.expand(shape)
    m = xp_of(m).broadcast_to(m, shape)
    return GetItem.apply(input, (m,), False)


# ---- one_hot, embedding, nonzero ------------------------------------------------------------

def one_hot(tensor, num_classes=-1):
    """Class indices (integer tensor) -> int64 one-hot vectors along a new last dim.

    ``num_classes=-1`` uses ``max + 1``. Negative or too-large classes raise an error.

    >>> import gmcore as gm
    >>> gm.one_hot(gm.tensor([0, 2]), 3).tolist()
    [[1, 0, 0], [0, 0, 1]]
    """
    Tensor = _tensor_cls()
    a = tensor.data
    if a.dtype.kind not in "iu":
        raise RuntimeError(f"one_hot is only applicable to integer (int64) index tensors, got "
                           f"{tensor.dtype}")
    xp = xp_of(a)
    num_classes = int(num_classes)
    if num_classes == -1:
        if a.size == 0:
            raise RuntimeError("one_hot: can not infer the number of classes from an empty "
                               "tensor; pass num_classes")
        num_classes = int(a.max()) + 1
    elif num_classes < 0:
        raise RuntimeError(f"one_hot: num_classes must be positive or -1, got {num_classes}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0:
            raise RuntimeError(f"one_hot: class values must be non-negative, got {lo}")
        if hi >= num_classes:
            raise RuntimeError(f"one_hot: class values must be smaller than num_classes "
                               f"({num_classes}), got {hi}")
    out = (a[..., None] == xp.arange(num_classes)).astype(np.int64)
    return Tensor(out)


class Embedding(Function):
    @staticmethod
    def forward(ctx, idx, w, padding_idx):
        ctx.idx, ctx.w_shape, ctx.padding_idx = idx, w.shape, padding_idx
        return xp_of(w).take(w, idx, axis=0)

    @staticmethod
    def backward(ctx, g):
        if not ctx.needs_input_grad[1]:
            return None, None, None
        if not autograd.is_grad_enabled():  # not recorded: the fused kernel (embedding family)
            from ._embedding import embedding_backward
            gw = embedding_backward(ctx.idx, g.data, ctx.w_shape[0], ctx.padding_idx)
            return None, _tensor_cls()(gw), None
        # recorded (create_graph): tensor ops, differentiable again
        if ctx.padding_idx is not None:
            # the padding row gets no gradient: drop the rows that looked it up
            g = MaskedFill.apply(g, (ctx.idx == ctx.padding_idx)[..., None], 0)
        return None, IndexScatter.apply(g, ctx.w_shape, (ctx.idx, Ellipsis), True), None


def embedding(input, weight, padding_idx=None):
    """Rows of ``weight`` (num_embeddings x dim) at the integer ``input``; output shape
    ``input.shape + (dim,)``. The ``padding_idx`` row receives no gradient.

    >>> import gmcore as gm
    >>> w = gm.arange(6.0).reshape(3, 2)
    >>> gm.embedding(gm.tensor([[2, 0]]), w).tolist()
    [[[4.0, 5.0], [0.0, 1.0]]]
    """
    if weight.ndim != 2:
        raise RuntimeError(f"embedding: weight must be 2-d (num_embeddings, embedding_dim), got "
                           f"shape {tuple(weight.shape)}")
    idx = _int_index(input, weight, "embedding")
    n = weight.shape[0]
    _check_range(idx, n, 0, "embedding (num_embeddings)", allow_negative=False)
    if padding_idx is not None:
        padding_idx = int(padding_idx)
        if not -n <= padding_idx < n:
            raise RuntimeError(f"embedding: padding_idx {padding_idx} must be within "
                               f"num_embeddings ({n})")
        padding_idx %= n
    return Embedding.apply(idx, weight, padding_idx)


def nonzero(input, *, as_tuple=False):
    """Indices of non-zero entries: an int64 (n, ndim) tensor, or a tuple of 1-d ones.

    >>> import gmcore as gm
    >>> gm.tensor([[0, 1], [2, 0]]).nonzero().tolist()
    [[0, 1], [1, 0]]
    """
    Tensor = _tensor_cls()
    a = input.data
    xp = xp_of(a)
    flat = a.reshape(1) if a.ndim == 0 else a
    parts = [p.astype(np.int64) for p in xp.nonzero(flat)]
    if a.ndim == 0:
        parts = []
        count = int(bool(flat[0]))
        if as_tuple:
            return (Tensor(xp.zeros(count, dtype=np.int64)),)
        return Tensor(xp.zeros((count, 0), dtype=np.int64))
    if as_tuple:
        return tuple(Tensor(p) for p in parts)
    return Tensor(xp.stack(parts, axis=1))


def argwhere(input):
    """``nonzero(input)`` as an (n, ndim) int64 tensor."""
    return nonzero(input)
