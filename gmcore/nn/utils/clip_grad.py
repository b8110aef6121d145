"""Gradient clipping: ``clip_grad_norm_`` and ``clip_grad_value_`` (torch.nn.utils)."""
import math

import numpy as np

from ...tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _vector_norm(a, p):
    """The p-norm of one gradient array, reduced in its dtype (float64 stays exact)."""
    xp = np if type(a) is np.ndarray else __import__("cupy")
    if p == 2.0:
        flat = a.reshape(-1)
        return xp.sqrt(xp.dot(flat, flat)) if a.dtype.kind == "f" and a.dtype.itemsize >= 4 \
            else xp.sqrt(xp.sum(xp.square(a.astype(np.float32))))
    if p == math.inf:
        return xp.max(xp.abs(a)) if a.size else xp.zeros((), a.dtype)
    if p == -math.inf:
        return xp.min(xp.abs(a)) if a.size else xp.zeros((), a.dtype)
    if p == 0:
        return xp.asarray(xp.count_nonzero(a), dtype=a.dtype)
    if p == 1.0:
        return xp.sum(xp.abs(a))
    return xp.sum(xp.abs(a) ** p) ** (1.0 / p)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale gradients in place so that their joint ``norm_type``-norm is at most ``max_norm``.

    The joint norm is the norm of the per-tensor norms; gradients are multiplied by
    ``min(1, max_norm / (total_norm + 1e-6))`` (PyTorch's rule). Returns the total norm (before
    clipping) as a 0-d tensor. ``norm_type`` may be ``float('inf')``.

    >>> import gmcore as gm
    >>> from gmcore.nn.utils import clip_grad_norm_
    >>> w = gm.zeros(2, requires_grad=True)
    >>> w.grad = gm.tensor([3.0, 4.0])
    >>> clip_grad_norm_([w], max_norm=1.0).item()
    5.0
    >>> [round(x, 4) for x in w.grad.tolist()]
    [0.6, 0.8]
    """
    norm_type = float(norm_type)
    max_norm = float(max_norm)
    grads = _grads(parameters)
    if not grads:
        return Tensor(np.zeros((), np.float32))
    first = grads[0].data
    xp = np if type(first) is np.ndarray else __import__("cupy")
    norms = xp.stack([xp.asarray(_vector_norm(g.data, norm_type), dtype=first.dtype)
                      for g in grads])
    total = _vector_norm(norms, norm_type)
    total_f = float(total)
    if error_if_nonfinite and not math.isfinite(total_f):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` "
                           "is non-finite, so it cannot be clipped. To disable this error and "
                           "scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    coef = xp.asarray(max_norm, dtype=first.dtype) / (total + xp.asarray(1e-6, first.dtype))
    if not bool(coef >= 1.0):  # also true for NaN: PyTorch multiplies by NaN then, so do we
        for g in grads:
            g.data *= coef.astype(g.data.dtype)
            g._version.value += 1
    return Tensor(xp.asarray(total, dtype=first.dtype))


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place.

    >>> import gmcore as gm
    >>> from gmcore.nn.utils import clip_grad_value_
    >>> w = gm.zeros(3, requires_grad=True)
    >>> w.grad = gm.tensor([-2.0, 0.5, 3.0])
    >>> clip_grad_value_([w], 1.0)
    >>> w.grad.tolist()
    [-1.0, 0.5, 1.0]
    """
    c = float(clip_value)
    for g in _grads(parameters):
        xp = np if type(g.data) is np.ndarray else __import__("cupy")
        xp.clip(g.data, -c, c, out=g.data)
        g._version.value += 1
