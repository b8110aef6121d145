"""Normalization layers: ``LayerNorm``, ``GroupNorm``, ``BatchNorm1d``, ``BatchNorm2d``,
``InstanceNorm1d``, ``InstanceNorm2d``.

Thin modules over ``gmcore.nn.functional``; parameters start at weight 1, bias 0 and the
running statistics at mean 0, variance 1, as PyTorch.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import creation
from ..autograd import no_grad
from ..tensor import Tensor
from . import functional as F
from . import init
from .linear import _weight_and_bias
from .module import Module

__all__ = ["LayerNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d", "InstanceNorm1d",
           "InstanceNorm2d"]



def _affine_parameters(module, shape, affine, bias, device, dtype):
    """Register ``weight`` and ``bias`` of a normalization layer (None where switched off)."""
    _weight_and_bias(module, shape if affine else None, shape if affine and bias else None,
                     device, dtype)


def _reset_affine(module):
    """Identity affine transform: weight 1, bias 0 (PyTorch's reset_parameters)."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)

class LayerNorm(Module):
    """Normalize over the trailing ``normalized_shape`` dims, then ``* weight + bias``
    (elementwise, shape ``normalized_shape``) when ``elementwise_affine`` (``bias=False``:
    weight only).

    >>> import gmcore as gm
    >>> ln = gm.nn.LayerNorm(4)
    >>> y = ln(gm.randn(2, 4))
    >>> y.shape, ln
    (gmcore.Size([2, 4]), LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True))
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _affine_parameters(self, self.normalized_shape, elementwise_affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(Module):
    """Split the C channels of (N, C, *) into ``num_groups`` groups and normalize each group
    of each sample; then per-channel ``* weight + bias`` when ``affine``.

    >>> import gmcore as gm
    >>> gn = gm.nn.GroupNorm(2, 6)
    >>> gn(gm.randn(3, 6, 4, 4)).shape, gn
    (gmcore.Size([3, 6, 4, 4]), GroupNorm(2, 6, eps=1e-05, affine=True, bias=True))
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None,
                 *, bias=True):
        super().__init__()
        if num_groups <= 0 or num_channels % num_groups != 0:
            raise ValueError(f"GroupNorm: num_channels must be divisible by num_groups (got "
                             f"num_channels={num_channels}, num_groups={num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _affine_parameters(self, (num_channels,), affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class _BatchNorm(Module):
    """Shared logic of BatchNorm1d/2d (PyTorch's ``_BatchNorm``).

    Training normalizes with the batch statistics and, with ``track_running_stats``, updates
    ``running_mean``/``running_var`` (unbiased variance) by
    ``r = (1 - momentum) r + momentum * stat``; ``momentum=None`` is the cumulative average,
    factor ``1 / num_batches_tracked``. Evaluation normalizes with the running statistics
    (or with the batch's when ``track_running_stats=False``).
    """

    _expected = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) \
                or num_features <= 0:
            raise ValueError(f"{type(self).__name__}: num_features must be a positive int, "
                             f"got {num_features!r}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        _affine_parameters(self, (num_features,), affine, bias, device, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", creation.zeros(num_features, dtype=dtype,
                                                                device=device))
            self.register_buffer("running_var", creation.ones(num_features, dtype=dtype,
                                                              device=device))
            self.register_buffer("num_batches_tracked",
                                 creation.tensor(0, dtype=np.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            self.num_batches_tracked.data[...] = 0
            self.num_batches_tracked._version.value += 1

    def reset_parameters(self):
        self.reset_running_stats()
        _reset_affine(self)

    def _check_input_dim(self, input):
        if not isinstance(input, Tensor):
            raise TypeError(f"{type(self).__name__}: expected a gmcore Tensor, got "
                            f"{type(input).__name__}")
        if input.ndim not in self._expected:
            want = " or ".join(f"{d}D" for d in self._expected)
            raise ValueError(f"{type(self).__name__}: expected {want} input (got "
                             f"{input.ndim}D input of shape {tuple(input.shape)})")

    def forward(self, input):
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            with no_grad():
                self.num_batches_tracked.data[...] += 1
                self.num_batches_tracked._version.value += 1
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked.data)
        # batch statistics in training, and in eval when no running statistics are kept
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if keep else None,
                            self.running_var if keep else None, self.weight, self.bias,
                            use_batch, factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization over (N, C) or (N, C, L): statistics per channel C.

    >>> import gmcore as gm
    >>> bn = gm.nn.BatchNorm1d(3)
    >>> y = bn(gm.randn(8, 3))
    >>> int(bn.num_batches_tracked), bn
    (1, BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True))
    """

    _expected = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization over (N, C, H, W): statistics per channel C.

    >>> import gmcore as gm
    >>> bn = gm.nn.BatchNorm2d(2, momentum=None)
    >>> bn(gm.randn(4, 2, 3, 3)).shape
    gmcore.Size([4, 2, 3, 3])
    """

    _expected = (4,)


class _InstanceNorm(_BatchNorm):
    """Shared logic of InstanceNorm1d/2d (PyTorch's ``_InstanceNorm``): each (sample, channel)
    is normalized over its own positions. Defaults differ from batch norm, as PyTorch:
    ``affine=False`` and ``track_running_stats=False``. With ``track_running_stats`` the
    running statistics are updated in training and used in evaluation. Unbatched input
    (C, *) is accepted.
    """

    _expected = ()  # (batched, unbatched) ndim

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)

    def forward(self, input):
        self._check_input_dim(input)
        batched = input.ndim == self._expected[0]
        if input.shape[-self._expected[1]] != self.num_features and (
                self.affine or self.track_running_stats):
            raise ValueError(f"{type(self).__name__}: expected {self.num_features} channels "
                             f"(dim {-self._expected[1]}), got input of shape "
                             f"{tuple(input.shape)}")
        x = input if batched else input.unsqueeze(0)
        use_input_stats = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum  # as PyTorch
        y = F.instance_norm(x, self.running_mean if self.track_running_stats else None,
                            self.running_var if self.track_running_stats else None,
                            self.weight, self.bias, use_input_stats, momentum, self.eps)
        return y if batched else y.squeeze(0)


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization over (N, C, L) or unbatched (C, L): statistics per sample and
    channel.

    >>> import gmcore as gm
    >>> m = gm.nn.InstanceNorm1d(3)
    >>> m(gm.randn(2, 3, 5)).shape, m
    (gmcore.Size([2, 3, 5]), InstanceNorm1d(3, eps=1e-05, momentum=0.1, affine=False, bias=False, track_running_stats=False))
    """

    _expected = (3, 2)


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization over (N, C, H, W) or unbatched (C, H, W) (CycleGAN's norm).

    >>> import gmcore as gm
    >>> gm.nn.InstanceNorm2d(2, affine=True)(gm.randn(4, 2, 3, 3)).shape
    gmcore.Size([4, 2, 3, 3])
    """

    _expected = (4, 3)
