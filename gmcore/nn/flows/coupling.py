"""Coupling layers (NICE, Dinh et al. 2014; RealNVP, Dinh et al. 2016; Glow, Kingma & Dhariwal
2018): split the input into a conditioning part ``x_a`` (passed through unchanged) and a
transformed part ``x_b``; a network reads ``x_a`` and gives a shift (and a log-scale) for ``x_b``:

    additive (NICE):   y_b = x_b + t(x_a)                 logdet 0
    affine (RealNVP):  y_b = x_b * s(x_a) + t(x_a)        logdet = sum log s

The element-wise map and its log-determinant run in the fused ``coupling`` kernel
(:func:`gmcore.nn.functional.affine_coupling`), which sees only the transformed entries, so every
scale function of the kernel (``exp``, ``sigmoid``, ``tanh``) works with every mask.

Masks (which entries condition), for inputs (B, C, *spatial) or flat vectors (B, D):

* ``"channel"``: with ``k = C // 2``, parity 0 conditions on channels ``[:k]`` and transforms
  ``[k:]``; parity 1 the other way round. The network gets ``x_a`` alone, shape (B, C_a, ...),
  and returns (B, 2 * C_b, ...) (log-scale raw, then shift) or (B, C_b, ...) for additive
  coupling. On (B, D) vectors this is the half split. :func:`channel_split` gives (C_a, C_b).
* ``"checkerboard"``: the entries where the sum of spatial indices (the index itself on vectors)
  plus parity is even condition. The network gets ``x * mask`` (full shape) and returns
  (B, 2C, ...) or (B, C, ...); only its entries at transformed positions are used.

``net`` is any Module; with a ``context`` it is called as ``net(x_a, context)``.

>>> import gmcore as gm
>>> from gmcore.nn.flows import AffineCoupling, mlp_conditioner
>>> _ = gm.manual_seed(0)
>>> layer = AffineCoupling(mlp_conditioner(1, 2, hidden=8, zero_init=False), mask="channel")
>>> x = gm.randn(4, 2)
>>> z, logdet = layer(x)
>>> bool((z[:, 0] == x[:, 0]).all()), logdet.shape          # x_a passes through
(True, gmcore.Size([4]))
>>> x2, _ = layer.inverse(z)
>>> bool(((x2 - x).abs() < 1e-6).all())
True
"""
from __future__ import annotations

import math

import numpy as np

from ... import creation
from ...functional import shape as _shape
from .. import functional as F
from ..activation import ReLU
from ..container import Sequential
from ..conv import Conv2d
from ..linear import Linear
from ..module import Module
from ..parameter import Parameter
from .base import Flow

__all__ = ["AffineCoupling", "AdditiveCoupling", "Scaling", "channel_split", "checkerboard_mask",
           "conv_conditioner", "mlp_conditioner"]

MASKS = ("channel", "checkerboard")


def channel_split(num_channels: int, parity: int = 0) -> tuple:
    """``(C_a, C_b)``: conditioning and transformed channel counts of a ``"channel"`` mask.

    >>> channel_split(3, 0), channel_split(3, 1)
    ((1, 2), (2, 1))
    """
    c = int(num_channels)
    k = c // 2
    if k == 0:
        raise ValueError(f"a channel mask needs at least 2 channels (or features), got {c}; "
                         "squeeze the input first or use a checkerboard mask")
    return (k, c - k) if parity % 2 == 0 else (c - k, k)


def checkerboard_mask(event_shape, parity: int = 0) -> np.ndarray:
    """Boolean mask over one example's shape, True where an entry conditions: the sum of the
    spatial indices (the index itself on vectors) plus ``parity`` is even; same for every channel.

    >>> checkerboard_mask((1, 2, 3)).astype(int).tolist()
    [[[1, 0, 1], [0, 1, 0]]]
    >>> checkerboard_mask((4,), parity=1).astype(int).tolist()
    [0, 1, 0, 1]
    """
    shape = tuple(int(s) for s in event_shape)
    if len(shape) == 1:
        return (np.arange(shape[0]) + parity) % 2 == 0
    grids = np.indices(shape[1:]).sum(0)
    return np.broadcast_to((grids + parity) % 2 == 0, shape).copy()


def _zero_last(layer):
    # the last layer starts at zero: the coupling starts as the identity (s = 1, t = 0 for exp
    # and tanh), which keeps deep flows well conditioned at the start of training (Glow)
    layer.weight.data[...] = 0
    layer.bias.data[...] = 0
    return layer


def conv_conditioner(in_channels, out_channels, hidden=64, zero_init=True):
    """Glow's coupling network: conv 3x3 -> ReLU -> conv 1x1 -> ReLU -> conv 3x3, the last one
    zero-initialised (``zero_init``) so that the coupling starts near the identity.

    >>> import gmcore as gm
    >>> conv_conditioner(2, 4, hidden=8)(gm.randn(1, 2, 4, 4)).shape
    gmcore.Size([1, 4, 4, 4])
    """
    last = Conv2d(hidden, out_channels, 3, padding=1)
    return Sequential(Conv2d(in_channels, hidden, 3, padding=1), ReLU(),
                      Conv2d(hidden, hidden, 1), ReLU(),
                      _zero_last(last) if zero_init else last)


def mlp_conditioner(in_features, out_features, hidden=64, layers=2, zero_init=True):
    """An MLP with ``layers`` hidden layers of ``hidden`` ReLU units, the output layer
    zero-initialised (``zero_init``): the conditioner of couplings on flat vectors.

    >>> import gmcore as gm
    >>> mlp_conditioner(3, 4, hidden=8)(gm.randn(2, 3)).tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    mods, width = [], in_features
    for _ in range(int(layers)):
        mods += [Linear(width, hidden), ReLU()]
        width = hidden
    last = Linear(width, out_features)
    return Sequential(*mods, _zero_last(last) if zero_init else last)


class _Coupling(Flow):
    """The split / merge machinery shared by the additive and affine couplings."""

    def __init__(self, net: Module, mask: str = "channel", parity: int = 0):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"{type(self).__name__}: mask must be one of {MASKS}, got {mask!r}")
        self.net = net
        self.mask = mask
        self.parity = int(parity) % 2
        self._boards = {}   # event shape -> (index of transformed entries, merge order, mask)

    def _board(self, x):
        key = tuple(x.shape[1:])
        if key not in self._boards:
            m = checkerboard_mask(key, self.parity)
            flat = m.reshape(-1)
            idx_a, idx_b = np.nonzero(flat)[0], np.nonzero(~flat)[0]
            self._boards[key] = (idx_a, idx_b, np.argsort(np.concatenate([idx_a, idx_b])), m)
        idx_a, idx_b, order, m = self._boards[key]
        return idx_a, idx_b, order, creation.tensor(m, dtype=x.dtype, device=x.device)

    def _params(self, cond, context, want):
        h = self.net(cond) if context is None else self.net(cond, context)
        if tuple(h.shape) != want:
            raise ValueError(f"{type(self).__name__}: the coupling network returned shape "
                             f"{tuple(h.shape)}, expected {want} ({self._parts} x the channels "
                             f"it transforms)")
        return h

    def _run(self, x, context, inverse):
        if x.ndim < 2:
            raise ValueError(f"{type(self).__name__}: expected input of shape (B, C, ...) or "
                             f"(B, D), got {tuple(x.shape)}")
        b, c, rest, k = x.shape[0], x.shape[1], tuple(x.shape[2:]), self._parts
        if self.mask == "channel":
            c_a, c_b = channel_split(c, self.parity)
            if self.parity == 0:
                x_a, x_b = x[:, :c_a], x[:, c_a:]
            else:
                x_b, x_a = x[:, :c_b], x[:, c_b:]
            h = self._params(x_a, context, (b, k * c_b) + rest)
            y_b, ld = self._couple(x_b, [h[:, i * c_b:(i + 1) * c_b] for i in range(k)], inverse)
            return _shape.cat([x_a, y_b] if self.parity == 0 else [y_b, x_a], 1), ld
        idx_a, idx_b, order, m = self._board(x)
        flat = x.reshape(b, -1)
        h = self._params(x * m, context, (b, k * c) + rest)
        # each group of C output channels has x's layout: flatten it, keep the transformed entries
        h = h.reshape(b, k, -1)[:, :, idx_b]
        y_b, ld = self._couple(flat[:, idx_b], [h[:, i] for i in range(k)], inverse)
        y = _shape.cat([flat[:, idx_a], y_b], 1)[:, order]
        return y.reshape(tuple(x.shape)), ld

    def forward(self, x, context=None):
        return self._run(x, context, False)

    def inverse(self, z, context=None):
        return self._run(z, context, True)

    def extra_repr(self):
        return f"mask={self.mask!r}, parity={self.parity}"


class AdditiveCoupling(_Coupling):
    """NICE's additive coupling ``y_b = x_b + t(x_a)`` (volume preserving: logdet 0); the
    network returns the shift (see the module docstring for the mask conventions).

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> layer = AdditiveCoupling(mlp_conditioner(4, 4, hidden=8, zero_init=False),
    ...                          mask="checkerboard")
    >>> z, logdet = layer(gm.randn(3, 4))
    >>> logdet.tolist()
    [0.0, 0.0, 0.0]
    """

    _parts = 1

    def _couple(self, x_b, h, inverse):
        return F.additive_coupling(x_b, h[0], inverse=inverse)


class AffineCoupling(_Coupling):
    """RealNVP's / Glow's affine coupling ``y_b = x_b * s + t`` with ``(r, t)`` from the network
    (its output channels split in two halves: raw log-scale ``r``, then shift ``t``) and
    ``s = scale_fn(r)`` as :func:`gmcore.nn.functional.affine_coupling` defines it (``"exp"``,
    ``"sigmoid"`` (Glow's code), ``"tanh"`` (bounded log-scale)). Example in the module docstring.
    """

    _parts = 2

    def __init__(self, net: Module, mask: str = "channel", parity: int = 0, scale_fn: str = "exp"):
        super().__init__(net, mask, parity)
        if scale_fn not in F.SCALE_FNS:
            raise ValueError(f"AffineCoupling: scale_fn must be one of {sorted(F.SCALE_FNS)}, "
                             f"got {scale_fn!r}")
        self.scale_fn = scale_fn

    def _couple(self, x_b, h, inverse):
        return F.affine_coupling(x_b, h[0], h[1], scale_fn=self.scale_fn, inverse=inverse)

    def extra_repr(self):
        return f"{super().extra_repr()}, scale_fn={self.scale_fn!r}"


class Scaling(Flow):
    """NICE's diagonal scaling layer: ``y = x * exp(log_scale)`` with one learned log-scale per
    entry of the event (``shape``), ``logdet = sum(log_scale)`` for every example.

    >>> import gmcore as gm
    >>> layer = Scaling((2,))
    >>> layer.log_scale.data[...] = [0.0, 1.0]
    >>> y, ld = layer(gm.ones(3, 2))
    >>> [round(v, 4) for v in y[0].tolist()], round(ld[0].item(), 4)
    ([1.0, 2.7183], 1.0)
    """

    def __init__(self, shape, device=None, dtype=None):
        super().__init__()
        self.shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        self.log_scale = Parameter(creation.zeros(self.shape, device=device, dtype=dtype))

    def _run(self, x, sign):
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"Scaling{self.shape}: got input of shape {tuple(x.shape)}")
        s = self.log_scale * sign
        ld = s.sum().reshape(1).expand(x.shape[0])
        return x * s.exp(), ld

    def forward(self, x, context=None):
        return self._run(x, 1.0)

    def inverse(self, z, context=None):
        return self._run(z, -1.0)

    def extra_repr(self):
        return f"shape={self.shape}, {math.prod(self.shape)} scales"
