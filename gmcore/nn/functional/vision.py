"""Resampling: ``interpolate`` (nearest, nearest-exact, linear/bilinear/trilinear),
``pixel_shuffle``, ``pixel_unshuffle``.

``interpolate`` resizes one spatial axis at a time with PyTorch's source-index formulas. Each
axis is a gather of source slices (``take_along``) and, for linear modes, a blend of two
gathers with constant weights; the gradient is the transposed map (a scatter-add), itself
differentiable. The pixel (un)shuffles are reshape/permute compositions.
"""
import math

import numpy as np

from ...tensor import Tensor
from ._index import take_along
from ._util import check_tensor

__all__ = ["interpolate", "upsample", "pixel_shuffle", "pixel_unshuffle"]

_LINEAR = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _scale(in_size, out_size, align_corners, scale_factor):
    """PyTorch's ``area_pixel_compute_scale``."""
    if align_corners:
        return (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    if scale_factor is not None and scale_factor > 0:
        return 1.0 / scale_factor
    return in_size / out_size


def _nearest_index(in_size, out_size, scale_factor, exact):
    # PyTorch computes these in float32: floor(dst * scale) (nearest) or
    # floor((dst + 0.5) * scale) (nearest-exact), clipped to the last source index
    scale = np.float32(1.0 / scale_factor if scale_factor else in_size / out_size)
    dst = np.arange(out_size, dtype=np.float32) + np.float32(0.5 if exact else 0.0)
    return np.minimum(np.floor(dst * scale).astype(np.int64), in_size - 1)


def _linear_weights(in_size, out_size, align_corners, scale_factor):
    """(i0, i1, lambda1): src = i0 + lambda1 between neighbours i0 and i1 (PyTorch's formula)."""
    scale = _scale(in_size, out_size, align_corners, scale_factor)
    dst = np.arange(out_size, dtype=np.float64)
    src = dst * scale if align_corners else np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0


def _resize_axis(x, axis, in_size, out_size, mode, align_corners, scale_factor):
    xp = x._xp()
    if mode in ("nearest", "nearest-exact"):
        idx = _nearest_index(in_size, out_size, scale_factor, mode == "nearest-exact")
        return take_along(x, xp.asarray(idx), axis)
    i0, i1, lam = _linear_weights(in_size, out_size, align_corners, scale_factor)
    if in_size * out_size <= _DENSE_LIMIT:
        return _apply_matrix(x, _linear_matrix(i0, i1, lam, in_size, x), axis)
    shape = (out_size,) + (1,) * (x.ndim - 1 - axis)
    l1 = Tensor(xp.asarray(lam.reshape(shape), dtype=x.data.dtype))
    l0 = Tensor(xp.asarray((1.0 - lam).reshape(shape), dtype=x.data.dtype))
    return take_along(x, xp.asarray(i0), axis) * l0 + take_along(x, xp.asarray(i1), axis) * l1


# Up to this many entries (4 MB in float32) an axis is resized by a dense (out, in) matrix:
# two nonzeros a row, but one BLAS product beats two gathers and a blend by ~10x, and its
# backward is the transposed product (so any-order gradients come free).
_DENSE_LIMIT = 1 << 20


def _linear_matrix(i0, i1, lam, in_size, like):
    """The (out, in) linear-interpolation matrix: row r holds 1 - lam at i0 and lam at i1."""
    rows = np.arange(len(i0))
    m = np.zeros((len(i0), in_size))
    np.add.at(m, (rows, i0), 1.0 - lam)  # add.at: i0 == i1 at the border sums to 1
    np.add.at(m, (rows, i1), lam)
    return Tensor(like._xp().asarray(m, dtype=like.data.dtype))


def _apply_matrix(x, m, axis):
    """``m`` (out, in) applied along ``axis`` of ``x``, as reshapes around one matmul."""
    shape = tuple(x.shape)
    out = m.shape[0]
    if axis == x.ndim - 1:
        return (x.reshape(-1, shape[-1]) @ m.mT).reshape(shape[:-1] + (out,))
    lead, rest = shape[:axis], shape[axis + 1:]
    y = m @ x.reshape(int(np.prod(lead, dtype=np.int64)), shape[axis], -1)
    return y.reshape(lead + (out,) + rest)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of (N, C, *spatial) input, as ``torch.nn.functional.interpolate``.

    Give ``size`` or ``scale_factor`` (output size ``floor(in * scale_factor)``). Modes:
    ``'nearest'`` (source ``floor(dst * in / out)``), ``'nearest-exact'``, and ``'linear'``
    (3-D input), ``'bilinear'`` (4-D), ``'trilinear'`` (5-D) with ``align_corners`` True or
    False (default False). With ``scale_factor`` and no ``recompute_scale_factor`` the index
    formulas use ``1 / scale_factor``, as PyTorch.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.interpolate(gm.tensor([[[1., 2.]]]), scale_factor=2).tolist()
    [[[1.0, 1.0, 2.0, 2.0]]]
    >>> F.interpolate(gm.tensor([[[1., 2.]]]), size=4, mode="linear").tolist()
    [[[1.0, 1.25, 1.75, 2.0]]]
    """
    op = "interpolate"
    check_tensor(input, "input", op)
    nd = input.ndim - 2
    if nd < 1:
        raise ValueError(f"{op}: expected an input of shape (N, C, *spatial) with 1 to 3 spatial "
                         f"dims, got shape {tuple(input.shape)}")
    if mode in ("nearest", "nearest-exact"):
        if align_corners is not None:
            raise ValueError(f"{op}: align_corners option can only be set with the "
                             "interpolating modes: linear | bilinear | bicubic | trilinear")
    elif mode in _LINEAR:
        if _LINEAR[mode] != nd:
            raise NotImplementedError(f"{op}: mode {mode!r} expects a {_LINEAR[mode] + 2}D input, "
                                      f"got a {input.ndim}D input of shape "
                                      f"{tuple(input.shape)}")
        if not input.is_floating_point():
            raise RuntimeError(f"{op}: mode {mode!r} needs a floating point input, got "
                               f"{input.dtype}")
    else:
        raise NotImplementedError(f"{op}: mode {mode!r} is not supported (expected 'nearest', "
                                  "'nearest-exact', 'linear', 'bilinear' or 'trilinear')")
    if antialias:
        raise NotImplementedError(f"{op}: antialias=True is not supported")
    spatial = tuple(input.shape[2:])
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: exactly one of size or scale_factor must be given")
    if size is not None:
        out = tuple(size) if isinstance(size, (tuple, list)) else (size,) * nd
        if len(out) != nd:
            raise ValueError(f"{op}: size {size!r} must have {nd} entries for an input of shape "
                             f"{tuple(input.shape)}")
        out = tuple(int(o) for o in out)
        scales = (None,) * nd
    else:
        scales = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else \
            (scale_factor,) * nd
        if len(scales) != nd:
            raise ValueError(f"{op}: scale_factor {scale_factor!r} must have {nd} entries for an "
                             f"input of shape {tuple(input.shape)}")
        scales = tuple(float(s) for s in scales)
        if any(not s > 0 for s in scales):
            raise ValueError(f"{op}: scale_factor must be positive, got {scale_factor!r}")
        out = tuple(int(math.floor(n * s)) for n, s in zip(spatial, scales))
        if recompute_scale_factor:
            scales = (None,) * nd
    if any(o < 1 for o in out) or any(n < 1 for n in spatial):
        raise ValueError(f"{op}: input and output sizes should be greater than 0, but got "
                         f"input {spatial} and output {out}")
    y = input
    for k in range(nd):
        if out[k] != spatial[k] or mode not in ("nearest", "nearest-exact") or \
                scales[k] not in (None, 1.0):
            y = _resize_axis(y, 2 + k, spatial[k], out[k], mode, bool(align_corners), scales[k])
    return input.clone() if y is input else y  # a new tensor even when nothing moved


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Alias of ``interpolate`` (deprecated in PyTorch, kept for old model code)."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def pixel_shuffle(input, upscale_factor):
    """(*, C r^2, H, W) -> (*, C, H r, W r), as ``torch.nn.functional.pixel_shuffle``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.pixel_shuffle(gm.arange(4.).reshape(1, 4, 1, 1), 2).tolist()
    [[[[0.0, 1.0], [2.0, 3.0]]]]
    """
    check_tensor(input, "input", "pixel_shuffle")
    r = int(upscale_factor)
    if input.ndim < 3:
        raise RuntimeError(f"pixel_shuffle expects input to have at least 3 dimensions, but got "
                           f"input with {input.ndim} dimension(s)")
    if r < 1:
        raise ValueError(f"pixel_shuffle: upscale_factor must be positive, got {upscale_factor}")
    *lead, c, h, w = input.shape
    if c % (r * r):
        raise RuntimeError(f"pixel_shuffle expects its input's 'channel' dimension to be "
                           f"divisible by the square of upscale_factor, but input.size(-3)={c} "
                           f"is not divisible by {r * r}")
    lead, b = tuple(lead), len(lead)
    x = input.reshape(lead + (c // (r * r), r, r, h, w))
    x = x.permute(tuple(range(b)) + (b, b + 3, b + 1, b + 4, b + 2))
    return x.reshape(lead + (c // (r * r), h * r, w * r))


def pixel_unshuffle(input, downscale_factor):
    """(*, C, H r, W r) -> (*, C r^2, H, W): the inverse of ``pixel_shuffle``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.pixel_unshuffle(gm.arange(4.).reshape(1, 1, 2, 2), 2).flatten().tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    check_tensor(input, "input", "pixel_unshuffle")
    r = int(downscale_factor)
    if input.ndim < 3:
        raise RuntimeError(f"pixel_unshuffle expects input to have at least 3 dimensions, but "
                           f"got input with {input.ndim} dimension(s)")
    if r < 1:
        raise ValueError(f"pixel_unshuffle: downscale_factor must be positive, got "
                         f"{downscale_factor}")
    *lead, c, h, w = input.shape
    if h % r or w % r:
        raise RuntimeError(f"pixel_unshuffle expects height and width to be divisible by "
                           f"downscale_factor, but input.size(-2)={h} and input.size(-1)={w} "
                           f"are not both divisible by {r}")
    lead, b = tuple(lead), len(lead)
    x = input.reshape(lead + (c, h // r, r, w // r, r))
    x = x.permute(tuple(range(b)) + (b, b + 2, b + 4, b + 1, b + 3))
    return x.reshape(lead + (c * r * r, h // r, w // r))
