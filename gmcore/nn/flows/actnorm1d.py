"""``ActNorm1d``: Glow's activation normalisation for flat features (B, D).

The same map as :class:`gmcore.nn.flows.ActNorm2d` (``y = scale * (x + loc)`` per feature,
data-dependent initialisation on the first training batch, ``logdet = sum(log|scale|)``), with
the input checked to be (B, D): the normaliser of the flows on vectors (linear flow, MAF, NSF).
"""
from __future__ import annotations

from .glow import ActNorm2d

__all__ = ["ActNorm1d"]


class ActNorm1d(ActNorm2d):
    """Per-feature ``y = scale * (x + loc)`` on (B, D), initialised from the first training
    batch to zero mean and unit variance per feature.

    >>> import gmcore as gm
    >>> an = ActNorm1d(2)
    >>> y, ld = an(gm.tensor([[1.0, 10.0], [3.0, 30.0]]))
    >>> [[round(v, 4) for v in row] for row in y.tolist()], ld.shape
    ([[-1.0, -1.0], [1.0, 1.0]], gmcore.Size([2]))
    """

    def _check(self, x):
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"ActNorm1d({self.num_features}): expected input (B, "
                             f"{self.num_features}), got {tuple(x.shape)}")

    def forward(self, x, context=None):
        self._check(x)
        return super().forward(x, context)

    def inverse(self, y, context=None):
        self._check(y)
        return super().inverse(y, context)
