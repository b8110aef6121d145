"""Launch helpers shared by the Python-DSL kernels (``kernels/triton/*``, ``kernels/numba/*``).

Triton on a GPU takes anything with ``data_ptr()`` and ``dtype``: :func:`tl_arg` wraps a CuPy
array that way (no copy). Triton's CPU interpreter (``TRITON_INTERPRET=1`` set *before*
``triton`` is imported) treats such an argument as a torch tensor: it copies the "device"
storage to a host tensor, runs the program on host copies and copies the results back. The
:class:`InterpretedArray` adapter answers those calls over a NumPy array, so CI runs every
Triton kernel on the CPU without torch or a GPU.

:func:`compile_for_sm90` compiles a kernel for Hopper without a GPU (CI checks that every
kernel lowers to sm_90 code, which the interpreter does not).

Pass Python ints (never NumPy integer scalars) as scalar kernel arguments: Triton specialises
on ``int`` and the interpreter rejects NumPy scalars.

Streams: Triton 3.x launches on ``driver.active.get_current_stream(device)`` (``JITFunction.run``
in ``triton/runtime/jit.py``), which is torch's current stream when torch is imported and the
device's default stream otherwise, never CuPy's. gmcore's CuPy work (and the ``_C`` CUDA kernels,
which take ``cupy.cuda.get_current_stream().ptr``) runs on CuPy's current stream, so a Triton
kernel could race with the CuPy work around it. :func:`use_cupy_stream` points the active
driver's ``get_current_device``/``get_current_stream`` at CuPy's; :func:`tl_arg` installs it the
first time it wraps a CuPy array, so every launch of a gmcore Triton kernel goes through it.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = [
    "interpreting",
    "tl_arg",
    "InterpretedArray",
    "compile_for_sm90",
    "cdiv",
    "use_cupy_stream",
]


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def cdiv(a: int, b: int) -> int:
    """Ceiling division on Python ints (grid sizes)."""
    return -(-int(a) // int(b))


class _Storage:
    """The untyped storage of an :class:`InterpretedArray`: the flat bytes of its base array."""

    def __init__(self, raw: np.ndarray):
        self.raw = raw  # 1-D uint8 view of the whole buffer

    def data_ptr(self) -> int:
        return self.raw.ctypes.data

    def cpu(self) -> "_Storage":
        return _Storage(self.raw.copy())  # the interpreter's "host copy"

    def copy_(self, other: "_Storage") -> None:
        # The interpreter writes every pointer argument back after a launch. A read-only input
        # (a cached table, a broadcast view's copy) cannot have been written by a correct kernel:
        # skip it, but refuse the silent loss if the kernel did write to it.
        if not self.raw.flags.writeable:
            if not np.array_equal(self.raw, other.raw):
                raise ValueError("a Triton kernel wrote to a read-only array argument")
            return
        self.raw[...] = other.raw


class InterpretedArray:
    """A NumPy array dressed as the torch tensor Triton's interpreter expects.

    Only C-contiguous arrays are accepted (the kernels take flat pointers and explicit sizes).
    Writes made by the kernel land in the wrapped array.

    >>> a = InterpretedArray(np.zeros(4, np.float32))
    >>> a.dtype, a.size(), a.stride()
    ('float32', (4,), (1,))
    """

    def __init__(self, array: np.ndarray, _storage: _Storage | None = None, _offset: int = 0):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"InterpretedArray wraps a numpy.ndarray, got {type(array).__name__}")
        if not array.flags.c_contiguous:
            raise ValueError("InterpretedArray: array must be C-contiguous (np.ascontiguousarray)")
        self.array = array
        if _storage is None:
            _storage = _Storage(array.reshape(-1).view(np.uint8))
        self._storage = _storage
        self._offset = _offset

    # -- what Triton reads ------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        return self.array.dtype.name

    def data_ptr(self) -> int:
        return self.array.ctypes.data

    def untyped_storage(self) -> _Storage:
        return self._storage

    def storage_offset(self) -> int:
        return self._offset

    def size(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def stride(self) -> tuple[int, ...]:
        return tuple(s // self.array.itemsize for s in self.array.strides)

    # -- what the interpreter calls to build and refresh host copies --------------------------
    def new_empty(self, *args, **kwargs) -> "InterpretedArray":
        return InterpretedArray(np.empty(0, self.array.dtype))

    def set_(self, storage: _Storage, offset: int, size, stride) -> "InterpretedArray":
        count = int(np.prod(size)) if len(size) else 1
        flat = storage.raw.view(self.array.dtype)[offset:offset + count]
        self.array = flat.reshape(tuple(size))
        self._storage = storage
        self._offset = offset
        return self

    def cpu(self) -> "InterpretedArray":
        return self

    def copy_(self, other: "InterpretedArray") -> "InterpretedArray":
        self.array[...] = other.array
        return self


def tl_arg(array):
    """Make ``array`` (NumPy under the interpreter, CuPy on a GPU) a Triton pointer argument."""
    if isinstance(array, np.ndarray):
        if not interpreting():
            raise RuntimeError(
                "Triton kernels need a CUDA array; NumPy arrays run only in the CPU interpreter "
                "(set TRITON_INTERPRET=1 before triton is imported)"
            )
        return InterpretedArray(array)
    use_cupy_stream()
    return _CupyPointer(array)


class _CupyPointer:
    """``data_ptr()`` and ``dtype`` over a CuPy array: all Triton needs to launch on a GPU."""

    __slots__ = ("array", "dtype")

    def __init__(self, array):
        if not array.flags.c_contiguous:
            raise ValueError("Triton kernels take C-contiguous arrays")
        self.array = array
        self.dtype = array.dtype.name

    def data_ptr(self) -> int:
        return int(self.array.data.ptr)


_hooked_driver = None  # the Triton driver object whose getters already point at CuPy's


def use_cupy_stream(driver=None) -> None:
    """Make Triton launch on CuPy's current device and stream (idempotent, cheap once done).

    ``driver`` defaults to ``triton.runtime.driver.active``. Triton asks
    ``driver.get_current_stream(device)`` for the stream of every launch; replacing that getter
    on the driver object (as Triton's third-party backends do) orders gmcore's kernels with
    CuPy's work. The override stays for the process: every Triton launch then uses CuPy's
    current stream, which is also torch's unless a program switches streams in one of them only.
    """
    global _hooked_driver
    if driver is None:
        from triton.runtime import driver as config  # DriverConfig; .active is made lazily

        driver = config.active
    if driver is _hooked_driver:
        return
    import cupy

    def current_device() -> int:
        return cupy.cuda.runtime.getDevice()

    def current_stream(device) -> int:
        device = int(device)
        if device == cupy.cuda.runtime.getDevice():
            return int(cupy.cuda.get_current_stream().ptr)
        with cupy.cuda.Device(device):  # CuPy keeps one current stream per device
            return int(cupy.cuda.get_current_stream().ptr)

    # Two threads racing here install equivalent getters: no lock needed.
    driver.get_current_device = current_device
    driver.get_current_stream = current_stream
    _hooked_driver = driver


def compile_for_sm90(kernel, signature: dict[str, str], constexprs: dict[str, object] | None = None):
    """Compile a ``@triton.jit`` kernel for sm_90 (H100/H200) on any machine, GPU or not.

    ``signature`` maps every non-constexpr argument to its Triton type (``"*fp32"``, ``"i32"``,
    ``"fp32"``); ``constexprs`` gives the constexpr values. Returns the compiled kernel (its
    ``asm`` holds ``ptx`` and ``cubin``); raises on any lowering error.
    """
    import triton
    from triton.backends.compiler import GPUTarget

    constexprs = dict(constexprs or {})
    sig = dict(signature)
    for name in constexprs:
        sig[name] = "constexpr"
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32))
