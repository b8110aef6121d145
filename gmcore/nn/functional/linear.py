"""``linear``: ``input @ weight.T + bias`` (composite of matmul and add: any-order gradients)."""
from ._util import check_tensor

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
    out = input @ (weight.t() if weight.ndim == 2 else weight)
    return out if bias is None else out + bias
