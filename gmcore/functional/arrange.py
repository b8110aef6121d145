"""Rearranging ops that build on indexing: ``diagonal``, ``repeat_interleave``, ``meshgrid``.

``diagonal`` is a view (it shares memory and the version counter with its input, as
PyTorch's); its adjoint writes the gradient onto the diagonal of a zero tensor, and the
adjoint of that is ``diagonal`` again, so gradients of gradients work.
"""
import numpy as np

from ..autograd import Function
from ..backend import xp_of
from ..tensor import Tensor
from ._util import normalize_dim
from .indexing import index_select

__all__ = ["diagonal", "repeat_interleave", "meshgrid"]


def _diag_dims(shape, offset, dim1, dim2, op):
    nd = len(shape)
    if nd < 2:
        raise RuntimeError(f"{op}: expected a tensor with at least 2 dimensions, got shape "
                           f"{tuple(shape)}")
    d1, d2 = normalize_dim(int(dim1), nd, "dim1"), normalize_dim(int(dim2), nd, "dim2")
    if d1 == d2:
        raise RuntimeError(f"{op}: dim1 and dim2 can't be the same dimension ({d1})")
    return d1, d2, int(offset)


class Diagonal(Function):
    _is_view = True

    @staticmethod
    def forward(ctx, a, offset, d1, d2):
        ctx.args = (a.shape, offset, d1, d2)
        return xp_of(a).diagonal(a, offset, d1, d2)

    @staticmethod
    def backward(ctx, g):
        return _DiagonalScatter.apply(g, *ctx.args), None, None, None


class _DiagonalScatter(Function):
    """A zero tensor of ``shape`` with ``g`` on its (offset, d1, d2) diagonal."""

    @staticmethod
    def forward(ctx, g, shape, offset, d1, d2):
        ctx.args = (offset, d1, d2)
        xp = xp_of(g)
        out = xp.zeros(shape, dtype=g.dtype)
        n = g.shape[-1]
        i1 = xp.arange(n) + max(-offset, 0)
        i2 = xp.arange(n) + max(offset, 0)
        xp.moveaxis(out, (d1, d2), (-2, -1))[..., i1, i2] = g  # moveaxis is a writable view
        return out

    @staticmethod
    def backward(ctx, g):
        return Diagonal.apply(g, *ctx.args), None, None, None, None


def diagonal(input, offset=0, dim1=0, dim2=1):
    """The diagonal of the (``dim1``, ``dim2``) planes, as a view; it becomes the last dim.
    ``offset > 0`` is above the main diagonal, ``< 0`` below.

    >>> import gmcore as gm
    >>> x = gm.arange(9.0).reshape(3, 3)
    >>> x.diagonal().tolist(), gm.diagonal(x, 1).tolist(), gm.diagonal(x, -1).tolist()
    ([0.0, 4.0, 8.0], [1.0, 5.0], [3.0, 7.0])
    """
    d1, d2, off = _diag_dims(tuple(input.shape), offset, dim1, dim2, "diagonal")
    return Diagonal.apply(input, off, d1, d2)


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """Repeat each element (each slice along ``dim``) ``repeats`` times in place order;
    ``repeats`` is an int or a 1-d tensor with one count per element. Without ``dim`` the
    input is flattened. ``repeat_interleave(counts)`` alone gives ``[0]*counts[0] + ...``.

    >>> import gmcore as gm
    >>> gm.tensor([1, 2]).repeat_interleave(2).tolist()
    [1, 1, 2, 2]
    >>> gm.repeat_interleave(gm.tensor([[1, 2], [3, 4]]), gm.tensor([1, 2]), dim=0).tolist()
    [[1, 2], [3, 4], [3, 4]]
    >>> gm.repeat_interleave(gm.tensor([2, 0, 1])).tolist()
    [0, 0, 2]
    """
    op = "repeat_interleave"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}(): input must be a Tensor, got {type(input).__name__}")
    xp = input._xp()
    if repeats is None:  # the one-argument form: input holds the counts
        counts = input.data
        if counts.ndim != 1 or counts.dtype.kind not in "iu":
            raise RuntimeError(f"{op}(): repeats must be a 1-d integer tensor, got "
                               f"{input.dtype} of shape {tuple(counts.shape)}")
        return Tensor(xp.repeat(xp.arange(counts.shape[0]), _counts(counts, op)))
    if dim is None:
        input, d = input.reshape(-1), 0
    else:
        d = normalize_dim(int(dim), max(input.ndim, 1))
        if input.ndim == 0:
            input = input.reshape(1)
    n = input.shape[d]
    if isinstance(repeats, Tensor):
        r = repeats.data
        if r.dtype.kind not in "iu" or r.ndim > 1 or (r.ndim == 1 and r.shape[0] not in (1, n)):
            raise RuntimeError(f"{op}(): repeats must be an int or a 1-d integer tensor of "
                               f"size 1 or {n} (the size of dim {d}), got {repeats.dtype} of "
                               f"shape {tuple(r.shape)}")
        r = _counts(r.reshape(-1) if r.ndim else r.reshape(1), op)
        if r.shape[0] == 1:
            r = xp.repeat(r, n)
    elif isinstance(repeats, (int, np.integer)) and not isinstance(repeats, bool):
        if repeats < 0:
            raise RuntimeError(f"{op}(): repeats must be non-negative, got {repeats}")
        r = int(repeats)
    else:
        raise TypeError(f"{op}(): repeats must be an int or a Tensor, got "
                        f"{type(repeats).__name__}")
    index = xp.repeat(xp.arange(n), r)
    if output_size is not None and index.shape[0] != output_size:
        raise RuntimeError(f"{op}(): output_size={output_size} but the repeats give "
                           f"{index.shape[0]}")
    return index_select(input, d, Tensor(index))


def _counts(r, op):
    if r.size and int(r.min()) < 0:
        raise RuntimeError(f"{op}(): repeats must be non-negative, found {int(r.min())}")
    return r.astype(np.int64)


def meshgrid(*tensors, indexing="ij"):
    """Coordinate grids from 1-d tensors: output ``k`` varies along dim ``k`` (``'ij'``,
    PyTorch's default, given here without PyTorch's warning) or, with ``'xy'`` (NumPy's
    default), the first two dims swap roles. Outputs are differentiable broadcast views.

    >>> import gmcore as gm
    >>> a, b = gm.meshgrid(gm.tensor([1, 2, 3]), gm.tensor([4, 5]), indexing="ij")
    >>> a.tolist(), b.tolist()
    ([[1, 1], [2, 2], [3, 3]], [[4, 5], [4, 5], [4, 5]])
    >>> gm.meshgrid(gm.tensor([1, 2, 3]), gm.tensor([4, 5]), indexing="xy")[0].shape
    gmcore.Size([2, 3])
    """
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid(): indexing must be 'ij' or 'xy', got {indexing!r}")
    if not tensors:
        raise RuntimeError("meshgrid(): expects a non-empty list of tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"meshgrid(): argument {i} must be a Tensor, got {type(t).__name__}")
        if t.ndim > 1:
            raise RuntimeError(f"meshgrid(): expects 0-d or 1-d tensors, argument {i} has "
                               f"shape {tuple(t.shape)}")
        if t.dtype != tensors[0].dtype or t.device != tensors[0].device:
            raise RuntimeError("meshgrid(): expects all tensors to have the same dtype and "
                               f"device, got {tensors[0].dtype} on {tensors[0].device} and "
                               f"{t.dtype} on {t.device}")
    flat = [t.reshape(-1) for t in tensors]
    pos = list(range(len(flat)))
    if indexing == "xy" and len(flat) >= 2:
        pos[0], pos[1] = 1, 0
    shape = [0] * len(flat)
    for p, t in zip(pos, flat):
        shape[p] = t.shape[0]
    out = []
    for p, t in zip(pos, flat):
        view = [1] * len(flat)
        view[p] = -1
        out.append(t.reshape(tuple(view)).expand(tuple(shape)))
    return tuple(out)
