"""Batch normalization as a flow layer (RealNVP, Dinh et al. 2016, section 3.7; MAF,
Papamakarios et al. 2017, appendix B).

Per channel (dim 1 of (B, C, *spatial) or of (B, D)):
``z = (x - mu) / sqrt(var + eps) * exp(log_gamma) + beta`` with
``logdet = HW * sum(log_gamma - 0.5 log(var + eps))``. In training mode ``mu`` and ``var`` are
the batch's (biased) statistics, differentiated through as in the papers, and running averages
are updated (``momentum``); in eval mode the running averages are used, so the layer is then a
fixed affine map and the density does not depend on the batch. ``inverse`` (sampling) always
uses the running averages: the inverse of a batch-statistics map is not defined for a new batch.
"""
from __future__ import annotations

from ... import creation
from ...autograd import no_grad
from ..parameter import Parameter
from .base import Flow

__all__ = ["BatchNormFlow"]


class BatchNormFlow(Flow):
    """See the module docstring.

    >>> import gmcore as gm
    >>> bn = BatchNormFlow(2)
    >>> x = gm.randn(64, 2) * 3 + 1
    >>> z, ld = bn(x)                      # training mode: batch statistics
    >>> round(float(z.mean()), 4) == 0.0, ld.shape
    (True, gmcore.Size([64]))
    >>> _ = bn.eval()
    >>> z, ld = bn(x)
    >>> x2, ld2 = bn.inverse(z)
    >>> bool(((x2 - x).abs() < 1e-4).all()), bool(((ld + ld2).abs() < 1e-5).all())
    (True, True)
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5, device=None, dtype=None):
        super().__init__()
        self.num_features = int(num_features)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.log_gamma = Parameter(creation.zeros(self.num_features, device=device, dtype=dtype))
        self.beta = Parameter(creation.zeros(self.num_features, device=device, dtype=dtype))
        self.register_buffer("running_mean", creation.zeros(self.num_features, device=device,
                                                            dtype=dtype))
        self.register_buffer("running_var", creation.ones(self.num_features, device=device,
                                                          dtype=dtype))

    def _check(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNormFlow({self.num_features}): expected input (B, "
                             f"{self.num_features}, ...), got {tuple(x.shape)}")

    def _view(self, v, x):
        return v.reshape((1, self.num_features) + (1,) * (x.ndim - 2))

    def _stats(self, x):
        if not self.training:
            return self.running_mean, self.running_var
        dims = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(dims)
        var = x.var(dims, correction=0)
        with no_grad():
            m = self.momentum
            self.running_mean.copy_(self.running_mean * (1 - m) + mean.detach() * m)
            self.running_var.copy_(self.running_var * (1 - m) + var.detach() * m)
        return mean, var

    def _logdet(self, var, x):
        positions = 1
        for s in x.shape[2:]:
            positions *= s
        ld = (self.log_gamma - 0.5 * (var + self.eps).log()).sum() * positions
        return ld.reshape(1).expand(x.shape[0])

    def forward(self, x, context=None):
        self._check(x)
        mean, var = self._stats(x)
        z = (x - self._view(mean, x)) / self._view((var + self.eps).sqrt(), x)
        z = z * self._view(self.log_gamma.exp(), x) + self._view(self.beta, x)
        return z, self._logdet(var, x)

    def inverse(self, z, context=None):
        self._check(z)
        mean, var = self.running_mean, self.running_var
        x = (z - self._view(self.beta, z)) * self._view((-self.log_gamma).exp(), z)
        x = x * self._view((var + self.eps).sqrt(), z) + self._view(mean, z)
        return x, -self._logdet(var, z)

    def extra_repr(self):
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"
