"""Augmentation keeps input and target aligned and degrades the input only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from scipy.ndimage import binary_erosion

from autosr.training.augmentation import intensity_transforms, interchangeable_axes, sample_size, spatial_transforms


def _smooth_volume(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    rng = np.random.RandomState(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    v = sum(np.sin((3 + k) * g * np.pi + rng.rand()) for k, g in enumerate(grids))
    return torch.from_numpy(v[None].astype(np.float32))


def _force(transform):
    """The same transform with its random choices forced on (rotation and scaling always, every axis)."""
    if isinstance(transform, SpatialTransform):
        transform.p_rotation = 1.0
        transform.p_scaling = 1.0
    return transform


@pytest.mark.parametrize("shape,patch", [((30, 34, 38), (16, 20, 24)), ((40, 44), (24, 28))])
def test_spatial_transforms_keep_voxelwise_relation(shape, patch) -> None:
    """target = 2 * input + 1 holds voxel-wise after each spatial transform (where nothing was padded)."""
    image = _smooth_volume(shape)
    target = 2 * image + 1
    inside = torch.ones_like(image)  # travels like the mask: tells which output voxels saw only real data
    transforms = [_force(t) for t in spatial_transforms(patch, mirror_axes=tuple(range(len(patch))))]
    assert any(isinstance(t, SpatialTransform) for t in transforms)
    assert any(isinstance(t, MirrorTransform) for t in transforms)
    torch.manual_seed(0)
    np.random.seed(0)
    for transform in transforms:
        for _ in range(4):
            out = transform(image=image.clone(), regression_target=torch.cat([target, inside]))
            warped_image = out["image"]
            warped_target, warped_inside = out["regression_target"][:1], out["regression_target"][1:]
            assert warped_image.shape[1:] == (tuple(patch) if isinstance(transform, SpatialTransform) else shape)
            valid = warped_inside > 0.999
            assert valid.float().mean() > 0.5
            assert torch.allclose(warped_target[valid], 2 * warped_image[valid] + 1, atol=1e-4)
            # the warp really happened: not just a centre crop
            if isinstance(transform, SpatialTransform):
                starts = [(s - p) // 2 for s, p in zip(shape, patch)]
                centre = image[(slice(None), *(slice(s, s + p) for s, p in zip(starts, patch)))]
                assert (warped_image - centre).abs().mean() > 0.05 * centre.abs().mean()


def test_intensity_transforms_touch_input_only() -> None:
    image = _smooth_volume((20, 20, 20))
    target = 2 * image + 1
    torch.manual_seed(1)
    np.random.seed(1)
    changed = 0
    for transform in intensity_transforms():
        transform.apply_probability = 1.0
        out = transform(image=image.clone(), regression_target=target.clone())
        assert torch.equal(out["regression_target"], target)
        changed += int(not torch.allclose(out["image"], image))
    assert changed >= 5  # noise, blur, brightness, contrast, low resolution, gamma all act on the input


def test_patch_loader_pairs_stay_aligned(tmp_path) -> None:
    """The full per-sample pipeline (crop, spatial, mirror) on a stored case keeps target = 2*input + 1."""
    from autosr.preprocessing.case_store import save_case
    from autosr.training.data import PatchLoader, PatchSampling

    image = _smooth_volume((40, 40, 40)).numpy()
    mask = np.ones((1, 40, 40, 40), dtype=np.uint8)
    save_case(tmp_path, "c0", image, {}, 2 * image + 1, mask)
    loader = PatchLoader(tmp_path, ["c0"], PatchSampling((16, 16, 16), batch_size=2, augment=True), seed=3)
    for t in loader.transforms.transforms:
        _force(t)
        if hasattr(t, "apply_probability"):
            t.apply_probability = 0.0  # intensity transforms off: they change the input on purpose
    for _ in range(3):
        sample = loader.sample("c0", on_foreground=True)
        valid = sample["mask"][0] > 0
        # bilinear mixing with the zero padding only happens on the mask's rim: check the voxels inside it
        eroded = binary_erosion(valid, iterations=1)[None]
        assert eroded.mean() > 0.05
        assert np.allclose(sample["target"][eroded], 2 * sample["input"][eroded] + 1, atol=1e-4)


@pytest.mark.parametrize(
    "shape,patch,groups", [((20, 24, 24), (16, 20, 20), [(1, 2)]), ((18, 18, 18), (12, 12, 12), [(0, 1, 2)])]
)
def test_lossless_policy_moves_voxels_without_interpolating(shape, patch, groups) -> None:
    """Permutations and flips only: target = 2 * input + 1 exactly, and the axes really get exchanged."""
    image = _smooth_volume(shape)
    target = 2 * image + 1
    size = sample_size(patch, "lossless", groups)
    crop = tuple(slice((s - z) // 2, (s - z) // 2 + z) for s, z in zip(shape, size))
    sample_image, sample_target = image[(slice(None), *crop)], target[(slice(None), *crop)]
    transforms = spatial_transforms(patch, mirror_axes=(), policy="lossless", axis_groups=groups)
    assert [type(t).__name__ for t in transforms] == ["AxisPermutationTransform"]
    np.random.seed(0)
    orders = set()
    for _ in range(12):
        params = transforms[0].get_parameters(image=sample_image)
        out = transforms[0].apply({"image": sample_image.clone(), "regression_target": sample_target.clone()}, **params)
        assert tuple(out["image"].shape[1:]) == tuple(patch)
        assert torch.equal(out["regression_target"], 2 * out["image"] + 1)
        moved = sample_image.permute(0, *(1 + a for a in params["order"]))
        starts = [(m - p) // 2 for m, p in zip(moved.shape[1:], patch)]
        expected = moved[(slice(None), *(slice(s, s + p) for s, p in zip(starts, patch)))]
        assert torch.equal(out["image"], expected)
        orders.add(tuple(params["order"]))
    assert len(orders) > 1  # axes were exchanged, not only kept


def test_only_equally_spaced_axes_are_interchangeable() -> None:
    assert interchangeable_axes((1.0, 1.0, 1.0)) == [(0, 1, 2)]
    assert interchangeable_axes((4.0, 1.0, 1.0)) == [(1, 2)]
    assert interchangeable_axes((3.0, 2.0, 1.0)) == []
