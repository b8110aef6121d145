"""A differentiable gather/scatter-add pair along one axis, used by pooling, resampling and nll.

``take_along(x, idx, axis)`` picks ``x`` at integer positions ``idx`` along ``axis``:

* a 1-D ``idx`` selects whole slices (``xp.take``), e.g. the source rows of a resize;
* an ``idx`` with ``x``'s number of dims picks per element (``take_along_axis`` with
  broadcasting), e.g. the argmax of each pooling window or the target class of each sample.

Its adjoint ``put_along`` scatter-adds into zeros (repeated positions sum); each one's
backward is the other, so gradients of any order are available.
"""
from ...autograd import Function
from ...backend import scatter_add, xp_of


def _index_tuple(xp, idx, axis, shape):
    if idx.ndim == 1:
        return (slice(None),) * axis + (idx,)
    nd = len(shape)
    out = []
    for d in range(nd):
        if d == axis:
            out.append(idx)
        else:  # an arange along d, broadcast against idx (size-1 dims of idx broadcast too)
            out.append(xp.arange(shape[d]).reshape((-1,) + (1,) * (nd - 1 - d)))
    return tuple(out)


# slice scatter-add through a one-hot (len(idx), size) matrix product when that matrix is small:
# several times faster than np.add.at for the resize gradients (BLAS instead of a ufunc loop)
_DENSE_LIMIT = 1 << 22


def _put_slices_dense(xp, g, idx, axis, size):
    onehot = xp.zeros((idx.size, size), dtype=g.dtype)
    onehot[xp.arange(idx.size), idx] = 1
    if axis == g.ndim - 1:
        return g @ onehot
    if axis == g.ndim - 2:
        return onehot.T @ g
    moved = xp.moveaxis(g, axis, -1) @ onehot
    return xp.ascontiguousarray(xp.moveaxis(moved, -1, axis))


class _TakeAlong(Function):
    @staticmethod
    def forward(ctx, x, idx, axis):
        ctx.idx, ctx.axis, ctx.shape = idx, axis, x.shape
        return x[_index_tuple(xp_of(x), idx, axis, x.shape)]

    @staticmethod
    def backward(ctx, g):
        return _PutAlong.apply(g, ctx.idx, ctx.axis, ctx.shape), None, None


class _PutAlong(Function):
    @staticmethod
    def forward(ctx, g, idx, axis, shape):
        ctx.idx, ctx.axis = idx, axis
        xp = xp_of(g)
        if idx.ndim == 1 and idx.size * shape[axis] <= _DENSE_LIMIT:
            return _put_slices_dense(xp, g, idx, axis, shape[axis])
        out = xp.zeros(shape, dtype=g.dtype)
        scatter_add(out, _index_tuple(xp, idx, axis, shape), g)
        return out

    @staticmethod
    def backward(ctx, gg):
        return _TakeAlong.apply(gg, ctx.idx, ctx.axis), None, None, None


def take_along(x, idx, axis):
    """``x`` at raw integer positions ``idx`` along ``axis`` (see the module docstring)."""
    return _TakeAlong.apply(x, idx, axis)


def put_along(g, idx, axis, shape):
    """Scatter-add ``g`` at positions ``idx`` along ``axis`` into zeros of ``shape``."""
    return _PutAlong.apply(g, idx, axis, tuple(shape))
