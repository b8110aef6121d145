"""Dense layers: ``Linear`` and ``Bilinear`` (PyTorch's names, shapes and initialisation)."""
from __future__ import annotations

import math

from .. import creation
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Linear", "Bilinear"]


def _param(shape, device, dtype):
    """An uninitialised Parameter; ``reset_parameters`` fills it."""
    return Parameter(creation.empty(*shape, dtype=dtype, device=device))


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
        self.weight = _param((out_features, in_features), device, dtype)
        if bias:
            self.bias = _param((out_features,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # a=sqrt(5) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's historical default
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

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
        self.weight = _param((out_features, in1_features, in2_features), device, dtype)
        if bias:
            self.bias = _param((out_features,), device, dtype)
        else:
            self.register_parameter("bias", None)
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

