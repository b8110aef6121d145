"""A restricted unpickler: NumPy arrays, dicts, lists, bytes and numbers; nothing else.

Unpickling runs code named by the file (any importable callable). CIFAR batches are pickles,
so they go through ``safe_load``, whose ``find_class`` admits only the names that rebuild NumPy
arrays and a few harmless builtins; any other global raises ``ForbiddenGlobal`` naming it
before anything is called.

A pickle can also ask for memory it does not hold ("an array of 2^40 x 3072 bytes", "a bytes
object of 2^40 bytes"): every allocation it can trigger is bounded by the file's own length
before it happens.

* A first pass over the opcodes (``pickletools.genops``, which reads from the buffer and so never
  allocates more than the file holds) checks every length-prefixed argument and memo index:
  CPython's C unpickler allocates a ``BINBYTES8`` object before it reads its data.
* Arrays are rebuilt by ``_reconstruct`` and ``__setstate__`` here, not by NumPy's: the shape
  times the item size must equal the bytes the file supplies; only numeric dtypes are allowed
  (object arrays take a list, so a 2-item list could ask for a 2^40-element array), and a
  dtype's pickled state may set its byte order only (its flags could claim it holds objects).
* The builtins that copy (``bytearray``, ``list``, ``tuple``, ``dict``, ``_codecs.encode``) draw
  on one budget proportional to the file's length, so a pickle can't copy its largest object a
  thousand times through the memo.
"""
import io
import pickle
import pickletools

import numpy as np

from .errors import DataError

__all__ = ["safe_load", "ALLOWED_GLOBALS", "ForbiddenGlobal", "PickleDataError"]

_RECONSTRUCT = (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"))
ALLOWED_GLOBALS = frozenset(_RECONSTRUCT + (
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),                       # protocol <= 2 writes bytes as encode(str, "latin1")
    ("builtins", "bytes"), ("builtins", "bytearray"), ("builtins", "list"), ("builtins", "dict"),
    ("builtins", "tuple"),
    ("__builtin__", "bytes"), ("__builtin__", "list"), ("__builtin__", "dict"),  # Python 2
))

_NUMERIC_KINDS = "biufc"
_MAX_NDIM = 32
_POINTER = 8          # bytes a list/tuple/dict slot costs, for the copy budget


class PickleDataError(DataError, pickle.UnpicklingError):
    """A pickle that is malformed or asks for more than its bytes can hold (a ``ValueError``)."""


class ForbiddenGlobal(PickleDataError):
    """A pickle named a global outside ``ALLOWED_GLOBALS`` (nothing was called)."""


class _NdarrayMarker:
    """Stands for ``numpy.ndarray`` as ``_reconstruct``'s first argument; not callable, so a
    pickle can't call ``ndarray(shape)`` directly."""


class _DtypeSpec:
    """A numeric dtype from ``numpy.dtype(spec, align, copy)`` plus its pickled byte order."""

    def __init__(self, loader, spec, *_flags):
        if isinstance(spec, bytes):                  # Python 2 str under encoding="bytes"
            spec = spec.decode("ascii", "replace")
        if not isinstance(spec, str):
            raise loader.error(f"numpy.dtype() got {type(spec).__name__}, expected a type string")
        try:
            dtype = np.dtype(spec)
        except TypeError:
            raise loader.error(f"numpy.dtype({spec!r}) is not a dtype") from None
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise loader.error(f"dtype {spec!r} is not allowed (only numeric arrays, no objects, "
                               "records or sub-arrays)")
        self.dtype, self._loader = dtype, loader

    def __setstate__(self, state):
        ok = isinstance(state, tuple) and len(state) >= 5 and state[3] is None and state[4] is None
        if not ok:
            raise self._loader.error(f"dtype state {str(state)[:80]} is not that of a numeric dtype")
        order = state[1].decode("ascii", "replace") if isinstance(state[1], bytes) else state[1]
        if order in ("<", ">") and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(order)


class _SafeArray(np.ndarray):
    """An array whose pickled state is checked before NumPy reads it (see ``_finish``)."""

    def __setstate__(self, state):
        loader = self.__dict__.pop("_loader", None)
        if loader is None:
            raise pickle.UnpicklingError("_SafeArray is built only by safe_load")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise loader.error(f"array state must be a 4- or 5-tuple, got {type(state).__name__}")
        shape, spec, fortran, raw = state[-4:]
        shape = loader.check_shape(shape)
        if not isinstance(spec, _DtypeSpec):
            raise loader.error(f"array dtype must come from numpy.dtype, got {type(spec).__name__}")
        if not isinstance(raw, (bytes, bytearray)):
            raise loader.error(f"array data must be bytes, got {type(raw).__name__} (object "
                               "arrays are not allowed)")
        need = _prod(shape) * spec.dtype.itemsize
        if need != len(raw):
            raise loader.error(f"array of shape {shape} and dtype {spec.dtype} needs {need} bytes "
                               f"but the file supplies {len(raw)}")
        loader.spend(need)
        np.ndarray.__setstate__(self, (1, shape, spec.dtype, bool(fortran), raw))


def _prod(shape):
    n = 1
    for s in shape:
        n *= s          # Python ints: no overflow
    return n


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, source):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._source = source
        self._size = len(data)
        self._budget = 4 * len(data) + (1 << 20)

    # ---- checks shared by the guards --------------------------------------------------------
    def error(self, problem):
        return PickleDataError(f"{self._source}: {problem}")

    def spend(self, nbytes):
        self._budget -= nbytes
        if self._budget < 0:
            raise self.error(f"the pickle builds far more data than its {self._size} bytes can "
                             "hold (refused before allocating)")

    def check_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) > _MAX_NDIM or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise self.error(f"array shape must be a tuple of at most {_MAX_NDIM} non-negative "
                             f"ints, got {str(shape)[:80]}")
        if _prod(shape) > self._size:
            raise self.error(f"an array of shape {shape} ({_prod(shape)} elements) can't come "
                             f"from a file of {self._size} bytes")
        return shape

    # ---- the guarded globals ----------------------------------------------------------------
    def _reconstruct(self, subtype, shape, typecode=None):
        if subtype is not _NdarrayMarker:
            raise self.error(f"_reconstruct may only build numpy.ndarray, got {subtype!r}"[:200])
        shape = self.check_shape(shape)
        self.spend(_prod(shape))
        # the placeholder NumPy writes is shape (0,); the real shape and data come in __setstate__
        arr = _SafeArray(shape, dtype=np.uint8)
        arr._loader = self              # read (once) by __setstate__
        return arr

    def _copying(self, make, cost_per_item):
        def guarded(*args):
            for a in args[:1]:        # charged before the copy is made
                if isinstance(a, int) and not isinstance(a, bool):   # bytes(n) allocates n bytes
                    self.spend(a)
                elif hasattr(a, "__len__"):
                    self.spend(len(a) * cost_per_item)
            out = make(*args)
            self.spend(len(out) * cost_per_item)
            return out
        return guarded

    def _encode(self, obj, encoding="utf-8", errors="strict"):
        # only the latin1 round trip that pickle protocol <= 2 uses for bytes; other codecs
        # (hex, base64) grow their input and could be chained
        if not isinstance(obj, str) or str(encoding).lower().replace("-", "") != "latin1":
            raise self.error(f"_codecs.encode is allowed only for str with latin1, got "
                             f"{type(obj).__name__} with {encoding!r}")
        out = obj.encode("latin1", errors)
        self.spend(len(out))
        return out

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise ForbiddenGlobal(
                f"{self._source}: refusing to unpickle the global '{module}.{name}' (only NumPy "
                "arrays, dicts, lists, bytes and numbers are allowed; this file may be malicious)")
        if (module, name) in _RECONSTRUCT:
            return self._reconstruct
        if name == "ndarray":
            return _NdarrayMarker
        if name == "dtype":
            return lambda *args: _DtypeSpec(self, *args)
        if name == "encode":
            return self._encode
        make = {"bytes": bytes, "bytearray": bytearray, "list": list, "dict": dict, "tuple": tuple}
        return self._copying(make[name], 1 if name in ("bytes", "bytearray") else _POINTER)

    def persistent_load(self, pid):
        raise ForbiddenGlobal(f"{self._source}: persistent ids are not allowed")


def _prescan(data, source):
    """Walk the opcodes once: every counted argument fits in the file, memo indices are dense."""
    puts = 0
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if arg > puts:     # the C unpickler sizes its memo table by the largest index
                    raise PickleDataError(f"{source}: memo index {arg} after {puts} entries")
                puts += 1
            elif op.name == "MEMOIZE":
                puts += 1
            elif op.name == "FRAME" and arg > len(data):
                raise PickleDataError(f"{source}: a frame of {arg} bytes in a {len(data)}-byte file")
    except PickleDataError:
        raise
    except (ValueError, UnicodeDecodeError) as e:   # genops: truncated or impossible arguments
        raise PickleDataError(f"{source}: malformed pickle ({e})") from None


def _finish(obj, seen):
    """Swap the checked placeholders for plain ndarrays / dtypes, through nested containers."""
    key = id(obj)
    if key in seen:
        return seen[key]
    if isinstance(obj, _SafeArray):
        out = obj.view(np.ndarray)
    elif isinstance(obj, _DtypeSpec):
        out = obj.dtype
    elif isinstance(obj, list):
        seen[key] = obj                      # lists and dicts are fixed in place (cycles)
        obj[:] = [_finish(v, seen) for v in obj]
        return obj
    elif isinstance(obj, dict):
        seen[key] = obj
        for k, v in list(obj.items()):
            obj[k] = _finish(v, seen)
        return obj
    elif isinstance(obj, tuple):
        out = tuple(_finish(v, seen) for v in obj)
    else:
        return obj
    seen[key] = out
    return out


def safe_load(data, source="<bytes>"):
    """Unpickle ``data`` (bytes) admitting only NumPy arrays and plain containers.

    Python 2 strings come back as ``bytes`` (``encoding="bytes"``), as CIFAR's keys do. Errors
    are ``PickleDataError`` (a ``ValueError`` and a ``pickle.UnpicklingError``) naming ``source``.

    >>> import pickle, numpy as np
    >>> blob = pickle.dumps({"x": np.arange(3, dtype=np.uint8)}, protocol=2)
    >>> safe_load(blob)["x"].tolist()
    [0, 1, 2]
    >>> safe_load(pickle.dumps(print))
    Traceback (most recent call last):
    ...
    gmcore.data._unpickle.ForbiddenGlobal: <bytes>: refusing to unpickle the global 'builtins.print' ...
    """
    data = bytes(data)
    _prescan(data, source)
    loader = _RestrictedUnpickler(data, source)
    try:
        return _finish(loader.load(), {})
    except PickleDataError:
        raise
    except RecursionError:
        raise PickleDataError(f"{source}: the pickle nests containers too deeply") from None
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            pickle.PickleError, UnicodeDecodeError, OverflowError) as e:
        raise PickleDataError(f"{source}: malformed pickle ({type(e).__name__}: {e})") from None
