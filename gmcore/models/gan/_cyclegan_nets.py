"""CycleGAN's networks (Zhu et al. 2017, appendix 7.2), scaled to small images.

:class:`ResnetGenerator`: ``c7s1-k, d2k, ..., R x blocks, ..., u k, c7s1-C`` -- a 7x7 (``first_kernel``)
convolution after reflection padding, ``down`` stride-2 3x3 convolutions doubling the channels,
residual blocks (reflection-padded 3x3 convolutions), as many stride-2 transposed convolutions
back, and a 7x7 convolution to the image's channels with tanh. Instance norm and ReLU after every
convolution but the last, as the paper. The paper's 256x256 net downsamples twice and has 9
blocks; 8x8 digits get 3x3 end convolutions, no downsampling and one block by default (see
:mod:`.cyclegan` for what the paper's shape did there).

:class:`PatchDiscriminator`: pix2pix's PatchGAN (``C64-C128-C256-C512``, 4x4 convolutions,
LeakyReLU 0.2, instance norm from the second layer on, then a 4x4 convolution to one channel per
patch) with ``layers`` stride-2 convolutions: 3 gives the paper's 70x70 receptive field, which
an 8x8 image cannot hold. Digits use 1 (pix2pix's "16x16 PatchGAN"): a 2x2 map of outputs, each
seeing a 16x16 window of the zero-padded 8x8 image, i.e. all of it. :func:`receptive_field`
gives the patch size of a configuration.
"""
from __future__ import annotations

from ... import nn

__all__ = ["ResnetGenerator", "PatchDiscriminator", "receptive_field", "auto_downsamplings"]


def auto_downsamplings(height: int, width: int) -> int:
    """The generator's stride-2 stages for an image size: none below 16 pixels (8x8 digits: a
    4x4 bottleneck let every output see the whole image, and the translations changed digit),
    else 2 (the paper's; 28 -> 7, 32 -> 8)."""
    return 0 if min(height, width) < 16 else 2


class _ReflectConv(nn.Module):
    """Reflection padding by ``kernel // 2``, then a stride-1 convolution (the paper's c7s1 and
    residual convolutions: no zero border for the generator to draw artefacts from)."""

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, padding_mode="reflect")

    def forward(self, x):
        return self.conv(x)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_ReflectConv(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(),
                                  _ReflectConv(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Images (B, C, H, W) in [-1, 1] to images of the same shape in [-1, 1] (see the module
    docstring).

    >>> import gmcore as gm
    >>> g = ResnetGenerator(1, channels=4, blocks=1, down=1)
    >>> g(gm.rand(2, 1, 8, 8) * 2 - 1).shape
    gmcore.Size([2, 1, 8, 8])
    """

    def __init__(self, image_channels: int, channels: int = 32, blocks: int = 3, down: int = 1,
                 first_kernel: int = 7):
        super().__init__()
        k = channels
        layers = [_ReflectConv(image_channels, k, first_kernel), nn.InstanceNorm2d(k), nn.ReLU()]
        for _ in range(down):      # d2k: 3x3 stride 2
            layers += [nn.Conv2d(k, 2 * k, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * k), nn.ReLU()]
            k *= 2
        layers += [_ResidualBlock(k) for _ in range(blocks)]
        for _ in range(down):      # u k/2: 3x3 fractionally strided, stride 1/2
            layers += [nn.ConvTranspose2d(k, k // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(k // 2), nn.ReLU()]
            k //= 2
        layers += [_ReflectConv(k, image_channels, first_kernel), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.down = down

    def forward(self, x):
        scale = 2 ** self.down
        if x.shape[-1] % scale or x.shape[-2] % scale:
            raise ValueError(f"ResnetGenerator with {self.down} downsampling(s) needs sides divisible by "
                             f"{scale}, got {tuple(x.shape[-2:])}")
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """Images (B, C, H, W) in [-1, 1] to a map of real-or-fake scores (B, 1, h, w), one per patch
    (see the module docstring).

    >>> import gmcore as gm
    >>> PatchDiscriminator(1, channels=4, layers=1)(gm.rand(2, 1, 8, 8)).shape
    gmcore.Size([2, 1, 2, 2])
    """

    def __init__(self, image_channels: int, channels: int = 32, layers: int = 1):
        super().__init__()
        if layers < 1:
            raise ValueError(f"PatchDiscriminator needs at least one stride-2 layer, got {layers}")
        k = channels
        seq = [nn.Conv2d(image_channels, k, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(layers - 1):
            seq += [nn.Conv2d(k, min(2 * k, 8 * channels), 4, stride=2, padding=1),
                    nn.InstanceNorm2d(min(2 * k, 8 * channels)), nn.LeakyReLU(0.2)]
            k = min(2 * k, 8 * channels)
        cout = min(2 * k, 8 * channels)
        seq += [nn.Conv2d(k, cout, 4, stride=1, padding=1), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2),
                nn.Conv2d(cout, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*seq)
        self.layers = layers

    def forward(self, x):
        return self.net(x)


def receptive_field(layers: int) -> int:
    """The side of the input window each output of ``PatchDiscriminator(layers=...)`` sees:
    4x4 kernels, ``layers`` of stride 2 then two of stride 1 (3 gives the paper's 70).

    >>> receptive_field(3), receptive_field(1)
    (70, 16)
    """
    rf, jump = 1, 1
    for stride in [2] * layers + [1, 1]:
        rf += 3 * jump
        jump *= stride
    return rf
