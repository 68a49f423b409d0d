"""Augmentation pipelines (batchgeneratorsv2 transforms), applied per sample before batching.

Spatial transforms (rotation, scaling, mirroring) act on the input (`image`) and on the target with the
same random parameters: the target and the mask travel as the channels of `regression_target`, which
batchgeneratorsv2 warps with the image's interpolation (bilinear, never nearest) and its grid. The mask is
re-binarized at 0.5 afterwards. Intensity transforms (noise, blur, brightness, contrast, gamma, simulated
low resolution) are `ImageOnlyTransform`s: they never touch the target, because the target is what the
network must produce from a degraded input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

# Probabilities and ranges follow the common self-configuring U-Net defaults (not tuned on this project).
ROTATION_RADIANS = (-np.pi / 6, np.pi / 6)
SCALING_RANGE = (0.7, 1.4)
P_ROTATION = 0.2
P_SCALING = 0.2


def spatial_transforms(
    patch_size: Sequence[int],
    mirror_axes: Sequence[int] = (0, 1, 2),
    p_rotation: float = P_ROTATION,
    p_scaling: float = P_SCALING,
) -> list[BasicTransform]:
    """Rotation/scaling (crops the centre `patch_size` of a larger sample), then mirroring; identical for
    input and target (bilinear for both)."""
    dims = len(patch_size)
    transforms: list[BasicTransform] = [
        SpatialTransform(
            patch_size=tuple(patch_size),
            patch_center_dist_from_border=0,
            random_crop=False,
            p_elastic_deform=0,
            p_rotation=p_rotation,
            rotation=ROTATION_RADIANS,
            p_scaling=p_scaling,
            scaling=SCALING_RANGE,
            p_synchronize_scaling_across_axes=1,
            mode_image="bilinear",
            padding_mode_image="zeros",
        )
    ]
    axes = tuple(a for a in mirror_axes if a < dims)
    if axes:
        transforms.append(MirrorTransform(allowed_axes=axes))
    return transforms


def intensity_transforms() -> list[BasicTransform]:
    """Degradations of the input only (ImageOnlyTransform subclasses), for 2D and 3D patches alike."""
    return [
        RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.05), p_per_channel=1), apply_probability=0.1),
        RandomTransform(
            GaussianBlurTransform(blur_sigma=(0.5, 1.0), synchronize_channels=False, p_per_channel=0.5),
            apply_probability=0.2,
        ),
        RandomTransform(
            MultiplicativeBrightnessTransform(multiplier_range=(0.75, 1.25), synchronize_channels=False),
            apply_probability=0.15,
        ),
        RandomTransform(
            ContrastTransform(contrast_range=BGContrast((0.75, 1.25)), preserve_range=True, synchronize_channels=False),
            apply_probability=0.15,
        ),
        RandomTransform(
            SimulateLowResolutionTransform(
                scale=(0.5, 1), synchronize_channels=False, synchronize_axes=True, ignore_axes=None
            ),
            apply_probability=0.25,
        ),
        RandomTransform(
            GammaTransform(
                gamma=(0.7, 1.5), p_invert_image=0, synchronize_channels=False, p_per_channel=1, p_retain_stats=1
            ),
            apply_probability=0.3,
        ),
    ]


def training_transforms(
    patch_size: Sequence[int], mirror_axes: Sequence[int] = (0, 1, 2), intensity: bool = True
) -> ComposeTransforms:
    """The full per-sample training pipeline: spatial (input+target) then intensity (input only)."""
    transforms = spatial_transforms(patch_size, mirror_axes)
    if intensity:
        transforms += intensity_transforms()
    return ComposeTransforms(transforms)


def sample_enlargement(patch_size: Sequence[int], rotate: bool = True) -> list[int]:
    """Size to cut around a patch centre so that rotation/scaling do not pull in padding inside the patch.

    A rotated patch needs the diagonal of its extent; 1.4x per axis (about sqrt(2)) covers in-plane
    rotations up to 45 degrees, well beyond the +-30 used here.
    """
    if not rotate:
        return [int(p) for p in patch_size]
    return [int(np.ceil(p * 1.4 / 2) * 2) for p in patch_size]
