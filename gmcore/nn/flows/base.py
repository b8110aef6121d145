"""The flow API: invertible transforms with log-determinants, composed and put on a base density.

Direction convention (as nflows and Glow): ``forward`` is the *normalizing* direction, data
``x`` to base ``z``, and a density is ``log p(x) = log p_Z(f(x)) + log|det df/dx|``. Sampling
runs ``inverse`` from base draws. Every transform returns ``(output, logdet)`` where ``logdet``
has shape ``(B,)``: the log-absolute-determinant of the Jacobian of the map just applied (so an
``inverse``'s logdet is minus the forward one at the corresponding point).

A transform with no closed-form inverse (planar, radial) raises :class:`NoAnalyticInverse`
from ``inverse``, naming itself.

>>> import gmcore as gm
>>> from gmcore.nn.flows import FlowDensity, FlowSequential, StandardNormal
>>> class Shift(gm.nn.flows.Flow):            # y = x + 1, logdet 0
...     def forward(self, x, context=None):
...         return x + 1, gm.zeros(x.shape[0])
...     def inverse(self, y, context=None):
...         return y - 1, gm.zeros(y.shape[0])
>>> density = FlowDensity(StandardNormal((2,)), FlowSequential(Shift(), Shift()))
>>> round(float(density.log_prob(gm.tensor([[-2.0, -2.0]]))[0]), 4)   # log N(0; 0, I) in 2-D
-1.8379
>>> density.sample(5).shape
gmcore.Size([5, 2])
"""
from __future__ import annotations

import math

from ... import creation
from ..module import Module

__all__ = ["Flow", "FlowSequential", "FlowDensity", "StandardNormal", "NoAnalyticInverse"]


class NoAnalyticInverse(NotImplementedError):
    """Raised by ``inverse`` of a transform whose inverse has no closed form (planar, radial)."""


class Flow(Module):
    """Base class of invertible transforms: ``forward(x, context=None) -> (z, logdet)`` and
    ``inverse(z, context=None) -> (x, logdet)``, ``logdet`` of shape ``(B,)``. ``context`` is an
    optional conditioning tensor (IAF's encoder features, a class embedding); transforms that
    take none ignore it."""

    def forward(self, x, context=None):
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, context=None)")

    def inverse(self, z, context=None):
        raise NoAnalyticInverse(f"{type(self).__name__} has no analytic inverse")


class FlowSequential(Flow):
    """Transforms applied in order by ``forward`` (and in reverse order by ``inverse``); the
    log-determinants add up. Takes the flows as arguments or as one list."""

    def __init__(self, *flows):
        super().__init__()
        if len(flows) == 1 and isinstance(flows[0], (list, tuple)):
            flows = tuple(flows[0])
        for i, f in enumerate(flows):
            if not isinstance(f, Flow):
                raise TypeError(f"FlowSequential: item {i} is a {type(f).__name__}, not a Flow")
            self.add_module(str(i), f)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def forward(self, x, context=None):
        total = None
        for f in self:
            x, ld = f(x, context)
            total = ld if total is None else total + ld
        return x, (total if total is not None else creation.zeros(x.shape[0], device=x.device,
                                                                   dtype=x.dtype))

    def inverse(self, z, context=None):
        total = None
        for f in reversed(list(self)):
            z, ld = f.inverse(z, context)
            total = ld if total is None else total + ld
        return z, (total if total is not None else creation.zeros(z.shape[0], device=z.device,
                                                                   dtype=z.dtype))


class StandardNormal(Module):
    """N(0, I) over events of ``shape``; ``log_prob`` sums over the event dims (result ``(B,)``).
    ``sample(n, temperature=T)`` scales the draws by T (Glow's reduced-temperature sampling)."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        self._dims = math.prod(self.shape)

    def log_prob(self, z):
        if tuple(z.shape[1:]) != self.shape:
            raise ValueError(f"StandardNormal{self.shape}: got values of shape {tuple(z.shape)}")
        sq = (z * z).reshape(z.shape[0], -1).sum(1)
        return -0.5 * sq - 0.5 * self._dims * math.log(2 * math.pi)

    def sample(self, n, generator=None, temperature=1.0, device=None, dtype=None):
        z = creation.randn(int(n), *self.shape, generator=generator, device=device, dtype=dtype)
        return z * temperature if temperature != 1.0 else z

    def extra_repr(self):
        return f"shape={self.shape}"


class FlowDensity(Module):
    """A density ``log p(x) = base.log_prob(z) + logdet`` with ``(z, logdet) = transform(x)``;
    ``sample`` runs the inverse from base draws.

    ``base`` needs ``log_prob(z) -> (B,)`` and ``sample(n, generator=, temperature=, device=,
    dtype=)``; :class:`StandardNormal` is the usual one.
    """

    def __init__(self, base, transform: Flow):
        super().__init__()
        if not isinstance(transform, Flow):
            raise TypeError(f"FlowDensity: transform must be a Flow, got {type(transform).__name__}")
        self.base = base
        self.transform = transform

    def log_prob(self, x, context=None):
        z, logdet = self.transform(x, context)
        return self.base.log_prob(z) + logdet

    def sample(self, n, generator=None, context=None, temperature=1.0):
        p = next(iter(self.parameters()), None)
        device = p.device if p is not None else None
        dtype = p.dtype if p is not None else None
        z = self.base.sample(n, generator=generator, temperature=temperature, device=device,
                             dtype=dtype)
        x, _ = self.transform.inverse(z, context)
        return x
