"""Normalization: ``layer_norm``, ``group_norm``, ``batch_norm``, ``instance_norm``.

float32/float64 inputs run the ``norm`` kernel family (gmcore/functional/_norm.py: fused
statistics, a one-pass fused backward, and a tensor-op backward when ``create_graph=True``, so
they stay differentiable to any order). Other dtypes, or parameters of another dtype than the
input, run the composites of tensor ops below (two-pass mean and biased variance, then
``(var + eps) ** -0.5``).
"""
import math

from ...autograd import no_grad
from ...functional import _norm
from ._util import check_float, check_tensor

__all__ = ["layer_norm", "group_norm", "batch_norm", "instance_norm"]


def _normalize(x, dims, eps):
    mean = x.mean(dims, keepdim=True)
    xc = x - mean
    var = (xc * xc).mean(dims, keepdim=True)  # biased (correction=0), as PyTorch's norms
    return xc * (var + eps) ** -0.5


def _channel_shape(x):
    """(1, C, 1, ...) for broadcasting a per-channel vector over (N, C, *)."""
    return (1, -1) + (1,) * (x.ndim - 2)


def _use_kernels(input, *params):
    """The kernels take float32/float64 with parameters of the input's dtype."""
    dt = input.data.dtype
    return dt in _norm.KERNEL_DTYPES and all(p is None or p.data.dtype == dt for p in params)


def _affine(y, weight, bias, shape):
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the trailing ``normalized_shape`` dims, then scale and shift.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> y = F.layer_norm(gm.tensor([[1., 2., 3.]]), (3,))
    >>> [round(v, 4) for v in y[0].tolist()]
    [-1.2247, 0.0, 1.2247]
    """
    op = "layer_norm"
    check_float(input, "input", op)
    shape = (int(normalized_shape),) if not isinstance(normalized_shape, (tuple, list)) else \
        tuple(int(s) for s in normalized_shape)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != shape:
        raise RuntimeError(f"{op}: Given normalized_shape={list(shape)}, expected input with "
                           f"shape [*, {', '.join(map(str, shape))}], but got input of size "
                           f"{list(input.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(t, name, op)
            if tuple(t.shape) != shape:
                raise RuntimeError(f"{op}: expected {name} of shape {shape}, got "
                                   f"{tuple(t.shape)}")
    if _use_kernels(input, weight, bias):
        rows = math.prod(input.shape[:input.ndim - k])
        return _norm.row_norm(input, weight, bias, rows, 1, math.prod(shape), 1, eps)
    y = _normalize(input, tuple(range(input.ndim - k, input.ndim)), eps)
    return _affine(y, weight, bias, shape)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalize (N, C, *) over groups of ``C / num_groups`` channels and all spatial positions.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.group_norm(gm.randn(2, 6, 5), 3).shape
    gmcore.Size([2, 6, 5])
    """
    op = "group_norm"
    check_float(input, "input", op)
    if input.ndim < 2:
        raise RuntimeError(f"{op}: expected an input of shape (N, C, *), got "
                           f"{tuple(input.shape)}")
    n, c = input.shape[0], input.shape[1]
    g = int(num_groups)
    if g < 1 or c % g:
        raise RuntimeError(f"{op}: Expected number of channels in input to be divisible by "
                           f"num_groups, but got input of shape {list(input.shape)} and "
                           f"num_groups={num_groups}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(t, name, op)
            if tuple(t.shape) != (c,):
                raise RuntimeError(f"{op}: expected {name} of shape ({c},), got "
                                   f"{tuple(t.shape)}")
    if _use_kernels(input, weight, bias):
        spatial = math.prod(input.shape[2:])
        return _norm.row_norm(input, weight, bias, n * g, g, c // g, spatial, eps)
    y = _normalize(input.reshape((n, g, -1)), (2,), eps).reshape(tuple(input.shape))
    return _affine(y, weight, bias, _channel_shape(input))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalization over (N, C, *), as ``torch.nn.functional.batch_norm``.

    Training normalizes with the batch statistics (biased variance) and, when running stats
    are given, updates them in place: ``r = (1 - momentum) r + momentum * stat`` with the
    *unbiased* batch variance. Evaluation normalizes with the running stats.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> rm, rv = gm.zeros(2), gm.ones(2)
    >>> y = F.batch_norm(gm.tensor([[1., 2.], [3., 6.]]), rm, rv, training=True)
    >>> [round(v, 4) for v in rm.tolist()]
    [0.2, 0.4]
    """
    op = "batch_norm"
    check_float(input, "input", op)
    if input.ndim < 2:
        raise RuntimeError(f"{op}: expected an input of shape (N, C, *), got "
                           f"{tuple(input.shape)}")
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(t, name, op)
            if tuple(t.shape) != (c,):
                raise RuntimeError(f"{op}: expected {name} of shape ({c},) (one per channel of "
                                   f"input {tuple(input.shape)}), got {tuple(t.shape)}")
    shape = _channel_shape(input)
    dims = (0,) + tuple(range(2, input.ndim))
    if training:
        count = input.numel() // max(c, 1)
        if count <= 1:
            raise ValueError(f"{op}: Expected more than 1 value per channel when training, got "
                             f"input size {list(input.shape)}")
        if running_mean is not None or running_var is not None:
            if momentum is None:
                raise ValueError(f"{op}: momentum=None (cumulative average) needs the batch "
                                 "count; pass the averaging factor as momentum (as the "
                                 "BatchNorm module does)")
        if _use_kernels(input, weight, bias):
            y, stats = _norm.chan_norm(input, weight, bias, eps)
            mean, var = stats["mean"], stats["var"]
        else:
            mean_t = input.mean(dims, keepdim=True)
            xc = input - mean_t
            var_t = (xc * xc).mean(dims, keepdim=True)
            y = _affine(xc * (var_t + eps) ** -0.5, weight, bias, shape)
            mean, var = mean_t.data.reshape(c), var_t.data.reshape(c)
        if running_mean is not None or running_var is not None:
            m = float(momentum)
            with no_grad():
                if running_mean is not None:
                    _blend_(running_mean, mean, m)
                if running_var is not None:
                    _blend_(running_var, var * (count / (count - 1)), m)  # unbiased, as torch
        return y
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError(f"{op}: running_mean and running_var must be given when "
                               "training=False")
        if _use_kernels(input, weight, bias):
            return _norm.chan_norm(input, weight, bias, eps, running_mean, running_var,
                                   train=False)[0]
        # buffers are constants here; follow the input's dtype (a float64 buffer must not
        # silently turn a float32 network's activations into float64)
        rm = running_mean.detach().to(input.dtype).reshape(shape)
        rv = running_var.detach().to(input.dtype).reshape(shape)
        y = (input - rm) * (rv + eps) ** -0.5
    return _affine(y, weight, bias, shape)


def _blend_(buf, stat, momentum):
    """``buf = (1 - momentum) * buf + momentum * stat`` in place (a buffer update, no graph);
    ``stat`` is an array."""
    buf.data[...] = (1.0 - momentum) * buf.data + momentum * stat.astype(buf.data.dtype)
    buf._version.value += 1


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Normalize each (sample, channel) over its spatial positions (``use_input_stats=True``).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.instance_norm(gm.randn(2, 3, 4, 4)).shape
    gmcore.Size([2, 3, 4, 4])
    """
    op = "instance_norm"
    check_float(input, "input", op)
    if input.ndim < 3:
        raise RuntimeError(f"{op}: expected an input of shape (N, C, *spatial), got "
                           f"{tuple(input.shape)}")
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    n, c = input.shape[0], input.shape[1]
    if _use_kernels(input, weight, bias):  # group norm with one channel per group
        y = _norm.row_norm(input, weight, bias, n * c, c, 1, math.prod(input.shape[2:]), eps)
    else:
        y = _affine(_normalize(input, tuple(range(2, input.ndim)), eps), weight, bias,
                    _channel_shape(input))
    if running_mean is not None or running_var is not None:
        # as PyTorch: running stats get the batch mean of the per-instance statistics
        flat = input.detach().reshape((n, c, -1))
        count = flat.shape[-1]
        mean = flat.mean(2)
        xc = flat - mean.unsqueeze(2)
        var = (xc * xc).mean(2) * (count / max(count - 1, 1))
        with no_grad():
            if running_mean is not None:
                _blend_(running_mean, mean.mean(0).data, float(momentum))
            if running_var is not None:
                _blend_(running_var, var.mean(0).data, float(momentum))
    return y
