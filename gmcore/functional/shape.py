"""Shape ops. Views (reshape when possible, view, permute, transpose, expand, squeeze,
unsqueeze, split, chunk, unbind) share memory and the version counter with their input, as in
PyTorch; the others (cat, stack, repeat, flip, roll, pad) copy.

Each backward is written with tensor ops, so gradients of gradients work: cat <-> split,
stack <-> unbind, repeat -> reshape + sum, flip/roll -> flip/roll, constant pad -> the opposite
pad, reflect/replicate/circular pad -> a scatter-add whose own backward is the pad again.
"""
import numpy as np

from .. import backend
from .._dtype import result_type
from ..autograd import Function
from ..backend import xp_of
from ._util import normalize_dim, normalize_dims

__all__ = ["reshape", "view", "permute", "transpose", "swapaxes", "expand", "broadcast_to",
           "squeeze", "unsqueeze", "flatten", "unflatten", "movedim", "moveaxis", "repeat",
           "tile", "flip", "roll", "cat", "concat", "concatenate", "stack", "split", "chunk",
           "unbind", "pad"]


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
        return xp_of(a).swapaxes(a, d0, d1) if a.ndim else a[...]  # 0-d: dims 0/-1 only

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
        # a 0-d tensor accepts dim 0 or -1 only (torch), so validate before looking at sizes
        dims = normalize_dims(dim, a.ndim)
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


# ---- flatten / unflatten / movedim (composites of reshape and permute) ----------------------

def flatten(input, start_dim=0, end_dim=-1):
    """Merge dimensions ``start_dim..end_dim`` into one (a 0-d tensor becomes shape (1,)).

    >>> import gmcore as gm
    >>> gm.zeros(2, 3, 4).flatten(1).shape
    gmcore.Size([2, 12])
    """
    shape = tuple(input.shape)
    if not shape:
        normalize_dim(int(start_dim), 0, "start_dim")  # 0 or -1 only, as torch
        normalize_dim(int(end_dim), 0, "end_dim")
        return reshape(input, (1,))
    s = normalize_dim(int(start_dim), len(shape), "start_dim")
    e = normalize_dim(int(end_dim), len(shape), "end_dim")
    if s > e:
        raise RuntimeError(f"flatten: start_dim ({start_dim}) cannot come after end_dim "
                           f"({end_dim}) for a tensor of shape {shape}")
    n = 1
    for k in shape[s:e + 1]:
        n *= k
    return reshape(input, shape[:s] + (n,) + shape[e + 1:])


def unflatten(input, dim, sizes):
    """Split dimension ``dim`` into ``sizes`` (one entry may be -1).

    >>> import gmcore as gm
    >>> gm.zeros(2, 12).unflatten(1, (3, -1)).shape
    gmcore.Size([2, 3, 4])
    """
    shape = tuple(input.shape)
    d = normalize_dim(int(dim), len(shape))
    sizes = tuple(int(k) for k in sizes)
    if not sizes:
        raise RuntimeError("unflatten: sizes must be non-empty")
    try:
        sizes = _check_shape(sizes, shape[d], "unflatten")
    except RuntimeError:
        raise RuntimeError(f"unflatten: sizes {sizes} don't multiply up to the size of "
                           f"dimension {d} ({shape[d]}) of a tensor of shape {shape}") from None
    return reshape(input, shape[:d] + sizes + shape[d + 1:])


def movedim(input, source, destination):
    """Move dimension(s) ``source`` to position(s) ``destination`` (a permute view).

    >>> import gmcore as gm
    >>> gm.zeros(2, 3, 4).movedim(0, -1).shape
    gmcore.Size([3, 4, 2])
    """
    nd = input.ndim
    src = (source,) if isinstance(source, (int, np.integer)) else tuple(source)
    dst = (destination,) if isinstance(destination, (int, np.integer)) else tuple(destination)
    if len(src) != len(dst):
        raise RuntimeError(f"movedim: source {src} and destination {dst} must have the same "
                           "number of dimensions")
    src = tuple(normalize_dim(int(k), nd, "source") for k in src)
    dst = tuple(normalize_dim(int(k), nd, "destination") for k in dst)
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise RuntimeError(f"movedim: repeated dim in source {src} or destination {dst}")
    if nd == 0:  # dims 0 and -1 (validated above) name the tensor itself
        return input[...]
    order = [None] * nd
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(k for k in range(nd) if k not in src)
    order = [next(rest) if o is None else o for o in order]
    return permute(input, order)


moveaxis = movedim


# ---- repeat / tile ------------------------------------------------------------------------

class Repeat(Function):
    @staticmethod
    def forward(ctx, a, reps):
        lead = len(reps) - a.ndim
        shape = (1,) * lead + tuple(a.shape)
        ctx.in_shape, ctx.shape, ctx.reps = a.shape, shape, reps
        return xp_of(a).tile(a.reshape(shape), reps)

    @staticmethod
    def backward(ctx, g):
        # view the output as (r0, s0, r1, s1, ...) and sum over the repeat axes
        inter = tuple(v for r, s in zip(ctx.reps, ctx.shape) for v in (r, s))
        summed = g.reshape(inter).sum(tuple(range(0, len(inter), 2)))
        return summed.reshape(ctx.in_shape), None


def repeat(input, sizes):
    """Tile ``input`` ``sizes[i]`` times along each dim (``torch.Tensor.repeat``); ``sizes`` may
    add leading dims but not have fewer entries than ``input.ndim``.

    >>> import gmcore as gm
    >>> gm.tensor([1, 2]).repeat(2, 2).tolist()
    [[1, 2, 1, 2], [1, 2, 1, 2]]
    """
    reps = tuple(int(r) for r in sizes)
    if len(reps) < input.ndim:
        raise RuntimeError(f"repeat: the number of repeat sizes ({len(reps)}) can not be smaller "
                           f"than the number of dimensions of the tensor ({input.ndim})")
    if any(r < 0 for r in reps):
        raise RuntimeError(f"repeat: repeat sizes must be non-negative, got {reps}")
    return Repeat.apply(input, reps)


def tile(input, dims):
    """``torch.tile``: as ``repeat``, but fewer ``dims`` than dimensions are padded with ones."""
    dims = tuple(int(r) for r in dims)
    return repeat(input, (1,) * (input.ndim - len(dims)) + dims)


# ---- flip / roll ------------------------------------------------------------------------------

class Flip(Function):
    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return xp_of(a).flip(a, axis=dims).copy() if dims else a.copy()

    @staticmethod
    def backward(ctx, g):
        return flip(g, ctx.dims), None


def flip(input, dims):
    """Reverse the order of elements along ``dims`` (a copy, as PyTorch).

    >>> import gmcore as gm
    >>> gm.tensor([[1, 2], [3, 4]]).flip(1).tolist()
    [[2, 1], [4, 3]]
    """
    dims = normalize_dims(dims, input.ndim)  # validates 0-d too: dims 0 or -1 only
    return Flip.apply(input, dims if input.ndim else ())


class Roll(Function):
    @staticmethod
    def forward(ctx, a, shifts, dims):
        ctx.shifts, ctx.dims = shifts, dims
        xp = xp_of(a)
        if dims is None:
            return xp.roll(a.reshape(-1), shifts[0]).reshape(a.shape)
        return xp.roll(a, shifts, axis=dims)

    @staticmethod
    def backward(ctx, g):
        back = tuple(-s for s in ctx.shifts)
        return roll(g, back if ctx.dims is not None else back[0], ctx.dims), None, None


def roll(input, shifts, dims=None):
    """Shift elements circularly along ``dims`` (over the flattened tensor when ``dims`` is None).

    >>> import gmcore as gm
    >>> gm.tensor([1, 2, 3, 4]).roll(1).tolist()
    [4, 1, 2, 3]
    """
    shifts = (int(shifts),) if isinstance(shifts, (int, np.integer)) else \
        tuple(int(s) for s in shifts)
    if dims is None:
        if len(shifts) != 1:
            raise RuntimeError(f"roll: without dims, shifts must be a single int (got {shifts})")
        return Roll.apply(input, shifts, None)
    dims = (int(dims),) if isinstance(dims, (int, np.integer)) else tuple(int(d) for d in dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"roll: shifts {shifts} and dims {dims} must have the same length")
    if input.ndim == 0:
        raise IndexError(f"roll: dims {dims} given but the tensor has no dimensions (torch)")
    dims = tuple(normalize_dim(d, input.ndim) for d in dims)
    return Roll.apply(input, shifts, dims)


# ---- cat / split / chunk ----------------------------------------------------------------------

def _tensor_list(tensors, op):
    from ..tensor import Tensor
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{op}: expected a list or tuple of tensors, got {type(tensors).__name__}")
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError(f"{op}: expected a non-empty list of tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: element {i} is a {type(t).__name__}, expected a tensor")
    devices = [t.device for t in tensors]
    for d in devices[1:]:
        if d != devices[0]:
            raise RuntimeError(f"{op}: expected all tensors on the same device, but found "
                               f"{devices[0]} and {d}")
    return tensors


def _common_dtype(arrays):
    """PyTorch's promotion over all operands (cat/stack promote instead of failing)."""
    first = arrays[0].dtype
    if all(a.dtype == first for a in arrays):
        return first
    dt = result_type(*arrays).np
    return dt


class Cat(Function):
    @staticmethod
    def forward(ctx, dim, *arrays):
        # PyTorch's legacy rule: 1-d empty tensors are skipped whatever the others' shapes
        used = [a for a in arrays if not (a.ndim == 1 and a.shape[0] == 0)]
        ref = used[0] if used else arrays[0]
        d = normalize_dim(dim, ref.ndim)
        for i, a in enumerate(arrays):
            if a is not ref and not (a.ndim == 1 and a.shape[0] == 0):
                if a.ndim != ref.ndim or any(x != y for k, (x, y) in
                                             enumerate(zip(a.shape, ref.shape)) if k != d):
                    raise RuntimeError(
                        f"cat: sizes of tensors must match except in dimension {d}; tensor {i} "
                        f"has shape {tuple(a.shape)}, tensor 0 has shape {tuple(ref.shape)}")
        dt = _common_dtype(arrays)
        ctx.dim = d
        ctx.sizes = [None if (a.ndim == 1 and a.shape[0] == 0 and a is not ref) else a.shape[d]
                     for a in arrays]
        if not used:
            return arrays[0].astype(dt, copy=True)
        return xp_of(ref).concatenate([a.astype(dt, copy=False) for a in used], axis=d)

    @staticmethod
    def backward(ctx, g):
        sizes = [s for s in ctx.sizes if s is not None]
        parts = iter(split(g, sizes, ctx.dim))
        out = [None]
        for s, needed in zip(ctx.sizes, ctx.needs_input_grad[1:]):
            if s is None:
                out.append(None)
                continue
            part = next(parts)
            out.append(part if needed else None)
        return tuple(out)


def cat(tensors, dim=0):
    """Join tensors along an existing dimension; dtypes promote as in PyTorch.

    >>> import gmcore as gm
    >>> gm.cat([gm.zeros(2, 3), gm.ones(1, 3)]).shape
    gmcore.Size([3, 3])
    """
    tensors = _tensor_list(tensors, "cat")
    for i, t in enumerate(tensors):
        if t.ndim == 0:
            raise RuntimeError(f"cat: zero-dimensional tensor (at position {i}) cannot be "
                               "concatenated")
    return Cat.apply(int(dim), *tensors)


concat = concatenate = cat


class Split(Function):
    _is_view = True

    @staticmethod
    def forward(ctx, a, sections, dim):
        ctx.dim = dim
        ctx.dtype = a.dtype
        outs, start = [], 0
        lead = (slice(None),) * dim
        for s in sections:
            outs.append(a[lead + (slice(start, start + s),)])
            start += s
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        return cat(list(grads), ctx.dim), None, None


def split(tensor, split_size_or_sections, dim=0):
    """Split into views of ``split_size`` along ``dim`` (the last may be smaller), or into
    pieces of the listed sizes (they must sum to the size of ``dim``).

    >>> import gmcore as gm
    >>> [p.shape[0] for p in gm.zeros(5, 2).split(2)]
    [2, 2, 1]
    >>> [p.shape[1] for p in gm.zeros(5, 3).split([1, 2], dim=1)]
    [1, 2]
    """
    if tensor.ndim == 0:
        raise RuntimeError("split: expected a tensor with at least one dimension")
    d = normalize_dim(int(dim), tensor.ndim)
    n = tensor.shape[d]
    if isinstance(split_size_or_sections, (int, np.integer)):
        size = int(split_size_or_sections)
        if size < 0 or (size == 0 and n != 0):
            raise RuntimeError(f"split: split_size must be positive, got {size} for dimension "
                               f"{d} of size {n}")
        if n == 0:
            sections = [0]
        else:
            sections = [size] * (n // size) + ([n % size] if n % size else [])
    else:
        sections = [int(s) for s in split_size_or_sections]
        if any(s < 0 for s in sections) or sum(sections) != n:
            raise RuntimeError(f"split: split sizes {sections} must be non-negative and sum to "
                               f"the size of dimension {d} ({n}) of a tensor of shape "
                               f"{tuple(tensor.shape)}")
    return Split.apply(tensor, tuple(sections), d)


def chunk(input, chunks, dim=0):
    """Split into at most ``chunks`` views of size ``ceil(n / chunks)`` (PyTorch's rule: may
    return fewer chunks).

    >>> import gmcore as gm
    >>> [p.shape[0] for p in gm.zeros(5).chunk(3)]
    [2, 2, 1]
    """
    chunks = int(chunks)
    if chunks <= 0:
        raise RuntimeError(f"chunk: number of chunks must be positive, got {chunks}")
    if input.ndim == 0:
        raise RuntimeError("chunk: expected a tensor with at least one dimension")
    n = input.shape[normalize_dim(int(dim), input.ndim)]
    return split(input, max(-(-n // chunks), 1) if n else 0, dim)


# ---- stack / unbind ---------------------------------------------------------------------------

class Stack(Function):
    @staticmethod
    def forward(ctx, dim, *arrays):
        ref = arrays[0]
        for i, a in enumerate(arrays):
            if a.shape != ref.shape:
                raise RuntimeError(f"stack: expects each tensor to be equal size, but got "
                                   f"{tuple(ref.shape)} at entry 0 and {tuple(a.shape)} at "
                                   f"entry {i}")
        d = normalize_dim(dim, ref.ndim + 1)
        ctx.dim = d
        dt = _common_dtype(arrays)
        return xp_of(ref).stack([a.astype(dt, copy=False) for a in arrays], axis=d)

    @staticmethod
    def backward(ctx, g):
        return (None,) + tuple(unbind(g, ctx.dim))


def stack(tensors, dim=0):
    """Join equally shaped tensors along a new dimension ``dim``.

    >>> import gmcore as gm
    >>> gm.stack([gm.zeros(2, 3), gm.ones(2, 3)], dim=1).shape
    gmcore.Size([2, 2, 3])
    """
    tensors = _tensor_list(tensors, "stack")
    return Stack.apply(int(dim), *tensors)


class Unbind(Function):
    _is_view = True

    @staticmethod
    def forward(ctx, a, dim):
        ctx.dim = dim
        lead = (slice(None),) * dim
        return tuple(a[lead + (i, Ellipsis)] for i in range(a.shape[dim]))

    @staticmethod
    def backward(ctx, *grads):
        return stack(list(grads), ctx.dim), None


def unbind(input, dim=0):
    """The slices along ``dim``, as a tuple of views.

    >>> import gmcore as gm
    >>> [t.tolist() for t in gm.tensor([[1, 2], [3, 4]]).unbind(1)]
    [[1, 3], [2, 4]]
    """
    if input.ndim == 0:
        raise IndexError("unbind: dimension specified as 0 but the tensor has no dimensions")
    d = normalize_dim(int(dim), input.ndim)
    if input.shape[d] == 0:
        return ()
    return Unbind.apply(input, d)


# ---- pad ----------------------------------------------------------------------------------------

class PadConstant(Function):
    @staticmethod
    def forward(ctx, a, pads, value):
        # pads: ((dim, left, right), ...); negative amounts crop first, positive ones fill
        xp = xp_of(a)
        ctx.pads = pads
        crop = [slice(None)] * a.ndim
        widths = [(0, 0)] * a.ndim
        for d, lo, hi in pads:
            n = a.shape[d]
            if n + lo + hi < 0:
                raise RuntimeError(f"pad: padding ({lo}, {hi}) would give dimension {d} of size "
                                   f"{n} a negative size ({n + lo + hi})")
            start, stop = max(-lo, 0), n - max(-hi, 0)
            crop[d] = slice(start, max(stop, start))
            widths[d] = (max(lo, 0), max(hi, 0))
        cropped = a[tuple(crop)]
        return xp.pad(cropped, widths, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        # the adjoint of padding by p (filling or cropping) is padding by -p with zeros
        return PadConstant.apply(g, tuple((d, -lo, -hi) for d, lo, hi in ctx.pads), 0), None, None


def _pad_index(xp, n, lo, hi, mode):
    """For output positions -lo .. n+hi-1 along one dim, the input position each one copies."""
    j = xp.arange(-lo, n + hi, dtype=np.int64)
    if mode == "reflect":
        # bounce off both edges without repeating them (valid for lo, hi < n)
        j = xp.abs(j)
        return xp.where(j > n - 1, 2 * (n - 1) - j, j)
    if mode == "replicate":
        return xp.clip(j, 0, n - 1)
    return j % n  # circular


class PadGather(Function):
    """Non-constant padding: along each padded dim, out = input.take(index_d, dim). ``takes``
    holds ``(dim, index, lo, edges)`` per padded dim: ``index`` (an array of the input's device)
    gives the input position each output position copies, ``lo`` the left pad, and ``edges`` the
    ``(output position, input position)`` pairs of the pads (host ints, for the backward)."""

    @staticmethod
    def forward(ctx, a, takes):
        ctx.in_shape, ctx.takes = a.shape, takes
        if not takes:
            return a.copy()
        xp = xp_of(a)
        for d, idx, _, _ in takes:
            a = xp.take(a, idx, axis=d)
        return a

    @staticmethod
    def backward(ctx, g):
        return PadScatter.apply(g, ctx.in_shape, ctx.takes), None


class PadScatter(Function):
    """The adjoint of ``PadGather``: add each padded dim back to the input size. The output's
    middle ``lo .. lo + n - 1`` copies the input as is in every mode, so the sum is that slice
    plus one slice add per pad position (a scatter-add, np.add.at, is many times slower)."""

    @staticmethod
    def forward(ctx, g, in_shape, takes):
        ctx.takes = takes
        for d, _, lo, edges in reversed(takes):
            lead = (slice(None),) * (d % g.ndim)
            out = g[lead + (slice(lo, lo + in_shape[d]),)].copy()
            for j, t in edges:
                out[lead + (t,)] += g[lead + (j,)]
            g = out
        return g

    @staticmethod
    def backward(ctx, gg):
        # adjoint of the adjoint: the forward pad
        return PadGather.apply(gg, ctx.takes), None, None


def pad(input, pad, mode="constant", value=0.0):
    """Pad the last ``len(pad) // 2`` dims; ``pad`` lists (left, right) for the LAST dim first,
    then (top, bottom) for the one before, ... as ``torch.nn.functional.pad``.

    ``mode``: ``'constant'`` (fill with ``value``; negative amounts crop), ``'reflect'`` (mirror
    without repeating the edge; each amount must be smaller than the dim), ``'replicate'``
    (repeat the edge) or ``'circular'`` (wrap around; amounts at most the dim size).

    >>> import gmcore as gm
    >>> gm.pad(gm.tensor([[1, 2, 3]]), (2, 1), mode="reflect").tolist()
    [[3, 2, 1, 2, 3, 2]]
    """
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise RuntimeError(f"pad: padding length must be even (pairs of left, right), got {pad}")
    k = len(pad) // 2
    if k > input.ndim:
        raise RuntimeError(f"pad: padding {pad} covers {k} dimensions but the input has only "
                           f"{input.ndim} (shape {tuple(input.shape)})")
    shape = tuple(input.shape)
    pads = tuple((input.ndim - 1 - i, pad[2 * i], pad[2 * i + 1]) for i in range(k))
    if mode == "constant":
        return PadConstant.apply(input, pads, value)
    if mode not in ("reflect", "replicate", "circular"):
        raise ValueError(f"pad: unknown mode {mode!r}; expected 'constant', 'reflect', "
                         "'replicate' or 'circular'")
    xp = input._xp()
    takes = []
    for d, lo, hi in pads:
        n = shape[d]
        if lo < 0 or hi < 0:
            raise RuntimeError(f"pad: negative padding ({lo}, {hi}) is only supported in "
                               f"'constant' mode (got mode={mode!r})")
        if lo == hi == 0:
            continue
        if mode == "reflect" and (lo >= n or hi >= n):
            raise RuntimeError(f"pad: reflect padding ({lo}, {hi}) must be smaller than the "
                               f"size of dimension {d} ({n}) of the input of shape {shape}")
        if mode == "replicate" and n == 0:
            raise RuntimeError(f"pad: replicate padding needs a non-empty dimension {d} "
                               f"(input shape {shape})")
        if mode == "circular" and (lo > n or hi > n):
            raise RuntimeError(f"pad: circular padding ({lo}, {hi}) can be at most the size of "
                               f"dimension {d} ({n}) of the input of shape {shape}")
        host = _pad_index(np, n, lo, hi, mode)
        edges = tuple((j, int(host[j])) for j in (*range(lo), *range(lo + n, n + lo + hi)))
        with backend.device_context(input.device):
            takes.append((d, xp.asarray(host) if xp is not np else host, lo, edges))
    if not takes:
        return PadGather.apply(input, ())
    return PadGather.apply(input, tuple(takes))
