"""The ``cuda`` implementation of the tap convolution (``csrc/masked_conv.cu`` via ``gmcore._C``).

CuPy arrays in, new CuPy arrays out, launched on CuPy's current stream; the same three
functions as every implementation of the contract (:mod:`gmcore.functional._tap_conv_reference`).
The scratch buffers the kernels need (the packed weight, the weight gradient's per-chunk partial
sums) come from CuPy's memory pool.

The host-side argument checks live here too (:func:`check_forward`, :func:`check_input_grad`,
:func:`check_weight_grad`): the Triton launchers (``kernels/triton/masked_conv.py``) use the same
ones. They need only ``shape``/``dtype``, so they run (and are tested) without a GPU.
"""
from __future__ import annotations

import numpy as np

__all__ = ["tap_conv2d_forward", "tap_conv2d_input_grad", "tap_conv2d_weight_grad",
           "check_forward", "check_input_grad", "check_weight_grad", "weight_grad_splits"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---- host-side checks (no GPU needed) --------------------------------------------------------

def _ints(fn, name, value, n):
    try:
        vals = tuple(value)
    except TypeError:
        vals = ()
    if len(vals) != n or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
        raise ValueError(f"{fn}: {name} must be {n} ints, got {value!r}")
    return tuple(int(v) for v in vals)


def _geom(fn, geom):
    try:
        stride, pad, dil = geom
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: geom must be ((sh, sw), (pad_top, pad_left), (dh, dw)), got {geom!r}") from None
    sh, sw = _ints(fn, "stride", stride, 2)
    pt, pl = _ints(fn, "padding", pad, 2)
    dh, dw = _ints(fn, "dilation", dil, 2)
    if min(sh, sw, dh, dw) < 1:
        raise ValueError(f"{fn}: stride and dilation must be >= 1, got stride {(sh, sw)}, dilation {(dh, dw)}")
    if min(pt, pl) < 0:
        raise ValueError(f"{fn}: padding must be >= 0, got {(pt, pl)}")
    return sh, sw, pt, pl, dh, dw


def _arrays(fn, named):
    dt = np.dtype(named[0][1].dtype)
    for name, a, ndim in named:
        if np.dtype(a.dtype) not in _FLOATS:
            raise ValueError(f"{fn}: {name} must be float32 or float64, got {a.dtype}")
        if np.dtype(a.dtype) != dt:
            raise ValueError(f"{fn}: {name} is {a.dtype} but {named[0][0]} is {dt}: one dtype for all arrays")
        if a.ndim != ndim:
            raise ValueError(f"{fn}: {name} must be {ndim}-D, got shape {tuple(a.shape)}")
    return dt


def _taps(fn, taps, kh, kw):
    """Shape and dtype of ``taps``; values too when it is a host (NumPy) array -- a device array is
    not copied back to check (the kernels ignore taps outside the kernel rather than misread)."""
    if getattr(taps, "ndim", None) != 2 or taps.shape[1] != 2 or taps.shape[0] < 1:
        raise ValueError(f"{fn}: taps must be an int64 array of shape (T >= 1, 2), got shape "
                         f"{tuple(getattr(taps, 'shape', ()))}")
    if np.dtype(taps.dtype).kind not in "iu":
        raise ValueError(f"{fn}: taps must be an integer (int64) array, got {taps.dtype}")
    if isinstance(taps, np.ndarray):
        ky, kx = taps[:, 0], taps[:, 1]
        bad = (ky < 0) | (ky >= kh) | (kx < 0) | (kx >= kw)
        if bad.any():
            raise ValueError(f"{fn}: tap {tuple(int(v) for v in taps[np.argmax(bad)])} is outside the "
                             f"{kh}x{kw} kernel")
        if len(np.unique(ky * kw + kx)) != len(ky):
            raise ValueError(f"{fn}: taps must be unique")
    return int(taps.shape[0])


def check_forward(x, w, bias, taps, geom, out_hw, fn="tap_conv2d_forward"):
    """Validate forward arguments; returns ``(dims, geom)`` as flat int tuples:
    ``(N, C, H, W, O, KH, KW, Ho, Wo, T)`` and ``(sh, sw, pad_top, pad_left, dh, dw)``.

    >>> import numpy as np
    >>> check_forward(np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3)), None, np.array([[0, 0]]),
    ...               ((1, 1), (1, 1), (1, 1)), (5, 5))
    ((1, 2, 5, 5, 3, 3, 3, 5, 5, 1), (1, 1, 1, 1, 1, 1))
    """
    named = [("x", x, 4), ("w", w, 4)] + ([("bias", bias, 1)] if bias is not None else [])
    _arrays(fn, named)
    n, c, h, wd = (int(v) for v in x.shape)
    o, cw, kh, kw = (int(v) for v in w.shape)
    if cw != c:
        raise ValueError(f"{fn}: w {tuple(w.shape)} expects {cw} input channels, x {tuple(x.shape)} has {c}")
    if bias is not None and int(bias.shape[0]) != o:
        raise ValueError(f"{fn}: bias has {bias.shape[0]} entries, w has {o} output channels")
    ho, wo = _ints(fn, "out_hw", out_hw, 2)
    if min(ho, wo) < 0:
        raise ValueError(f"{fn}: out_hw must be >= 0, got {(ho, wo)}")
    t = _taps(fn, taps, kh, kw)
    return (n, c, h, wd, o, kh, kw, ho, wo, t), _geom(fn, geom)


def check_input_grad(gy, w, taps, geom, in_hw, fn="tap_conv2d_input_grad"):
    """Validate input_grad arguments; returns ``(dims, geom)`` as :func:`check_forward`."""
    _arrays(fn, [("gy", gy, 4), ("w", w, 4)])
    n, o, ho, wo = (int(v) for v in gy.shape)
    ow, c, kh, kw = (int(v) for v in w.shape)
    if ow != o:
        raise ValueError(f"{fn}: w {tuple(w.shape)} has {ow} output channels, gy {tuple(gy.shape)} has {o}")
    h, wd = _ints(fn, "in_hw", in_hw, 2)
    if min(h, wd) < 0:
        raise ValueError(f"{fn}: in_hw must be >= 0, got {(h, wd)}")
    t = _taps(fn, taps, kh, kw)
    return (n, c, h, wd, o, kh, kw, ho, wo, t), _geom(fn, geom)


def check_weight_grad(x, gy, taps, geom, kernel_hw, fn="tap_conv2d_weight_grad"):
    """Validate weight_grad arguments; returns ``(dims, geom)`` as :func:`check_forward`."""
    _arrays(fn, [("x", x, 4), ("gy", gy, 4)])
    n, c, h, wd = (int(v) for v in x.shape)
    ng, o, ho, wo = (int(v) for v in gy.shape)
    if ng != n:
        raise ValueError(f"{fn}: x {tuple(x.shape)} and gy {tuple(gy.shape)} differ in batch size")
    kh, kw = _ints(fn, "kernel_hw", kernel_hw, 2)
    if min(kh, kw) < 1:
        raise ValueError(f"{fn}: kernel_hw must be >= 1, got {(kh, kw)}")
    t = _taps(fn, taps, kh, kw)
    return (n, c, h, wd, o, kh, kw, ho, wo, t), _geom(fn, geom)


def weight_grad_splits(m, tiles, block_m, target_programs=4 * 132):
    """How many chunks the N*Ho*Wo sum of the weight gradient is cut into: enough blocks in all
    (``tiles`` = taps x O-blocks x C-blocks per chunk) to fill an H100/H200 (132 SMs) a few times
    over, each chunk at least 4 ``block_m`` steps long (short chunks cost more to add up).

    >>> weight_grad_splits(10_000, 528, 64), weight_grad_splits(100_000, 4, 64)
    (1, 132)
    """
    steps = -(-int(m) // int(block_m))
    want = -(-int(target_programs) // max(1, int(tiles)))
    return max(1, min(want, steps // 4, 65535))


# ---- the cuda implementation ----------------------------------------------------------------------

def _runtime(fn, *arrays):
    """(cupy, gmcore._C) once the arrays are known to be CuPy arrays and _C has the kernels."""
    if any(isinstance(a, np.ndarray) for a in arrays):
        raise TypeError(f"{fn}: the cuda implementation takes CuPy arrays, got a NumPy array "
                        "(use the cpu implementations for host data)")
    from gmcore import dispatch

    cp = dispatch.require_cupy()
    _C = dispatch.require_C(cuda=True)
    if not hasattr(_C, "masked_conv_forward_cuda"):
        raise RuntimeError("gmcore._C was built without the masked_conv CUDA kernels (rebuild gmcore)")
    return cp, _C


_TAPS_CACHE: dict = {}


def _device_taps(cp, taps):
    """taps as a C-contiguous int64 device array; host tap lists (one per layer, reused every
    step) are uploaded once per device and cached."""
    if not isinstance(taps, np.ndarray):
        return cp.ascontiguousarray(taps, dtype=cp.int64)
    key = (cp.cuda.Device().id, taps.shape, np.ascontiguousarray(taps, dtype=np.int64).tobytes())
    dev = _TAPS_CACHE.get(key)
    if dev is None:
        if len(_TAPS_CACHE) > 256:  # bounded: a long-running process with many shapes
            _TAPS_CACHE.clear()
        dev = _TAPS_CACHE[key] = cp.asarray(np.ascontiguousarray(taps, dtype=np.int64))
    return dev


def _ptr(a):
    return int(a.data.ptr)


def tap_conv2d_forward(x, w, bias, taps, geom, out_hw):
    """y (N, O, Ho, Wo) = bias + the tap convolution of x by w (CuPy arrays)."""
    fn = "masked_conv cuda tap_conv2d_forward"
    dims, g = check_forward(x, w, bias, taps, geom, out_hw, fn=fn)
    cp, _C = _runtime(fn, x, w, bias)
    n, c, h, wd, o, kh, kw, ho, wo, t = dims
    with x.device:
        y = cp.empty((n, o, ho, wo), dtype=x.dtype)
        if n * ho * wo == 0 or o == 0:
            return y
        x = cp.ascontiguousarray(x)
        w = cp.ascontiguousarray(w)
        b = None if bias is None else cp.ascontiguousarray(bias)
        wpack = cp.empty(max(1, t * c * o), dtype=x.dtype)
        _C.masked_conv_forward_cuda(_ptr(x), _ptr(w), 0 if b is None else _ptr(b), _ptr(_device_taps(cp, taps)),
                                    _ptr(wpack), _ptr(y), *dims, *g, x.dtype.name,
                                    cp.cuda.get_current_stream().ptr)
    return y


def tap_conv2d_input_grad(gy, w, taps, geom, in_hw):
    """gx (N, C, H, W): the adjoint in x of the tap convolution, applied to gy (CuPy arrays)."""
    fn = "masked_conv cuda tap_conv2d_input_grad"
    dims, g = check_input_grad(gy, w, taps, geom, in_hw, fn=fn)
    cp, _C = _runtime(fn, gy, w)
    n, c, h, wd, o, kh, kw, ho, wo, t = dims
    with gy.device:
        gx = cp.empty((n, c, h, wd), dtype=gy.dtype)
        if n * h * wd == 0 or c == 0:
            return gx
        gy = cp.ascontiguousarray(gy)
        w = cp.ascontiguousarray(w)
        wpack = cp.empty(max(1, t * o * c), dtype=gy.dtype)
        _C.masked_conv_input_grad_cuda(_ptr(gy), _ptr(w), _ptr(_device_taps(cp, taps)), _ptr(wpack), _ptr(gx),
                                       *dims, *g, gy.dtype.name, cp.cuda.get_current_stream().ptr)
    return gx


# the CUDA kernels' tile sizes (csrc/masked_conv.cu: BM = BN = 64, BK = 16)
_TILE, _KSTEP = 64, 16


def tap_conv2d_weight_grad(x, gy, taps, geom, kernel_hw, splits=None):
    """gw (O, C, KH, KW): the adjoint in w of the tap convolution, 0 at inactive taps (CuPy arrays).

    Deterministic: the N*Ho*Wo sum runs in ``splits`` chunks (default :func:`weight_grad_splits`)
    whose partials are added in a fixed order.
    """
    fn = "masked_conv cuda tap_conv2d_weight_grad"
    dims, g = check_weight_grad(x, gy, taps, geom, kernel_hw, fn=fn)
    cp, _C = _runtime(fn, x, gy)
    n, c, h, wd, o, kh, kw, ho, wo, t = dims
    with x.device:
        gw = cp.empty((o, c, kh, kw), dtype=x.dtype)
        m = n * ho * wo
        if splits is None:
            tiles = t * (-(-o // _TILE)) * (-(-c // _TILE))
            splits = weight_grad_splits(m, tiles, _KSTEP * 4)
        splits = max(1, min(int(splits), 65535))
        x = cp.ascontiguousarray(x)
        gy = cp.ascontiguousarray(gy)
        partial = cp.empty(max(1, splits * t * o * c), dtype=x.dtype)
        _C.masked_conv_weight_grad_cuda(_ptr(x), _ptr(gy), _ptr(_device_taps(cp, taps)), _ptr(partial), splits,
                                        _ptr(gw), *dims, *g, x.dtype.name, cp.cuda.get_current_stream().ptr)
    return gw
