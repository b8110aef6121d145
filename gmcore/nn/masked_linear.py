"""``MaskedLinear``: a dense layer whose weight is multiplied by a fixed 0/1 connectivity mask
(MADE, Germain et al. 2015; MAF/IAF's autoregressive networks).

The mask is a buffer (saved in ``state_dict``, moved by ``to()``, never learned). The forward
computes ``x @ (weight * mask).T + bias``, so a masked-out weight has no effect on the output and
gets an exact zero gradient: it keeps its initial value and a later mask may switch it back on
(MADE's connectivity-agnostic training swaps masks between steps).
"""
from __future__ import annotations

import numpy as np

from .. import creation
from ..tensor import Tensor
from . import functional as F
from .linear import Linear

__all__ = ["MaskedLinear"]


class MaskedLinear(Linear):
    """``y = x @ (weight * mask).T + bias``: (*, in_features) -> (*, out_features).

    ``weight``, ``bias`` start as :class:`Linear`'s (PyTorch's init, independent of the mask);
    ``mask`` (out_features, in_features) starts all ones (a plain Linear) until
    :meth:`set_mask` sets it. ``mask[o, i] = 1`` lets input ``i`` reach output ``o``.

    >>> import gmcore as gm
    >>> fc = gm.nn.MaskedLinear(3, 2)
    >>> fc.set_mask([[1, 0, 0], [1, 1, 0]])
    >>> x = gm.randn(4, 3, requires_grad=True)
    >>> fc(x)[:, 0].sum().backward()
    >>> x.grad[:, 1:].abs().sum().item()     # output 0 sees input 0 only
    0.0
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.register_buffer("mask", creation.ones(out_features, in_features, dtype=self.weight.dtype,
                                                   device=self.weight.device))

    def set_mask(self, mask) -> None:
        """Copy ``mask`` (a Tensor, array or nested list of 0/1 or bools, shape (out_features,
        in_features)) into the ``mask`` buffer, in the weight's dtype and on its device."""
        data = mask.detach().data if isinstance(mask, Tensor) else mask
        if hasattr(data, "get") and not isinstance(data, np.ndarray):
            data = data.get()               # a cupy array: masks are small, go through the host
        data = np.asarray(data)
        want = (self.out_features, self.in_features)
        if tuple(data.shape) != want:
            raise ValueError(f"MaskedLinear.set_mask: mask must have shape {want} (out_features, "
                             f"in_features), got {tuple(data.shape)}")
        if data.dtype != bool and not bool(((data == 0) | (data == 1)).all()):
            raise ValueError("MaskedLinear.set_mask: mask values must be 0 or 1 (or booleans)")
        self.mask.data[...] = self.mask._xp().asarray(data.astype(self.mask.data.dtype))
        self.mask._version.value += 1

    def forward(self, input):
        return F.linear(input, self.weight * self.mask, self.bias)

    def extra_repr(self):
        return super().extra_repr() + f", connections={int(self.mask.data.sum())}"
