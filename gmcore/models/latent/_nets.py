"""Small networks shared by the latent-variable models."""
from __future__ import annotations

from ... import nn


def mlp(d_in: int, hidden: int, layers: int, d_out: int, act=None) -> nn.Sequential:
    """``layers`` hidden Linear layers of width ``hidden`` with ``act`` (default ELU), then a
    linear output layer."""
    mods, d = [], d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), (act or nn.ELU)()]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


def conv_encoder(shape, width: int, d_out: int) -> nn.Sequential:
    """Image (C, H, W) -> d_out: a 3x3 conv, two stride-2 4x4 convs (H and W divisible by 4),
    then a linear layer. ELU throughout."""
    c, h, w = _check_image(shape)
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.ELU(),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ELU(),
        nn.Conv2d(2 * width, 2 * width, 4, stride=2, padding=1), nn.ELU(),
        nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), d_out))


def conv_decoder(d_in: int, width: int, shape, out_channels: int) -> nn.Sequential:
    """d_in -> (out_channels, H, W), the mirror of :func:`conv_encoder`, flattened per example so
    it is interchangeable with :func:`mlp` (outputs are channel-major either way)."""
    _, h, w = _check_image(shape)
    return nn.Sequential(
        nn.Linear(d_in, 2 * width * (h // 4) * (w // 4)), nn.ELU(),
        nn.Unflatten(1, (2 * width, h // 4, w // 4)),
        nn.ConvTranspose2d(2 * width, 2 * width, 4, stride=2, padding=1), nn.ELU(),
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ELU(),
        nn.Conv2d(width, out_channels, 3, padding=1), nn.Flatten())


def _check_image(shape):
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"the conv architecture needs images (C, H, W) with H and W divisible by 4, "
                         f"got {tuple(shape)}; use --arch mlp")
    return tuple(int(s) for s in shape)
