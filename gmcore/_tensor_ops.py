"""The op methods of ``Tensor``: one-liners onto ``gmcore.functional``.

Split from ``tensor.py`` by concern: that file holds a tensor's state, autograd bookkeeping,
conversion and the Python protocol; this one the method spelling of every op (PyTorch's names
and signatures). ``Tensor`` inherits them from ``TensorOps``.
"""

_F = None  # gmcore.functional, set by gmcore.tensor once it can be imported (it imports Tensor)


def _shape_arg(args):
    """Accept ``f(2, 3)`` and ``f((2, 3))`` alike, as PyTorch does."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)


class TensorOps:
    """Mixin with the op methods of ``Tensor`` (math, reductions, linear algebra, shape, indexing)."""

    __slots__ = ()

    # ---- elementwise math (gmcore.functional) -----------------------------------------------
    def exp(self):
        return _F.exp(self)

    def log(self):
        return _F.log(self)

    def log1p(self):
        return _F.log1p(self)

    def expm1(self):
        return _F.expm1(self)

    def sqrt(self):
        return _F.sqrt(self)

    def rsqrt(self):
        return _F.rsqrt(self)

    def abs(self):
        return _F.abs(self)

    def sign(self):
        return _F.sign(self)

    def sin(self):
        return _F.sin(self)

    def cos(self):
        return _F.cos(self)

    def tanh(self):
        return _F.tanh(self)

    def sigmoid(self):
        return _F.sigmoid(self)

    def relu(self):
        return _F.relu(self)

    def square(self):
        return _F.square(self)

    def reciprocal(self):
        return _F.reciprocal(self)

    def floor(self):
        return _F.floor(self)

    def ceil(self):
        return _F.ceil(self)

    def round(self, decimals=0):
        return _F.round(self, decimals=decimals)

    def clamp(self, min=None, max=None):
        return _F.clamp(self, min, max)

    clip = clamp

    def maximum(self, other):
        return _F.maximum(self, other)

    def minimum(self, other):
        return _F.minimum(self, other)

    def where(self, condition, other):
        return _F.where(condition, self, other)

    def eq(self, other):
        return _F.eq(self, other)

    def ne(self, other):
        return _F.ne(self, other)

    def lt(self, other):
        return _F.lt(self, other)

    def le(self, other):
        return _F.le(self, other)

    def gt(self, other):
        return _F.gt(self, other)

    def ge(self, other):
        return _F.ge(self, other)

    def isnan(self):
        return _F.isnan(self)

    def isinf(self):
        return _F.isinf(self)

    def isfinite(self):
        return _F.isfinite(self)

    def logical_not(self):
        return _F.logical_not(self)

    def logical_and(self, other):
        return _F.logical_and(self, other)

    def logical_or(self, other):
        return _F.logical_or(self, other)

    def softmax(self, dim):
        return _F.softmax(self, dim)

    def log_softmax(self, dim):
        return _F.log_softmax(self, dim)

    def trunc(self):
        return _F.trunc(self)

    def erf(self):
        return _F.erf(self)

    def erfc(self):
        return _F.erfc(self)

    def tan(self):
        return _F.tan(self)

    def sinh(self):
        return _F.sinh(self)

    def cosh(self):
        return _F.cosh(self)

    def asinh(self):
        return _F.asinh(self)

    def acosh(self):
        return _F.acosh(self)

    def atanh(self):
        return _F.atanh(self)

    arcsinh, arccosh, arctanh = asinh, acosh, atanh

    def log2(self):
        return _F.log2(self)

    def exp2(self):
        return _F.exp2(self)

    def bitwise_left_shift(self, other):
        return _F.bitwise_left_shift(self, other)

    def bitwise_right_shift(self, other):
        return _F.bitwise_right_shift(self, other)

    def logical_xor(self, other):
        return _F.logical_xor(self, other)

    def bitwise_and(self, other):
        return _F.bitwise_and(self, other)

    def bitwise_or(self, other):
        return _F.bitwise_or(self, other)

    def bitwise_xor(self, other):
        return _F.bitwise_xor(self, other)

    def bitwise_not(self):
        return _F.bitwise_not(self)

    def nan_to_num(self, nan=0.0, posinf=None, neginf=None):
        return _F.nan_to_num(self, nan, posinf, neginf)

    def lerp(self, end, weight):
        return _F.lerp(self, end, weight)

    def addcmul(self, tensor1, tensor2, *, value=1):
        return _F.addcmul(self, tensor1, tensor2, value=value)

    def addcdiv(self, tensor1, tensor2, *, value=1):
        return _F.addcdiv(self, tensor1, tensor2, value=value)

    # ---- reductions -------------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, dtype=None):
        return _F.sum(self, dim, keepdim, dtype=dtype)

    def sum_to_size(self, *size):
        return _F.sum_to_size(self, _shape_arg(size))

    def mean(self, dim=None, keepdim=False, dtype=None):
        return _F.mean(self, dim, keepdim, dtype=dtype)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return _F.var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return _F.std(self, dim, unbiased, keepdim, correction=correction)

    def prod(self, dim=None, keepdim=False, dtype=None):
        return _F.prod(self, dim, keepdim, dtype=dtype)

    def amax(self, dim=None, keepdim=False):
        return _F.amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return _F.amin(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        return _F.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return _F.min(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _F.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _F.argmin(self, dim, keepdim)

    def logsumexp(self, dim, keepdim=False):
        return _F.logsumexp(self, dim, keepdim)

    def cumsum(self, dim):
        return _F.cumsum(self, dim)

    def norm(self, p="fro", dim=None, keepdim=False):
        return _F.norm(self, p, dim, keepdim)

    def all(self, dim=None, keepdim=False):
        return _F.all(self, dim, keepdim)

    def any(self, dim=None, keepdim=False):
        return _F.any(self, dim, keepdim)

    def count_nonzero(self, dim=None):
        return _F.count_nonzero(self, dim)

    # ---- linear algebra (gmcore.functional.linalg) -------------------------------------------
    def mm(self, mat2):
        return _F.mm(self, mat2)

    def bmm(self, mat2):
        return _F.bmm(self, mat2)

    def mv(self, vec):
        return _F.mv(self, vec)

    def dot(self, other):
        return _F.dot(self, other)

    def outer(self, vec2):
        return _F.outer(self, vec2)

    def inverse(self):
        return _F.inverse(self)

    def slogdet(self):
        return _F.slogdet(self)

    # ---- shape ------------------------------------------------------------------------------
    def reshape(self, *shape):
        return _F.reshape(self, _shape_arg(shape))

    def view(self, *shape):
        return _F.view(self, _shape_arg(shape))

    def view_as(self, other):
        return _F.view(self, tuple(other.shape))

    def reshape_as(self, other):
        return _F.reshape(self, tuple(other.shape))

    def flatten(self, start_dim=0, end_dim=-1):
        return _F.flatten(self, start_dim, end_dim)

    def unflatten(self, dim, sizes):
        return _F.unflatten(self, dim, sizes)

    def permute(self, *dims):
        return _F.permute(self, _shape_arg(dims))

    def transpose(self, dim0, dim1):
        return _F.transpose(self, dim0, dim1)

    def t(self):
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, got {self.ndim}")
        return self if self.ndim < 2 else _F.transpose(self, 0, 1)

    @property
    def T(self):
        return _F.permute(self, tuple(range(self.ndim - 1, -1, -1)))

    @property
    def mT(self):
        return _F.transpose(self, -2, -1)

    def squeeze(self, dim=None):
        return _F.squeeze(self, dim)

    def unsqueeze(self, dim):
        return _F.unsqueeze(self, dim)

    def expand(self, *sizes):
        return _F.expand(self, _shape_arg(sizes))

    def expand_as(self, other):
        return _F.expand(self, tuple(other.shape))

    def broadcast_to(self, shape):
        return _F.broadcast_to(self, shape)

    def repeat(self, *sizes):
        return _F.repeat(self, _shape_arg(sizes))

    def tile(self, *dims):
        return _F.tile(self, _shape_arg(dims))

    def flip(self, dims):
        return _F.flip(self, dims)

    def roll(self, shifts, dims=None):
        return _F.roll(self, shifts, dims)

    def split(self, split_size_or_sections, dim=0):
        return _F.split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0):
        return _F.chunk(self, chunks, dim)

    def triu(self, diagonal=0):
        return _F.triu(self, diagonal)

    def tril(self, diagonal=0):
        return _F.tril(self, diagonal)

    # ---- indexing ---------------------------------------------------------------------------
    def index_select(self, dim, index):
        return _F.index_select(self, dim, index)

    def gather(self, dim, index):
        return _F.gather(self, dim, index)

    def scatter_add(self, dim, index, src):
        return _F.scatter_add(self, dim, index, src)

    def masked_fill(self, mask, value):
        return _F.masked_fill(self, mask, value)

    def masked_select(self, mask):
        return _F.masked_select(self, mask)

    def scatter(self, dim, index, src=None, *, value=None):
        return _F.scatter(self, dim, index, src, value=value)

    def index_put(self, indices, values, accumulate=False):
        return _F.index_put(self, tuple(indices), values, accumulate)

    def nonzero(self, *, as_tuple=False):
        return _F.nonzero(self, as_tuple=as_tuple)

    def argwhere(self):
        return _F.argwhere(self)

    def unbind(self, dim=0):
        return _F.unbind(self, dim)

    def movedim(self, source, destination):
        return _F.movedim(self, source, destination)

    moveaxis = movedim

    # ---- ordering, cumulative, rearranging, closeness (sorting.py, arrange.py ...) ----------
    def sort(self, dim=-1, descending=False, stable=False):
        return _F.sort(self, dim, descending, stable)

    def argsort(self, dim=-1, descending=False, stable=False):
        return _F.argsort(self, dim, descending, stable)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        return _F.topk(self, k, dim, largest, sorted)

    def bincount(self, weights=None, minlength=0):
        return _F.bincount(self, weights, minlength)

    def unique(self, sorted=True, return_inverse=False, return_counts=False, dim=None):
        return _F.unique(self, sorted, return_inverse, return_counts, dim)

    def cumprod(self, dim, *, dtype=None):
        return _F.cumprod(self, dim, dtype=dtype)

    def median(self, dim=None, keepdim=False):
        return _F.median(self, dim, keepdim)

    def diagonal(self, offset=0, dim1=0, dim2=1):
        return _F.diagonal(self, offset, dim1, dim2)

    def repeat_interleave(self, repeats=None, dim=None, *, output_size=None):
        return _F.repeat_interleave(self, repeats, dim, output_size=output_size)

    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return _F.isclose(self, other, rtol, atol, equal_nan)

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return _F.allclose(self, other, rtol, atol, equal_nan)

    # in-place (functional/inplace.py): PyTorch's autograd rules via tensor._inplace
    def relu_(self):
        return _F.relu_(self)

    def sigmoid_(self):
        return _F.sigmoid_(self)

    def tanh_(self):
        return _F.tanh_(self)

    def scatter_(self, dim, index, src=None, *, value=None, reduce=None):
        return _F.scatter_(self, dim, index, src, value=value, reduce=reduce)

    def scatter_add_(self, dim, index, src):
        return _F.scatter_add_(self, dim, index, src)
