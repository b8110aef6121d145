"""Normalizing flows: ``Flow`` transforms with log-determinants, composed by ``FlowSequential``
and put on a base density by ``FlowDensity`` (see :mod:`gmcore.nn.flows.base` for the direction
convention), and the transform layers of the classic flow models.
"""
from .base import Flow, FlowDensity, FlowSequential, NoAnalyticInverse, StandardNormal
from .glow import ActNorm2d, GlowStep, InvConv2d1x1
from .coupling import (AdditiveCoupling, AffineCoupling, Scaling, channel_split,  # noqa: F401
                       checkerboard_mask, conv_conditioner, mlp_conditioner)
from .multiscale import FactorOut, Reshape, Squeeze, Unsqueeze  # noqa: F401
from .batchnorm import BatchNormFlow  # noqa: F401
from .linear import LULinear, Permutation, ReversePermutation
from .actnorm1d import ActNorm1d
from .planar import Planar
from .radial import Radial
from .iaf import IAFStep, iaf_flow
from .autoregressive import MADENet, MaskedAffineAutoregressive  # noqa: F401
from .spline import RQSplineAutoregressive, RQSplineCoupling  # noqa: F401
from .made_mog import MADEMoG  # noqa: F401
from .dequantization import VariationalDequantizer

__all__ = ["Flow", "FlowSequential", "FlowDensity", "StandardNormal", "NoAnalyticInverse",
           "ActNorm2d", "InvConv2d1x1", "LULinear", "Permutation", "ReversePermutation",
           "ActNorm1d", "Planar", "Radial", "IAFStep", "iaf_flow",
           "GlowStep", "AdditiveCoupling", "AffineCoupling", "Scaling", "channel_split",
           "checkerboard_mask", "conv_conditioner", "mlp_conditioner", "FactorOut", "Reshape",
           "Squeeze", "Unsqueeze", "BatchNormFlow", "VariationalDequantizer"]
