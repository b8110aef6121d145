"""A restricted unpickler: NumPy arrays, dicts, lists, bytes and numbers; nothing else.

Unpickling runs code named by the file (any importable callable). CIFAR batches are pickles,
so they go through ``safe_load``, whose ``find_class`` admits only the names that rebuild NumPy
arrays and a few harmless builtins; any other global raises ``UnpicklingError`` naming it
before anything is called.
"""
import io
import pickle

import numpy as np

__all__ = ["safe_load", "ALLOWED_GLOBALS", "ForbiddenGlobal"]


def _reconstruct_func():
    # ndarray.__reduce__ names numpy's array-rebuilding function; read it from NumPy itself so
    # numpy 1.x (numpy.core) and 2.x (numpy._core) both resolve without touching deprecated shims
    return np.ndarray((0,)).__reduce__()[0]


ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_func,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_func,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    # protocol <= 2 writes bytes as _codecs.encode(str, "latin1")
    ("_codecs", "encode"): lambda: __import__("_codecs").encode,
    ("builtins", "bytes"): lambda: bytes,
    ("builtins", "bytearray"): lambda: bytearray,
    ("builtins", "list"): lambda: list,
    ("builtins", "dict"): lambda: dict,
    ("builtins", "tuple"): lambda: tuple,
    ("__builtin__", "bytes"): lambda: bytes,       # Python 2 spellings
    ("__builtin__", "list"): lambda: list,
    ("__builtin__", "dict"): lambda: dict,
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle named a global outside ``ALLOWED_GLOBALS`` (nothing was called)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module, name):
        make = ALLOWED_GLOBALS.get((module, name))
        if make is None:
            raise ForbiddenGlobal(
                f"{self._source}: refusing to unpickle the global '{module}.{name}' (only NumPy "
                "arrays, dicts, lists, bytes and numbers are allowed; this file may be malicious)")
        return make()

    def persistent_load(self, pid):
        raise ForbiddenGlobal(f"{self._source}: persistent ids are not allowed")


def safe_load(data, source="<bytes>"):
    """Unpickle ``data`` (bytes) admitting only NumPy arrays and plain containers.

    Python 2 strings come back as ``bytes`` (``encoding="bytes"``), as CIFAR's keys do.

    >>> import pickle, numpy as np
    >>> blob = pickle.dumps({"x": np.arange(3, dtype=np.uint8)}, protocol=2)
    >>> safe_load(blob)["x"].tolist()
    [0, 1, 2]
    >>> safe_load(pickle.dumps(print))
    Traceback (most recent call last):
    ...
    gmcore.data._unpickle.ForbiddenGlobal: <bytes>: refusing to unpickle the global 'builtins.print' ...
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except ForbiddenGlobal:
        raise
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            pickle.PickleError, UnicodeDecodeError) as e:
        raise pickle.UnpicklingError(f"{source}: malformed pickle ({type(e).__name__}: {e})") from None
