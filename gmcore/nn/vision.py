"""Resampling modules: ``Upsample``, ``PixelShuffle``, ``PixelUnshuffle``."""
from __future__ import annotations

from . import functional as F
from .module import Module

__all__ = ["Upsample", "PixelShuffle", "PixelUnshuffle"]


class Upsample(Module):
    """Resize (N, C, *spatial) by ``size`` or ``scale_factor`` with ``mode`` ('nearest',
    'linear', 'bilinear', ... whatever ``F.interpolate`` offers).

    >>> import gmcore as gm
    >>> up = gm.nn.Upsample(scale_factor=2, mode="nearest")
    >>> up(gm.zeros(1, 1, 3, 3)).shape, up
    (gmcore.Size([1, 1, 6, 6]), Upsample(scale_factor=2.0, mode='nearest'))
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.name = type(self).__name__
        self.size = size
        if isinstance(scale_factor, tuple):
            self.scale_factor = tuple(float(f) for f in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor is not None else None
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self):
        if self.scale_factor is not None:
            info = f"scale_factor={self.scale_factor!r}"
        else:
            info = f"size={self.size!r}"
        return info + f", mode={self.mode!r}"


class PixelShuffle(Module):
    """(N, C r^2, H, W) -> (N, C, H r, W r) (Shi et al. 2016, sub-pixel convolution).

    >>> import gmcore as gm
    >>> gm.nn.PixelShuffle(2)(gm.zeros(1, 8, 3, 3)).shape
    gmcore.Size([1, 2, 6, 6])
    """

    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, input):
        return F.pixel_shuffle(input, self.upscale_factor)

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """(N, C, H r, W r) -> (N, C r^2, H, W), the inverse of PixelShuffle."""

    def __init__(self, downscale_factor):
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, input):
        return F.pixel_unshuffle(input, self.downscale_factor)

    def extra_repr(self):
        return f"downscale_factor={self.downscale_factor}"
