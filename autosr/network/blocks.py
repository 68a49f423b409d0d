"""Convolution building blocks of the dynamic U-Net: conv + normalization + leaky ReLU, residual blocks.

The normalization layer is chosen by name (`NORMALIZATIONS`, the plan's `network.norm`): "instance" (per
sample and channel, over the patch), "batch" (running statistics at inference), "group" (per sample, over
groups of channels) or "none". A regression network's output must not depend on how a volume is tiled;
normalizations whose statistics come from the tile itself (instance, group) make it depend on the tile
(documentation/training.md, "Network normalization and tiling").

The blocks are dimension-agnostic: `dims` (2 or 3) picks Conv2d/Conv3d and friends, so one code path builds
the 2d and the 3d configurations. Kernel sizes and strides are per axis, so anisotropic plans such as
kernel (1, 3, 3) with stride (1, 2, 2) (thick-slice data) work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

LEAKY_RELU_SLOPE = 0.01  # the usual leaky-ReLU slope of self-configuring U-Nets; not tuned here


def conv_class(dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def transposed_conv_class(dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]


NORMALIZATIONS = ("instance", "batch", "group", "none")
# Channels per group of "group" normalization (at least one group): 8 channels per group keeps group
# statistics stable on the 32-channel first stage; not tuned.
CHANNELS_PER_GROUP = 8


def make_norm(kind: str, dims: int, channels: int) -> nn.Module:
    """The normalization layer `kind` (one of `NORMALIZATIONS`) for `channels` feature maps."""
    if kind == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](channels, eps=1e-5, affine=True)
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels, eps=1e-5)
    if kind == "group":
        return nn.GroupNorm(max(1, channels // CHANNELS_PER_GROUP), channels, eps=1e-5)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalization '{kind}' (valid: {', '.join(NORMALIZATIONS)})")


def average_pool_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Average-pool (B, C, *spatial) down to `size` (integer factors per axis): a coarse voxel holds the mean
    of the fine voxels it covers. Unchanged when `x` has that size already."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    factors = [s // t for s, t in zip(x.shape[2:], size)]
    pool = {2: nn.functional.avg_pool2d, 3: nn.functional.avg_pool3d}[x.ndim - 2]
    return pool(x, kernel_size=factors, stride=factors)


def same_padding(kernel_size: Sequence[int]) -> list[int]:
    """Padding that keeps the spatial size for odd kernels (and stride 1)."""
    return [k // 2 for k in kernel_size]


class ConvNormAct(nn.Sequential):
    """Conv -> normalization -> LeakyReLU; `act=False` leaves the activation out (residual branch end)."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        act: bool = True,
        norm: str = "instance",
    ):
        layers: list[nn.Module] = [
            conv_class(dims)(
                in_channels,
                out_channels,
                kernel_size=tuple(kernel_size),
                stride=tuple(stride),
                padding=tuple(same_padding(kernel_size)),
                bias=True,
            ),
            make_norm(norm, dims, out_channels),
        ]
        if act:
            layers.append(nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True))
        super().__init__(*layers)


class PlainStage(nn.Sequential):
    """`n_convs` ConvNormAct layers; the first one carries the stage's stride (strided-conv downsampling)."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        n_convs: int,
        norm: str = "instance",
    ):
        layers = [ConvNormAct(dims, in_channels, out_channels, kernel_size, stride, norm=norm)]
        layers += [
            ConvNormAct(dims, out_channels, out_channels, kernel_size, [1] * dims, norm=norm)
            for _ in range(n_convs - 1)
        ]
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two convolutions with an identity (or 1x1 projection) shortcut, activation after the sum.

    When the block changes resolution or width, the shortcut is average pooling followed by a 1x1 conv and
    norm, so the skip path does not throw away three quarters of the voxels as a strided 1x1 conv would.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        norm: str = "instance",
    ):
        super().__init__()
        self.conv1 = ConvNormAct(dims, in_channels, out_channels, kernel_size, stride, norm=norm)
        self.conv2 = ConvNormAct(dims, out_channels, out_channels, kernel_size, [1] * dims, act=False, norm=norm)
        self.act = nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True)
        shortcut: list[nn.Module] = []
        if any(s != 1 for s in stride):
            pool = {2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims]
            shortcut.append(pool(kernel_size=tuple(stride), stride=tuple(stride)))
        if in_channels != out_channels or shortcut:
            shortcut.append(conv_class(dims)(in_channels, out_channels, kernel_size=1, bias=False))
            shortcut.append(make_norm(norm, dims, out_channels))
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResidualStage(nn.Sequential):
    """`n_blocks` residual blocks; the first carries the stage's stride."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        n_blocks: int,
        norm: str = "instance",
    ):
        blocks = [ResidualBlock(dims, in_channels, out_channels, kernel_size, stride, norm=norm)]
        blocks += [
            ResidualBlock(dims, out_channels, out_channels, kernel_size, [1] * dims, norm=norm)
            for _ in range(n_blocks - 1)
        ]
        super().__init__(*blocks)


class TransposedUpsample(nn.Module):
    """Learned upsampling by a transposed convolution with kernel = stride (no overlap)."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, stride: Sequence[int]):
        super().__init__()
        self.up = transposed_conv_class(dims)(
            in_channels, out_channels, kernel_size=tuple(stride), stride=tuple(stride), bias=False
        )

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.up(x)


class InterpConvUpsample(nn.Module):
    """(Bi/tri)linear interpolation to the skip's size, then a 1x1 conv to the skip's width.

    Interpolation cannot produce the periodic checkerboard a transposed conv can when its kernels are
    uneven; the 1x1 conv only mixes channels. The decoder's following convs do the spatial work.
    """

    def __init__(self, dims: int, in_channels: int, out_channels: int, stride: Sequence[int]):
        super().__init__()
        self.mode = {2: "bilinear", 3: "trilinear"}[dims]
        self.proj = conv_class(dims)(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        x = nn.functional.interpolate(x, size=tuple(size), mode=self.mode, align_corners=False)
        return self.proj(x)


UPSAMPLERS: dict[str, type[nn.Module]] = {"transposed": TransposedUpsample, "interp_conv": InterpConvUpsample}
