"""Autoregressive flow layers on flat vectors (B, D): a MADE conditioner and the masked affine
autoregressive transform of MAF (Papamakarios, Pavlakou & Murray, 2017).

``MADENet`` is MADE (Germain et al. 2015) as a conditioner: a masked MLP whose output
``params[:, d, :]`` depends on the input only through the dimensions before ``d`` in an ordering
(the masks come from :func:`gmcore.models.autoregressive.made.made_degrees` /
:func:`~gmcore.models.autoregressive.made.made_masks`), plus an optional context vector added to
the first hidden layer through an unmasked linear map (a context may feed every output).

``MaskedAffineAutoregressive`` is one MAF layer: ``z = x * s + shift`` with ``(log s, shift)``
from the MADE of ``x``. The density direction (``forward``) is one pass; ``inverse`` (sampling)
takes D passes. Used in the other direction, ``forward`` of the noise is an IAF step.
"""
from __future__ import annotations

import numpy as np

from ... import creation
from ...autograd import no_grad
from .. import functional as F
from ..container import ModuleList
from ..linear import Linear
from ..masked_linear import MaskedLinear
from ..module import Module
from .base import Flow

__all__ = ["MADENet", "MaskedAffineAutoregressive", "resolve_ordering"]


def resolve_ordering(features, ordering):
    """An ordering (the input dimensions in autoregressive order) from ``None``/``"natural"``,
    ``"reverse"``, or an explicit permutation of ``0..features-1``.

    >>> resolve_ordering(3, "reverse").tolist()
    [2, 1, 0]
    """
    d = int(features)
    if ordering is None or (isinstance(ordering, str) and ordering == "natural"):
        return np.arange(d)
    if isinstance(ordering, str):
        if ordering == "reverse":
            return np.arange(d)[::-1].copy()
        raise ValueError(f"ordering must be 'natural', 'reverse' or a permutation, got {ordering!r}")
    order = np.asarray(ordering, dtype=np.int64).reshape(-1)
    if sorted(order.tolist()) != list(range(d)):
        raise ValueError(f"ordering must be a permutation of 0..{d - 1}, got {order.tolist()}")
    return order


class MADENet(Module):
    """MADE conditioner: ``(B, D) [, context (B, C)] -> (B, D, P)`` parameters, where
    ``out[:, d, :]`` depends only on the inputs that come before ``d`` in ``ordering``.

    ``hidden`` units in each of ``layers`` hidden layers (ReLU), ``params_per_dim`` outputs per
    dimension; ``context_features`` > 0 adds ``Linear(context)`` to the first hidden layer and,
    unmasked, to the outputs (so the first variable of the ordering is conditional too).
    Hidden degrees are drawn from ``seed``. ``zero_init=True`` starts the output layer at zero
    (flows start at the identity).

    >>> import gmcore as gm
    >>> net = MADENet(3, hidden=16, params_per_dim=2, ordering="reverse", zero_init=False)
    >>> x = gm.randn(4, 3, requires_grad=True)
    >>> net(x)[:, 2].sum().backward()         # the first variable in reverse order sees nothing
    >>> net(x).shape, x.grad.abs().sum().item()
    (gmcore.Size([4, 3, 2]), 0.0)
    """

    def __init__(self, features, hidden=64, params_per_dim=2, layers=1, context_features=0,
                 ordering=None, seed=0, zero_init=True):
        super().__init__()
        # made.py holds the mask rule; imported here so that `import gmcore` (which imports
        # gmcore.nn.flows) imports no model code.
        from ...models.autoregressive.made import made_degrees, made_masks

        d, h, layers = int(features), int(hidden), int(layers)
        if d < 2:
            raise ValueError(f"MADENet needs at least 2 features (an autoregressive map of one "
                             f"variable has no inputs), got {features}")
        if h < 1 or layers < 1 or int(params_per_dim) < 1:
            raise ValueError(f"MADENet: hidden, layers and params_per_dim must be >= 1, got "
                             f"{hidden}, {layers}, {params_per_dim}")
        self.features, self.params_per_dim = d, int(params_per_dim)
        self.context_features = int(context_features)
        self.order = resolve_ordering(d, ordering)
        masks = made_masks(made_degrees(d, [h] * layers, self.order,
                                        np.random.default_rng(int(seed))))
        sizes = [d] + [h] * layers
        self.hidden = ModuleList([MaskedLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        for layer, m in zip(self.hidden, masks):
            layer.set_mask(m)
        self.context = Linear(self.context_features, h, bias=False) if self.context_features else None
        # output unit p * D + d is parameter p of dimension d: the output mask repeated per p
        self.out = MaskedLinear(h, d * self.params_per_dim)
        self.out.set_mask(np.tile(masks[-1], (self.params_per_dim, 1)))
        # The first variable of the ordering has no hidden unit below it (degrees start at 1),
        # so the context also reaches the outputs directly: every output is conditional.
        self.context_out = Linear(self.context_features, d * self.params_per_dim, bias=False) \
            if self.context_features else None
        if zero_init:
            with no_grad():
                self.out.weight.zero_()
                self.out.bias.zero_()
                if self.context_out is not None:
                    self.context_out.weight.zero_()

    def forward(self, x, context=None):
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"MADENet({self.features}): expected inputs of shape "
                             f"(B, {self.features}), got {tuple(x.shape)}")
        h = self.hidden[0](x)
        if self.context is not None:
            if context is None or tuple(context.shape) != (x.shape[0], self.context_features):
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"MADENet: expected a context of shape ({x.shape[0]}, "
                                 f"{self.context_features}), got {got}")
            h = h + self.context(context)
        h = F.relu(h)
        for layer in list(self.hidden)[1:]:
            h = F.relu(layer(h))
        out = self.out(h)
        if self.context_out is not None:
            out = out + self.context_out(context)
        out = out.reshape(x.shape[0], self.params_per_dim, self.features)
        return out.permute(0, 2, 1)

    def extra_repr(self):
        return (f"features={self.features}, params_per_dim={self.params_per_dim}, "
                f"context_features={self.context_features}")


class MaskedAffineAutoregressive(Flow):
    """One MAF layer on (B, D): ``z = x * s(x) + shift(x)``, where ``(log s, shift)`` for
    dimension d come from a :class:`MADENet` of the dimensions before d in ``ordering``;
    ``logdet = sum(log s)``. ``scale_fn`` chooses ``s`` from the raw output r as
    :func:`gmcore.nn.functional.affine_coupling` does (``"exp"``: ``exp(r)``; ``"tanh"``:
    ``exp(tanh(r))``, a bounded log-scale; ``"sigmoid"``: ``sigmoid(r + 2)``); the map itself
    runs through that kernel.

    ``forward`` (data -> base, the density direction) is one MADE pass. ``inverse`` is D passes:
    after pass i the first i+1 dimensions of the ordering are exact (each depends only on those
    before it). The layer starts at the identity for ``"exp"``/``"tanh"``.

    As an IAF step (Kingma et al. 2016), call ``forward`` on base noise with the encoder's
    features as ``context``: one pass, log-determinant included.

    >>> import gmcore as gm
    >>> maf = MaskedAffineAutoregressive(3, hidden=16, context_features=2, zero_init=False)
    >>> x, c = gm.randn(5, 3), gm.randn(5, 2)
    >>> z, ld = maf(x, c)
    >>> x2, ld2 = maf.inverse(z, c)
    >>> bool(((x2 - x).abs() < 1e-5).all()), bool(((ld + ld2).abs() < 1e-5).all())
    (True, True)
    """

    def __init__(self, features, hidden=64, layers=1, context_features=0, ordering=None, seed=0,
                 scale_fn="tanh", zero_init=True):
        super().__init__()
        if scale_fn not in F.SCALE_FNS:
            raise ValueError(f"MaskedAffineAutoregressive: scale_fn must be one of "
                             f"{sorted(F.SCALE_FNS)}, got {scale_fn!r}")
        self.scale_fn = scale_fn
        self.net = MADENet(features, hidden, 2, layers, context_features, ordering, seed, zero_init)

    @property
    def order(self):
        return self.net.order

    def _params(self, x, context):
        p = self.net(x, context)
        return p[..., 0], p[..., 1]       # raw log-scale, shift

    def forward(self, x, context=None):
        raw, shift = self._params(x, context)
        return F.affine_coupling(x, raw, shift, scale_fn=self.scale_fn)

    def inverse(self, z, context=None):
        x = creation.zeros_like(z)
        for _ in range(self.net.features):
            raw, shift = self._params(x, context)
            x, ld = F.affine_coupling(z, raw, shift, scale_fn=self.scale_fn, inverse=True)
        return x, ld

    def extra_repr(self):
        return f"scale_fn={self.scale_fn!r}"
