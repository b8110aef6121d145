"""Pooling: ``max_pool1d/2d``, ``avg_pool1d/2d``, ``adaptive_avg_pool1d/2d``.

Gradients of any order come free:

* max and average pooling run the ``pool`` kernel family (:mod:`gmcore.functional.pool`:
  compiled on the CPU, the xp reference elsewhere or with ``GMCORE_KERNELS=pool=reference``).
  Max pooling keeps each window's argmax (first maximum on ties, NaN wins, as PyTorch) and its
  gradient flows to the argmax only; average pooling divides by PyTorch's per-window divisor.
  Each op's backward is another op of a closed set of linear maps, so it is recorded when
  ``create_graph=True``;
* adaptive average pooling multiplies by averaging matrices: ``A_h @ x @ A_w^T``.
"""
import numpy as np

from ...functional.pool import AvgPool2d, MaxPool2d
from ...tensor import Tensor
from ._util import check_tensor, ntuple

__all__ = ["max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
           "adaptive_avg_pool2d"]


def pool_out_size(size, k, s, p, d, ceil_mode):
    """PyTorch's pooling output size (``pooling_output_shape``)."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1  # the last window must start inside the input or the left padding
    return out


def _spatial_args(op, input, nd, kernel_size, stride, padding, dilation, ceil_mode):
    check_tensor(input, "input", op)
    if input.ndim not in (nd + 1, nd + 2):
        raise RuntimeError(f"{op}: expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input, "
                           f"got input of shape {tuple(input.shape)}")
    k = ntuple(kernel_size, nd, "kernel_size", op, minimum=1)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else ntuple(stride, nd, "stride", op, minimum=1)
    p = ntuple(padding, nd, "padding", op, minimum=0)
    d = ntuple(dilation, nd, "dilation", op, minimum=1)
    for ki, pi in zip(k, p):
        if pi > ki // 2:
            raise RuntimeError(f"{op}: pad should be at most half of effective kernel size, "
                               f"but got pad={pi}, kernel_size={ki} and dilation={d}")
    spatial = tuple(input.shape[-nd:])
    out = tuple(pool_out_size(n, ki, si, pi, di, ceil_mode)
                for n, ki, si, pi, di in zip(spatial, k, s, p, d))
    if any(o < 1 for o in out):
        raise RuntimeError(f"{op}: Given input size: {tuple(input.shape)}. Calculated output "
                           f"size: {out}. Output size is too small")
    return k, s, p, d, out


def _as_4d(input, nd):
    """(N, C, H, W) view of a batched/unbatched 1-D or 2-D input (1-D gets a unit height)."""
    lead = tuple(input.shape[:-nd])
    x = input.reshape((-1, 1) + tuple(input.shape[-nd:])) if nd == 2 else \
        input.reshape((-1, 1, 1, input.shape[-1]))
    return x, lead


def _max_pool(op, nd, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    k, s, p, d, out = _spatial_args(op, input, nd, kernel_size, stride, padding, dilation,
                                    ceil_mode)
    x, lead = _as_4d(input, nd)
    if nd == 1:
        k, s, p, d, out = (1,) + k, (1,) + s, (0,) + p, (1,) + d, (1,) + out
    geom = (k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1])
    y, idx = MaxPool2d.apply(x, geom, out)
    shape = lead + out[-nd:]
    y = y.reshape(shape)
    if return_indices:
        return y, idx.reshape(shape)
    return y


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling over (N, C, H, W) or (C, H, W), as ``torch.nn.functional.max_pool2d``.

    ``stride`` defaults to ``kernel_size``; padding counts as ``-inf`` and is at most half the
    kernel. The gradient goes to each window's first maximum. ``return_indices=True`` also
    returns the flat ``h * W + w`` position of each maximum (int64), as PyTorch.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.max_pool2d(gm.arange(16.).reshape(1, 1, 4, 4), 2).tolist()
    [[[[5.0, 7.0], [13.0, 15.0]]]]
    """
    return _max_pool("max_pool2d", 2, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """1-D max pooling over (N, C, L) or (C, L); see ``max_pool2d``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.max_pool1d(gm.tensor([[[1., 3., 2., 0., 5.]]]), 2).tolist()
    [[[3.0, 2.0]]]
    """
    return _max_pool("max_pool1d", 1, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def _avg_pool(op, nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    k, s, p, _, out = _spatial_args(op, input, nd, kernel_size, stride, padding, 1, ceil_mode)
    if not input.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating point input, got {input.dtype}")
    x, lead = _as_4d(input, nd)
    if nd == 1:
        k, s, p, out = (1,) + k, (1,) + s, (0,) + p, (1,) + out
    divisor = 0
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, (int, np.integer)):
            raise TypeError(f"{op}: divisor_override must be an int, got {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor must be not zero")
        if divisor_override < 0:
            raise ValueError(f"{op}: divisor_override must be positive, got {divisor_override}")
        divisor = int(divisor_override)
    geom = (k[0], k[1], s[0], s[1], p[0], p[1], 1, 1)
    y = AvgPool2d.apply(x, geom, out, bool(count_include_pad), divisor)
    return y.reshape(lead + out[-nd:])


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    The divisor is the window size clipped to the padded input (``count_include_pad=True``)
    or the number of real elements (False); ``divisor_override`` replaces it.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.avg_pool2d(gm.arange(16.).reshape(1, 1, 4, 4), 2).tolist()
    [[[[2.5, 4.5], [10.5, 12.5]]]]
    """
    return _avg_pool("avg_pool2d", 2, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """1-D average pooling over (N, C, L) or (C, L); see ``avg_pool2d``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.avg_pool1d(gm.tensor([[[1., 3., 2., 0.]]]), 2).tolist()
    [[[2.0, 1.0]]]
    """
    return _avg_pool("avg_pool1d", 1, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, None)


def _adaptive_matrix(size, out, xp, dtype):
    """(out, size) averaging matrix; row i covers [floor(i n / o), ceil((i + 1) n / o))."""
    m = np.zeros((out, size))
    for i in range(out):
        a, b = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, a:b] = 1.0 / (b - a)
    return Tensor(xp.asarray(m, dtype=dtype))


def _adaptive(op, nd, input, output_size):
    check_tensor(input, "input", op)
    if input.ndim not in (nd + 1, nd + 2):
        raise RuntimeError(f"{op}: expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input, "
                           f"got input of shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating point input, got {input.dtype}")
    spatial = tuple(input.shape[-nd:])
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != nd:
            raise ValueError(f"{op}: output_size must be an int or a tuple of {nd}, got "
                             f"{output_size!r}")
        out = tuple(n if o is None else int(o) for o, n in zip(output_size, spatial))
    else:
        out = (int(output_size),) * nd
    if any(o < 1 for o in out) or any(n < 1 for n in spatial):
        raise RuntimeError(f"{op}: output_size must be >= 1 and the input non-empty, got "
                           f"output_size {out} for input of shape {tuple(input.shape)}")
    xp, dt = input._xp(), input.data.dtype
    y = input
    if nd == 2:
        y = _adaptive_matrix(spatial[0], out[0], xp, dt) @ y
    return y @ _adaptive_matrix(spatial[-1], out[-1], xp, dt).mT


def adaptive_avg_pool2d(input, output_size):
    """Average over PyTorch's adaptive windows to a fixed (oH, oW) (``None`` keeps a size).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.adaptive_avg_pool2d(gm.ones(2, 3, 5, 7), 1).shape
    gmcore.Size([2, 3, 1, 1])
    """
    return _adaptive("adaptive_avg_pool2d", 2, input, output_size)


def adaptive_avg_pool1d(input, output_size):
    """Average over adaptive windows to a fixed length.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.adaptive_avg_pool1d(gm.tensor([[[1., 2., 3., 4., 5.]]]), 2).tolist()
    [[[2.0, 4.0]]]
    """
    return _adaptive("adaptive_avg_pool1d", 1, input, output_size)

