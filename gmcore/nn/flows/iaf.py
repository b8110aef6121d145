"""Inverse autoregressive flow (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, 2016).

One step maps ``z`` (B, D) with a MADE that also sees a context vector ``h`` (the VAE encoder's
features): ``(m, s) = MADE(z, h)``, where output ``d`` depends on ``z`` only through the
dimensions before ``d`` in the step's ordering. The update is the paper's numerically stable,
LSTM-like form::

    sigma = sigmoid(s + forget_bias)
    z'    = sigma * z + (1 - sigma) * m
    log|det dz'/dz| = sum_d log sigma_d        (the Jacobian is triangular)

``forward`` is this fast direction (one MADE pass: what an IAF posterior needs to draw and score
samples); ``inverse`` needs D sequential passes. Successive steps of :func:`iaf_flow` reverse
the ordering, as in the paper. ``forget_bias`` (the paper suggests +1 or +2) starts every step
close to the identity, so the flow begins as the plain diagonal Gaussian posterior.
"""
from __future__ import annotations

from .. import functional as F
from .autoregressive import MADENet
from .base import Flow, FlowSequential

__all__ = ["IAFStep", "iaf_flow"]


class IAFStep(Flow):
    """One IAF step over ``dim`` variables; the conditioner is a :class:`MADENet` (``layers``
    hidden layers of ``hidden`` units) with the context ``(B, context_dim)`` added to its first
    hidden layer. ``reverse=True`` uses the ordering ``D-1, ..., 0`` instead of ``0, ..., D-1``;
    ``zero_init=True`` starts the MADE's output at zero (then ``z' = sigmoid(forget_bias) z``).

    >>> import gmcore as gm
    >>> step = gm.nn.flows.IAFStep(3, hidden=8, context_dim=2)
    >>> z, h = gm.randn(4, 3), gm.randn(4, 2)
    >>> y, logdet = step(z, h)
    >>> z2, _ = step.inverse(y, h)
    >>> y.shape, logdet.shape, bool(((z2 - z).abs() < 1e-5).all())
    (gmcore.Size([4, 3]), gmcore.Size([4]), True)
    """

    def __init__(self, dim, hidden=64, context_dim=0, layers=1, reverse=False, forget_bias=2.0,
                 seed=0, zero_init=False):
        super().__init__()
        self.dim, self.context_dim, self.forget_bias = int(dim), int(context_dim), float(forget_bias)
        if self.dim < 2:
            raise ValueError(f"IAFStep needs at least 2 dimensions (an autoregressive map of one "
                             f"variable has no inputs), got dim={dim}")
        self.net = MADENet(self.dim, hidden, 2, layers, self.context_dim,
                           "reverse" if reverse else "natural", seed, zero_init)

    @property
    def order(self):
        return self.net.order

    def _shift_gate(self, z, context):
        """(m, sigma, log sigma), each (B, D); entry d depends on z only through z_<d (ordering)."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"IAFStep({self.dim}): expected z of shape (B, {self.dim}), got "
                             f"{tuple(z.shape)}")
        p = self.net(z, context)                     # (B, D, 2); checks the context's shape
        m, s = p[..., 0], p[..., 1] + self.forget_bias
        return m, s.sigmoid(), F.logsigmoid(s)

    def forward(self, z, context=None):
        m, sigma, log_sigma = self._shift_gate(z, context)
        return sigma * z + (1.0 - sigma) * m, log_sigma.sum(1)

    def inverse(self, y, context=None):
        """D sequential passes: after pass i the first i+1 variables of the ordering are exact
        (each depends only on those before it), so D passes solve the triangular system."""
        z = y
        for _ in range(self.dim):
            m, sigma, _ = self._shift_gate(z, context)
            z = (y - (1.0 - sigma) * m) / sigma
        _, _, log_sigma = self._shift_gate(z, context)
        return z, -log_sigma.sum(1)

    def extra_repr(self):
        return f"dim={self.dim}, forget_bias={self.forget_bias}"


def iaf_flow(dim, steps, hidden=64, context_dim=0, layers=1, forget_bias=2.0, seed=0,
             zero_init=False):
    """``steps`` :class:`IAFStep` s in a :class:`FlowSequential`, the ordering reversed between
    successive steps.

    >>> import gmcore as gm
    >>> flow = gm.nn.flows.iaf_flow(4, steps=2, hidden=8)
    >>> [f.order.tolist() for f in flow]
    [[0, 1, 2, 3], [3, 2, 1, 0]]
    """
    if int(steps) < 1:
        raise ValueError(f"iaf_flow needs at least one step, got steps={steps}")
    return FlowSequential([IAFStep(dim, hidden, context_dim, layers, reverse=bool(k % 2),
                                   forget_bias=forget_bias, seed=seed + k, zero_init=zero_init)
                           for k in range(int(steps))])
