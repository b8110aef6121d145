"""``SyncBatchNorm``: batch normalization whose statistics span the examples of every rank of a
data-parallel run, as ``torch.nn.SyncBatchNorm``.

The per-channel sums (of x, then of the squared deviations) are all-reduced across the ranks by
a differentiable all-reduce, whose backward all-reduces the gradient: each rank's examples then
get the gradient of the statistics of the whole global batch, as one process computing the
batch at once would. Without an initialised process group (or with one rank) it is exactly
``BatchNorm`` on the local batch.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, no_grad
from ..tensor import Tensor  # noqa: F401  (the type in signatures)
from .normalization import _BatchNorm

__all__ = ["SyncBatchNorm", "all_reduce_sum", "global_moments"]


def _world() -> int:
    from .. import distributed
    return distributed.get_world_size()


class _AllReduceSum(Function):
    """y = sum over ranks of x (every rank gets it); the gradient of a loss summed over the
    ranks with respect to each rank's x is the sum over ranks of the upstream gradients."""

    @staticmethod
    def forward(ctx, x):
        from ..distributed import all_reduce_array
        return all_reduce_array(x.copy(), "sum")

    @staticmethod
    def backward(ctx, g):
        return _AllReduceSum.apply(g)


def all_reduce_sum(x: Tensor) -> Tensor:
    """The sum of ``x`` over the ranks, differentiably (``x`` itself with one rank)."""
    return _AllReduceSum.apply(x) if _world() > 1 else x


def global_moments(x: Tensor, dims: tuple) -> tuple:
    """``(n, mean, centred, squares)`` of ``x`` over ``dims`` and every rank's rows, differentiably:
    ``n`` the count of entries (a float), ``mean`` their mean (shaped as ``x.sum(dims)``),
    ``centred = x - mean`` (broadcast back over ``dims``, which must be 0 and the trailing ones)
    and ``squares`` the all-reduced sum of ``centred ** 2``; the callers divide it as they need
    (by ``n`` for batch norm and actnorm, by ``n - 1`` for an unbiased variance). With one rank
    these are the local batch's moments."""
    from ..distributed import all_reduce_array
    local = np.array([np.prod([x.shape[d] for d in dims])], dtype=np.float64)
    n = float(all_reduce_array(local, "sum")[0]) if _world() > 1 else float(local[0])
    mean = all_reduce_sum(x.sum(dim=dims)) / n
    centred = x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))
    return n, mean, centred, all_reduce_sum((centred * centred).sum(dim=dims))


class SyncBatchNorm(_BatchNorm):
    """Batch normalization over (N, C, *) with statistics over every rank's batch.

    >>> import gmcore as gm
    >>> bn = gm.nn.SyncBatchNorm(3)          # one process: the same as BatchNorm
    >>> y = bn(gm.randn(4, 3, 2, 2))
    >>> tuple(y.shape), int(bn.num_batches_tracked)
    ((4, 3, 2, 2), 1)
    """

    _expected = (2, 3, 4, 5)

    def forward(self, input):
        self._check_input_dim(input)
        if not self.training or _world() == 1:
            return super().forward(input)
        dims = (0,) + tuple(range(2, input.ndim))
        shape = (1, -1) + (1,) * (input.ndim - 2)
        n, mean, centred, squares = global_moments(input, dims)   # n: examples x positions
        var = squares / n
        if self.track_running_stats:
            with no_grad():
                self.num_batches_tracked.data[...] += 1
                self.num_batches_tracked._version.value += 1
                factor = 1.0 / float(self.num_batches_tracked.data) if self.momentum is None else self.momentum
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_mean.data[...] = (1 - factor) * self.running_mean.data + factor * mean.detach().data
                self.running_var.data[...] = (1 - factor) * self.running_var.data + factor * unbiased.data
                self.running_mean._version.value += 1
                self.running_var._version.value += 1
        y = centred / (var.reshape(shape) + self.eps).sqrt()
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return y

    @classmethod
    def convert_sync_batchnorm(cls, module):
        """``module`` with every ``BatchNorm1d/2d/3d`` replaced by a ``SyncBatchNorm`` holding the
        same parameters and statistics (torch's classmethod of the same name)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats, bias=module.bias is not None)
            sync.load_state_dict(module.state_dict())
            sync.to(module.running_mean.device if module.running_mean is not None else "cpu")
            sync.train(module.training)
            return sync
        for name, child in list(module._modules.items()):
            if child is not None:
                module._modules[name] = cls.convert_sync_batchnorm(child)
        return module
