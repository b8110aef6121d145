"""What score distillation optimises: a voxel grid rendered from azimuths, or (the sanity
baseline) an image, the same at every azimuth. Both map azimuths (degrees) to images
(B, C, H, W) in the data's range [0, 1]; their parameters are unconstrained logits.
"""
from __future__ import annotations

import numpy as np

from .. import creation as gc
from .. import functional as gf
from .. import nn
from ..tensor import Tensor
from .render import render, rotation_matrices

__all__ = ["VoxelScene", "ImageScene", "make_scene"]


class VoxelScene(nn.Module):
    """A (H, W, D) grid of density ``softplus(density_logit)`` and C channels of intensity
    ``sigmoid(intensity_logit)``, rendered by :func:`~gmcore.dream.render.render` over a
    ``background``.

    Initialisation: a faint grey fog (density ``init_density`` per voxel, intensity 0.5) with a
    little noise from ``generator``, so the first views are nearly the background and every
    voxel starts with a gradient.

    >>> import gmcore as gm
    >>> scene = VoxelScene((1, 8, 8), generator=gm.Generator().manual_seed(0))
    >>> scene(gm.tensor([-30.0, 0.0, 30.0])).shape
    gmcore.Size([3, 1, 8, 8])
    """

    def __init__(self, shape, depth: int = 0, background: float = 0.0, init_density: float = 0.05,
                 generator=None):
        super().__init__()
        C, H, W = (int(v) for v in shape)
        D = int(depth) or W
        if init_density <= 0:
            raise ValueError(f"VoxelScene: init_density must be positive, got {init_density}")
        self.shape, self.depth, self.background = (C, H, W), D, float(background)
        raw = float(np.log(np.expm1(init_density)))          # softplus^-1
        self.density_logit = nn.Parameter(raw + 0.1 * gc.randn(H, W, D, generator=generator))
        self.intensity_logit = nn.Parameter(0.1 * gc.randn(C, H, W, D, generator=generator))

    def volume(self) -> tuple[Tensor, Tensor]:
        """(density (H, W, D), intensity (C, H, W, D))."""
        return gf.softplus(self.density_logit), gf.sigmoid(self.intensity_logit)

    def forward(self, azimuths) -> Tensor:
        az = azimuths.detach().cpu().numpy() if isinstance(azimuths, Tensor) else np.asarray(azimuths, float)
        density, intensity = self.volume()
        m = rotation_matrices(self.shape[2], self.depth, az, like=density)
        return render(density, intensity, m, background=self.background)


class ImageScene(nn.Module):
    """An image ``sigmoid(logit)`` (C, H, W), the same from every azimuth: SDS on pixels, the
    sanity baseline of the voxel scene (started, like it, near the background).

    >>> import gmcore as gm
    >>> ImageScene((1, 8, 8))(gm.tensor([0.0, 10.0])).shape
    gmcore.Size([2, 1, 8, 8])
    """

    def __init__(self, shape, background: float = 0.0, generator=None):
        super().__init__()
        C, H, W = (int(v) for v in shape)
        self.shape = (C, H, W)
        b = min(max(float(background), 0.05), 0.95)           # sigmoid^-1 of the background, kept finite
        self.logit = nn.Parameter(float(np.log(b / (1 - b))) + 0.1 * gc.randn(C, H, W, generator=generator))

    def forward(self, azimuths) -> Tensor:
        n = len(azimuths)
        return gf.sigmoid(self.logit).unsqueeze(0).expand(n, *self.shape)


def make_scene(representation: str, shape, background: float = 0.0, depth: int = 0, generator=None):
    """``"voxels"`` -> :class:`VoxelScene`, ``"image"`` -> :class:`ImageScene`."""
    if representation == "voxels":
        return VoxelScene(shape, depth=depth, background=background, generator=generator)
    if representation == "image":
        return ImageScene(shape, background=background, generator=generator)
    raise ValueError(f"unknown representation {representation!r}: voxels or image")
