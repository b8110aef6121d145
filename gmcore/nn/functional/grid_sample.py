"""``grid_sample``: sample a 2-D input at arbitrary (normalised) locations (spatial
transformers, deformable sampling, flow warping).

Written with tensor ops, so it is differentiable in both the input (through ``gather``) and
the grid (through the bilinear weights and the coordinate maps), to any order. The coordinate
maps follow PyTorch's ``GridSampler.h``: unnormalise, then clip (``border``) or reflect and clip
(``reflection``); ``zeros`` padding reads 0 outside the image.
"""
import numpy as np

from ...functional.pointwise import abs as _abs, clamp, where
from ...tensor import Tensor
from ._util import check_float

__all__ = ["grid_sample"]

_MODES = ("bilinear", "nearest")
_PADDINGS = ("zeros", "border", "reflection")


def _unnormalize(coord, size, align_corners):
    # -1 and 1 are the centres of the corner pixels (align_corners) or their outer edges
    if align_corners:
        return (coord + 1) * ((size - 1) / 2)
    return ((coord + 1) * size - 1) / 2


def _reflect(coord, twice_low, twice_high):
    """Reflect ``coord`` into [twice_low / 2, twice_high / 2] by repeated mirroring."""
    if twice_low == twice_high:
        return coord * 0
    low = twice_low / 2
    span = (twice_high - twice_low) / 2
    dist = _abs(coord - low)
    flips = Tensor(dist._xp().floor(dist.data / span))  # a constant: piecewise-linear map
    extra = dist - flips * span
    even = Tensor(flips.data % 2 == 0)
    return where(even, extra + low, (span - extra) + low)


def _source_coord(coord, size, padding_mode, align_corners):
    c = _unnormalize(coord, size, align_corners)
    if padding_mode == "border":
        c = clamp(c, 0, size - 1)
    elif padding_mode == "reflection":
        c = _reflect(c, 0, 2 * (size - 1)) if align_corners else _reflect(c, -1, 2 * size - 1)
        c = clamp(c, 0, size - 1)
    return c


def _gather(flat, xi, yi, w, h):
    """``flat[n, c, yi * w + xi]`` for integer corner arrays (N, P); 0 outside the image."""
    xp = flat._xp()
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    idx = xp.where(inside, yi * w + xi, 0).astype(np.int64)
    n, c = flat.shape[0], flat.shape[1]
    idx = Tensor(xp.ascontiguousarray(xp.broadcast_to(idx[:, None, :], (n, c, idx.shape[1]))))
    vals = flat.gather(2, idx)
    return vals, Tensor(inside[:, None, :].astype(flat.data.dtype))


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """Sample ``input`` (N, C, H, W) at ``grid`` (N, H_out, W_out, 2) locations; ``grid[..., 0]``
    is x (width) and ``grid[..., 1]`` is y, both in [-1, 1] (values outside are padded by
    ``padding_mode``: ``'zeros'``, ``'border'`` or ``'reflection'``). ``mode`` is
    ``'bilinear'`` or ``'nearest'`` (round half to even, as PyTorch; its grid gradient is 0).
    ``align_corners=None`` means False, PyTorch's default. Output: (N, C, H_out, W_out).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> img = gm.arange(4.0).reshape(1, 1, 2, 2)
    >>> centre = gm.zeros(1, 1, 1, 2)
    >>> F.grid_sample(img, centre, align_corners=False).item()
    1.5
    """
    op = "grid_sample"
    check_float(input, "input", op)
    check_float(grid, "grid", op)
    if mode not in _MODES:
        raise ValueError(f"{op}: mode must be one of {_MODES} (2-D input), got {mode!r}")
    if padding_mode not in _PADDINGS:
        raise ValueError(f"{op}: padding_mode must be one of {_PADDINGS}, got {padding_mode!r}")
    if input.ndim != 4:
        raise RuntimeError(f"{op}: only 2-D sampling is implemented: input must be (N, C, H, W), "
                           f"got shape {tuple(input.shape)}")
    if grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != input.shape[0]:
        raise RuntimeError(f"{op}: grid must be (N, H_out, W_out, 2) with N = {input.shape[0]}, "
                           f"got shape {tuple(grid.shape)}")
    if input.dtype != grid.dtype or input.device != grid.device:
        raise RuntimeError(f"{op}: input and grid must have the same dtype and device, got "
                           f"{input.dtype} on {input.device} and {grid.dtype} on {grid.device}")
    align_corners = bool(align_corners)
    n, c, h, w = input.shape
    ho, wo = grid.shape[1], grid.shape[2]
    g = grid.reshape(n, ho * wo, 2)
    x = _source_coord(g[..., 0], w, padding_mode, align_corners)  # (N, P)
    y = _source_coord(g[..., 1], h, padding_mode, align_corners)
    flat = input.reshape(n, c, h * w)
    xp = input._xp()
    if mode == "nearest":
        xi = xp.rint(x.data).astype(np.int64)  # rint: round half to even, as nearbyint
        yi = xp.rint(y.data).astype(np.int64)
        vals, inside = _gather(flat, xi, yi, w, h)
        return (vals * inside).reshape(n, c, ho, wo)
    x0 = xp.floor(x.data)
    y0 = xp.floor(y.data)
    wx1 = x - Tensor(x0)  # weight of the right column, a function of the grid
    wy1 = y - Tensor(y0)
    wx0, wy0 = 1 - wx1, 1 - wy1
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    out = None
    for xi, yi, wgt in ((x0, y0, wx0 * wy0), (x0 + 1, y0, wx1 * wy0),
                        (x0, y0 + 1, wx0 * wy1), (x0 + 1, y0 + 1, wx1 * wy1)):
        vals, inside = _gather(flat, xi, yi, w, h)
        term = vals * inside * wgt.unsqueeze(1)
        out = term if out is None else out + term
    return out.reshape(n, c, ho, wo)
