"""Losses with PyTorch's signatures and ``reduction='mean' | 'sum' | 'none'``.

``mse_loss l1_loss smooth_l1_loss huber_loss binary_cross_entropy
binary_cross_entropy_with_logits nll_loss cross_entropy kl_div``.

Composites of tensor ops (differentiable to any order) except two small Functions: the
clamped log of ``binary_cross_entropy`` and BCE itself, whose input gradient is PyTorch's
``(x - t) / max(x (1 - x), 1e-12)`` (finite at x = 0 and 1) written with tensor ops.
"""
import math

import numpy as np

from ...autograd import Function
from ...backend import xp_of
from ...functional import logsigmoid, where
from ...functional.softmax import CrossEntropy
from ...tensor import Tensor
from ._index import take_along
from ._util import check_float, check_reduction, check_tensor, reduce_loss

__all__ = ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "nll_loss", "cross_entropy", "kl_div"]

_LOG_FLOOR = -100.0  # PyTorch clamps BCE's logs here so that log(0) stays finite
_LOG_FLOOR_X = math.exp(_LOG_FLOOR)


def _check_pair(op, input, target, same_shape=False):
    check_float(input, "input", op)
    check_tensor(target, "target", op)
    if same_shape and tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{op}: Using a target size ({tuple(target.shape)}) that is different "
                         f"to the input size ({tuple(input.shape)}) is deprecated. Please ensure "
                         "they have the same size.")


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Squared error ``(input - target)^2``, reduced.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.mse_loss(gm.tensor([1., 2.]), gm.tensor([0., 0.])).item()
    2.5
    """
    _check_pair("mse_loss", input, target)
    d = input - target
    return reduce_loss(d * d, reduction, "mse_loss")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Absolute error ``|input - target|``, reduced.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.l1_loss(gm.tensor([1., -3.]), gm.tensor([0., 0.])).item()
    2.0
    """
    _check_pair("l1_loss", input, target)
    return reduce_loss((input - target).abs(), reduction, "l1_loss")


def huber_loss(input, target, reduction="mean", delta=1.0):
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``; ``d = input - target``.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.huber_loss(gm.tensor([0.5, 3.]), gm.tensor([0., 0.]), reduction="none").tolist()
    [0.125, 2.5]
    """
    _check_pair("huber_loss", input, target)
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    d = input - target
    a = d.abs()
    loss = where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    return reduce_loss(loss, reduction, "huber_loss")


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (L1 when beta = 0).

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.smooth_l1_loss(gm.tensor([0.5, 3.]), gm.tensor([0., 0.]), reduction="none").tolist()
    [0.125, 2.5]
    """
    _check_pair("smooth_l1_loss", input, target)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    d = input - target
    a = d.abs()
    if beta == 0:
        return reduce_loss(a, reduction, "smooth_l1_loss")
    loss = where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)
    return reduce_loss(loss, reduction, "smooth_l1_loss")


# ---- binary cross-entropy -----------------------------------------------------------------------

class _ClampedLog(Function):
    """``max(log x, -100)``; gradient ``1/x`` where the log is not clamped, else 0."""

    @staticmethod
    def forward(ctx, x):
        xp = xp_of(x)
        ctx.save_for_backward(x)
        with np.errstate(divide="ignore"):
            return xp.maximum(xp.log(x), _LOG_FLOOR)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return where(x > _LOG_FLOOR_X, g / x.clamp(min=_LOG_FLOOR_X), 0.0)


class _BinaryCrossEntropy(Function):
    @staticmethod
    def forward(ctx, x, t):
        xp = xp_of(x)
        ctx.save_for_backward(x, t)
        with np.errstate(divide="ignore"):
            lx = xp.maximum(xp.log(x), _LOG_FLOOR)
            l1x = xp.maximum(xp.log1p(-x), _LOG_FLOOR)
        return -(t * lx + (1 - t) * l1x)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        gx = gt = None
        if ctx.needs_input_grad[0]:  # PyTorch's form: finite at x = 0 and x = 1
            gx = g * (x - t) / (x * (1 - x)).clamp(min=1e-12)
        if ctx.needs_input_grad[1]:
            gt = g * (_ClampedLog.apply(1 - x) - _ClampedLog.apply(x))
        return gx, gt


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """``-w [t log x + (1 - t) log(1 - x)]`` with the logs clamped at -100, as PyTorch.

    ``input`` holds probabilities in [0, 1]; ``target`` has the same shape.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> round(F.binary_cross_entropy(gm.tensor([0.5]), gm.tensor([1.])).item(), 4)
    0.6931
    """
    op = "binary_cross_entropy"
    _check_pair(op, input, target, same_shape=True)
    check_reduction(reduction, op)
    xp = input._xp()
    if bool(xp.any((input.data < 0) | (input.data > 1))):
        raise RuntimeError(f"{op}: all elements of input should be between 0 and 1")
    t = target if target.dtype == input.dtype else target.to(input.dtype)
    loss = _BinaryCrossEntropy.apply(input, t)
    if weight is not None:
        loss = loss * weight
    return reduce_loss(loss, reduction, op)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """BCE on logits in the stable form ``(1 - t) x - (1 + (p - 1) t) logsigmoid(x)``.

    ``pos_weight`` (broadcast over the last, class dim) weighs the positive term.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> round(F.binary_cross_entropy_with_logits(gm.tensor([0.]), gm.tensor([1.])).item(), 4)
    0.6931
    """
    op = "binary_cross_entropy_with_logits"
    _check_pair(op, input, target, same_shape=True)
    check_reduction(reduction, op)
    t = target if target.dtype == input.dtype else target.to(input.dtype)
    ls = logsigmoid(input)
    if pos_weight is None:
        loss = (1 - t) * input - ls
    else:
        loss = (1 - t) * input - (1 + (pos_weight - 1) * t) * ls
    if weight is not None:
        loss = loss * weight
    return reduce_loss(loss, reduction, op)


# ---- class-index losses -------------------------------------------------------------------------

def _check_index_target(op, input, target, weight, ignore_index):
    """Validate (input, target) for nll/cross_entropy index mode; return (class_dim, C)."""
    check_tensor(target, "target", op)
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have at least one dimension (classes), got a scalar")
    if target.dtype.is_floating_point or target.data.dtype.kind not in "iu":
        raise RuntimeError(f"{op}: expected an integer (class index) target, got {target.dtype}")
    cdim = 1 if input.ndim >= 2 else 0
    c = input.shape[cdim]
    expected = tuple(input.shape[:cdim]) + tuple(input.shape[cdim + 1:])
    if tuple(target.shape) != expected:
        if input.ndim >= 2 and target.ndim >= 1 and target.shape[0] != input.shape[0]:
            raise ValueError(f"{op}: Expected input batch_size ({input.shape[0]}) to match "
                             f"target batch_size ({target.shape[0]}).")
        raise ValueError(f"{op}: size mismatch (got input: {list(input.shape)}, target: "
                         f"{list(target.shape)}); the target must have the input's shape "
                         "without the class dim")
    if weight is not None:
        check_tensor(weight, "weight", op)
        if tuple(weight.shape) != (c,):
            raise RuntimeError(f"{op}: weight tensor should be defined either for all {c} "
                               f"classes or no classes but got weight tensor of shape: "
                               f"{list(weight.shape)}")
    t = target.data
    xp = xp_of(t)
    bad = (t != ignore_index) & ((t < 0) | (t >= c))
    if bool(xp.any(bad)):
        raise IndexError(f"{op}: Target {int(t[bad].ravel()[0])} is out of bounds (expected "
                         f"class indices in [0, {c}) or ignore_index={ignore_index}).")
    return cdim, c


def _nll(input, target, weight, ignore_index, cdim):
    """Per-element ``-w[t] input[t]`` (0 where ignored) and the per-element weights (raw)."""
    xp = input._xp()
    t = target.data
    valid = t != ignore_index
    safe = xp.where(valid, t, 0).astype(np.int64)
    picked = take_along(input, xp.expand_dims(safe, cdim), cdim).squeeze(cdim)
    w = xp.ones(t.shape, dtype=input.data.dtype) if weight is None else \
        weight.data.astype(input.data.dtype)[safe]
    w = xp.where(valid, w, 0).astype(input.data.dtype)
    # a true select: an ignored position may hold -inf (a log-prob of 0), never 0 * inf
    loss = where(Tensor(valid), -picked * Tensor(w), 0.0)
    return loss, w


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of class ``target`` under log-probabilities ``input``.

    ``input`` (N, C), (N, C, d1, ...) or (C,); ``target`` the same without the class dim.
    ``reduction='mean'`` divides by the summed weights of the non-ignored targets.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.nll_loss(gm.tensor([[-1., -2.], [-3., -4.]]), gm.tensor([0, 1])).item()
    2.5
    """
    op = "nll_loss"
    check_float(input, "input", op)
    check_reduction(reduction, op)
    cdim, _ = _check_index_target(op, input, target, weight, ignore_index)
    loss, w = _nll(input, target, weight, ignore_index, cdim)
    if reduction == "none":
        return loss
    total = loss.sum()
    return total if reduction == "sum" else total / Tensor(w.sum())


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """``nll_loss(log_softmax(input, class_dim), target)``, or soft targets, as PyTorch.

    ``target`` holds class indices (integer, the input's shape without the class dim) or
    class probabilities (floating, the input's shape). ``label_smoothing`` mixes the target
    with the uniform distribution over the C classes.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> round(F.cross_entropy(gm.tensor([[0., 0.]]), gm.tensor([1])).item(), 4)
    0.6931
    """
    op = "cross_entropy"
    check_float(input, "input", op)
    check_tensor(target, "target", op)
    check_reduction(reduction, op)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be between 0.0 and 1.0, got "
                         f"{label_smoothing}")
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have at least one dimension (classes), got a scalar")
    cdim = 1 if input.ndim >= 2 else 0
    c = input.shape[cdim]
    if weight is not None:  # class weights are constants (as PyTorch), in the input's dtype
        check_tensor(weight, "weight", op)
        weight = weight.detach().to(input.dtype)
    if target.dtype.is_floating_point:  # class probabilities
        if tuple(target.shape) != tuple(input.shape):
            raise ValueError(f"{op}: a probability target must have the input's shape "
                             f"{list(input.shape)}, got {list(target.shape)}")
        if weight is not None:
            if tuple(weight.shape) != (c,):
                raise RuntimeError(f"{op}: weight tensor should be defined either for all {c} "
                                   f"classes or no classes but got weight tensor of shape: "
                                   f"{list(weight.shape)}")
        if target.dtype != input.dtype:
            target = target.to(input.dtype)
        logp = input.log_softmax(cdim)
        wshape = (c,) + (1,) * (input.ndim - cdim - 1)
        t = target if label_smoothing == 0 else target * (1 - label_smoothing) + label_smoothing / c
        prod = logp * t if weight is None else logp * t * weight.reshape(wshape)
        loss = -prod.sum(cdim)
        if reduction == "mean":
            return loss.sum() / max(input.numel() // max(c, 1), 1)
        return reduce_loss(loss, reduction, op)
    _check_index_target(op, input, target, weight, ignore_index)
    # class indices: one fused kernel each way (gmcore/functional/softmax.py, the softmax family)
    w = None if weight is None else input._xp().ascontiguousarray(weight.data)
    return CrossEntropy.apply(input, target.data, w, int(ignore_index), float(label_smoothing),
                              reduction, cdim)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Pointwise KL term ``target * (log target - input)`` with ``input`` log-probabilities.

    With ``log_target=True`` the target is given as log-probabilities:
    ``exp(target) * (target - input)``. ``reduction='batchmean'`` divides the sum by the batch
    size (the true KL divergence per sample); ``'mean'`` averages over all elements.

    >>> import gmcore as gm
    >>> import gmcore.nn.functional as F
    >>> F.kl_div(gm.tensor([[0., 0.]]), gm.tensor([[1., 0.]]), reduction="sum").item()
    0.0
    """
    op = "kl_div"
    _check_pair(op, input, target)
    check_reduction(reduction, op, ("mean", "batchmean", "sum", "none"))
    if log_target:
        loss = target.exp() * (target - input)
    else:
        zero = target == 0
        # xlogy(t, t): 0 where t == 0, through a true select (log(0) never reaches the graph)
        tlogt = where(zero, 0.0, target * where(zero, 1.0, target).log())
        loss = tlogt - target * input
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return reduce_loss(loss, reduction, op)
