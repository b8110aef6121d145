"""Class-conditional batch normalisation: batch norm without its own affine, then a per-example
gain and bias computed from the class (de Vries et al. 2017; Dumoulin et al. 2017; the
conditional generators of the projection-discriminator GAN, SAGAN and BigGAN).

* :class:`ConditionalBatchNorm2d`: gain and bias read from a class embedding (SAGAN, SN-GAN).
* :class:`LinearConditionalBatchNorm2d`: gain ``1 + W_g c`` and bias ``W_b c`` as linear maps of
  a conditioning vector ``c`` (BigGAN: the shared class embedding concatenated with this block's
  chunk of z).
"""
from __future__ import annotations

from .embedding import Embedding
from .linear import Linear
from .module import Module
from .normalization import BatchNorm2d

__all__ = ["ConditionalBatchNorm2d", "LinearConditionalBatchNorm2d"]


def _check(name, x, channels):
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name}({channels}) expects (N, {channels}, H, W), got shape {tuple(x.shape)}")


class ConditionalBatchNorm2d(Module):
    """``gamma_y * BN(x) + beta_y`` with ``gamma``, ``beta`` rows of a class embedding
    (``embed.weight`` (classes, 2C): gains in the first C columns, initialised to 1, biases
    after, initialised to 0), so the layer starts as plain batch norm for every class.

    >>> import gmcore as gm
    >>> cbn = gm.nn.ConditionalBatchNorm2d(4, num_classes=10)
    >>> cbn(gm.randn(6, 4, 3, 3), gm.tensor([0, 1, 2, 3, 4, 5])).shape
    gmcore.Size([6, 4, 3, 3])
    """

    def __init__(self, num_features: int, num_classes: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.num_classes = int(num_features), int(num_classes)
        if self.num_classes < 1:
            raise ValueError(f"ConditionalBatchNorm2d: num_classes must be positive, got {num_classes}")
        self.bn = BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False)
        self.embed = Embedding(num_classes, 2 * self.num_features)
        self.embed.weight.data[:, :self.num_features] = 1.0
        self.embed.weight.data[:, self.num_features:] = 0.0

    def forward(self, x, y):
        _check("ConditionalBatchNorm2d", x, self.num_features)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"ConditionalBatchNorm2d: labels must be ({x.shape[0]},) class indices, got "
                             f"shape {tuple(y.shape)}")
        gb = self.embed(y).reshape(y.shape[0], 2, self.num_features, 1, 1)   # gains, then biases
        return self.bn(x) * gb[:, 0] + gb[:, 1]

    def extra_repr(self):
        return f"{self.num_features}, num_classes={self.num_classes}"


class LinearConditionalBatchNorm2d(Module):
    """``(1 + W_g c) * BN(x) + W_b c`` for a conditioning vector ``c`` (N, cond_features):
    BigGAN's conditional batch norm (its ``ccbn``), where ``c`` is the shared class embedding
    with the block's chunk of z. ``gain`` and ``bias`` are :class:`Linear` layers without bias
    (BigGAN puts spectral norm on them: ``spectral_norm(layer.gain)``).

    >>> import gmcore as gm
    >>> cbn = gm.nn.LinearConditionalBatchNorm2d(4, cond_features=7)
    >>> cbn(gm.randn(6, 4, 3, 3), gm.randn(6, 7)).shape
    gmcore.Size([6, 4, 3, 3])
    """

    def __init__(self, num_features: int, cond_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.cond_features = int(num_features), int(cond_features)
        self.bn = BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False)
        self.gain = Linear(cond_features, num_features, bias=False)
        self.bias = Linear(cond_features, num_features, bias=False)

    def forward(self, x, c):
        _check("LinearConditionalBatchNorm2d", x, self.num_features)
        if c.ndim != 2 or tuple(c.shape) != (x.shape[0], self.cond_features):
            raise ValueError(f"LinearConditionalBatchNorm2d: the condition must be ({x.shape[0]}, "
                             f"{self.cond_features}), got shape {tuple(c.shape)}")
        shape = (c.shape[0], self.num_features, 1, 1)
        return self.bn(x) * (1.0 + self.gain(c)).reshape(shape) + self.bias(c).reshape(shape)

    def extra_repr(self):
        return f"{self.num_features}, cond_features={self.cond_features}"
