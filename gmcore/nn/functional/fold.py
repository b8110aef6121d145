"""``unfold`` (im2col) and ``fold`` (col2im), as ``torch.nn.functional.unfold/fold``.

``unfold`` is a grouped convolution with one-hot kernels: group ``c`` has ``kh*kw`` output
channels, channel ``t`` picking kernel tap ``t`` of input channel ``c``, which is exactly
PyTorch's (C * kh * kw) row order. ``fold`` is its adjoint, the transposed convolution with
the same weight. Both inherit any-order gradients from the convolution Functions.
"""
from ...tensor import Tensor
from ._conv_kernels import out_size
from ._util import check_tensor, ntuple

__all__ = ["unfold", "fold"]


def _one_hot_weight(x, c, kh, kw):
    xp = x._xp()
    w = xp.zeros((c, kh * kw, kh * kw), dtype=x.data.dtype)
    w[:, xp.arange(kh * kw), xp.arange(kh * kw)] = 1
    return Tensor(w.reshape(c * kh * kw, 1, kh, kw))


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Sliding local blocks: (N, C, H, W) -> (N, C * kh * kw, L).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.unfold(gm.ones(2, 3, 5, 6), 2).shape
    gmcore.Size([2, 12, 20])
    """
    from .conv import _Conv
    op = "unfold"
    check_tensor(input, "input", op)
    if input.ndim not in (3, 4):
        raise RuntimeError(f"{op}: expected a 3D (unbatched) or 4D (batched) input, got shape "
                           f"{tuple(input.shape)}")
    if not input.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating point input, got {input.dtype}")
    k = ntuple(kernel_size, 2, "kernel_size", op, minimum=1)
    d = ntuple(dilation, 2, "dilation", op, minimum=1)
    p = ntuple(padding, 2, "padding", op, minimum=0)
    s = ntuple(stride, 2, "stride", op, minimum=1)
    x = input.unsqueeze(0) if input.ndim == 3 else input
    n, c, h, w = x.shape
    out = (out_size(h, k[0], s[0], 2 * p[0], d[0]), out_size(w, k[1], s[1], 2 * p[1], d[1]))
    if out[0] < 1 or out[1] < 1:
        raise RuntimeError(f"{op}: input {tuple(input.shape)} is too small for kernel_size {k}, "
                           f"dilation {d}, padding {p} (calculated output size {out})")
    geom = (s, (p[0], p[0], p[1], p[1]), d, c)
    y = _Conv.apply(x, _one_hot_weight(x, c, *k), geom, out)
    y = y.reshape((n, c * k[0] * k[1], out[0] * out[1]))
    return y.squeeze(0) if input.ndim == 3 else y


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum sliding local blocks back into an image: (N, C * kh * kw, L) -> (N, C, H, W).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.fold(F.unfold(gm.ones(1, 1, 3, 3), 2), (3, 3), 2).tolist()
    [[[[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]]]
    """
    from .conv import _ConvT
    op = "fold"
    check_tensor(input, "input", op)
    if input.ndim not in (2, 3):
        raise RuntimeError(f"{op}: expected a 2D (unbatched) or 3D (batched) input, got shape "
                           f"{tuple(input.shape)}")
    if not input.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating point input, got {input.dtype}")
    hw = ntuple(output_size, 2, "output_size", op, minimum=1)
    k = ntuple(kernel_size, 2, "kernel_size", op, minimum=1)
    d = ntuple(dilation, 2, "dilation", op, minimum=1)
    p = ntuple(padding, 2, "padding", op, minimum=0)
    s = ntuple(stride, 2, "stride", op, minimum=1)
    x = input.unsqueeze(0) if input.ndim == 2 else input
    n, ck, length = x.shape
    kk = k[0] * k[1]
    if ck % kk:
        raise RuntimeError(f"{op}: expected size of input's dimension 1 to be divisible by the "
                           f"product of kernel_size, but got input.size(1)={ck} and "
                           f"kernel_size={k}")
    blocks = (out_size(hw[0], k[0], s[0], 2 * p[0], d[0]),
              out_size(hw[1], k[1], s[1], 2 * p[1], d[1]))
    if blocks[0] * blocks[1] != length:
        raise RuntimeError(f"{op}: given output_size={hw}, kernel_size={k}, dilation={d}, "
                           f"padding={p}, stride={s}, expected size of input's dimension 2 to "
                           f"match the calculated number of sliding blocks {blocks[0]} * "
                           f"{blocks[1]} = {blocks[0] * blocks[1]}, but got input.size(2)="
                           f"{length}")
    c = ck // kk
    geom = (s, (p[0], p[0], p[1], p[1]), d, c)
    y = _ConvT.apply(x.reshape((n, ck) + blocks), _one_hot_weight(x, c, *k), geom, hw)
    return y.squeeze(0) if input.ndim == 2 else y
