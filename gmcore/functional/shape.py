"""Shape ops. Views (reshape when possible, view, permute, transpose, expand, squeeze,
unsqueeze) share memory and the version counter with their input, as in PyTorch."""
import numpy as np

from ..autograd import Function
from ..backend import xp_of
from ._util import normalize_dim, normalize_dims

__all__ = ["reshape", "view", "permute", "transpose", "swapaxes", "expand", "broadcast_to",
           "squeeze", "unsqueeze"]


def _check_shape(shape, size, op):
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise RuntimeError(f"{op}: only one dimension can be inferred (-1), got {shape}")
    known = 1
    for s in shape:
        if s < -1:
            raise RuntimeError(f"{op}: invalid shape dimension {s} in {shape}")
        if s != -1:
            known *= s
    if -1 in shape:
        if known == 0 or size % known:
            raise RuntimeError(f"{op}: shape {shape} is invalid for input of size {size}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    elif known != size:
        raise RuntimeError(f"{op}: shape {shape} is invalid for input of size {size}")
    return shape


class Reshape(Function):
    _is_view = True

    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        return a.reshape(_check_shape(shape, a.size, "reshape"))

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


class View(Function):
    _is_view = True

    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        shape = _check_shape(shape, a.size, "view")
        out = a.reshape(shape)
        if a.size and not np.may_share_memory(out, a) if type(a) is np.ndarray else False:
            raise RuntimeError(f"view: shape {shape} is not compatible with the input's memory "
                               f"layout (shape {tuple(a.shape)}, not contiguous); "
                               "use .reshape(...) instead")
        return out

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


class Permute(Function):
    _is_view = True

    @staticmethod
    def forward(ctx, a, dims):
        dims = tuple(normalize_dim(int(d), a.ndim) for d in dims)
        if len(dims) != a.ndim or sorted(dims) != list(range(a.ndim)):
            raise RuntimeError(f"permute: dims {dims} are not a permutation of the "
                               f"{a.ndim} dimensions of the input")
        ctx.inverse = tuple(np.argsort(dims).tolist())
        return a.transpose(dims)

    @staticmethod
    def backward(ctx, g):
        return g.permute(ctx.inverse), None


class Transpose(Function):
    _is_view = True

    @staticmethod
    def forward(ctx, a, d0, d1):
        d0, d1 = normalize_dim(d0, a.ndim), normalize_dim(d1, a.ndim)
        ctx.dims = d0, d1
        return xp_of(a).swapaxes(a, d0, d1)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(*ctx.dims), None, None


class Expand(Function):
    _is_view = True

    @staticmethod
    def forward(ctx, a, shape):
        shape = tuple(int(s) for s in shape)
        if len(shape) < a.ndim:
            raise RuntimeError(f"expand: the number of sizes ({len(shape)}) must be at least "
                               f"the number of dimensions ({a.ndim})")
        lead = len(shape) - a.ndim
        target = []
        for i, s in enumerate(shape):
            own = a.shape[i - lead] if i >= lead else None
            if s == -1:
                if own is None:
                    raise RuntimeError("expand: -1 is not allowed for new leading dimensions")
                s = own
            elif own is not None and own != 1 and own != s:
                raise RuntimeError(f"expand: the size of dimension {i} ({own}) must match the "
                                   f"expanded size ({s}) or be 1; shapes {tuple(a.shape)} -> "
                                   f"{shape}")
            target.append(s)
        ctx.in_shape = a.shape
        return xp_of(a).broadcast_to(a, tuple(target))

    @staticmethod
    def backward(ctx, g):
        return g.sum_to_size(ctx.in_shape), None


class Squeeze(Function):
    _is_view = True

    @staticmethod
    def forward(ctx, a, dim):
        ctx.in_shape = a.shape
        if dim is None:
            return a.reshape(tuple(s for s in a.shape if s != 1))
        dims = normalize_dims(dim, a.ndim) if a.ndim else ()
        keep = tuple(s for i, s in enumerate(a.shape) if not (i in dims and s == 1))
        return a.reshape(keep)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


class Unsqueeze(Function):
    _is_view = True

    @staticmethod
    def forward(ctx, a, dim):
        n = a.ndim + 1
        if not -n <= dim < n:
            raise IndexError(f"unsqueeze: dim {dim} out of range for a result with {n} "
                             f"dimensions (expected in [{-n}, {n - 1}])")
        ctx.in_shape = a.shape
        return xp_of(a).expand_dims(a, dim % n)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


def reshape(input, shape):
    """The same data with a new shape (a view when the layout allows, else a copy)."""
    return Reshape.apply(input, tuple(shape))


def view(input, shape):
    """A view with a new shape; an error when the memory layout does not allow one."""
    return View.apply(input, tuple(shape))


def permute(input, dims):
    """Reorder dimensions: ``permute(x, (2, 0, 1))``."""
    return Permute.apply(input, tuple(dims))


def transpose(input, dim0, dim1):
    """Swap two dimensions."""
    return Transpose.apply(input, int(dim0), int(dim1))


swapaxes = transpose


def expand(input, shape):
    """Broadcast to a larger shape without copying (-1 keeps a size)."""
    return Expand.apply(input, tuple(shape))


def broadcast_to(input, shape):
    return Expand.apply(input, tuple(shape))


def squeeze(input, dim=None):
    """Drop size-1 dimensions (all, or those in ``dim``; other sizes are left alone)."""
    return Squeeze.apply(input, dim)


def unsqueeze(input, dim):
    """Insert a size-1 dimension at ``dim``."""
    return Unsqueeze.apply(input, int(dim))
