"""Separable Gaussian blur of torch batches, for the SSIM loss's local statistics and the student's scanner
degradation: one kernel per spatial axis, applied axis by axis by a grouped convolution, 'same' size."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def gaussian_kernel(
    sigma: float, radius: int | None = None, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Normalized 1D Gaussian of `sigma` voxels over -radius..radius (default: ceil(4 sigma), scipy's reach)."""
    radius = max(1, math.ceil(4 * sigma)) if radius is None else radius
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def separable_blur(x: torch.Tensor, kernels: Sequence[torch.Tensor | None], mode: str = "reflect") -> torch.Tensor:
    """`x` (N, C, *spatial; 2 or 3 spatial axes) convolved along spatial axis a with `kernels[a]` (odd length;
    None: left alone), each channel on its own, padded by `mode` ('reflect' falls back to 'replicate' along an
    axis too short to reflect the kernel's radius)."""
    dims, channels = x.ndim - 2, x.shape[1]
    conv = {2: F.conv2d, 3: F.conv3d}[dims]
    for axis, kernel in enumerate(kernels):
        if kernel is None:
            continue
        radius = (len(kernel) - 1) // 2
        shape = [1] * dims
        shape[axis] = len(kernel)
        pad = [0, 0] * dims  # F.pad lists the last axis first
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        fits = mode != "reflect" or x.shape[2 + axis] > radius
        weight = kernel.to(dtype=x.dtype, device=x.device).reshape(1, 1, *shape).expand(channels, 1, *shape)
        x = conv(F.pad(x, pad, mode=mode if fits else "replicate"), weight, groups=channels)
    return x
