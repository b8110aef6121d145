"""Glow's flow layers (Kingma & Dhariwal 2018): ``ActNorm2d``, ``InvConv2d1x1`` and the step
that chains them with an affine coupling, ``GlowStep``.

Each returns ``(y, logdet)`` from ``forward(x)`` and ``(x, logdet)`` from ``inverse(y)``, with
``logdet`` of shape (B,) (the inverse's is negated). The math lives in
``gmcore.functional.flow_ops``; the coupling layer in :mod:`gmcore.nn.flows.coupling`. All three
work on images (B, C, H, W) and on flat vectors (B, D) alike (one "position" per example): on
vectors a Glow step is actnorm, an LU-parameterised linear map and a half-split coupling.
"""
from __future__ import annotations

import numpy as np

from ... import creation
from ..._dtype import get_default_dtype
from ...autograd import no_grad
from .. import functional as F
from .base import Flow
from .coupling import AffineCoupling, channel_split, conv_conditioner, mlp_conditioner
from ..parameter import Parameter

__all__ = ["ActNorm2d", "InvConv2d1x1", "GlowStep"]


def _world() -> int:
    """Ranks of the data-parallel group (1 outside mpiexec)."""
    from ... import distributed
    return distributed.get_world_size()


class ActNorm2d(Flow):
    """Per-channel ``y = scale * (x + loc)`` with data-dependent initialisation: the first
    ``forward`` in training mode sets ``loc = -mean`` and ``scale = 1/(std + eps)`` from that
    batch (per channel), so it comes out zero-mean, unit-variance; the ``initialized`` buffer
    (saved in ``state_dict``) records that it happened. ``logdet = H*W*sum(log|scale|)``.

    >>> import gmcore as gm
    >>> an = gm.nn.ActNorm2d(3)
    >>> x = gm.randn(8, 3, 4, 4) * 3 + 1
    >>> y, ld = an(x)
    >>> bool(an.initialized), round(float(y.mean()), 4) == 0.0, ld.shape
    (True, True, gmcore.Size([8]))
    >>> x2, _ = an.inverse(y)
    >>> bool(((x2 - x).abs() < 1e-4).all())
    True
    """

    def __init__(self, num_features, eps=1e-6, device=None, dtype=None):
        super().__init__()
        self.num_features = int(num_features)
        self.eps = eps
        self.loc = Parameter(creation.zeros(self.num_features, dtype=dtype, device=device))
        self.scale = Parameter(creation.ones(self.num_features, dtype=dtype, device=device))
        self.register_buffer("initialized", creation.tensor(0, dtype="uint8", device=device))

    def _maybe_init(self, x):
        if self.training and not bool(self.initialized):
            loc, scale = F.actnorm_init(x, self.eps) if _world() == 1 else self._global_init(x)
            with no_grad():
                self.loc.copy_(loc)
                self.scale.copy_(scale)
                self.initialized.fill_(1)

    def _global_init(self, x):
        """``actnorm_init`` over every rank's batch (data-parallel training): each rank's own
        shard would give each replica its own start, and they would never agree again."""
        from ..sync_batchnorm import global_moments

        with no_grad():
            n, mean, _, squares = global_moments(x.detach(), (0,) + tuple(range(2, x.ndim)))
            return -mean, 1.0 / ((squares / n).sqrt() + self.eps)

    def forward(self, x, context=None):
        self._maybe_init(x)
        return F.actnorm(x, self.loc, self.scale)

    def inverse(self, y, context=None):
        return F.actnorm(y, self.loc, self.scale, inverse=True)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}"


class InvConv2d1x1(Flow):
    """Invertible 1x1 convolution over C channels, initialised to a random rotation.

    ``lu=False``: a free (C, C) ``weight``, ``logdet = H*W*log|det W|`` (O(C^3) per call).
    ``lu=True`` (Glow's LU form): ``W = P L (U + diag(sign_s * exp(log_s)))`` with P and
    ``sign_s`` fixed buffers and ``lower``, ``upper``, ``log_s`` learned; ``logdet =
    H*W*sum(log_s)``. The strictly lower / upper parts are taken when W is built, so the unused
    entries of ``lower`` and ``upper`` get zero gradients and never matter.

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> conv = gm.nn.InvConv2d1x1(4)
    >>> x = gm.randn(2, 4, 3, 3)
    >>> y, ld = conv(x)
    >>> x2, ld2 = conv.inverse(y)
    >>> bool(((x2 - x).abs() < 1e-4).all()), bool(((ld + ld2).abs() < 1e-5).all())
    (True, True)
    """

    def __init__(self, num_channels, lu=True, device=None, dtype=None):
        super().__init__()
        self.num_channels = c = int(num_channels)
        self.lu = bool(lu)
        # a random rotation (QR of a Gaussian, sign-fixed): log|det| = 0 at initialisation
        g = creation.randn(c, c, dtype="float64").numpy()
        q, r = np.linalg.qr(g)
        q = q * np.sign(np.diag(r))
        # factorise in float64, then store in the requested dtype (the default one when none
        # is given: float64 parameters would silently upcast every float32 flow around them)
        dtype = dtype if dtype is not None else get_default_dtype()
        w = creation.tensor(q, dtype="float64", device=device)
        if not self.lu:
            self.weight = Parameter(w.to(dtype))
            return
        p, lower, upper, sign_s, log_s = (t.to(dtype) for t in F.lu_decompose(w))
        self.register_buffer("p", p)
        self.register_buffer("sign_s", sign_s)
        self.lower = Parameter(lower)
        self.upper = Parameter(upper)
        self.log_s = Parameter(log_s)

    def weight_matrix(self):
        """The (C, C) matrix W in use (built from the LU factors when ``lu``)."""
        if not self.lu:
            return self.weight
        return F.lu_weight(self.p, self.lower, self.upper, self.sign_s, self.log_s)

    def forward(self, x, context=None):
        if self.lu:
            return F.invconv1x1_lu(x, self.p, self.lower, self.upper, self.sign_s, self.log_s)
        return F.invconv1x1(x, self.weight)

    def inverse(self, y, context=None):
        if self.lu:
            return F.invconv1x1_lu(y, self.p, self.lower, self.upper, self.sign_s, self.log_s,
                                   inverse=True)
        return F.invconv1x1(y, self.weight, inverse=True)

    def extra_repr(self):
        return f"{self.num_channels}, lu={self.lu}"


class GlowStep(Flow):
    """One step of flow: :class:`ActNorm2d`, :class:`InvConv2d1x1` (``lu``) and an
    :class:`~gmcore.nn.flows.AffineCoupling` of the channel halves (``scale_fn``; Glow's code
    uses ``"sigmoid"``), whose network is :func:`~gmcore.nn.flows.conv_conditioner` on images
    (B, C, H, W) or :func:`~gmcore.nn.flows.mlp_conditioner` on vectors (B, D) (``vector=True``),
    with ``hidden`` channels / units and a zero-initialised last layer.

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> step = GlowStep(4, hidden=8)
    >>> x = gm.randn(2, 4, 3, 3)
    >>> z, logdet = step(x)               # the first call initialises actnorm from x
    >>> x2, _ = step.inverse(z)
    >>> z.shape, bool(((x2 - x).abs() < 1e-4).all())
    (gmcore.Size([2, 4, 3, 3]), True)
    """

    def __init__(self, num_channels, hidden=64, lu=True, scale_fn="sigmoid", vector=False,
                 mlp_layers=2):
        super().__init__()
        c_a, c_b = channel_split(num_channels)
        self.actnorm = ActNorm2d(num_channels)
        self.invconv = InvConv2d1x1(num_channels, lu=lu)
        net = mlp_conditioner(c_a, 2 * c_b, hidden, mlp_layers) if vector else \
            conv_conditioner(c_a, 2 * c_b, hidden)
        self.coupling = AffineCoupling(net, "channel", 0, scale_fn)

    def forward(self, x, context=None):
        x, ld1 = self.actnorm(x)
        x, ld2 = self.invconv(x)
        x, ld3 = self.coupling(x, context)
        return x, ld1 + ld2 + ld3

    def inverse(self, z, context=None):
        z, ld3 = self.coupling.inverse(z, context)
        z, ld2 = self.invconv.inverse(z)
        z, ld1 = self.actnorm.inverse(z)
        return z, ld1 + ld2 + ld3
