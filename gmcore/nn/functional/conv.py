"""Convolutions: ``conv1d``, ``conv2d``, ``conv_transpose1d``, ``conv_transpose2d``.

Three Functions, each the derivative of the others (the classic closed set), so gradients of
any order are available:

* ``_Conv``       y  = conv(x, w)         backward: dx = convT(gy, w),   dw = wgrad(x, gy)
* ``_ConvT``      z  = convT(g, w)        backward: dg = conv(gz, w),    dw = wgrad(gz, g)
* ``_ConvWeight`` gw = wgrad(x, gy)       backward: dx = convT(gy, ggw), dgy = conv(x, ggw)

(``convT`` is the adjoint of ``conv`` in ``x``; ``wgrad`` is ``d<conv(x, w), gy>/dw``.)
The bias is added with tensor ops. 1-D ops run the 2-D kernels on a unit height.
"""
from ...autograd import Function, is_grad_enabled
from ...tensor import Tensor
# stride-2 float32 convolutions may take the phase-plane route (gmcore.functional.conv)
from ...functional.conv import conv2d_raw, conv_transpose_raw, conv_weight_raw
from ._util import check_tensor, ntuple

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"]


# Column cache. When the weight needs a gradient, _Conv keeps the column array it built for the
# forward GEMM (as THNN kept ``finput``) and the weight gradient reuses it instead of running
# im2col on x again: one im2col per step instead of two. Cost: the columns, kh*kw times the
# (padded) input, stay alive from forward to backward -- for the 32x64x32x32 3x3 benchmark
# 75 MB next to the 8 MB input, and in a deep net every layer's columns at once. They are
# saved through save_for_backward, so the engine frees them with the other saved values
# after the first backward (unless retain_graph=True). Set ``CACHE_COLUMNS = False`` (module
# attribute) to trade the speed back for memory; results are identical either way (the
# columns are plain copies of x).
CACHE_COLUMNS = True


class _Conv(Function):
    @staticmethod
    def forward(ctx, x, w, geom, out_hw):
        ctx.geom, ctx.in_hw = geom, x.shape[-2:]
        if CACHE_COLUMNS and ctx.needs_input_grad[1]:
            y, cols = conv2d_raw(x, w, geom, out_hw, return_cols=True)
            ctx.save_for_backward(x, w, cols)
            return y
        ctx.save_for_backward(x, w)
        return conv2d_raw(x, w, geom, out_hw)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors[:2]
        gx = _ConvT.apply(gy, w, ctx.geom, ctx.in_hw) if ctx.needs_input_grad[0] else None
        gw = None
        if ctx.needs_input_grad[1]:
            saved = ctx.saved_arrays
            cols = saved[2] if len(saved) > 2 else None
            # cols goes in as a plain (non-tensor) argument: a constant of x, which stays
            # connected to the graph through the tensor argument x for double backward
            gw = _ConvWeight.apply(x, gy, ctx.geom, tuple(w.shape), cols)
        return gx, gw, None, None


class _ConvT(Function):
    @staticmethod
    def forward(ctx, g, w, geom, out_hw):
        ctx.geom, ctx.in_hw = geom, g.shape[-2:]
        ctx.save_for_backward(g, w)
        return conv_transpose_raw(g, w, geom, out_hw)

    @staticmethod
    def backward(ctx, gz):
        g, w = ctx.saved_tensors
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[1] and not is_grad_enabled():
            # not recorded: one set of gz's columns serves both products (the Functions below
            # would each run im2col on gz, the larger side of a transposed convolution)
            dg, cols = conv2d_raw(gz.data, w.data, ctx.geom, ctx.in_hw, return_cols=True)
            dw = conv_weight_raw(gz.data, g.data, ctx.geom, tuple(w.shape), cols)
            return Tensor(dg), Tensor(dw), None, None
        dg = _Conv.apply(gz, w, ctx.geom, ctx.in_hw) if ctx.needs_input_grad[0] else None
        dw = _ConvWeight.apply(gz, g, ctx.geom, tuple(w.shape), None) \
            if ctx.needs_input_grad[1] else None
        return dg, dw, None, None


class _ConvWeight(Function):
    @staticmethod
    def forward(ctx, x, gy, geom, w_shape, cols):
        # ``cols``: x's columns cached by _Conv's forward, or None to recompute them; not kept
        # here (this node's own backward needs only x and gy)
        ctx.geom = geom
        ctx.save_for_backward(x, gy)
        return conv_weight_raw(x, gy, geom, w_shape, cols)

    @staticmethod
    def backward(ctx, ggw):
        x, gy = ctx.saved_tensors
        dx = _ConvT.apply(gy, ggw, ctx.geom, tuple(x.shape[-2:])) \
            if ctx.needs_input_grad[0] else None
        dgy = _Conv.apply(x, ggw, ctx.geom, tuple(gy.shape[-2:])) \
            if ctx.needs_input_grad[1] else None
        return dx, dgy, None, None, None


# ---- argument checks shared by the public ops ---------------------------------------------

def _fmt(shape):
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _check_common(op, input, weight, bias, nd, groups):
    check_tensor(input, "input", op)
    check_tensor(weight, "weight", op)
    if input.ndim not in (nd + 1, nd + 2):
        raise RuntimeError(f"{op}: expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input, "
                           f"but got input of size: {_fmt(input.shape)}")
    if weight.ndim != nd + 2:
        raise RuntimeError(f"{op}: expected a {nd + 2}D weight, but got weight of size "
                           f"{_fmt(weight.shape)}")
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is not None and not t.is_floating_point():
            raise RuntimeError(f"{op}: expected a floating point {name}, got {t.dtype}")
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != input.dtype):
        raise RuntimeError(f"{op}: input ({input.dtype}), weight ({weight.dtype})"
                           + (f" and bias ({bias.dtype})" if bias is not None else "")
                           + " should have the same dtype")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive integer, got {groups!r}")


def _check_bias(op, bias, channels):
    if bias is None:
        return
    check_tensor(bias, "bias", op)
    if tuple(bias.shape) != (channels,):
        raise RuntimeError(f"{op}: expected bias of size [{channels}] (one per output channel), "
                           f"got {_fmt(bias.shape)}")


def _batched(input, nd):
    """Add the batch dim of an unbatched input, and the unit height of a 1-D one."""
    x = input.unsqueeze(0) if input.ndim == nd + 1 else input
    return x.unsqueeze(2) if nd == 1 else x


def _unbatched(y, input, nd):
    y = y.squeeze(2) if nd == 1 else y
    return y.squeeze(0) if input.ndim == nd + 1 else y


def _add_bias(y, bias):
    return y if bias is None else y + bias.reshape((1, -1, 1, 1))


def _lift(t, nd, fill):
    """A 1-D op's per-dim argument becomes the 2-D one with ``fill`` for the unit height."""
    return (fill,) + t if nd == 1 else t


def _conv(op, nd, input, weight, bias, stride, padding, dilation, groups):
    _check_common(op, input, weight, bias, nd, groups)
    o, cg = weight.shape[0], weight.shape[1]
    ks = tuple(weight.shape[2:])
    if o % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} "
                           f"at dimension 0, but got weight of size {_fmt(weight.shape)} instead")
    c = input.shape[-nd - 1]
    if c != cg * groups:
        raise RuntimeError(f"Given groups={groups}, weight of size {_fmt(weight.shape)}, "
                           f"expected input{_fmt(input.shape)} to have {cg * groups} channels, "
                           f"but got {c} channels instead")
    _check_bias(op, bias, o)
    stride = ntuple(stride, nd, "stride", op, minimum=1)
    dilation = ntuple(dilation, nd, "dilation", op, minimum=1)
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0),) * nd
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' is not supported for strided "
                                 f"convolutions (stride={stride})")
            # as PyTorch: total d*(k-1); the odd extra one goes after (bottom/right)
            pads = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                         for d, k in zip(dilation, ks))
        else:
            raise ValueError(f"{op}: Invalid padding string {padding!r}, should be one of "
                             "{'valid', 'same'}")
    else:
        pads = tuple((p, p) for p in ntuple(padding, nd, "padding", op, minimum=0))
    spatial = tuple(input.shape[-nd:])
    padded = tuple(s + a + b for s, (a, b) in zip(spatial, pads))
    eff = tuple(d * (k - 1) + 1 for d, k in zip(dilation, ks))
    if any(p < e for p, e in zip(padded, eff)):
        raise RuntimeError(f"{op}: Calculated padded input size per channel: "
                           f"({' x '.join(map(str, padded))}). Kernel size: "
                           f"({' x '.join(map(str, eff))}). Kernel size can't be greater than "
                           "actual input size")
    pads2 = _lift(pads, nd, (0, 0))
    geom = (_lift(stride, nd, 1), pads2[0] + pads2[1], _lift(dilation, nd, 1), groups)
    w = weight.unsqueeze(2) if nd == 1 else weight
    y = _Conv.apply(_batched(input, nd), w, geom, None)
    return _unbatched(_add_bias(y, bias), input, nd)


def _check_transposed(op, nd, input, weight, bias, groups, padding):
    """The argument checks every ``conv_transpose{1,2,3}d`` shares (PyTorch's messages)."""
    _check_common(op, input, weight, bias, nd, groups)
    c_in, cog = weight.shape[0], weight.shape[1]
    c = input.shape[-nd - 1]
    if c != c_in:
        raise RuntimeError(f"Given transposed=1, weight of size {_fmt(weight.shape)}, expected "
                           f"input{_fmt(input.shape)} to have {c_in} channels, but got {c} "
                           "channels instead")
    if c_in % groups:
        raise RuntimeError(f"{op}: Given groups={groups}, expected weight to be divisible by "
                           f"{groups} at dimension 0, but got weight of size "
                           f"{_fmt(weight.shape)} instead")
    _check_bias(op, bias, cog * groups)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a tuple of ints (strings such as "
                         f"{padding!r} are only accepted by convolutions), got {padding!r}")


def _conv_transpose(op, nd, input, weight, bias, stride, padding, output_padding, groups,
                    dilation):
    _check_transposed(op, nd, input, weight, bias, groups, padding)
    ks = tuple(weight.shape[2:])
    stride = ntuple(stride, nd, "stride", op, minimum=1)
    padding = ntuple(padding, nd, "padding", op, minimum=0)
    output_padding = ntuple(output_padding, nd, "output_padding", op, minimum=0)
    dilation = ntuple(dilation, nd, "dilation", op, minimum=1)
    for op_, s, d in zip(output_padding, stride, dilation):
        if op_ >= s and op_ >= d:
            raise ValueError(f"{op}: output padding must be smaller than either stride or "
                             f"dilation, but got output_padding={output_padding}, "
                             f"stride={stride}, dilation={dilation}")
    spatial = tuple(input.shape[-nd:])
    out = tuple((s - 1) * st - 2 * p + d * (k - 1) + op_ + 1 for s, st, p, d, k, op_ in
                zip(spatial, stride, padding, dilation, ks, output_padding))
    if any(v <= 0 for v in out):
        raise RuntimeError(f"{op}: the computed output size {out} is too small (input "
                           f"{_fmt(input.shape)}, weight {_fmt(weight.shape)}, stride {stride}, "
                           f"padding {padding}, dilation {dilation})")
    pads2 = _lift(tuple((p, p) for p in padding), nd, (0, 0))
    geom = (_lift(stride, nd, 1), pads2[0] + pads2[1], _lift(dilation, nd, 1), groups)
    w = weight.unsqueeze(2) if nd == 1 else weight
    y = _ConvT.apply(_batched(input, nd), w, geom, _lift(out, nd, 1))
    return _unbatched(_add_bias(y, bias), input, nd)


# ---- public ops -------------------------------------------------------------------------------

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    ``input`` (N, C, H, W) or (C, H, W); ``weight`` (O, C/groups, kH, kW); ``padding`` an int,
    a pair, ``'valid'`` or ``'same'`` (stride 1 only; an odd total goes one more to the
    bottom/right, as PyTorch). Output size ``(H + 2p - d(k-1) - 1) // s + 1``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.conv2d(gm.ones(1, 2, 5, 5), gm.ones(4, 2, 3, 3), padding=1).shape
    gmcore.Size([1, 4, 5, 5])
    """
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D cross-correlation: ``input`` (N, C, L) or (C, L), ``weight`` (O, C/groups, k).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.conv1d(gm.ones(2, 3, 10), gm.ones(5, 3, 3), dilation=2).shape
    gmcore.Size([2, 5, 6])
    """
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """2-D transposed convolution (the gradient of ``conv2d`` w.r.t. its input).

    ``weight`` is (C_in, C_out/groups, kH, kW) as PyTorch; output size
    ``(H - 1) s - 2p + d (k - 1) + output_padding + 1``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.conv_transpose2d(gm.ones(1, 4, 3, 3), gm.ones(4, 2, 4, 4), stride=2, padding=1).shape
    gmcore.Size([1, 2, 6, 6])
    """
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """1-D transposed convolution; ``weight`` is (C_in, C_out/groups, k).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.conv_transpose1d(gm.ones(1, 3, 5), gm.ones(3, 2, 4), stride=2).shape
    gmcore.Size([1, 2, 12])
    """
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)
