"""Flow layers with parameters: ``ActNorm2d`` and ``InvConv2d1x1`` (Glow, Kingma & Dhariwal 2018).

Each returns ``(y, logdet)`` from ``forward(x)`` and ``(x, logdet)`` from ``inverse(y)``, with
``logdet`` of shape (B,) (the inverse's is negated). The math lives in
``gmcore.functional.flow_ops``; the coupling network is model code, so there is no coupling layer
here (call ``gmcore.nn.functional.affine_coupling`` inside the model).
"""
from __future__ import annotations

import numpy as np

from .. import creation
from ..autograd import no_grad
from . import functional as F
from .module import Module
from .parameter import Parameter

__all__ = ["ActNorm2d", "InvConv2d1x1"]


class ActNorm2d(Module):
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
            loc, scale = F.actnorm_init(x, self.eps)
            with no_grad():
                self.loc.copy_(loc)
                self.scale.copy_(scale)
                self.initialized.fill_(1)

    def forward(self, x):
        self._maybe_init(x)
        return F.actnorm(x, self.loc, self.scale)

    def inverse(self, y):
        return F.actnorm(y, self.loc, self.scale, inverse=True)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}"


class InvConv2d1x1(Module):
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
        w = creation.tensor(q, dtype=dtype, device=device)
        if not self.lu:
            self.weight = Parameter(w)
            return
        p, lower, upper, sign_s, log_s = F.lu_decompose(w)
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

    def forward(self, x):
        if self.lu:
            return F.invconv1x1_lu(x, self.p, self.lower, self.upper, self.sign_s, self.log_s)
        return F.invconv1x1(x, self.weight)

    def inverse(self, y):
        if self.lu:
            return F.invconv1x1_lu(y, self.p, self.lower, self.upper, self.sign_s, self.log_s,
                                   inverse=True)
        return F.invconv1x1(y, self.weight, inverse=True)

    def extra_repr(self):
        return f"{self.num_channels}, lu={self.lu}"
