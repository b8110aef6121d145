"""3-D convolutions: ``conv3d`` and ``conv_transpose3d``, built on the 2-D ones.

A 3-D cross-correlation is a sum over the kernel's depth taps of 2-D ones: with the depth
folded into the batch,

    y[:, :, od] = sum_kd conv2d(x[:, :, od * sd + kd * dd], w[:, :, kd])

so each tap is one batched ``conv2d`` over a strided depth slice of the (depth-padded) input
(the same im2col work a vol2col would do, kd slices at a time). The transposed convolution is
the adjoint: each tap's ``conv_transpose2d`` result lands at depth ``id * sd + kd * dd``
(zero-stuffed by the stride, shifted by the tap), summed, then cropped by the padding. Both are
composites of differentiable ops (slices, reshapes, pads, the 2-D convolutions), so gradients
of any order come from those.
"""
from ...functional import cat, pad
from .conv import _check_bias, _check_common, _check_transposed, _fmt, conv2d, conv_transpose2d
from ._util import ntuple

__all__ = ["conv3d", "conv_transpose3d"]


def _batched5(input):
    return input.unsqueeze(0) if input.ndim == 4 else input


def _fold_depth(x):
    """(N, C, D, H, W) -> (N * D, C, H, W)."""
    n, c, d, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w)


def _unfold_depth(y, n):
    """(N * D, C, H, W) -> (N, D, C, H, W)."""
    return y.reshape((n, y.shape[0] // n) + tuple(y.shape[1:]))


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-D cross-correlation, as ``torch.nn.functional.conv3d``.

    ``input`` (N, C, D, H, W) or (C, D, H, W); ``weight`` (O, C/groups, kD, kH, kW); ``padding``
    an int, a triple, ``'valid'`` or ``'same'`` (stride 1 only).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.conv3d(gm.ones(1, 2, 4, 5, 6), gm.ones(3, 2, 3, 3, 3), padding=1).shape
    gmcore.Size([1, 3, 4, 5, 6])
    """
    op = "conv3d"
    _check_common(op, input, weight, bias, 3, groups)
    o, cg, kd = weight.shape[0], weight.shape[1], weight.shape[2]
    c = input.shape[-4]
    if o % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} "
                           f"at dimension 0, but got weight of size {_fmt(weight.shape)} instead")
    if c != cg * groups:
        raise RuntimeError(f"Given groups={groups}, weight of size {_fmt(weight.shape)}, "
                           f"expected input{_fmt(input.shape)} to have {cg * groups} channels, "
                           f"but got {c} channels instead")
    _check_bias(op, bias, o)
    sd, sh, sw = ntuple(stride, 3, "stride", op, minimum=1)
    dd, dh, dw = ntuple(dilation, 3, "dilation", op, minimum=1)
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"{op}: Invalid padding string {padding!r}, should be one of "
                             "{'valid', 'same'}")
        if padding == "same" and (sd, sh, sw) != (1, 1, 1):
            raise ValueError(f"{op}: padding='same' is not supported for strided "
                             f"convolutions (stride={(sd, sh, sw)})")
        total = dd * (kd - 1) if padding == "same" else 0
        front, back = total // 2, total - total // 2  # the odd extra one after, as PyTorch
        pad_hw = padding
    else:
        pd, ph, pw = ntuple(padding, 3, "padding", op, minimum=0)
        front = back = pd
        pad_hw = (ph, pw)
    x = _batched5(input)
    n = x.shape[0]
    depth = x.shape[2] + front + back
    if depth < dd * (kd - 1) + 1:
        raise RuntimeError(f"{op}: Calculated padded input depth ({depth}) is smaller than the "
                           f"kernel's dilated depth ({dd * (kd - 1) + 1}); kernel size can't be "
                           "greater than actual input size")
    if front or back:
        x = pad(x, (0, 0, 0, 0, front, back))
    od = (depth - dd * (kd - 1) - 1) // sd + 1
    y = None
    for k in range(kd):
        xs = x[:, :, k * dd:k * dd + sd * (od - 1) + 1:sd]  # the depths tap k meets
        yk = conv2d(_fold_depth(xs), weight[:, :, k], None, (sh, sw), pad_hw, (dh, dw), groups)
        y = yk if y is None else y + yk
    y = _unfold_depth(y, n).permute(0, 2, 1, 3, 4)
    if bias is not None:
        y = y + bias.reshape((1, -1, 1, 1, 1))
    return y.squeeze(0) if input.ndim == 4 else y


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """3-D transposed convolution (the gradient of ``conv3d`` w.r.t. its input).

    ``weight`` is (C_in, C_out/groups, kD, kH, kW) as PyTorch; each output size is
    ``(D - 1) s - 2p + d (k - 1) + output_padding + 1``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.conv_transpose3d(gm.ones(1, 4, 2, 3, 3), gm.ones(4, 2, 4, 4, 4), stride=2,
    ...                    padding=1).shape
    gmcore.Size([1, 2, 4, 6, 6])
    """
    op = "conv_transpose3d"
    _check_transposed(op, 3, input, weight, bias, groups, padding)
    kd = weight.shape[2]
    sd, sh, sw = ntuple(stride, 3, "stride", op, minimum=1)
    pd, ph, pw = ntuple(padding, 3, "padding", op, minimum=0)
    opd, oph, opw = ntuple(output_padding, 3, "output_padding", op, minimum=0)
    dd, dh, dw = ntuple(dilation, 3, "dilation", op, minimum=1)
    if opd >= sd and opd >= dd:  # (height and width are checked by conv_transpose2d)
        raise ValueError(f"{op}: output padding must be smaller than either stride or "
                         f"dilation, but got output_padding={(opd, oph, opw)}, "
                         f"stride={(sd, sh, sw)}, dilation={(dd, dh, dw)}")
    g = _batched5(input)
    n, depth_in = g.shape[0], g.shape[2]
    full = (depth_in - 1) * sd + dd * (kd - 1) + opd + 1  # output depth before the crop
    if full - 2 * pd <= 0:
        raise RuntimeError(f"{op}: the computed output depth {full - 2 * pd} is too small "
                           f"(input {_fmt(input.shape)}, weight {_fmt(weight.shape)})")
    folded = _fold_depth(g)
    acc = None
    for k in range(kd):
        t = conv_transpose2d(folded, weight[:, :, k], None, (sh, sw), (ph, pw), (oph, opw),
                             groups, (dh, dw))
        t = _unfold_depth(t, n)  # (N, D_in, C_out, OH, OW)
        if sd > 1:  # zero-stuff: input depth i lands at i * sd
            zeros = t.new_zeros((n, depth_in, sd - 1) + tuple(t.shape[2:]))
            t = cat([t.unsqueeze(2), zeros], 2).reshape((n, depth_in * sd) + tuple(t.shape[2:]))
            t = t[:, :(depth_in - 1) * sd + 1]
        front = k * dd
        t = pad(t, (0, 0, 0, 0, 0, 0, front, full - front - t.shape[1]))
        acc = t if acc is None else acc + t
    y = acc[:, pd:full - pd].permute(0, 2, 1, 3, 4)
    if bias is not None:
        y = y + bias.reshape((1, -1, 1, 1, 1))
    return y.squeeze(0) if input.ndim == 4 else y
