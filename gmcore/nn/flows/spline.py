"""Neural spline flow layers (Durkan, Bekasov, Murray & Papamakarios, 2019): element-wise
monotonic rational-quadratic splines with linear tails
(:func:`gmcore.nn.functional.rational_quadratic_spline`) whose bin widths, heights and knot
derivatives come from a conditioner network.

* :class:`RQSplineCoupling`: a binary mask splits the D features; the masked-in half passes
  unchanged and conditions (through an MLP) the spline of every other feature. Forward and
  inverse are one pass each.
* :class:`RQSplineAutoregressive`: a :class:`~gmcore.nn.flows.autoregressive.MADENet` gives the
  spline of feature d from the features before it; density in one pass, inverse in D passes.

Both start at the identity (zero-initialised output layer: uniform bins, unit slopes), take an
optional context vector, and work on flat (B, D) inputs.
"""
from __future__ import annotations

import numpy as np

from ... import creation
from ...autograd import no_grad
from .. import functional as F
from ..container import ModuleList
from ..linear import Linear
from ..module import Module
from .autoregressive import MADENet
from .base import Flow

__all__ = ["RQSplineCoupling", "RQSplineAutoregressive"]


def _split_params(p, num_bins):
    """(…, 3K-1) raw parameters -> widths (…, K), heights (…, K), interior derivatives (…, K-1)."""
    k = num_bins
    return p[..., :k], p[..., k:2 * k], p[..., 2 * k:]


def _check_bins(num_bins, tail_bound, op):
    if int(num_bins) < 1:
        raise ValueError(f"{op}: num_bins must be >= 1, got {num_bins}")
    if not float(tail_bound) > 0:
        raise ValueError(f"{op}: tail_bound must be > 0, got {tail_bound}")


class _MLP(Module):
    """Coupling conditioner: ``layers`` hidden ReLU layers of ``hidden`` units; zero-initialised
    output layer."""

    def __init__(self, n_in, n_out, hidden, layers):
        super().__init__()
        sizes = [n_in] + [int(hidden)] * int(layers)
        self.hidden = ModuleList([Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = Linear(sizes[-1], n_out)
        with no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, h):
        for layer in self.hidden:
            h = F.relu(layer(h))
        return self.out(h)


class RQSplineCoupling(Flow):
    """Rational-quadratic spline coupling on (B, D): the features where ``mask`` is 1 pass
    unchanged and condition the splines of the others (``logdet`` = sum of their
    log-derivatives). ``mask`` is a 0/1 sequence of length D with at least one of each.
    ``hidden``/``layers``: the conditioner MLP; ``context_features`` > 0 concatenates a context
    to its input. ``num_bins`` K, ``tail_bound`` B: the spline on [-B, B], identity outside.

    >>> import gmcore as gm
    >>> flow = RQSplineCoupling([1, 0, 1], hidden=8, num_bins=4)
    >>> x = gm.randn(5, 3)
    >>> z, ld = flow(x)                         # the identity at initialisation
    >>> bool(((z - x).abs() < 1e-5).all()), ld.shape
    (True, gmcore.Size([5]))
    """

    def __init__(self, mask, hidden=64, layers=2, num_bins=8, tail_bound=3.0, context_features=0,
                 min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
        super().__init__()
        _check_bins(num_bins, tail_bound, "RQSplineCoupling")
        m = np.asarray(mask).reshape(-1)
        if m.size < 2 or not np.isin(m, (0, 1)).all() or m.all() or not m.any():
            raise ValueError(f"RQSplineCoupling: mask must be a 0/1 sequence with at least one 0 "
                             f"and one 1, got {m.tolist()}")
        self.features, self.num_bins, self.tail_bound = m.size, int(num_bins), float(tail_bound)
        self.context_features = int(context_features)
        self.spline_kw = dict(tail_bound=self.tail_bound, min_bin_width=min_bin_width,
                              min_bin_height=min_bin_height, min_derivative=min_derivative)
        self.identity_idx = np.nonzero(m == 1)[0]
        self.transform_idx = np.nonzero(m == 0)[0]
        # position of feature j in cat([identity part, transformed part])
        self.restore = np.argsort(np.concatenate([self.identity_idx, self.transform_idx]))
        n_tr = self.transform_idx.size
        self.net = _MLP(self.identity_idx.size + self.context_features,
                        n_tr * F.spline_params_per_dim(num_bins), hidden, layers)

    def _index(self, x, idx):
        return x.index_select(1, creation.tensor(idx, device=x.device))

    def _run(self, x, context, inverse):
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"RQSplineCoupling({self.features} features): expected inputs of "
                             f"shape (B, {self.features}), got {tuple(x.shape)}")
        x_id, x_tr = self._index(x, self.identity_idx), self._index(x, self.transform_idx)
        h = x_id
        if self.context_features:
            if context is None or tuple(context.shape) != (x.shape[0], self.context_features):
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"RQSplineCoupling: expected a context of shape "
                                 f"({x.shape[0]}, {self.context_features}), got {got}")
            h = F.cat([h, context], 1)
        p = self.net(h).reshape(x.shape[0], x_tr.shape[1], -1)
        y_tr, ld = F.rational_quadratic_spline(x_tr, *_split_params(p, self.num_bins),
                                               inverse=inverse, **self.spline_kw)
        y = self._index(F.cat([x_id, y_tr], 1), self.restore)
        return y, ld.sum(1)

    def forward(self, x, context=None):
        return self._run(x, context, inverse=False)

    def inverse(self, z, context=None):
        return self._run(z, context, inverse=True)

    def extra_repr(self):
        return (f"features={self.features}, transformed={self.transform_idx.size}, "
                f"num_bins={self.num_bins}, tail_bound={self.tail_bound}")


class RQSplineAutoregressive(Flow):
    """Autoregressive rational-quadratic spline on (B, D): the spline of feature d has its
    parameters from a :class:`MADENet` of the features before d in ``ordering``. ``forward`` (the
    density direction) is one pass, ``inverse`` D passes. Other arguments as
    :class:`RQSplineCoupling`.

    >>> import gmcore as gm
    >>> flow = RQSplineAutoregressive(3, hidden=8, num_bins=4, zero_init=False)
    >>> x = gm.randn(5, 3)
    >>> z, ld = flow(x)
    >>> x2, ld2 = flow.inverse(z)
    >>> bool(((x2 - x).abs() < 1e-5).all()), bool(((ld + ld2).abs() < 1e-5).all())
    (True, True)
    """

    def __init__(self, features, hidden=64, layers=2, num_bins=8, tail_bound=3.0,
                 context_features=0, ordering=None, seed=0, zero_init=True, min_bin_width=1e-3,
                 min_bin_height=1e-3, min_derivative=1e-3):
        super().__init__()
        _check_bins(num_bins, tail_bound, "RQSplineAutoregressive")
        self.num_bins, self.tail_bound = int(num_bins), float(tail_bound)
        self.spline_kw = dict(tail_bound=self.tail_bound, min_bin_width=min_bin_width,
                              min_bin_height=min_bin_height, min_derivative=min_derivative)
        self.net = MADENet(features, hidden, F.spline_params_per_dim(num_bins), layers,
                           context_features, ordering, seed, zero_init)

    @property
    def order(self):
        return self.net.order

    def _spline(self, x, params_from, context, inverse):
        p = self.net(params_from, context)
        y, ld = F.rational_quadratic_spline(x, *_split_params(p, self.num_bins), inverse=inverse,
                                            **self.spline_kw)
        return y, ld.sum(1)

    def forward(self, x, context=None):
        return self._spline(x, x, context, inverse=False)

    def inverse(self, z, context=None):
        # after pass i the first i+1 features of the ordering are exact
        x = creation.zeros_like(z)
        for _ in range(self.net.features):
            x, ld = self._spline(z, x, context, inverse=True)
        return x, ld

    def extra_repr(self):
        return f"num_bins={self.num_bins}, tail_bound={self.tail_bound}"
