"""Tensor factories: ``tensor``, ``zeros``, ``randn`` ... (PyTorch's names and defaults)."""
import numpy as np

from . import backend
from ._dtype import as_dtype, get_default_dtype
from .random import _generator_for
from .tensor import Tensor, _shape_arg


def _np_dtype(dtype, default=None):
    if dtype is None:
        return (default or get_default_dtype()).np
    return as_dtype(dtype).np


def _to_array(data, dtype, device, copy=True):
    """Turn user data into an array on ``device`` with PyTorch's dtype inference."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.generic):  # a NumPy scalar keeps its dtype (torch.tensor(np.float64(1)))
        data = np.asarray(data)
    if isinstance(data, np.ndarray) or backend._is_cupy_array(data):
        arr = data
        if dtype is not None:
            arr = arr.astype(as_dtype(dtype).np, copy=copy)
        elif copy:
            arr = arr.copy()
    else:
        if isinstance(data, (list, tuple)) and any(isinstance(x, Tensor) for x in _flat(data)):
            data = _nested_tolist(data)
        try:
            arr = np.asarray(data)
        except ValueError as e:
            raise ValueError(f"can't build a tensor from this data: {e}") from None
        if dtype is not None:
            arr = arr.astype(as_dtype(dtype).np, copy=False)
        elif arr.dtype.kind == "f":
            arr = arr.astype(get_default_dtype().np, copy=False)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64, copy=False)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"can't build a tensor from data of dtype {arr.dtype} "
                        "(expected numbers or booleans)")
    as_dtype(arr.dtype)  # unsupported widths (e.g. uint16) raise a clear error here
    if device is not None:
        arr = backend.to_device(arr, device)
    return arr


def _flat(x):
    for item in x:
        if isinstance(item, (list, tuple)):
            yield from _flat(item)
        else:
            yield item


def _nested_tolist(x):
    if isinstance(x, Tensor):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [_nested_tolist(i) for i in x]
    return x


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of ``data`` (nested lists, scalars, arrays or tensors).

    Python floats become ``gmcore.float32`` (the default dtype), ints ``int64``, bools ``bool``;
    NumPy arrays keep their dtype.

    >>> import gmcore as gm
    >>> gm.tensor([[1, 2], [3, 4]]).dtype
    gmcore.int64
    >>> gm.tensor([0.5, 1.5], requires_grad=True)
    tensor([0.5, 1.5], requires_grad=True)
    """
    return Tensor(_to_array(data, dtype, device), requires_grad=requires_grad)


def as_tensor(data, dtype=None, device=None):
    """Like ``tensor`` but shares memory with an array when dtype and device already match."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    return Tensor(_to_array(data, dtype, device, copy=False))


def from_numpy(array):
    """A cpu tensor sharing memory with a NumPy array (no copy)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    as_dtype(array.dtype)
    return Tensor(array)


def from_dlpack(obj):
    """Zero-copy import of any DLPack producer (NumPy, CuPy, torch, JAX arrays).

    >>> import numpy as np, gmcore as gm
    >>> a = np.arange(3.0)
    >>> t = gm.from_dlpack(a); t.data[0] = 7.0; a[0]
    np.float64(7.0)
    """
    if isinstance(obj, Tensor):
        return obj
    dev_type, _ = obj.__dlpack_device__() if hasattr(obj, "__dlpack_device__") else (1, 0)
    if int(dev_type) in (1, 3):  # kDLCPU, kDLCUDAHost
        arr = np.from_dlpack(obj)
    elif int(dev_type) in (2, 13):  # kDLCUDA, kDLCUDAManaged
        cp = backend.cupy_or_none()
        if cp is None:
            raise RuntimeError("from_dlpack: the object lives on a CUDA device but CuPy with a "
                               "visible GPU is not available")
        arr = cp.from_dlpack(obj)
    else:
        raise RuntimeError(f"from_dlpack: unsupported DLPack device type {dev_type}")
    as_dtype(arr.dtype)
    return Tensor(arr)


def _factory(fill, size, dtype, device, requires_grad, default=None):
    shape = _shape_arg(size)
    npd = _np_dtype(dtype, default)
    xp = backend.xp_for(device) if device is not None else np
    with backend.device_context(device):
        arr = fill(xp, shape, npd)
    return Tensor(arr, requires_grad=requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    """A tensor of zeros: ``gm.zeros(2, 3)`` or ``gm.zeros((2, 3))``."""
    return _factory(lambda xp, s, d: xp.zeros(s, d), size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    """A tensor of ones."""
    return _factory(lambda xp, s, d: xp.ones(s, d), size, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    """An uninitialised tensor (its values are whatever the memory held)."""
    return _factory(lambda xp, s, d: xp.empty(s, d), size, dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor filled with ``fill_value``; dtype inferred from the value when not given."""
    if dtype is None:
        dtype = as_dtype("bool") if isinstance(fill_value, (bool, np.bool_)) else \
            as_dtype("int64") if isinstance(fill_value, (int, np.integer)) else None
    return _factory(lambda xp, s, d: xp.full(s, fill_value, d), (size,) if isinstance(
        size, int) else size, dtype, device, requires_grad)


def _like(t, dtype, device):
    return (dtype if dtype is not None else t.dtype), (device if device is not None else t.device)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(t, dtype, device)
    return zeros(tuple(t.shape), dtype=dtype, device=device, requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(t, dtype, device)
    return ones(tuple(t.shape), dtype=dtype, device=device, requires_grad=requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(t, dtype, device)
    return empty(tuple(t.shape), dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(t, dtype, device)
    return full(tuple(t.shape), fill_value, dtype=dtype, device=device,
                requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """Values from ``start`` up to (not including) ``end``; int64 when all arguments are ints."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                   for v in (start, end, step))
        dtype = as_dtype("int64") if ints else get_default_dtype()
    npd = as_dtype(dtype).np
    xp = backend.xp_for(device) if device is not None else np
    with backend.device_context(device):
        # computed in float64/int64 then cast, so float32 endpoints don't drift
        arr = xp.arange(start, end, step, dtype=np.float64 if npd.kind == "f" else np.int64)
    return Tensor(arr.astype(npd, copy=False), requires_grad=requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    if steps < 0:
        raise ValueError(f"linspace: number of steps must be non-negative, got {steps}")
    xp = backend.xp_for(device) if device is not None else np
    with backend.device_context(device):
        arr = xp.linspace(start, end, steps, dtype=np.float64)
    return Tensor(arr.astype(_np_dtype(dtype), copy=False), requires_grad=requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """The identity matrix (``n`` x ``m``)."""
    xp = backend.xp_for(device) if device is not None else np
    with backend.device_context(device):
        arr = xp.eye(n, m, dtype=_np_dtype(dtype))
    return Tensor(arr, requires_grad=requires_grad)


def _random(draw, size, dtype, device, requires_grad, generator):
    shape = _shape_arg(size)
    npd = _np_dtype(dtype)
    if npd.kind != "f":
        raise TypeError(f"random floats need a floating dtype, got {as_dtype(npd)}")
    dev = backend.as_device(device if device is not None else
                            (generator.device if generator is not None else None))
    g = _generator_for(generator, dev)
    with backend.device_context(dev):
        arr = draw(g, shape, npd)
    return Tensor(arr, requires_grad=requires_grad)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False):
    """Uniform samples on [0, 1)."""
    return _random(lambda g, s, d: g.uniform(s, 0.0, 1.0, d), size, dtype, device,
                   requires_grad, generator)


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False):
    """Standard normal samples."""
    return _random(lambda g, s, d: g.normal(s, 0.0, 1.0, d), size, dtype, device,
                   requires_grad, generator)


def randint(low, high=None, size=None, generator=None, dtype=None, device=None):
    """Integers drawn uniformly from [low, high): ``randint(10, (3,))`` or ``randint(2, 10, (3,))``."""
    if size is None:
        if high is None or not isinstance(high, (tuple, list)):
            raise TypeError("randint needs a size, e.g. randint(10, (3,))")
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    npd = _np_dtype(dtype, as_dtype("int64"))
    dev = backend.as_device(device if device is not None else
                            (generator.device if generator is not None else None))
    g = _generator_for(generator, dev)
    with backend.device_context(dev):
        arr = g.integers(low, high, tuple(size), npd)
    return Tensor(arr)


def randperm(n, generator=None, dtype=None, device=None):
    """A random permutation of 0 .. n-1 (int64)."""
    dev = backend.as_device(device)
    g = _generator_for(generator, dev)
    with backend.device_context(dev):
        arr = g.permutation(n).astype(_np_dtype(dtype, as_dtype("int64")), copy=False)
    return Tensor(arr)


def rand_like(t, generator=None, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(t, dtype, device)
    return rand(tuple(t.shape), generator=generator, dtype=dtype, device=device,
                requires_grad=requires_grad)


def randn_like(t, generator=None, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(t, dtype, device)
    return randn(tuple(t.shape), generator=generator, dtype=dtype, device=device,
                 requires_grad=requires_grad)


def normal(mean, std, size, generator=None, dtype=None, device=None, requires_grad=False):
    """Normal samples with scalar ``mean`` and ``std``."""
    return _random(lambda g, s, d: g.normal(s, float(mean), float(std), d), size, dtype,
                   device, requires_grad, generator)


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """Draw ``num_samples`` category indices per row of non-negative weights (int64).

    ``input`` is 1-d (categories) or 2-d (rows x categories); weights need not sum to one.
    Without replacement the draws of a row are distinct, in the order a sequential draw
    (renormalising after each pick) would make them: taken here as the smallest keys
    ``Exponential(1) / weight`` (Efraimidis and Spirakis 2006), equivalent and vectorised.
    With replacement each draw inverts the row's cumulative weights.

    >>> import gmcore as gm
    >>> g = gm.Generator().manual_seed(0)
    >>> gm.multinomial(gm.tensor([0.0, 1.0, 0.0]), 2, replacement=True, generator=g).tolist()
    [1, 1]
    >>> sorted(gm.multinomial(gm.tensor([1.0, 2.0, 3.0]), 3, generator=g).tolist())
    [0, 1, 2]
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial(): input must be a Tensor, not {type(input).__name__}")
    if input.data.dtype.kind != "f":
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got "
                           f"{input.dtype}")
    if input.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got shape "
                           f"{tuple(input.shape)}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise TypeError(f"multinomial: num_samples must be an int, got "
                        f"{type(num_samples).__name__}")
    n, k = int(num_samples), input.shape[-1]
    if n <= 0:
        raise RuntimeError(f"multinomial: cannot sample n_sample <= 0 samples (got {n})")
    if k == 0:
        raise RuntimeError("multinomial: number of categories cannot be zero")
    if not replacement and n > k:
        raise RuntimeError(f"multinomial: cannot sample n_sample ({n}) > prob_dist.size(-1) "
                           f"({k}) samples without replacement")
    xp = input._xp()
    w = input.data.reshape(-1, k).astype(np.float64)
    if not bool(xp.isfinite(w).all()) or bool((w < 0).any()):
        raise RuntimeError("multinomial: probability tensor contains either inf, nan or "
                           "element < 0")
    positive = (w > 0).sum(axis=1)
    if bool((positive == 0).any()):
        raise RuntimeError("multinomial: invalid distribution: a row of weights sums to 0")
    if not replacement and bool((positive < n).any()):
        raise RuntimeError(f"multinomial: a row has fewer than num_samples ({n}) categories "
                           "of non-zero weight to sample without replacement")
    g = _generator_for(generator, input.device)
    u = g.uniform((w.shape[0], n if replacement else k), 0.0, 1.0, np.float64)
    with backend.device_context(input.device):
        if replacement:
            out = xp.stack([_invert_cdf(xp, row, ur) for row, ur in zip(w, u)])
        else:
            with np.errstate(divide="ignore"):
                keys = -xp.log1p(-u) / w  # Exponential(1) / weight; zero weight -> inf
            out = xp.argsort(keys, axis=1, kind="stable")[:, :n]
    out = out.astype(np.int64, copy=False)
    return Tensor(out.reshape(n) if input.ndim == 1 else out)


def _invert_cdf(xp, w, u):
    """Category ``i`` with ``cdf[i-1] <= u * total < cdf[i]``: never one of zero weight."""
    cdf = xp.cumsum(w)
    idx = xp.searchsorted(cdf, u * cdf[-1], side="right")
    last = w.shape[0] - 1 - int(xp.argmax(w[::-1] > 0))  # if rounding gives u * total == total
    return xp.minimum(idx, last)


__all__ = ["tensor", "as_tensor", "from_numpy", "from_dlpack", "zeros", "ones", "empty", "full",
           "zeros_like", "ones_like", "empty_like", "full_like", "arange", "linspace", "eye",
           "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "normal",
           "multinomial"]
