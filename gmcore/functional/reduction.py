"""Reductions: ``sum mean var std prod amax amin max min argmax argmin cumsum cumprod median
norm all any count_nonzero`` (and ``sum_to_size``, the adjoint of ``expand``).

Conventions shared by all of them, as PyTorch:

* ``dim`` is None (all dims), an int, or a sequence of ints (negative allowed); an *empty*
  sequence also means all dims (``x.sum(())`` is the full sum in PyTorch, unlike NumPy);
* a 0-d tensor accepts ``dim`` 0 or -1;
* integer and bool sums/products/cumsums accumulate in int64.

Every backward is written with tensor ops (so gradients of gradients work); masks that select
where a gradient goes (ties of ``amax``, the index of ``max``) are constants computed in forward.
"""
import builtins
import collections
import math

import numpy as np

from .._dtype import as_dtype
from ..autograd import Function, no_grad
from ..backend import xp_of
from ..tensor import Tensor
from ._util import normalize_dim, normalize_dims

__all__ = ["sum", "sum_to_size", "mean", "var", "std", "var_mean", "std_mean", "prod", "amax",
           "amin", "max", "min", "argmax", "argmin", "cumsum", "norm", "all", "any",
           "count_nonzero", "cumprod", "median"]


def _dims(dim, ndim):
    """Reduced dims as a sorted tuple; None or an empty sequence -> all; 0-d tensors -> ()."""
    if dim is not None and not isinstance(dim, (int, np.integer)) and len(dim) == 0:
        dim = None
    dims = normalize_dims(dim, ndim)  # validates (0 and -1 are fine on a 0-d tensor)
    return dims if ndim else ()


def _keepdim_shape(shape, dims):
    return tuple(1 if i in dims else s for i, s in enumerate(shape))


def _numel(shape, dims):
    return math.prod(shape[d] for d in dims)


def _expand_back(g, in_shape, dims):
    """A reduced gradient (keepdim or not) reshaped to broadcast against the input."""
    keep = _keepdim_shape(in_shape, dims)
    return g if tuple(g.shape) == keep else g.reshape(keep)


def _require_float(input, name):
    if input.data.dtype.kind != "f":
        raise RuntimeError(f"{name}(): expected a floating point input, got {input.dtype}; "
                           "convert with .float() (or pass dtype=)")


def _check_nonempty(a, dims, name):
    for d in dims:
        if a.shape[d] == 0:
            raise IndexError(f"{name}(): expected reduction dim {d} to have non-zero size "
                             f"(input shape {tuple(a.shape)})")
    if a.size == 0 and (a.ndim == 0 or not dims):
        raise RuntimeError(f"{name}(): can't reduce an empty tensor of shape "
                           f"{tuple(a.shape)}: there is no identity for {name}")


# ---- sum, mean ----------------------------------------------------------------------------------

class Sum(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim, dtype):
        if dtype is not None:
            a = a.astype(as_dtype(dtype).np)
        elif a.dtype.kind in "biu":
            a = a.astype(np.int64)  # as PyTorch: integer sums accumulate in int64
        if dim is None:  # the common full reduction: skip dim normalisation (hot path)
            ctx.in_shape, ctx.dims = a.shape, tuple(range(a.ndim))
            return a.sum(keepdims=keepdim)
        dims = _dims(dim, a.ndim)
        ctx.in_shape, ctx.dims = a.shape, dims
        return a.sum(axis=dims, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        return _expand_back(g, ctx.in_shape, ctx.dims).expand(ctx.in_shape), None, None, None


class SumToSize(Function):
    """Sum a broadcast result back to ``shape``; the adjoint of ``expand``."""

    @staticmethod
    def forward(ctx, a, shape):
        shape = tuple(shape)
        lead = a.ndim - len(shape)
        if lead < 0:
            raise RuntimeError(f"sum_to_size: shape {shape} has more dimensions than the "
                               f"input {tuple(a.shape)}")
        dims = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(shape) if s == 1 and a.shape[lead + i] != 1)
        for i, s in enumerate(shape):
            if s != 1 and a.shape[lead + i] != s:
                raise RuntimeError(f"sum_to_size: size {tuple(a.shape)} is not expandable "
                                   f"from {shape}")
        ctx.in_shape = a.shape
        out = xp_of(a).sum(a, axis=dims, keepdims=True) if dims else a
        return out.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.expand(ctx.in_shape), None


def sum(input, dim=None, keepdim=False, *, dtype=None):
    """Sum over all elements, or over ``dim`` (an int or a tuple of ints).

    >>> import gmcore as gm
    >>> gm.ones(2, 3).sum(1).tolist()
    [3.0, 3.0]
    """
    return Sum.apply(input, dim, keepdim, dtype)


def sum_to_size(input, shape):
    """Sum ``input`` down to a shape it was broadcast from."""
    shape = tuple(shape)
    if tuple(input.shape) == shape:
        return input
    return SumToSize.apply(input, shape)


def mean(input, dim=None, keepdim=False, *, dtype=None):
    """Arithmetic mean over all elements or over ``dim``; needs a floating dtype (or ``dtype=``).

    The mean over an empty set is NaN, as in PyTorch.

    >>> import gmcore as gm
    >>> gm.tensor([[1.0, 2.0], [3.0, 5.0]]).mean(0).tolist()
    [2.0, 3.5]
    """
    if dtype is not None:
        input = input.to(dtype)
    if input.data.dtype.kind != "f":
        raise RuntimeError(f"mean(): could not infer the output dtype: the input must be "
                           f"floating point, got {input.dtype}; pass dtype= or use .float()")
    n = _numel(input.shape, _dims(dim, input.ndim))
    total = Sum.apply(input, dim, keepdim, None)
    return total / n if n else total * float("nan")


# ---- var, std -----------------------------------------------------------------------------------

def _correction(unbiased, correction, name):
    if unbiased is not None and correction is not None:
        raise RuntimeError(f"{name}(): pass either unbiased= or correction=, not both")
    if correction is not None:
        return correction
    return 0 if unbiased is False else 1


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance ``sum((x - mean)^2) / max(N - correction, 0)`` over ``dim`` (default: all).

    ``correction`` defaults to 1 (Bessel); ``unbiased=False`` means ``correction=0``. Computed
    in two passes (mean first), which is stable. One element with correction 1 gives NaN.

    >>> import gmcore as gm
    >>> round(gm.tensor([1.0, 2.0, 3.0, 4.0]).var().item(), 6)
    1.666667
    >>> gm.tensor([1.0, 2.0, 3.0, 4.0]).var(unbiased=False).item()
    1.25
    """
    if isinstance(dim, bool):  # the legacy overload var(input, unbiased)
        dim, unbiased = None, dim
    correction = _correction(unbiased, correction, "var")
    _require_float(input, "var")
    dims = _dims(dim, input.ndim)
    n = _numel(input.shape, dims)
    centered = input - mean(input, dims, keepdim=True)
    ss = (centered * centered).sum(dims, keepdim)
    with np.errstate(divide="ignore", invalid="ignore"):  # N <= correction: inf/NaN, as PyTorch
        return ss / builtins.max(n - correction, 0)


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Standard deviation: the square root of ``var(...)`` (same arguments).

    Where the deviation is 0 (a constant slice) the gradient is 0, as PyTorch's, not NaN.

    >>> import gmcore as gm
    >>> gm.tensor([2.0, 4.0]).std(unbiased=False).item()
    1.0
    """
    return _root(var(input, dim, unbiased, keepdim, correction=correction), 2.0)


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """``(var, mean)`` in one call, as ``torch.var_mean``."""
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    return (var(input, dim, unbiased, keepdim, correction=correction),
            mean(input, _dims(dim, input.ndim), keepdim))


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """``(std, mean)`` in one call, as ``torch.std_mean``."""
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    return (std(input, dim, unbiased, keepdim, correction=correction),
            mean(input, _dims(dim, input.ndim), keepdim))


# ---- prod ---------------------------------------------------------------------------------------

class _ProdOthers(Function):
    """``E[..., i] = prod_{j != i} x[..., j]`` along the last dim, exact with zeros.

    Forward: exclusive prefix product times exclusive suffix product (no division).
    Backward: dE_i/dx_k = prod_{j != i, k} x_j (i != k). Without zeros in the slice that is
    E_i / x_k, so grad_k = (sum_i gE_i E_i - gE_k E_k) / x_k. With zeros the pairwise products
    are formed explicitly: row k of X replaces x_k by 1, and _ProdOthers(X)[k, i] is then
    prod_{j != i, k} x_j (O(n^2) memory, only on this path).
    """

    @staticmethod
    def forward(ctx, x):
        xp = xp_of(x)
        n = x.shape[-1]
        ctx.save_for_backward(x)
        if n == 0:
            return xp.zeros_like(x)
        ones = xp.ones(x.shape[:-1] + (1,), dtype=x.dtype)
        pre = xp.concatenate([ones, xp.cumprod(x[..., :-1], axis=-1)], axis=-1)
        rev = xp.flip(x, axis=-1)
        suf = xp.flip(xp.concatenate([ones, xp.cumprod(rev[..., :-1], axis=-1)], axis=-1),
                      axis=-1)
        return pre * suf

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        if not bool((x.data == 0).any()):
            e = _ProdOthers.apply(x)
            t = g * e
            return (t.sum(-1, keepdim=True) - t) / x
        n = x.shape[-1]
        eye = Tensor(x._xp().eye(n, dtype=x.data.dtype))
        off = 1 - eye
        rows = x.unsqueeze(-2) * off + eye       # rows[..., k, j] = x_j (j != k), 1 (j == k)
        pair = _ProdOthers.apply(rows)           # pair[..., k, i] = prod_{j != i, k} x_j
        return (g.unsqueeze(-2) * pair * off).sum(-1)


def _prod_others(x, dims):
    """prod over ``dims`` of all elements but the one at each position (tensor level)."""
    kept = tuple(d for d in range(x.ndim) if d not in dims)
    perm = kept + dims
    moved = x.permute(perm) if perm != tuple(range(x.ndim)) else x
    lead = tuple(moved.shape[:len(kept)])
    e = _ProdOthers.apply(moved.reshape(lead + (_numel(x.shape, dims),)))
    e = e.reshape(tuple(moved.shape))
    return e.permute(tuple(np.argsort(perm).tolist())) if perm != tuple(range(x.ndim)) else e


class Prod(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim, dtype):
        dims = _dims(dim, a.ndim)
        if dtype is not None:
            a = a.astype(as_dtype(dtype).np)
        elif a.dtype.kind in "biu":
            a = a.astype(np.int64)
        ctx.dims = dims
        ctx.save_for_backward(a)
        return xp_of(a).prod(a, axis=dims, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        if x.ndim == 0:
            return g, None, None, None
        return _expand_back(g, tuple(x.shape), ctx.dims) * _prod_others(x, ctx.dims), \
            None, None, None


def prod(input, dim=None, keepdim=False, *, dtype=None):
    """Product of all elements, or over ``dim``; integer inputs give int64.

    The gradient is the product of the *other* elements, exact when the input holds zeros.

    >>> import gmcore as gm
    >>> x = gm.tensor([2.0, 0.0, 3.0], requires_grad=True)
    >>> x.prod().backward(); x.grad.tolist()
    [0.0, 6.0, 0.0]
    """
    return Prod.apply(input, dim, keepdim, dtype)


# ---- amax, amin, max, min -----------------------------------------------------------------------

class _Extreme(Function):
    """amax / amin; the gradient is split evenly among tied extremes (PyTorch's rule)."""

    @staticmethod
    def forward(ctx, a, dim, keepdim, is_min):
        name = "amin" if is_min else "amax"
        dims = _dims(dim, a.ndim)
        _check_nonempty(a, dims, name)
        xp = xp_of(a)
        out = (xp.amin if is_min else xp.amax)(a, axis=dims, keepdims=keepdim)
        if ctx.needs_input_grad[0]:
            ref = out.reshape(_keepdim_shape(a.shape, dims))
            hit = a == ref
            if a.dtype.kind == "f":
                hit |= xp.isnan(a) & xp.isnan(ref)  # NaN propagates: it is the extreme
            hit = hit.astype(a.dtype)
            ctx.save_for_backward(hit / hit.sum(axis=dims, keepdims=True))
            ctx.dims = dims
        return out

    @staticmethod
    def backward(ctx, g):
        share, = ctx.saved_tensors
        return _expand_back(g, tuple(share.shape), ctx.dims) * share, None, None, None


def amax(input, dim=None, keepdim=False):
    """Largest value over ``dim`` (default all); ties share the gradient evenly.

    >>> import gmcore as gm
    >>> x = gm.tensor([1.0, 3.0, 3.0], requires_grad=True)
    >>> x.amax().backward(); x.grad.tolist()
    [0.0, 0.5, 0.5]
    """
    return _Extreme.apply(input, dim, keepdim, False)


def amin(input, dim=None, keepdim=False):
    """Smallest value over ``dim`` (default all); ties share the gradient evenly."""
    return _Extreme.apply(input, dim, keepdim, True)


max_return_type = collections.namedtuple("max", ["values", "indices"])
min_return_type = collections.namedtuple("min", ["values", "indices"])


class _ExtremeDim(Function):
    """(values, indices) along one dim; the gradient goes to the index position only."""

    @staticmethod
    def forward(ctx, a, dim, keepdim, is_min):
        name = "min" if is_min else "max"
        xp = xp_of(a)
        d = normalize_dim(dim, a.ndim)
        if a.ndim == 0:
            ctx.onehot = None
            return a.copy(), xp.zeros((), dtype=np.int64)
        _check_nonempty(a, (d,), name)
        # argmax/argmin return the first NaN when there is one: NaN propagates, as PyTorch
        idx = (xp.argmin if is_min else xp.argmax)(a, axis=d, keepdims=True)
        values = xp.take_along_axis(a, idx, axis=d)
        if ctx.needs_input_grad[0]:
            pos = xp.arange(a.shape[d]).reshape((-1,) + (1,) * (a.ndim - d - 1))
            ctx.save_for_backward((pos == idx).astype(a.dtype))
        ctx.keep = values.shape
        if not keepdim:
            values, idx = values.squeeze(d), idx.squeeze(d)
        idx = idx.astype(np.int64)
        ctx.mark_non_differentiable(idx)
        return values, idx

    @staticmethod
    def backward(ctx, g, g_idx):
        if not ctx.saved_tensors:
            return g, None, None, None
        onehot, = ctx.saved_tensors
        return g.reshape(ctx.keep) * onehot, None, None, None


def _max_min(input, dim, keepdim, is_min):
    if isinstance(dim, Tensor) or (dim is not None and not isinstance(dim, (int, np.integer))):
        from . import pointwise  # the binary form: elementwise maximum/minimum
        other = dim if isinstance(dim, Tensor) else Tensor(input._xp().asarray(dim))
        return (pointwise.minimum if is_min else pointwise.maximum)(input, other)
    if dim is None:
        if keepdim:
            raise TypeError(f"{'min' if is_min else 'max'}(): keepdim needs a dim")
        return _Extreme.apply(input, None, False, is_min)
    values, indices = _ExtremeDim.apply(input, int(dim), keepdim, is_min)
    return (min_return_type if is_min else max_return_type)(values, indices)


def max(input, dim=None, keepdim=False):
    """``max(x)``: the largest element; ``max(x, dim)``: a ``(values, indices)`` named tuple;
    ``max(x, other)``: the elementwise maximum.

    Without ``dim`` ties share the gradient evenly; with ``dim`` it goes to the index returned.

    >>> import gmcore as gm
    >>> x = gm.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]])
    >>> v, i = gm.max(x, 1)
    >>> v.tolist(), i.tolist()
    ([5.0, 7.0], [1, 0])
    """
    return _max_min(input, dim, keepdim, False)


def min(input, dim=None, keepdim=False):
    """``min(x)``, ``min(x, dim) -> (values, indices)``, or ``min(x, other)``; see ``max``."""
    return _max_min(input, dim, keepdim, True)


def _arg_extreme(input, dim, keepdim, is_min):
    name = "argmin" if is_min else "argmax"
    a = input.data
    xp = xp_of(a)
    fn = xp.argmin if is_min else xp.argmax
    if dim is None:
        _check_nonempty(a, tuple(range(a.ndim)), name)
        out = fn(a.reshape(-1)) if a.ndim else xp.zeros((), dtype=np.int64)
        out = xp.asarray(out).reshape((1,) * a.ndim if keepdim else ())
    else:
        d = normalize_dim(int(dim), a.ndim)
        if a.ndim == 0:
            out = xp.zeros((), dtype=np.int64)
        else:
            _check_nonempty(a, (d,), name)
            out = fn(a, axis=d, keepdims=keepdim)
    return Tensor(xp.asarray(out).astype(np.int64))


def argmax(input, dim=None, keepdim=False):
    """Index of the largest value (of the flattened input when ``dim`` is None); int64.

    The first occurrence wins among ties. ``keepdim`` with ``dim=None`` keeps all dims as 1.

    >>> import gmcore as gm
    >>> gm.tensor([[1.0, 9.0], [8.0, 2.0]]).argmax().item()
    1
    """
    return _arg_extreme(input, dim, keepdim, False)


def argmin(input, dim=None, keepdim=False):
    """Index of the smallest value; see ``argmax``."""
    return _arg_extreme(input, dim, keepdim, True)


# ---- cumsum -------------------------------------------------------------------------------------

def _scan_input(a, dim, dtype):
    """(array, dim) for cumsum/cumprod: ``dtype`` when given, else integers and bools as int64."""
    d = normalize_dim(dim, a.ndim)
    if dtype is not None:
        return a.astype(as_dtype(dtype).np), d
    return (a.astype(np.int64) if a.dtype.kind in "biu" else a), d


class Cumsum(Function):
    @staticmethod
    def forward(ctx, a, dim, dtype):
        a, d = _scan_input(a, dim, dtype)
        ctx.dim = d
        return a.copy() if a.ndim == 0 else xp_of(a).cumsum(a, axis=d)

    @staticmethod
    def backward(ctx, g):
        # d out_j / d x_i = 1 for j >= i: the gradient is the reversed cumulative sum
        return (g if g.ndim == 0 else _ReverseCumsum.apply(g, ctx.dim)), None, None


class _ReverseCumsum(Function):
    """``flip(cumsum(flip(x)))`` along ``dim``; its adjoint is the plain cumsum."""

    @staticmethod
    def forward(ctx, a, dim):
        xp = xp_of(a)
        ctx.dim = dim
        return xp.flip(xp.cumsum(xp.flip(a, axis=dim), axis=dim), axis=dim)

    @staticmethod
    def backward(ctx, g):
        return Cumsum.apply(g, ctx.dim, None), None


def cumsum(input, dim, *, dtype=None):
    """Running sum along ``dim``; integer inputs give int64.

    >>> import gmcore as gm
    >>> gm.tensor([1.0, 2.0, 3.0]).cumsum(0).tolist()
    [1.0, 3.0, 6.0]
    """
    return Cumsum.apply(input, int(dim), dtype)


# ---- cumprod ------------------------------------------------------------------------------------

class Cumprod(Function):
    """Running product along ``dim``.

    Backward: d y_j / d x_i = prod_{k <= j, k != i} x_k for j >= i. Without zeros in the input
    that is y_j / x_i, so grad_i = revcumsum(g * y)_i / x_i. With zeros the division is wrong
    (0/0), so the products are formed explicitly: row i of X replaces x_i by 1, and
    cumprod(X)[i, j] is then prod_{k <= j, k != i} x_k (O(n^2) memory, only on this path).
    Both forms are tensor ops, so gradients of gradients work.
    """

    @staticmethod
    def forward(ctx, a, dim, dtype):
        a, d = _scan_input(a, dim, dtype)
        ctx.dim = d
        out = a.copy() if a.ndim == 0 else xp_of(a).cumprod(a, axis=d)
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        if x.ndim == 0:
            return g, None, None
        d = ctx.dim
        if not bool((x.data == 0).any()):
            return (g * y).flip(d).cumsum(d).flip(d) / x, None, None
        xl, gl = x.movedim(d, -1), g.movedim(d, -1)
        n = xl.shape[-1]
        xp = x._xp()
        eye = Tensor(xp.eye(n, dtype=x.data.dtype))
        upper = Tensor(xp.triu(xp.ones((n, n), dtype=x.data.dtype)))  # j >= i
        rows = xl.unsqueeze(-2) * (1 - eye) + eye   # rows[..., i, k] = x_k (k != i), 1 (k == i)
        pair = Cumprod.apply(rows, -1, None)       # pair[..., i, j] = prod_{k <= j, k != i} x_k
        grad = (gl.unsqueeze(-2) * pair * upper).sum(-1)
        return grad.movedim(-1, d), None, None


def cumprod(input, dim, *, dtype=None):
    """Running product along ``dim``; integer inputs give int64. The gradient is exact when
    the input holds zeros (no ``y / x`` division there).

    >>> import gmcore as gm
    >>> x = gm.tensor([2.0, 0.0, 3.0], requires_grad=True)
    >>> y = gm.cumprod(x, 0); y.tolist()
    [2.0, 0.0, 0.0]
    >>> y.sum().backward(); x.grad.tolist()
    [1.0, 8.0, 0.0]
    """
    return Cumprod.apply(input, int(dim), dtype)


# ---- median -------------------------------------------------------------------------------------

median_return_type = collections.namedtuple("median", ["values", "indices"])


def _median_index(a, d):
    """Index (keepdim) of the lower median along ``d``; the first NaN where a slice has one."""
    xp = xp_of(a)
    n = a.shape[d]
    order = xp.argsort(a, axis=d, kind="stable")  # NaN sorts last
    k = (n - 1) // 2
    idx = xp.take(order, xp.asarray([k]), axis=d)
    if a.dtype.kind == "f":
        nan = xp.isnan(a)
        has = nan.any(axis=d, keepdims=True)
        idx = xp.where(has, xp.argmax(nan, axis=d, keepdims=True), idx)
    return idx.astype(np.int64)


def median(input, dim=None, keepdim=False):
    """The lower of the two middle values (PyTorch's median, not NumPy's mean of the two);
    NaN if the slice holds a NaN. ``median(x)`` is over all elements; ``median(x, dim)``
    returns ``(values, indices)``. The gradient goes to the selected element.

    >>> import gmcore as gm
    >>> gm.median(gm.tensor([4.0, 1.0, 3.0, 2.0])).item()
    2.0
    >>> v, i = gm.median(gm.tensor([[5.0, 1.0, 3.0]]), dim=1)
    >>> v.tolist(), i.tolist()
    ([3.0], [2])
    """
    if dim is None:
        if input.numel() == 0:
            return (input.reshape(-1).sum() * float("nan")).reshape(())
        flat = input.reshape(-1)
        idx = _median_index(flat.data, 0)
        return flat.gather(0, Tensor(idx)).reshape(())
    d = normalize_dim(int(dim), input.ndim)
    if input.ndim == 0:
        return median_return_type(input.clone(), Tensor(input._xp().zeros((), dtype=np.int64)))
    _check_nonempty(input.data, (d,), "median")
    idx = _median_index(input.data, d)
    values = input.gather(d, Tensor(idx))
    idx = Tensor(idx)
    if not keepdim:
        values, idx = values.squeeze(d), idx.squeeze(d)
    return median_return_type(values, idx)


# ---- norm ---------------------------------------------------------------------------------------

class _CountNonzero(Function):
    """The "0-norm": number of nonzero entries, as a float; its gradient is zero (PyTorch)."""

    @staticmethod
    def forward(ctx, a, dims, keepdim):
        ctx.in_shape, ctx.dims = a.shape, dims
        return xp_of(a).sum(a != 0, axis=dims, keepdims=keepdim).astype(a.dtype)

    @staticmethod
    def backward(ctx, g):
        return _expand_back(g, ctx.in_shape, ctx.dims).expand(ctx.in_shape) * 0, None, None


def _root(s, p):
    """``s ** (1/p)`` with a zero (not NaN/inf) gradient where s == 0, as PyTorch's norms.

    Where s == 0 the root is taken of s + 1 and 1 is subtracted again: the value is exactly 0
    and the derivative 1/p stays finite (it then meets a zero d s / d x).
    """
    zero = s.data == 0
    if not bool(zero.any()):
        return s ** (1.0 / p)
    m = Tensor(zero.astype(s.data.dtype))
    return (s + m) ** (1.0 / p) - m


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    """Vector p-norm over ``dim`` (default all elements): ``p`` = ``'fro'`` (2), a number,
    ``inf`` (max |x|), ``-inf`` (min |x|) or 0 (count of nonzeros).

    The 2-norm (and every p-norm) has gradient 0 at x = 0, as PyTorch's subgradient.

    >>> import gmcore as gm
    >>> gm.tensor([3.0, 4.0]).norm().item()
    5.0
    >>> gm.tensor([[1.0, -2.0], [0.0, 3.0]]).norm(1, dim=1).tolist()
    [3.0, 3.0]
    """
    if dtype is not None:
        input = input.to(dtype)
    _require_float(input, "norm")
    if isinstance(p, str):
        if p == "nuc":
            raise NotImplementedError("norm(p='nuc'): the nuclear norm is not implemented")
        if p != "fro":
            raise ValueError(f"norm(): unknown norm p={p!r} (expected 'fro', 'nuc' or a number)")
        if dim is not None and not isinstance(dim, (int, np.integer)) and len(dim) > 2:
            raise RuntimeError(f"norm(): the Frobenius norm takes at most 2 dims, got {dim}")
        p = 2.0
    p = float(p)
    dims = _dims(dim, input.ndim)
    if p == 0:
        return _CountNonzero.apply(input, dims, keepdim)
    if p == 2:
        return _root((input * input).sum(dims, keepdim), 2.0)
    # |x| as x * sign(x): its derivative is sign(x), 0 at 0, as PyTorch's abs
    absx = input * Tensor(input._xp().sign(input.data))
    if p == math.inf:
        return amax(absx, dims, keepdim)
    if p == -math.inf:
        return amin(absx, dims, keepdim)
    if p == 1:
        return absx.sum(dims, keepdim)
    return _root((absx ** p).sum(dims, keepdim), p)


# ---- boolean reductions -------------------------------------------------------------------------

def _bool_reduce(input, dim, keepdim, fn_name):
    a = input.data
    dims = _dims(dim, a.ndim)
    xp = xp_of(a)
    return Tensor(xp.asarray(getattr(xp, fn_name)(a, axis=dims, keepdims=keepdim)))


def all(input, dim=None, keepdim=False):
    """True where every element over ``dim`` is nonzero (bool result; empty -> True).

    >>> import gmcore as gm
    >>> gm.tensor([[1, 0], [1, 1]]).all(1).tolist()
    [False, True]
    """
    return _bool_reduce(input, dim, keepdim, "all")


def any(input, dim=None, keepdim=False):
    """True where some element over ``dim`` is nonzero (bool result; empty -> False)."""
    return _bool_reduce(input, dim, keepdim, "any")


def count_nonzero(input, dim=None):
    """Number of nonzero elements over ``dim`` (default all), as int64.

    >>> import gmcore as gm
    >>> gm.count_nonzero(gm.tensor([[0.0, 1.0], [2.0, 3.0]]), dim=0).tolist()
    [1, 2]
    """
    a = input.data
    xp = xp_of(a)
    with no_grad():
        return Tensor(xp.asarray(xp.sum(a != 0, axis=_dims(dim, a.ndim))).astype(np.int64))
