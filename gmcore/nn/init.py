"""Parameter initialisation, as ``torch.nn.init``: every function fills a tensor in place.

They run under ``no_grad`` straight on the tensor's array (so a Parameter keeps its identity
and its version counter is bumped), draw from ``generator`` (a ``gmcore.Generator``) or the
default generator of the tensor's device, and return the tensor. The formulas (gains, fans,
bounds) are PyTorch's, so a layer initialised here has the same distributions as in PyTorch.

>>> import gmcore as gm
>>> w = gm.empty(256, 128)
>>> _ = gm.nn.init.kaiming_uniform_(w, a=5 ** 0.5, generator=gm.Generator().manual_seed(0))
>>> bool(w.abs().max() <= 1 / 128 ** 0.5)
True
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import backend
from ..random import _generator_for
from ..tensor import Tensor

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "eye_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
           "orthogonal_", "trunc_normal_"]

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d")


def _check(tensor, op):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"init.{op}: expected a gmcore Tensor, got {type(tensor).__name__}")
    if tensor.data.dtype.kind != "f":
        raise TypeError(f"init.{op}: expected a floating-point tensor, got {tensor.dtype}")


def _fill(tensor, values):
    """Write ``values`` (an array or scalar) into the tensor's memory; the tensor stays the
    same object, and views of it see the change."""
    tensor.data[...] = values
    tensor._version.value += 1
    return tensor


def _gen(tensor, generator):
    return _generator_for(generator, tensor.device)


def _draw(tensor, generator, kind, a, b):
    """Draw an array of the tensor's shape/dtype/device: kind 'uniform' on [a, b) or 'normal'
    with mean a and std b."""
    g = _gen(tensor, generator)
    shape = tuple(tensor.shape)
    with backend.device_context(tensor.device):
        if kind == "uniform":
            return g.uniform(shape, float(a), float(b), tensor.data.dtype)
        return g.normal(shape, float(a), float(b), tensor.data.dtype)


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity (PyTorch's table).

    linear/conv/sigmoid: 1; tanh: 5/3; relu: sqrt(2); leaky_relu: sqrt(2 / (1 + slope^2)) with
    ``param`` the negative slope (default 0.01); selu: 3/4.

    >>> import gmcore as gm
    >>> round(gm.nn.init.calculate_gain("leaky_relu", 0.2), 5)
    1.38675
    """
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, (int, float)):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor):
    """``(fan_in, fan_out)``: dim 1 and dim 0 times the receptive field (dims 2+)."""
    if tensor.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         f"dimensions (got shape {tuple(tensor.shape)})")
    receptive = 1
    for s in tensor.shape[2:]:
        receptive *= s
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with U(a, b).

    >>> import gmcore as gm
    >>> w = gm.nn.init.uniform_(gm.empty(1000), -2, 2)
    >>> bool(w.min() >= -2) and bool(w.max() < 2)
    True
    """
    _check(tensor, "uniform_")
    return _fill(tensor, _draw(tensor, generator, "uniform", a, b))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with N(mean, std^2).

    >>> import gmcore as gm
    >>> w = gm.nn.init.normal_(gm.empty(20000), 3.0, 0.5, generator=gm.Generator().manual_seed(0))
    >>> round(w.mean().item(), 1), round(w.std().item(), 1)
    (3.0, 0.5)
    """
    _check(tensor, "normal_")
    return _fill(tensor, _draw(tensor, generator, "normal", mean, std))


def constant_(tensor, val):
    """Fill with ``val``.

    >>> import gmcore as gm
    >>> gm.nn.init.constant_(gm.empty(3), 0.5).tolist()
    [0.5, 0.5, 0.5]
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"init.constant_: expected a gmcore Tensor, got {type(tensor).__name__}")
    return _fill(tensor, val)


def zeros_(tensor):
    """Fill with 0."""
    return constant_(tensor, 0)


def ones_(tensor):
    """Fill with 1."""
    return constant_(tensor, 1)


def eye_(tensor):
    """Fill a 2-D tensor with the identity (ones on the diagonal, as ``torch.nn.init.eye_``)."""
    if not isinstance(tensor, Tensor) or tensor.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    xp = tensor._xp()
    return _fill(tensor, xp.eye(*tensor.shape, dtype=tensor.data.dtype))


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot uniform: U(-b, b) with ``b = gain * sqrt(6 / (fan_in + fan_out))``.

    >>> import gmcore as gm
    >>> w = gm.nn.init.xavier_uniform_(gm.empty(30, 20))
    >>> bool(w.abs().max() <= (6 / 50) ** 0.5)
    True
    """
    _check(tensor, "xavier_uniform_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return _fill(tensor, _draw(tensor, generator, "uniform", -bound, bound))


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot normal: N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    _check(tensor, "xavier_normal_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return _fill(tensor, _draw(tensor, generator, "normal", 0.0, std))


def _kaiming_std(tensor, a, mode, nonlinearity, op):
    _check(tensor, op)
    if 0 in tuple(tensor.shape):
        warnings.warn(f"Initializing zero-element tensors is a no-op ({op})")
        return None
    fan = _calculate_correct_fan(tensor, mode)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He uniform: U(-b, b) with ``b = gain * sqrt(3 / fan)``; ``a`` is the leaky-ReLU slope
    used for the gain; ``mode`` picks fan_in (forward variance) or fan_out (backward).

    ``kaiming_uniform_(w, a=sqrt(5))`` is the default of Linear and Conv layers.

    >>> import gmcore as gm
    >>> w = gm.nn.init.kaiming_uniform_(gm.empty(64, 50), nonlinearity="relu")
    >>> bool(w.abs().max() <= (6 / 50) ** 0.5)
    True
    """
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    if std is None:
        return tensor
    bound = math.sqrt(3.0) * std
    return _fill(tensor, _draw(tensor, generator, "uniform", -bound, bound))


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He normal: N(0, std^2) with ``std = gain / sqrt(fan)``."""
    std = _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_normal_")
    if std is None:
        return tensor
    return _fill(tensor, _draw(tensor, generator, "normal", 0.0, std))


def orthogonal_(tensor, gain=1, generator=None):
    """A (semi-)orthogonal matrix (Saxe et al. 2013): QR of a Gaussian matrix with the signs of
    R's diagonal folded into Q (so Q is Haar-distributed), reshaped to the tensor, times ``gain``.
    Dims 1+ are flattened: rows = shape[0], cols = numel / rows.

    >>> import gmcore as gm
    >>> w = gm.nn.init.orthogonal_(gm.empty(3, 5))
    >>> bool(((w @ w.T) - gm.eye(3)).abs().max() < 1e-5)
    True
    """
    _check(tensor, "orthogonal_")
    if tensor.ndim < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    g = _gen(tensor, generator)
    xp = tensor._xp()
    with backend.device_context(tensor.device):
        # the QR runs in float64 at least (float16/32 QR of a tall matrix loses orthogonality)
        flat = g.normal((rows, cols), 0.0, 1.0, np.float64)
        if rows < cols:
            flat = flat.T
        q, r = xp.linalg.qr(flat)
        sign = xp.sign(xp.diagonal(r))
        sign = backend.where(sign == 0, 1.0, sign)  # a zero pivot has no sign: keep the column
        q = q * sign
        if rows < cols:
            q = q.T
        values = (q * gain).reshape(tuple(tensor.shape)).astype(tensor.data.dtype)
    return _fill(tensor, values)


def _erfinv(y):
    """Inverse error function of an array in (-1, 1): Giles' (2010) single-precision
    polynomial, then two Newton steps on ``erf`` to reach float64 accuracy."""
    from ..functional._special import erf

    xp = backend.xp_of(y)
    w = -xp.log((1.0 - y) * (1.0 + y))
    wc = xp.minimum(w, 5.0) - 2.5
    p = 2.81022636e-08
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
              -0.00417768164, 0.246640727, 1.50140941):
        p = c + p * wc
    wt = xp.sqrt(xp.maximum(w, 5.0)) - 3.0
    q = -0.000200214257
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
              0.00943887047, 1.00167406, 2.83297682):
        q = c + q * wt
    x = backend.where(w < 5.0, p, q) * y
    for _ in range(2):
        x = x - (erf(x) - y) / (2.0 / math.sqrt(math.pi) * xp.exp(-x * x))
    return x


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """N(mean, std^2) truncated to ``[a, b]`` (absolute bounds, not in units of std), by the
    inverse CDF of a uniform draw on ``[cdf(a), cdf(b)]`` as PyTorch does.

    >>> import gmcore as gm
    >>> w = gm.nn.init.trunc_normal_(gm.empty(1000), std=0.02, a=-0.03, b=0.03)
    >>> bool(w.abs().max() <= 0.03)
    True
    """
    _check(tensor, "trunc_normal_")
    if not a < b:
        raise ValueError(f"trunc_normal_: expected a < b, got a={a}, b={b}")
    if std <= 0:
        raise ValueError(f"trunc_normal_: std must be positive, got {std}")
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
                      "The distribution of values may be incorrect.", stacklevel=2)

    def cdf(x):  # standard normal CDF
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
    g = _gen(tensor, generator)
    xp = tensor._xp()
    with backend.device_context(tensor.device):
        u = g.uniform(tuple(tensor.shape), 2 * lo - 1, 2 * hi - 1, np.float64)
        tiny = np.finfo(np.float64).eps
        u = xp.clip(u, -1.0 + tiny, 1.0 - tiny)
        x = _erfinv(u) * (std * math.sqrt(2.0)) + mean
        x = xp.clip(x, a, b)
    return _fill(tensor, x.astype(tensor.data.dtype))
