"""Augmentation pipelines (batchgeneratorsv2 transforms), applied per sample before batching.

Spatial transforms act on the input (`image`) and on the target with the same random parameters: the
target and the mask travel as the channels of `regression_target`. Three policies (`SPATIAL_POLICIES`):

- "interpolating": rotation (+-30 deg) and scaling (0.7-1.4), each with probability 0.2, then mirroring.
  batchgeneratorsv2 resamples the target with the image's (bi/tri)linear interpolation, which blurs it.
- "lossless": transforms that move voxels without interpolating: permutations of interchangeable axes
  (equal spacing; 90-degree rotations together with mirroring) and mirroring. The target keeps every
  detail a resolution-enhancing model must learn.
- "mirror": mirroring only.

The mask is re-binarized at 0.5 afterwards. Intensity transforms (noise, blur, brightness, contrast, gamma,
simulated low resolution) are `ImageOnlyTransform`s: they never touch the target, because the target is
what the network must produce from a degraded input.
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

SPATIAL_POLICIES = ("interpolating", "lossless", "mirror")

# Probabilities and ranges follow the common self-configuring U-Net defaults (not tuned on this project).
ROTATION_RADIANS = (-np.pi / 6, np.pi / 6)
SCALING_RANGE = (0.7, 1.4)
P_ROTATION = 0.2
P_SCALING = 0.2


class AxisPermutationTransform(BasicTransform):
    """Permute interchangeable spatial axes at random (the same permutation for every key), then crop the
    centre `patch_size`: a lossless reorientation. `axis_groups` lists groups of spatial axes that may be
    exchanged (equal spacing); the sample must be at least the group's largest patch size on each of them."""

    def __init__(self, patch_size: Sequence[int], axis_groups: Sequence[Sequence[int]]):
        super().__init__()
        self.patch_size = [int(p) for p in patch_size]
        self.axis_groups = [tuple(int(a) for a in g) for g in axis_groups if len(g) > 1]

    def get_parameters(self, **data_dict) -> dict:
        order = list(range(len(self.patch_size)))
        for group in self.axis_groups:
            shuffled = [group[i] for i in np.random.permutation(len(group))]
            for axis, source in zip(group, shuffled):
                order[axis] = source
        return {"order": order}

    def _apply_to_image(self, img, **params):
        moved = img.permute(0, *(1 + a for a in params["order"]))
        starts = [(s - p) // 2 for s, p in zip(moved.shape[1:], self.patch_size)]
        window = tuple(slice(st, st + p) for st, p in zip(starts, self.patch_size))
        return moved[(slice(None), *window)].contiguous()

    def _apply_to_regr_target(self, regression_target, **params):
        return self._apply_to_image(regression_target, **params)


def interchangeable_axes(spacing: Sequence[float], tolerance: float = 1e-3) -> list[tuple[int, ...]]:
    """Groups of axes with equal spacing (within `tolerance` relative): only these may be permuted."""
    groups: list[list[int]] = []
    for axis, value in enumerate(spacing):
        for group in groups:
            if abs(spacing[group[0]] - value) <= tolerance * max(value, 1e-9):
                group.append(axis)
                break
        else:
            groups.append([axis])
    return [tuple(g) for g in groups if len(g) > 1]


def spatial_transforms(
    patch_size: Sequence[int],
    mirror_axes: Sequence[int] = (0, 1, 2),
    p_rotation: float = P_ROTATION,
    p_scaling: float = P_SCALING,
    policy: str = "interpolating",
    axis_groups: Sequence[Sequence[int]] = (),
) -> list[BasicTransform]:
    """The spatial transforms of `policy` (module docstring); identical for input and target."""
    if policy not in SPATIAL_POLICIES:
        raise ValueError(f"unknown spatial augmentation '{policy}' (valid: {', '.join(SPATIAL_POLICIES)})")
    dims = len(patch_size)
    transforms: list[BasicTransform] = []
    if policy == "interpolating":
        transforms.append(
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
        )
    elif policy == "lossless" and axis_groups:
        transforms.append(AxisPermutationTransform(patch_size, axis_groups))
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
    patch_size: Sequence[int],
    mirror_axes: Sequence[int] = (0, 1, 2),
    intensity: bool = True,
    policy: str = "interpolating",
    axis_groups: Sequence[Sequence[int]] = (),
) -> ComposeTransforms:
    """The full per-sample training pipeline: spatial (input+target) then intensity (input only)."""
    transforms = spatial_transforms(patch_size, mirror_axes, policy=policy, axis_groups=axis_groups)
    if intensity:
        transforms += intensity_transforms()
    return ComposeTransforms(transforms)


def sample_size(patch_size: Sequence[int], policy: str | None, axis_groups: Sequence[Sequence[int]] = ()) -> list[int]:
    """Size to cut around a patch centre before the spatial transforms (`policy` None: no augmentation).

    "interpolating": 1.4x per axis (about sqrt(2)), so rotations up to 45 degrees in-plane (beyond the +-30
    used) and scaling do not pull padding into the patch. "lossless": each axis as large as the largest
    patch edge it may be exchanged with. Otherwise the patch itself.
    """
    size = [int(p) for p in patch_size]
    if policy == "interpolating":
        return [int(np.ceil(p * 1.4 / 2) * 2) for p in size]
    if policy == "lossless":
        for group in axis_groups:
            largest = max(size[a] for a in group)
            for a in group:
                size[a] = largest
    return size
