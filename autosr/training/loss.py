"""Regression losses: masked L1, an SSIM term, and deep-supervision weighting.

All losses take (prediction, target, mask) with shapes (B, 1, *spatial); the mask (0/1 float) marks the
voxels that count. Voxels outside the mask still get a small weight, `OUTSIDE_MASK_WEIGHT`: with a strictly
masked loss the network never sees what the background should be, and predicted an unconstrained, bright
background around the brain on the demo's synthetic data (documentation/training.md, "Loss outside the
mask"). Evaluation stays strictly inside the mask. Deep supervision compares lower-resolution outputs with the target and mask
downsampled by average pooling (a low-resolution image is the local mean of the high-resolution one;
nearest-neighbour subsampling would alias fine detail into the coarse targets).
"""

from __future__ import annotations

import torch
from torch import nn

from autosr.network.blocks import average_pool_to
from autosr.training.gaussian_blur import gaussian_kernel, separable_blur

# Relative weight of voxels outside the mask in every loss (inside: 1). Chosen among 0, 0.1, 0.5 and 1.0
# (documentation/training.md, "Loss outside the mask"): best SSIM and MS-SSIM at 0.1.
OUTSIDE_MASK_WEIGHT = 0.1


def voxel_weights(mask: torch.Tensor) -> torch.Tensor:
    """1 inside the mask, `OUTSIDE_MASK_WEIGHT` outside (fractional masks from average pooling interpolate)."""
    m = mask.float()
    return m + OUTSIDE_MASK_WEIGHT * (1.0 - m)


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Weighted mean |prediction - target|: weight 1 inside the mask, `OUTSIDE_MASK_WEIGHT` outside (plain mean
    when mask is None)."""
    diff = (prediction.float() - target.float()).abs()
    if mask is None:
        return diff.mean()
    weight = voxel_weights(mask)
    return (diff * weight).sum() / weight.sum().clamp_min(1e-6)


def masked_ssim(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, data_range: float = 4.0
) -> torch.Tensor:
    """Mean local SSIM (Gaussian window sigma 1.5), weighted like `masked_l1`. `data_range` is in normalized units
    (4 covers about +-2 standard deviations of a z-scored target)."""
    p, t = prediction.float(), target.float()
    window = [gaussian_kernel(1.5, radius=3, device=p.device)] * (p.ndim - 2)

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return separable_blur(x, window)

    mu_p, mu_t = local_mean(p), local_mean(t)
    var_p = local_mean(p * p) - mu_p**2
    var_t = local_mean(t * t) - mu_t**2
    cov = local_mean(p * t) - mu_p * mu_t
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    if mask is None:
        return ssim.mean()
    w = voxel_weights(mask)
    return (ssim * w).sum() / w.sum().clamp_min(1e-6)


class L1Loss(nn.Module):
    """Masked L1: robust to the outliers of MR intensity (vessels, fat) and sharper than L2."""

    def forward(self, prediction, target, mask):
        return masked_l1(prediction, target, mask)


class L1SSIMLoss(nn.Module):
    """Masked L1 + `ssim_weight` * (1 - masked SSIM)."""

    def __init__(self, ssim_weight: float = 0.5):
        super().__init__()
        self.ssim_weight = ssim_weight

    def forward(self, prediction, target, mask):
        return masked_l1(prediction, target, mask) + self.ssim_weight * (1 - masked_ssim(prediction, target, mask))


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """Weights 1, 1/2, 1/4, ... normalized to sum 1 (the coarsest of several outputs gets no weight)."""
    weights = [0.5**i for i in range(n_outputs)]
    if n_outputs > 2:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of `base` over a list of outputs [full, half, ...]; a single tensor passes through."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, outputs, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.base(outputs, target, mask)
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(deep_supervision_weights(len(outputs)), outputs):
            if w == 0:
                continue
            size = out.shape[2:]
            m = average_pool_to(mask, size) if mask is not None else None
            if m is not None:
                m = (m > 0.5).float()  # a coarse voxel counts when most of its fine voxels count
            total = total + w * self.base(out, average_pool_to(target, size), m)
        return total


LOSSES: dict[str, type[nn.Module]] = {"l1": L1Loss, "l1_ssim": L1SSIMLoss}
