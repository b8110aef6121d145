"""Multi-scale architecture pieces (RealNVP, Dinh et al. 2016; Glow, Kingma & Dhariwal 2018):
``Squeeze`` / ``Unsqueeze`` (2x2 space-to-depth and back), ``FactorOut`` (half the channels
leave for the base density, the rest go on through more layers) and ``Reshape``.

The whole transform keeps the input's shape: a scale is written
``FlowSequential(Squeeze(), steps..., FactorOut(next_scale), Unsqueeze())``, so the factored-out
channels sit in ``z`` beside the ones that went on, and ``z`` has ``x``'s shape; the base density
is a standard normal over that shape. Squeezes are permutations (logdet 0), so the layout costs
nothing. Glow's *learned prior* of the factored-out half, ``N(mu(h), sigma(h))`` given the half
``h`` that goes on, is an affine coupling conditioned on ``h``: put an
:class:`~gmcore.nn.flows.AffineCoupling` (``mask="channel"``, parity 0, zero-initialised network)
in front of the ``FactorOut``.

>>> import gmcore as gm
>>> from gmcore.nn.flows import FactorOut, FlowSequential, Squeeze, Unsqueeze, Scaling
>>> flow = FlowSequential(Squeeze(), FactorOut(Scaling((2, 2, 2))), Unsqueeze())
>>> x = gm.randn(3, 1, 4, 4)
>>> z, logdet = flow(x)
>>> z.shape, logdet.tolist()
(gmcore.Size([3, 1, 4, 4]), [0.0, 0.0, 0.0])
"""
from __future__ import annotations

import math

from ... import creation
from ...functional import flow_ops
from ...functional import shape as _shape
from .base import Flow

__all__ = ["Squeeze", "Unsqueeze", "FactorOut", "Reshape"]


def _zeros(x):
    return creation.zeros(x.shape[0], device=x.device, dtype=x.dtype)


class Squeeze(Flow):
    """(B, C, H, W) -> (B, C*f*f, H/f, W/f) by :func:`gmcore.squeeze2d` (a permutation: logdet 0).

    >>> import gmcore as gm
    >>> Squeeze()(gm.zeros(2, 1, 8, 8))[0].shape
    gmcore.Size([2, 4, 4, 4])
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = int(factor)

    def forward(self, x, context=None):
        return flow_ops.squeeze2d(x, self.factor), _zeros(x)

    def inverse(self, z, context=None):
        return flow_ops.unsqueeze2d(z, self.factor), _zeros(z)

    def extra_repr(self):
        return f"factor={self.factor}"


class Unsqueeze(Squeeze):
    """The inverse of :class:`Squeeze` as a forward map: (B, C, H, W) -> (B, C/f^2, H*f, W*f)."""

    def forward(self, x, context=None):
        return super().inverse(x, context)

    def inverse(self, z, context=None):
        return super().forward(z, context)


class FactorOut(Flow):
    """Run ``inner`` on the first ``keep`` channels (default C // 2) and pass the others through
    unchanged: they are factored out, modelled by the base density from here on. The inner
    flow must keep its input's shape (end it with :class:`Unsqueeze` when it squeezes).

    >>> import gmcore as gm
    >>> from gmcore.nn.flows import Scaling
    >>> f = FactorOut(Scaling((1, 2, 2)))
    >>> f.inner.log_scale.data[...] = 1.0
    >>> z, logdet = f(gm.ones(1, 2, 2, 2))
    >>> z[0, :, 0, 0].tolist(), round(logdet.item(), 4)
    ([2.7182819843292236, 1.0], 4.0)
    """

    def __init__(self, inner: Flow, keep: int | None = None):
        super().__init__()
        if not isinstance(inner, Flow):
            raise TypeError(f"FactorOut: inner must be a Flow, got {type(inner).__name__}")
        self.inner = inner
        self.keep = None if keep is None else int(keep)

    def _split(self, x):
        c = x.shape[1] if x.ndim >= 2 else 0
        k = c // 2 if self.keep is None else self.keep
        if not 0 < k < c:
            raise ValueError(f"FactorOut: cannot keep {k} of the {c} channels of an input of "
                             f"shape {tuple(x.shape)}")
        return x[:, :k], x[:, k:]

    def forward(self, x, context=None):
        h, out = self._split(x)
        h2, ld = self.inner(h, context)
        return _shape.cat([h2, out], 1), ld

    def inverse(self, z, context=None):
        h, out = self._split(z)
        h2, ld = self.inner.inverse(h, context)
        return _shape.cat([h2, out], 1), ld

    def extra_repr(self):
        return f"keep={'C // 2' if self.keep is None else self.keep}"


class Reshape(Flow):
    """Reshape each example from ``in_shape`` to ``out_shape`` (logdet 0): e.g. flatten images
    for a flow on vectors (NICE).

    >>> import gmcore as gm
    >>> Reshape((1, 2, 2), (4,))(gm.zeros(3, 1, 2, 2))[0].shape
    gmcore.Size([3, 4])
    """

    def __init__(self, in_shape, out_shape):
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError(f"Reshape: {self.in_shape} and {self.out_shape} differ in size")

    def _run(self, x, src, dst):
        if tuple(x.shape[1:]) != src:
            raise ValueError(f"Reshape{src}->{dst}: got input of shape {tuple(x.shape)}")
        return x.reshape((x.shape[0],) + dst), _zeros(x)

    def forward(self, x, context=None):
        return self._run(x, self.in_shape, self.out_shape)

    def inverse(self, z, context=None):
        return self._run(z, self.out_shape, self.in_shape)

    def extra_repr(self):
        return f"{self.in_shape} -> {self.out_shape}"
