"""``Tensor``: an array (``.data``, NumPy or CuPy) plus its place in the autograd graph.

This file holds a tensor's state, autograd bookkeeping, conversion, in-place updates and the
Python protocol (operators); the op methods are one-liners in ``_tensor_ops.py``. Semantics and
names follow PyTorch.
"""
import weakref

import numpy as np

from . import autograd
from . import backend
from . import _tensor_ops
from ._dtype import as_dtype, from_numpy_dtype
from ._tensor_ops import TensorOps, _shape_arg  # noqa: F401  (_shape_arg: used by creation)


class _Version:
    """In-place modification counter, shared by a tensor and its views."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


class Tensor(TensorOps):
    """A multi-dimensional array on a device that can take part in automatic differentiation.

    Create tensors with ``gmcore.tensor``, the factories (``zeros``, ``randn`` ...) or
    ``gmcore.from_numpy`` / ``from_dlpack``. ``Tensor(array)`` wraps an array without a copy.

    >>> import gmcore as gm
    >>> x = gm.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> y = (x @ x).sum()
    >>> y.backward()
    >>> x.grad.tolist()
    [[7.0, 11.0], [9.0, 13.0]]
    """

    __slots__ = ("data", "grad", "_grad_fn", "_output_nr", "_requires_grad", "_version", "_base",
                 "_engine_owned", "_hooks", "__weakref__")
    __array_priority__ = 1000  # numpy scalars defer to Tensor's reflected operators

    def __init__(self, data, requires_grad=False):
        if type(data) is not np.ndarray:
            if isinstance(data, Tensor):
                data = data.data
            elif isinstance(data, np.generic):
                data = np.asarray(data)
            elif not _is_device_array(data):
                from .creation import _to_array
                data = _to_array(data, None, None)
        self.data = data
        self.grad = None
        self._grad_fn = None
        self._output_nr = 0
        self._requires_grad = False
        self._version = _Version()
        self._base = None
        self._hooks = None  # a leaf's gradient hooks (a non-leaf's live on its grad_fn)
        if requires_grad:
            self.requires_grad = True

    # ---- metadata ---------------------------------------------------------------------------
    @property
    def shape(self):
        return Size(self.data.shape)

    def size(self, dim=None):
        return Size(self.data.shape) if dim is None else self.data.shape[dim]

    @property
    def dtype(self):
        return from_numpy_dtype(self.data.dtype)

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_cuda(self):
        return type(self.data) is not np.ndarray

    @property
    def ndim(self):
        return self.data.ndim

    def dim(self):
        return self.data.ndim

    def numel(self):
        return int(self.data.size)

    def element_size(self):
        return self.data.itemsize

    def stride(self, dim=None):
        s = tuple(st // self.data.itemsize for st in self.data.strides)
        return s if dim is None else s[dim]

    def is_contiguous(self):
        return bool(self.data.flags.c_contiguous)

    def is_floating_point(self):
        return self.data.dtype.kind == "f"

    def _xp(self):
        return np if type(self.data) is np.ndarray else backend.xp_of(self.data)

    # ---- autograd state ---------------------------------------------------------------------
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        flag = bool(flag)
        if self._grad_fn is not None:
            if not flag:
                raise RuntimeError("requires_grad can only be turned off on leaf tensors; "
                                   "use .detach() to get a tensor outside the graph")
            return
        if flag and self.data.dtype.kind != "f":
            raise RuntimeError(f"only tensors of floating point dtype can require gradients "
                               f"(got {self.dtype})")
        self._requires_grad = flag

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    @property
    def grad_fn(self):
        return self._grad_fn

    @property
    def is_leaf(self):
        return self._grad_fn is None

    @property
    def _version_value(self):
        return self._version.value

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor after backward (leaves always keep it)."""
        if self._grad_fn is None:
            if not self._requires_grad:
                raise RuntimeError("can't retain_grad on a tensor that does not require grad")
            return
        node = self._grad_fn
        node._retained = (node._retained or []) + [(self._output_nr, weakref.ref(self))]

    def register_hook(self, hook):
        """Call ``hook(grad)`` whenever the gradient with respect to this tensor is computed.

        The hook may return a tensor to use in place of the gradient (for what flows on into
        the graph, or into ``.grad`` of a leaf). Returns a handle; ``handle.remove()``
        unregisters the hook. Works on leaves and non-leaves, as ``torch.Tensor.register_hook``.

        >>> import gmcore as gm
        >>> x = gm.tensor([1.0, 2.0], requires_grad=True)
        >>> h = x.register_hook(lambda g: g * 10)
        >>> (x * x).sum().backward(); x.grad.tolist()
        [20.0, 40.0]
        >>> h.remove()
        """
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require "
                               "gradient")
        if not callable(hook):
            raise TypeError(f"register_hook: hook must be callable, got {type(hook).__name__}")
        if self._grad_fn is None:
            if self._hooks is None:
                self._hooks = {}
            hooks = self._hooks
        else:
            node = self._grad_fn
            if node._hooks is None:
                node._hooks = {}
            hooks = node._hooks.setdefault(self._output_nr, {})
        handle = autograd.RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (see ``gmcore.autograd.backward``)."""
        autograd.backward(self, gradient, retain_graph, create_graph, inputs)

    def detach(self):
        """A tensor sharing this one's data (and version counter), outside the graph."""
        t = Tensor(self.data)
        t._version = self._version
        return t

    def detach_(self):
        if self._base is not None and self._grad_fn is not None:
            raise RuntimeError("can't detach_ a view in place; use detach()")
        self._grad_fn, self._output_nr, self._requires_grad = None, 0, False
        return self

    # ---- conversion -------------------------------------------------------------------------
    def numpy(self):
        """The data as a NumPy array, shared (no copy); only for cpu tensors outside the graph."""
        if self._requires_grad:
            raise RuntimeError("can't call numpy() on a tensor that requires grad; "
                               "use tensor.detach().numpy()")
        if type(self.data) is not np.ndarray:
            raise TypeError(f"can't convert a {self.device} tensor to numpy; "
                            "use tensor.cpu() to copy it to host memory first")
        return self.data

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype, copy=False)

    def item(self):
        if self.data.size != 1:
            raise RuntimeError(f"a tensor with {self.data.size} elements cannot be converted "
                               "to a Python scalar")
        return self.data.reshape(()).item() if type(self.data) is np.ndarray else \
            self.data.reshape(()).get().item()

    def tolist(self):
        return (self.data if type(self.data) is np.ndarray else self.data.get()).tolist()

    def to(self, *args, **kwargs):
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)`` or ``to(other_tensor)``; differentiable."""
        device, dtype, copy = _parse_to_args(args, kwargs)
        return _F.to(self, device=device, dtype=dtype, copy=copy)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        if device is None:
            device = "cuda"
        elif isinstance(device, int):
            device = f"cuda:{device}"
        return self.to(device)

    def type_as(self, other):
        return self.to(other.dtype)

    def float(self):
        return self.to(as_dtype("float32"))

    def double(self):
        return self.to(as_dtype("float64"))

    def half(self):
        return self.to(as_dtype("float16"))

    def long(self):
        return self.to(as_dtype("int64"))

    def int(self):
        return self.to(as_dtype("int32"))

    def bool(self):
        return self.to(as_dtype("bool"))

    def clone(self):
        return _F.clone(self)

    def contiguous(self):
        return self if self.data.flags.c_contiguous else _F.clone(self)

    def __dlpack__(self, *args, **kwargs):
        if self._requires_grad:
            raise RuntimeError("can't export a tensor that requires grad through DLPack; "
                               "use tensor.detach()")
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def new_tensor(self, data):
        from .creation import tensor
        return tensor(data, dtype=self.dtype, device=self.device)

    def new_zeros(self, *size, dtype=None):
        from .creation import zeros
        return zeros(*size, dtype=dtype or self.dtype, device=self.device)

    def new_ones(self, *size, dtype=None):
        from .creation import ones
        return ones(*size, dtype=dtype or self.dtype, device=self.device)

    def new_full(self, size, fill_value, dtype=None):
        from .creation import full
        return full(size, fill_value, dtype=dtype or self.dtype, device=self.device)

    def new_empty(self, *size, dtype=None):
        from .creation import empty
        return empty(*size, dtype=dtype or self.dtype, device=self.device)

    # ---- python protocol --------------------------------------------------------------------
    def __repr__(self):
        data = self.data if type(self.data) is np.ndarray else self.data.get()
        body = np.array2string(data, separator=", ", prefix="tensor(", precision=4)
        extras = []
        if type(self.data) is not np.ndarray:
            extras.append(f"device='{self.device}'")
        if self.data.dtype not in (np.float32, np.int64, np.bool_):
            extras.append(f"dtype={self.dtype}")
        if self._grad_fn is not None:
            extras.append(f"grad_fn={self._grad_fn!r}")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self.data.size} elements is "
                               "ambiguous; use .any() or .all()")
        return bool(self.item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.data.dtype.kind not in "iub" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    __hash__ = object.__hash__

    def __getitem__(self, index):
        return _F.getitem(self, index)

    def __setitem__(self, index, value):
        _inplace(self, lambda src: _F.index_put(src, index, value), "__setitem__")

    # ---- arithmetic -------------------------------------------------------------------------
    def __add__(self, other):
        return _F.add(self, other)

    def __radd__(self, other):
        return _F.add(other, self)

    def __sub__(self, other):
        return _F.sub(self, other)

    def __rsub__(self, other):
        return _F.sub(other, self)

    def __mul__(self, other):
        return _F.mul(self, other)

    def __rmul__(self, other):
        return _F.mul(other, self)

    def __truediv__(self, other):
        return _F.div(self, other)

    def __rtruediv__(self, other):
        return _F.div(other, self)

    def __floordiv__(self, other):
        return _F.floor_divide(self, other)

    def __rfloordiv__(self, other):
        return _F.floor_divide(other, self)

    def __mod__(self, other):
        return _F.remainder(self, other)

    def __pow__(self, other):
        return _F.pow(self, other)

    def __rpow__(self, other):
        return _F.pow(other, self)

    def __matmul__(self, other):
        return _F.matmul(self, other)

    def __rmatmul__(self, other):
        return _F.matmul(other, self)

    def __neg__(self):
        return _F.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _F.abs(self)

    def __eq__(self, other):
        return _F.eq(self, other)

    def __ne__(self, other):
        return _F.ne(self, other)

    def __lt__(self, other):
        return _F.lt(self, other)

    def __le__(self, other):
        return _F.le(self, other)

    def __gt__(self, other):
        return _F.gt(self, other)

    def __ge__(self, other):
        return _F.ge(self, other)

    # bitwise ops promote as torch: bool & bool stays bool, bool ^ 3 is int64 (bit for bit,
    # the bitwise ops on bools are the logical ones)
    def __and__(self, other):
        return _F.bitwise_and(self, other)

    def __rand__(self, other):
        return _F.bitwise_and(other, self)

    def __or__(self, other):
        return _F.bitwise_or(self, other)

    def __ror__(self, other):
        return _F.bitwise_or(other, self)

    def __xor__(self, other):
        return _F.bitwise_xor(self, other)

    def __rxor__(self, other):
        return _F.bitwise_xor(other, self)

    def __lshift__(self, other):
        return _F.bitwise_left_shift(self, other)

    def __rlshift__(self, other):
        return _F.bitwise_left_shift(other, self)

    def __rshift__(self, other):
        return _F.bitwise_right_shift(self, other)

    def __rrshift__(self, other):
        return _F.bitwise_right_shift(other, self)

    def __invert__(self):
        return _F.logical_not(self) if self.data.dtype == np.bool_ else _F.bitwise_not(self)

    def add(self, other, alpha=1):
        return _F.add(self, other, alpha=alpha)

    def sub(self, other, alpha=1):
        return _F.sub(self, other, alpha=alpha)

    def mul(self, other):
        return _F.mul(self, other)

    def div(self, other):
        return _F.div(self, other)

    def pow(self, exponent):
        return _F.pow(self, exponent)

    def matmul(self, other):
        return _F.matmul(self, other)

    def neg(self):
        return _F.neg(self)

    # ---- in-place ---------------------------------------------------------------------------
    # augmented assignment modifies in place, as in PyTorch (``w -= lr * w.grad`` under no_grad)
    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def add_(self, other, alpha=1):
        other = other if alpha == 1 else other * alpha
        done = _ufunc_inplace(self, "add", other)
        return done if done is not None else _inplace(self, lambda s: _F.add(s, other), "add_")

    def sub_(self, other, alpha=1):
        other = other if alpha == 1 else other * alpha
        done = _ufunc_inplace(self, "subtract", other)
        return done if done is not None else _inplace(self, lambda s: _F.sub(s, other), "sub_")

    def mul_(self, other):
        done = _ufunc_inplace(self, "multiply", other)
        return done if done is not None else _inplace(self, lambda s: _F.mul(s, other), "mul_")

    def div_(self, other):
        done = _ufunc_inplace(self, "true_divide", other)
        return done if done is not None else _inplace(self, lambda s: _F.div(s, other), "div_")

    def pow_(self, exponent):
        return _inplace(self, lambda s: _F.pow(s, exponent), "pow_")

    def clamp_(self, min=None, max=None):
        return _inplace(self, lambda s: _F.clamp(s, min, max), "clamp_")

    def masked_fill_(self, mask, value):
        return _inplace(self, lambda s: _F.masked_fill(s, mask, value), "masked_fill_")

    def copy_(self, src):
        src = src if isinstance(src, Tensor) else Tensor(np.asarray(src))
        return _inplace(self, lambda s: _F.to(src, device=self.device, dtype=self.dtype)
                        .expand(*self.shape), "copy_")

    def zero_(self):
        return self.fill_(0)

    def fill_(self, value):
        with autograd.no_grad():
            _check_inplace(self, "fill_")
            self.data[...] = value.data if isinstance(value, Tensor) else value
            self._version.value += 1
        return self

    def uniform_(self, a=0.0, b=1.0, generator=None):
        from .random import _generator_for
        return self._fill_random(_generator_for(generator, self.device).uniform(
            self.data.shape, a, b, self.data.dtype), "uniform_")

    def normal_(self, mean=0.0, std=1.0, generator=None):
        from .random import _generator_for
        return self._fill_random(_generator_for(generator, self.device).normal(
            self.data.shape, mean, std, self.data.dtype), "normal_")

    def bernoulli_(self, p=0.5, generator=None):
        from .random import _generator_for
        u = _generator_for(generator, self.device).uniform(self.data.shape, 0.0, 1.0, np.float64)
        return self._fill_random((u < p).astype(self.data.dtype), "bernoulli_")

    def multinomial(self, num_samples, replacement=False, *, generator=None):
        from .creation import multinomial
        return multinomial(self, num_samples, replacement, generator=generator)

    def _fill_random(self, values, name):
        _check_inplace(self, name)
        self.data[...] = values
        self._version.value += 1
        return self

class Size(tuple):
    """A tensor's shape: a tuple of ints (as ``torch.Size``)."""

    __slots__ = ()

    def __repr__(self):
        return f"gmcore.Size({list(self)})"

    def numel(self):
        n = 1
        for s in self:
            n *= s
        return n


def _is_device_array(x):
    return hasattr(x, "__cuda_array_interface__") and hasattr(x, "device")


def _parse_to_args(args, kwargs):
    from ._dtype import dtype as dtype_cls
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    copy = kwargs.pop("copy", False)
    kwargs.pop("non_blocking", None)
    if kwargs:
        raise TypeError(f"to() got unexpected arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, (str, backend.device)):
            device = a
        elif isinstance(a, (dtype_cls, np.dtype, type)):
            dtype = a
        elif isinstance(a, bool):
            pass  # non_blocking positional: meaningless here
        else:
            raise TypeError(f"to() can't interpret argument {a!r}")
    return device, dtype, copy


def _check_inplace(t, name):
    if autograd.is_grad_enabled() and t._requires_grad and t._grad_fn is None:
        raise RuntimeError(f"{name}: a leaf tensor that requires grad is being used in an "
                           "in-place operation; wrap it in gmcore.no_grad() (parameter updates) "
                           "or use an out-of-place op")


def _ufunc_inplace(t, ufunc_name, other):
    """One-pass ``t op= other`` straight into ``t``'s memory when nothing is being recorded
    (optimizer updates, running statistics); None when the graph path is needed."""
    if autograd._grad_enabled and (t._requires_grad or (
            isinstance(other, Tensor) and other._requires_grad)):
        return None
    data = t.data
    if isinstance(other, Tensor):
        if type(other.data) is not type(data) or (
                type(data) is not np.ndarray and other.device != t.device):
            raise RuntimeError(f"{ufunc_name}: expected all tensors on the same device, but "
                               f"found {t.device} and {other.device}")
        other = other.data
    if not getattr(data.flags, "writeable", True):
        raise RuntimeError(f"{ufunc_name}: can't write in place into a read-only tensor (an "
                           "expanded/broadcast view); clone() it first")
    xp = np if type(data) is np.ndarray else t._xp()
    try:
        getattr(xp, ufunc_name)(data, other, out=data, casting="same_kind")
    except TypeError:  # NumPy's UFuncTypeError: the result can't be cast back into t's dtype
        raise RuntimeError(f"{ufunc_name}: result type of {t.dtype} and "
                           f"{getattr(other, 'dtype', type(other).__name__)} can't be cast to "
                           f"the in-place output's dtype {t.dtype}") from None
    except ValueError:  # the broadcast result is larger than t
        raise RuntimeError(f"{ufunc_name}: the result of shape "
                           f"{np.broadcast_shapes(data.shape, np.shape(other))} can't be "
                           f"written in place into a tensor of shape {tuple(data.shape)}") \
            from None
    t._version.value += 1
    return t


def _inplace(t, compute, name):
    """Run ``compute`` out of place, write the result into ``t``'s memory, and rebase ``t``.

    The op is computed from a graph-connected copy when ``t`` is part of the graph, so values
    that op saves for backward are not the memory being overwritten.
    """
    _check_inplace(t, name)
    recording = autograd.is_grad_enabled()
    src = t
    if recording and t._requires_grad:
        if t._base is not None:
            raise RuntimeError(f"{name}: in-place modification of a view of a tensor that "
                               "requires grad is not supported; use out-of-place ops")
        src = _F.clone(t)
    result = compute(src)
    if result.data.shape != t.data.shape:
        raise RuntimeError(f"{name}: the result of shape {tuple(result.shape)} can't be written "
                           f"in place into a tensor of shape {tuple(t.shape)}")
    if result.data.dtype != t.data.dtype and not np.can_cast(result.data.dtype, t.data.dtype,
                                                             casting="same_kind"):
        raise RuntimeError(f"{name}: result type {result.dtype} can't be cast to the "
                           f"in-place output's dtype {t.dtype}")
    t.data[...] = result.data
    t._version.value += 1
    if recording and result._requires_grad:
        t._grad_fn, t._output_nr, t._requires_grad = result._grad_fn, result._output_nr, True
    return t


autograd._Tensor = Tensor  # the engine's hot path checks isinstance without an import
from . import functional as _F  # noqa: E402  (functional imports Tensor from this module)
_tensor_ops._F = _F
