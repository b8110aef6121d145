"""Masked and shifted convolutions for autoregressive image models (PixelCNN, PixelCNN++).

Kernel family ``masked_conv`` (op ``tap_conv2d``; implementations and the fused Functions in
:mod:`gmcore.functional._tap_conv`). Every op here is one *tap convolution*: a conv2d that
visits only the kernel taps a mask keeps (fast paths skip the masked-out taps instead of
multiplying them by zero), or a shifted conv2d with asymmetric leading padding, or its
transpose. ``GMCORE_KERNELS=masked_conv=reference`` computes them with differentiable Tensor
ops (``conv2d`` with ``weight * mask``), so that gradients of any order are available.

Ops: :func:`masked_conv2d_mask`, :func:`masked_conv2d` (PixelCNN masks A/B, optional RGB
channel groups), :func:`down_shifted_conv2d`, :func:`down_right_shifted_conv2d`,
:func:`down_shifted_conv_transpose2d`, :func:`down_right_shifted_conv_transpose2d`,
:func:`down_shift`, :func:`right_shift` (PixelCNN++ geometry of openai/pixel-cnn).
"""
from __future__ import annotations

import functools

import numpy as np

from .. import backend
from ._tap_conv import (TapConv2d, TapConvTranspose2d, all_taps, check_args, choose_impl,
                        register_tap_conv)

__all__ = ["masked_conv2d_mask", "masked_conv2d", "down_shifted_conv2d",
           "down_right_shifted_conv2d", "down_shifted_conv_transpose2d",
           "down_right_shifted_conv_transpose2d", "down_shift", "right_shift"]

FAMILY = "masked_conv"
register_tap_conv(FAMILY)


# ---- masks --------------------------------------------------------------------------------------

def _pair(value, name, op, minimum):
    if isinstance(value, (tuple, list)):
        out = tuple(value)
        if len(out) == 1:
            out = out * 2
    else:
        out = (value, value)
    if len(out) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                for v in out):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    out = tuple(int(v) for v in out)
    if any(v < minimum for v in out):
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return out


def _check_mask_args(op, out_channels, in_channels, kernel_size, mask_type, groups_rgb):
    for name, v in (("out_channels", out_channels), ("in_channels", in_channels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    kh, kw = _pair(kernel_size, "kernel_size", op, 1)
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"{op}: masked convolutions need an odd kernel size (the mask is "
                         f"centred on the current pixel), got {(kh, kw)}")
    if mask_type not in ("A", "B"):
        raise ValueError(f"{op}: mask_type must be 'A' (excludes the current pixel) or 'B' "
                         f"(includes it), got {mask_type!r}")
    if groups_rgb not in (1, 3) or isinstance(groups_rgb, bool):
        raise ValueError(f"{op}: groups_rgb must be 1 or 3, got {groups_rgb!r}")
    if groups_rgb == 3 and (in_channels % 3 or out_channels % 3):
        raise ValueError(f"{op}: groups_rgb=3 splits the channels into 3 contiguous blocks; "
                         f"in_channels ({in_channels}) and out_channels ({out_channels}) must "
                         "both be divisible by 3")
    return int(out_channels), int(in_channels), kh, kw


@functools.lru_cache(maxsize=256)
def _mask_and_taps(o, c, kh, kw, mask_type, groups_rgb):
    """(mask (O, C, KH, KW) float64 read-only, taps int64 (T, 2), partial) where partial says
    that some active tap keeps only part of the channels (the weight must be multiplied)."""
    cy, cx = kh // 2, kw // 2
    mask = np.zeros((o, c, kh, kw), dtype=np.float64)
    mask[:, :, :cy, :] = 1.0  # rows above the current one
    mask[:, :, cy, :cx] = 1.0  # left of the current pixel in its row
    if groups_rgb == 1:
        mask[:, :, cy, cx] = 1.0 if mask_type == "B" else 0.0
    else:
        go = np.arange(o) * 3 // o
        gi = np.arange(c) * 3 // c
        sees = gi[None, :] <= go[:, None] if mask_type == "B" else gi[None, :] < go[:, None]
        mask[:, :, cy, cx] = sees
    active = mask.any(axis=(0, 1))
    taps = np.argwhere(active).astype(np.int64)  # row-major order, as the contract wants
    partial = bool((mask[:, :, active] == 0).any())
    mask.setflags(write=False)
    taps.setflags(write=False)
    return mask, taps, partial


def masked_conv2d_mask(out_channels, in_channels, kernel_size, mask_type="B", groups_rgb=1):
    """The PixelCNN mask (O, C, KH, KW) of 0/1 (float64 NumPy array).

    Kept taps: every row above the centre, and the taps left of the centre in the centre row.
    The centre tap itself: mask ``"A"`` (first layer) excludes it, ``"B"`` includes it. With
    ``groups_rgb=3`` the channels form 3 contiguous blocks (channel c belongs to group
    ``c * 3 // C``; C and O must be divisible by 3) and at the centre tap output group g sees
    input groups < g (A) or <= g (B): R sees nothing (A) / R, G sees R, B sees R and G.
    Odd kernel sizes only.

    >>> import gmcore.nn.functional as F
    >>> F.masked_conv2d_mask(1, 1, 3, "A")[0, 0].astype(int).tolist()
    [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    >>> F.masked_conv2d_mask(3, 3, 1, "B", groups_rgb=3)[:, :, 0, 0].astype(int).tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    o, c, kh, kw = _check_mask_args("masked_conv2d_mask", out_channels, in_channels,
                                    kernel_size, mask_type, groups_rgb)
    return _mask_and_taps(o, c, kh, kw, mask_type, groups_rgb)[0].copy()


# ---- helpers ----------------------------------------------------------------------------------

def _batched(t):
    return t.unsqueeze(0) if t.ndim == 3 else t


def _unbatched(y, input):
    return y.squeeze(0) if input.ndim == 3 else y


def _out_size(size, k, s, pad_lo, pad_hi, d, op):
    span = d * (k - 1) + 1
    if size + pad_lo + pad_hi < span:
        raise ValueError(f"{op}: padded input size {size + pad_lo + pad_hi} is smaller than the "
                         f"(dilated) kernel size {span}")
    return (size + pad_lo + pad_hi - span) // s + 1


def _run_conv(op, input, weight, bias, taps, geom, out_hw, mask, reference):
    """The fused path when dispatch chose an implementation, else ``reference()``."""
    name, impl = choose_impl(FAMILY, input)
    if name == "reference" or len(taps) == 0:
        return reference()
    x = _batched(input)
    with backend.device_context(input.device):
        y = TapConv2d.apply(x, weight, bias, impl, taps, geom, out_hw, mask)
    return _unbatched(y, input)


# ---- masked convolution -------------------------------------------------------------------------

def masked_conv2d(input, weight, bias=None, mask_type="B", groups_rgb=1, stride=1, padding=None,
                  dilation=1):
    """PixelCNN masked 2-D convolution: ``conv2d(input, weight * mask, bias, ...)``.

    ``weight`` (O, C, KH, KW) is the unmasked parameter (odd kernel); the mask is
    :func:`masked_conv2d_mask` ``(O, C, KH, KW, mask_type, groups_rgb)``, so output pixel
    (i, j) depends only on input pixels above it or left of it in its row (and on itself for
    mask ``"B"``, per channel group with ``groups_rgb=3``). ``padding=None`` pads
    ``dilation * (k // 2)`` on each side ("same" size for stride 1); an int or pair is used
    as in ``conv2d``. Input (N, C, H, W) or (C, H, W). The fast implementations skip the
    masked-out taps (about half of them).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> x = gm.arange(9.0).reshape(1, 1, 3, 3)
    >>> F.masked_conv2d(x, gm.ones(1, 1, 3, 3), mask_type="A")[0, 0].tolist()
    [[0.0, 0.0, 1.0], [1.0, 6.0, 7.0], [7.0, 18.0, 16.0]]
    """
    op = "masked_conv2d"
    check_args(op, input, weight, bias, 2)
    o, c, kh, kw = weight.shape
    o, c, kh, kw = _check_mask_args(op, o, c, (kh, kw), mask_type, groups_rgb)
    stride = _pair(stride, "stride", op, 1)
    dilation = _pair(dilation, "dilation", op, 1)
    if padding is None:
        padding = (dilation[0] * (kh // 2), dilation[1] * (kw // 2))
    padding = _pair(padding, "padding", op, 0)
    mask, taps, partial = _mask_and_taps(o, c, kh, kw, mask_type, groups_rgb)
    h, w = input.shape[-2:]
    out_hw = (_out_size(h, kh, stride[0], padding[0], padding[0], dilation[0], op),
              _out_size(w, kw, stride[1], padding[1], padding[1], dilation[1], op))

    def reference():
        from ..nn.functional.conv import conv2d
        m = weight.new_tensor(mask)
        return conv2d(input, weight * m, bias, stride, padding, dilation)

    xp = backend.xp_for(input.device)
    raw_mask = None
    if partial:
        with backend.device_context(input.device):
            raw_mask = xp.asarray(mask, dtype=weight.data.dtype)
    geom = (stride, padding, dilation)
    return _run_conv(op, input, weight, bias, taps, geom, out_hw, raw_mask, reference)


# ---- PixelCNN++ shifted convolutions ------------------------------------------------------------

def _shifted(op, input, weight, bias, stride, right):
    check_args(op, input, weight, bias, 2)
    stride = _pair(stride, "stride", op, 1)
    kh, kw = weight.shape[2:]
    # openai/pixel-cnn: pad KH-1 rows on top; (KW-1)//2 columns each side (down), or KW-1
    # columns on the left (down-right)
    pl, pr = (kw - 1, 0) if right else ((kw - 1) // 2, (kw - 1) // 2)
    h, w = input.shape[-2:]
    out_hw = (_out_size(h, kh, stride[0], kh - 1, 0, 1, op),
              _out_size(w, kw, stride[1], pl, pr, 1, op))
    geom = (stride, (kh - 1, pl), (1, 1))

    def reference():
        from ..nn.functional.conv import conv2d
        from .shape import pad
        return conv2d(pad(input, (pl, pr, kh - 1, 0)), weight, bias, stride)

    return _run_conv(op, input, weight, bias, all_taps(kh, kw), geom, out_hw, None, reference)


def down_shifted_conv2d(input, weight, bias=None, stride=1):
    """PixelCNN++ down-shifted convolution: output row i sees input rows <= i only.

    Pads KH-1 rows on top and (KW-1)//2 columns left and right, then ``conv2d`` (as
    openai/pixel-cnn's ``down_shifted_conv2d``; default kernel (2, 3)). An odd KW keeps the
    width. The Gated PixelCNN *vertical stack* is this op with kernel ``(k//2 + 1, k)``
    (followed by :func:`down_shift` when it feeds the horizontal stack).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> x = gm.arange(9.0).reshape(1, 1, 3, 3)
    >>> F.down_shifted_conv2d(x, gm.ones(1, 1, 2, 3))[0, 0].tolist()
    [[1.0, 3.0, 3.0], [8.0, 15.0, 12.0], [20.0, 33.0, 24.0]]
    """
    return _shifted("down_shifted_conv2d", input, weight, bias, stride, right=False)


def down_right_shifted_conv2d(input, weight, bias=None, stride=1):
    """PixelCNN++ down-right-shifted convolution: output (i, j) sees input rows <= i and
    columns <= j only (the current pixel included: shift the result right with
    :func:`right_shift` to exclude it).

    Pads KH-1 rows on top and KW-1 columns on the left, then ``conv2d`` (openai/pixel-cnn's
    ``down_right_shifted_conv2d``; default kernel (2, 2)). The Gated PixelCNN *horizontal
    stack* is this op with kernel ``(1, k//2 + 1)``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> x = gm.arange(4.0).reshape(1, 1, 2, 2)
    >>> F.down_right_shifted_conv2d(x, gm.ones(1, 1, 2, 2))[0, 0].tolist()
    [[0.0, 1.0], [2.0, 6.0]]
    """
    return _shifted("down_right_shifted_conv2d", input, weight, bias, stride, right=True)


def _shifted_transpose(op, input, weight, bias, stride, right):
    check_args(op, input, weight, bias, 2, transposed=True)
    stride = _pair(stride, "stride", op, 1)
    kh, kw = weight.shape[2:]
    h, w = input.shape[-2:]
    # conv_transpose2d(padding 0, output_padding stride-1) is (H*s + KH-1, W*s + KW-1) large;
    # the reference keeps the top H*s rows and columns [p, W*s + KW-1 - q)
    p, q = (0, kw - 1) if right else ((kw - 1) // 2, (kw - 1) // 2)
    hc, wc = h * stride[0], w * stride[1] + kw - 1 - p - q
    # the crop folded into the geometry: the transposed map onto exactly the kept window, which
    # is the input gradient of a convolution with leading padding (0, p) on a (hc, wc) input
    geom = (stride, (0, p), (1, 1))

    def reference():
        from ..nn.functional.conv import conv_transpose2d
        full = conv_transpose2d(input, weight, bias, stride,
                                output_padding=(stride[0] - 1, stride[1] - 1))
        return full[..., :hc, p:p + wc]

    name, impl = choose_impl(FAMILY, input)
    if name == "reference":
        return reference()
    with backend.device_context(input.device):
        y = TapConvTranspose2d.apply(_batched(input), weight, bias, impl, all_taps(kh, kw),
                                     geom, (hc, wc))
    return _unbatched(y, input)


def down_shifted_conv_transpose2d(input, weight, bias=None, stride=2):
    """Transposed :func:`down_shifted_conv2d` (PixelCNN++ ``down_shifted_deconv2d``).

    ``weight`` has the ``conv_transpose2d`` layout (C_in, C_out, KH, KW). Computes
    ``conv_transpose2d(input, weight, bias, stride, output_padding=stride - 1)`` and keeps the
    top ``H*stride`` rows and the columns ``[(KW-1)//2, W*stride + KW-1 - (KW-1)//2)``: output
    (H*s, W*s) for an odd KW. The fast paths compute only the kept window.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.down_shifted_conv_transpose2d(gm.ones(1, 4, 3, 5), gm.ones(4, 2, 2, 3)).shape
    gmcore.Size([1, 2, 6, 10])
    """
    return _shifted_transpose("down_shifted_conv_transpose2d", input, weight, bias, stride,
                              right=False)


def down_right_shifted_conv_transpose2d(input, weight, bias=None, stride=2):
    """Transposed :func:`down_right_shifted_conv2d` (PixelCNN++ ``down_right_shifted_deconv2d``).

    ``weight`` (C_in, C_out, KH, KW); ``conv_transpose2d(..., output_padding=stride - 1)``
    cropped to the top-left (H*s, W*s).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.down_right_shifted_conv_transpose2d(gm.ones(1, 4, 3, 5), gm.ones(4, 2, 2, 2)).shape
    gmcore.Size([1, 2, 6, 10])
    """
    return _shifted_transpose("down_right_shifted_conv_transpose2d", input, weight, bias,
                              stride, right=True)


def _check_image(op, x):
    from ..tensor import Tensor
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{op}: expected an input with at least 2 dims (..., H, W), got shape "
                         f"{tuple(x.shape)}")


def down_shift(x):
    """Shift the rows down by one: drop the last row, insert a zero row on top.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.down_shift(gm.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [[0.0, 0.0], [1.0, 2.0]]
    """
    from .shape import pad
    _check_image("down_shift", x)
    return pad(x, (0, 0, 1, -1))


def right_shift(x):
    """Shift the columns right by one: drop the last column, insert a zero column on the left.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.right_shift(gm.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [[0.0, 1.0], [0.0, 3.0]]
    """
    from .shape import pad
    _check_image("right_shift", x)
    return pad(x, (1, -1))
