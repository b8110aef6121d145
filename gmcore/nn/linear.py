"""Dense layers: ``Linear`` and ``Bilinear`` (PyTorch's names, shapes and initialisation)."""
from __future__ import annotations

import math

from . import functional as F
from . import init
from .module import Module
from .parameter import _param

__all__ = ["Linear", "Bilinear"]


def _weight_and_bias(module, weight_shape, bias_shape, device, dtype):
    """Register uninitialised ``weight`` and ``bias``; a None shape registers None (a layer
    built without that parameter, e.g. ``bias=False``)."""
    for name, shape in (("weight", weight_shape), ("bias", bias_shape)):
        module.register_parameter(name, None if shape is None else _param(shape, device, dtype))


def _reset_fan_in_uniform(module):
    """PyTorch's default for Linear and Conv: ``kaiming_uniform_(weight, a=sqrt(5))``, i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias from the same interval."""
    init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(module.weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(module.bias, -bound, bound)


def _check_features(op, **sizes):
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{op}: {name} must be a non-negative int, got {v!r}")


class Linear(Module):
    """``y = x @ weight.T + bias`` over the last dim: (*, in_features) -> (*, out_features).

    weight (out_features, in_features) and bias (out_features,) start as PyTorch's:
    ``kaiming_uniform_(weight, a=sqrt(5))``, i.e. U(-1/sqrt(in), 1/sqrt(in)), and bias U(same).

    >>> import gmcore as gm
    >>> fc = gm.nn.Linear(3, 2)
    >>> fc(gm.randn(4, 3)).shape, fc
    (gmcore.Size([4, 2]), Linear(in_features=3, out_features=2, bias=True))
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        _check_features("Linear", in_features=in_features, out_features=out_features)
        self.in_features = in_features
        self.out_features = out_features
        _weight_and_bias(self, (out_features, in_features), (out_features,) if bias else None,
                         device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_fan_in_uniform(self)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Bilinear(Module):
    """``y_k = x1 @ weight[k] @ x2 + bias_k``: (*, in1), (*, in2) -> (*, out).

    Parameters start as PyTorch's: U(-1/sqrt(in1), 1/sqrt(in1)) for weight and bias.

    >>> import gmcore as gm
    >>> m = gm.nn.Bilinear(3, 4, 2)
    >>> m(gm.randn(5, 3), gm.randn(5, 4)).shape
    gmcore.Size([5, 2])
    """

    def __init__(self, in1_features, in2_features, out_features, bias=True, device=None,
                 dtype=None):
        super().__init__()
        _check_features("Bilinear", in1_features=in1_features, in2_features=in2_features,
                        out_features=out_features)
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        _weight_and_bias(self, (out_features, in1_features, in2_features),
                         (out_features,) if bias else None, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.weight.shape[1]) if self.weight.shape[1] > 0 else 0
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1, input2):
        if input1.shape[:-1] != input2.shape[:-1] or input1.ndim == 0:
            raise RuntimeError(f"Bilinear: input1 {tuple(input1.shape)} and input2 "
                               f"{tuple(input2.shape)} must agree on every dim but the last")
        if input1.shape[-1] != self.in1_features or input2.shape[-1] != self.in2_features:
            raise RuntimeError(f"Bilinear: expected last dims ({self.in1_features}, "
                               f"{self.in2_features}), got ({input1.shape[-1]}, "
                               f"{input2.shape[-1]})")
        y = F.einsum("...i,oij,...j->...o", input1, self.weight, input2)
        return y if self.bias is None else y + self.bias

    def extra_repr(self):
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")

