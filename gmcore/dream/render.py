"""A differentiable voxel renderer: emission-absorption volume rendering along orthographic rays,
seen from an azimuth (a rotation about the vertical axis).

The volume is a grid of density sigma >= 0 and intensity c in [0, 1], laid out (H, W, D): image
rows (the vertical axis), image columns, depth. A view at azimuth phi resamples the grid rotated
by phi about the vertical axis and composites each pixel's ray front to back (the viewer at
depth -inf looking along +depth), with step length ``delta`` (one voxel by default):

    tau_k   = sigma_k * delta
    T_k     = exp(-sum_{j<k} tau_j)            (transmittance up to voxel k)
    pixel   = sum_k T_k (1 - exp(-tau_k)) c_k + exp(-sum_k tau_k) * background

The rotation leaves rows alone, so trilinear resampling reduces to bilinear resampling in each
(column, depth) plane: one fixed (W*D, W*D) interpolation matrix per azimuth
(:func:`rotation_matrix`), applied by the engine's matmul, which carries the gradient to the grid.
Points that fall outside the grid read zero (empty space).
"""
from __future__ import annotations

import math

import numpy as np

from .. import creation as gc
from .. import functional as gf
from ..tensor import Tensor

__all__ = ["rotation_matrix", "rotation_matrices", "rotate", "composite", "render"]

# a resampling coordinate this close to a grid index is that index: rotations by multiples of
# 90 degrees (cos 90 = 6e-17 in floating point) then permute voxels exactly
_SNAP = 1e-9


def rotation_matrix(width: int, depth: int, azimuth: float) -> np.ndarray:
    """The (W*D, W*D) bilinear resampling matrix M of a rotation by ``azimuth`` degrees about the
    vertical axis: ``rotated.reshape(-1) = M @ grid.reshape(-1)`` for a (W, D) plane (column,
    depth). Voxel centres sit at ``i - (W - 1) / 2``, ``k - (D - 1) / 2``; output voxel (x, z)
    reads the grid at R(-azimuth) (x, z), zero outside the grid. A positive azimuth turns the
    object's front towards +column.

    >>> m = rotation_matrix(3, 3, 90.0)
    >>> plane = np.arange(9.0).reshape(3, 3)
    >>> (m @ plane.reshape(-1)).reshape(3, 3).tolist()
    [[2.0, 5.0, 8.0], [1.0, 4.0, 7.0], [0.0, 3.0, 6.0]]
    """
    if width < 1 or depth < 1:
        raise ValueError(f"rotation_matrix: width and depth must be positive, got {width}, {depth}")
    a = math.radians(float(azimuth))
    c, s = math.cos(a), math.sin(a)
    cx, cz = (width - 1) / 2.0, (depth - 1) / 2.0
    m = np.zeros((width * depth, width * depth))
    for i in range(width):
        for k in range(depth):
            x, z = i - cx, k - cz
            # the inverse rotation R(-a) of the output point gives where to read
            u, v = c * x + s * z + cx, -s * x + c * z + cz
            u = round(u) if abs(u - round(u)) < _SNAP else u
            v = round(v) if abs(v - round(v)) < _SNAP else v
            u0, v0 = math.floor(u), math.floor(v)
            for du in (0, 1):
                for dv in (0, 1):
                    ui, vi = u0 + du, v0 + dv
                    w = (1.0 - abs(u - ui)) * (1.0 - abs(v - vi))
                    if w > 0.0 and 0 <= ui < width and 0 <= vi < depth:
                        m[i * depth + k, ui * depth + vi] += w
    return m


def rotate(volume: Tensor, matrices: Tensor) -> Tensor:
    """Resample ``volume`` (..., W, D) with B rotation matrices (B, W*D, W*D) -> (B, ..., W, D):
    every (W, D) plane (one per row, and per channel) turns about the vertical axis."""
    *lead, W, D = volume.shape
    flat = volume.reshape(1, -1, W * D)
    out = gf.matmul(flat, matrices.transpose(1, 2))        # (B, R, W*D): row r is M @ plane r
    return out.reshape(matrices.shape[0], *lead, W, D)


def composite(density: Tensor, intensity: Tensor, background: float = 0.0, delta: float = 1.0) -> Tensor:
    """Emission-absorption compositing along the last axis (front first): density (..., D) >= 0
    and intensity (..., D) -> pixel values (...).

    >>> import gmcore as gm
    >>> round(float(composite(gm.tensor([[0.0, 1e9, 0.0]]), gm.tensor([[0.3, 0.7, 0.1]])).item()), 6)
    0.7
    """
    tau = density * delta
    before = gf.cumsum(tau, -1) - tau                      # optical depth in front of each voxel
    weights = gf.exp(-before) * (1.0 - gf.exp(-tau))
    out = (weights * intensity).sum(-1)
    if background:
        out = out + gf.exp(-tau.sum(-1)) * background
    return out


def render(density: Tensor, intensity: Tensor, matrices: Tensor, background: float = 0.0,
           delta: float = 1.0) -> Tensor:
    """Views (B, C, H, W) of the volume, density (H, W, D) and intensity (C, H, W, D), at the B
    azimuths whose :func:`rotation_matrix` matrices (B, W*D, W*D) are given.

    >>> import gmcore as gm
    >>> m = rotation_matrices(4, 4, [0.0, 30.0])
    >>> render(gm.zeros(4, 4, 4), gm.ones(1, 4, 4, 4), m, background=0.25).shape
    gmcore.Size([2, 1, 4, 4])
    """
    if len(density.shape) != 3 or len(intensity.shape) != 4 or \
            tuple(intensity.shape[1:]) != tuple(density.shape):
        raise ValueError(f"render: density must be (H, W, D) and intensity (C, H, W, D), got "
                         f"{tuple(density.shape)} and {tuple(intensity.shape)}")
    _, W, D = density.shape
    if len(matrices.shape) != 3 or tuple(matrices.shape[1:]) != (W * D, W * D):
        raise ValueError(f"render: rotation matrices must be (B, {W * D}, {W * D}) for a grid of "
                         f"width {W} and depth {D}, got {tuple(matrices.shape)}")
    sigma = rotate(density, matrices).unsqueeze(1)         # (B, 1, H, W, D): shared by the channels
    return composite(sigma, rotate(intensity, matrices), background, delta)


def rotation_matrices(width: int, depth: int, azimuths, like: Tensor | None = None) -> Tensor:
    """:func:`rotation_matrix` for each azimuth (degrees), stacked into a (B, W*D, W*D) tensor
    (on ``like``'s device and dtype when given)."""
    m = np.stack([rotation_matrix(width, depth, a) for a in np.atleast_1d(azimuths)])
    if like is None:
        return gc.tensor(m)
    return gc.tensor(m, device=like.device).to(like.dtype)
