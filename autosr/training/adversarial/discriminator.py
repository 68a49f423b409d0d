"""A conditional patch discriminator sized from the plan.

It sees the input channels concatenated with a target (real, or the generator's output) and answers with a
map of real/fake scores, one per receptive field ("PatchGAN"): texture realism is judged locally, which is
what L1 regression loses when it averages over plausible fine details. Spectral normalization on every
convolution bounds its Lipschitz constant, the standard stabiliser that keeps it from overpowering the
generator; no normalization layers (they would fight spectral normalization on small batches).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

MAX_DOWNSAMPLINGS = 3  # receptive field of about 70 voxels per axis at 3 downsamplings (kernel 4)
MIN_SIZE_TO_DOWNSAMPLE = 8  # an axis shorter than this keeps stride 1 (thin anisotropic patches)
MAX_FEATURES = 256


class PatchDiscriminator(nn.Module):
    """(B, in_channels + 1, *patch) -> (B, 1, *coarse) real/fake logits."""

    def __init__(self, dims: int, in_channels: int, patch_size: Sequence[int], base_features: int = 32):
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        layers: list[nn.Module] = []
        size = list(patch_size)
        channels, features = in_channels + 1, base_features
        for _ in range(MAX_DOWNSAMPLINGS):
            stride = [2 if s >= MIN_SIZE_TO_DOWNSAMPLE else 1 for s in size]
            if all(s == 1 for s in stride):
                break
            kernel = [4 if st == 2 else 3 for st in stride]
            layers += [
                spectral_norm(conv(channels, features, kernel, stride, padding=1)),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            size = [(s + 2 - k) // st + 1 for s, k, st in zip(size, kernel, stride)]
            channels, features = features, min(features * 2, MAX_FEATURES)
        layers += [spectral_norm(conv(channels, channels, 3, 1, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(spectral_norm(conv(channels, 1, 3, 1, padding=1)))
        self.layers = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([inputs, target], dim=1))


def discriminator_for_plan(network_plan: dict, patch_size: Sequence[int], in_channels: int) -> PatchDiscriminator:
    """A discriminator with the generator's dimensionality and first-stage width, for its patch size."""
    base = int(min(network_plan["features_per_stage"][0], MAX_FEATURES))
    return PatchDiscriminator(int(network_plan["dims"]), in_channels, patch_size, base)
