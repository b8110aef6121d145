"""Dropout layers: ``Dropout`` (elementwise) and ``Dropout1d``/``Dropout2d`` (whole channels).

Active in training mode only; kept values are scaled by ``1 / (1 - p)`` so evaluation needs no
rescaling. ``inplace`` is accepted for PyTorch compatibility; the result is always a new
tensor (in-place ops on autograd leaves are refused by the engine).
"""
from __future__ import annotations

import warnings

from .. import creation
from ..tensor import Tensor
from . import functional as F
from .module import Module

__all__ = ["Dropout", "Dropout1d", "Dropout2d"]


class _DropoutNd(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)
        self.inplace = inplace

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Zero each element with probability ``p`` during training.

    >>> import gmcore as gm
    >>> drop = gm.nn.Dropout(0.5)
    >>> y = drop(gm.ones(1000))
    >>> sorted(set(y.tolist())), drop.eval()(gm.ones(2)).tolist()
    ([0.0, 2.0], [1.0, 1.0])
    """

    def forward(self, input):
        return F.dropout(input, self.p, self.training)


class _ChannelDropout(_DropoutNd):
    _spatial = 0

    def forward(self, input):
        if not isinstance(input, Tensor):
            raise TypeError(f"{type(self).__name__}: expected a gmcore Tensor, got "
                            f"{type(input).__name__}")
        nd = self._spatial
        if input.ndim not in (nd + 1, nd + 2):
            raise ValueError(f"{type(self).__name__}: expected {nd + 1}D (unbatched) or "
                             f"{nd + 2}D (batched) input, got shape {tuple(input.shape)}")
        if nd == 2 and input.ndim == 3:
            # PyTorch reads a 3-D input of dropout2d as (N, C, L) (and warns); do the same
            warnings.warn("Dropout2d: received a 3D input; it is interpreted as (N, C, L) with "
                          "one draw per channel, as PyTorch does (use Dropout1d for that)",
                          stacklevel=2)
            nd = 1
        if not self.training or self.p == 0:
            return input
        if self.p == 1:
            return input * 0
        # one keep/drop draw per (sample, channel), broadcast over the spatial dims
        lead = tuple(input.shape[:input.ndim - nd])
        u = creation.rand(*lead, dtype=input.dtype, device=input.device)
        mask = (u >= self.p).to(input.dtype) * (1.0 / (1.0 - self.p))
        return input * mask.reshape(lead + (1,) * nd)


class Dropout1d(_ChannelDropout):
    """Zero whole channels of (N, C, L) or (C, L) with probability ``p`` during training.

    >>> import gmcore as gm
    >>> y = gm.nn.Dropout1d(0.5)(gm.ones(4, 8, 5))
    >>> bool(((y == 0).all(-1) | (y == 2).all(-1)).all())
    True
    """

    _spatial = 1


class Dropout2d(_ChannelDropout):
    """Zero whole channels (feature maps) of (N, C, H, W) with probability ``p`` during
    training (Tompson et al. 2015). A 3-D input is read as (N, C, L), as PyTorch does.

    >>> import gmcore as gm
    >>> y = gm.nn.Dropout2d(0.5)(gm.ones(2, 6, 3, 3))
    >>> bool(((y == 0).all((-1, -2)) | (y == 2).all((-1, -2))).all())
    True
    """

    _spatial = 2
