"""``linear``: ``input @ weight.T + bias``.

One Function rather than a composite of matmul, transpose and add: the weight gradient comes
out as ``g.T @ x`` (contiguous, ready for ``.grad``) and the bias gradient as one row sum, with
no transposed views or broadcast reductions to copy. The backward is written with tensor ops,
so gradients of any order still work.
"""
from ...autograd import Function
from ._util import check_tensor


class Linear(Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        out = x @ w.T
        if b is not None:
            out += b  # fresh array: add the bias in place
        return out

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = g @ w
        g2 = g.reshape(-1, g.shape[-1]) if g.ndim != 2 else g
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
            gw = g2.mT @ x2
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb

__all__ = ["linear"]


def linear(input, weight, bias=None):
    """Affine map over the last dimension, as ``torch.nn.functional.linear``.

    ``input`` (*, in_features), ``weight`` (out_features, in_features) or (in_features,),
    ``bias`` (out_features,) or broadcastable.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.linear(gm.ones(2, 3), gm.ones(4, 3), gm.zeros(4)).tolist()
    [[3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0]]
    """
    check_tensor(input, "input", "linear")
    check_tensor(weight, "weight", "linear")
    if weight.ndim not in (1, 2):
        raise RuntimeError(f"linear: weight must be 1-D or 2-D, got shape {tuple(weight.shape)}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[-1]:
        rows = input.numel() // input.shape[-1] if input.ndim and input.shape[-1] else 1
        k = input.shape[-1] if input.ndim else 1
        raise RuntimeError(f"linear: mat1 and mat2 shapes cannot be multiplied ({rows}x{k} and "
                           f"{weight.shape[-1]}x{weight.shape[0] if weight.ndim == 2 else 1}): "
                           f"input {tuple(input.shape)}, weight {tuple(weight.shape)}")
    if weight.ndim == 2 and input.ndim >= 1 and input.dtype == weight.dtype and (
            bias is None or (bias.shape == (weight.shape[0],) and bias.dtype == weight.dtype)):
        return Linear.apply(input, weight, bias)
    # the general cases (1-D weight, broadcastable bias, mixed dtypes) as a composite
    out = input @ (weight.t() if weight.ndim == 2 else weight)
    return out if bias is None else out + bias
