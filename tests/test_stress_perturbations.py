"""Perturbations and lesions are seeded and exact: the same seed gives the same scan, a lesion is read back
where it was put, in the same physical place on grids of different voxel sizes."""

from __future__ import annotations

import numpy as np
import pytest

from autosr.evaluation.stress.lesions import Lesion, insert_lesions, place_lesions, sphere_mask, tissue_labels
from autosr.evaluation.stress.perturbations import (
    ACQUISITION_CHANGES,
    BiasField,
    GaussianNoise,
    Ghosting,
    IntensityScale,
    VoxelSize,
    perturbation_seed,
)
from autosr.io import Geometry

DIRECTION = (1, 0, 0, 0, 1, 0, 0, 0, 1)


def _image(shape=(16, 18, 20)) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return (100 + 50 * (z * z + y * y + x * x < 0.5) + 30 * (x > 0)).astype(np.float32)


GEOMETRY = Geometry((1.5, 1.5, 1.5), (-10.0, 5.0, 2.0), DIRECTION, (16, 18, 20))


@pytest.mark.parametrize("perturbation", ACQUISITION_CHANGES, ids=lambda p: p.name)
def test_every_perturbation_is_seeded(perturbation):
    image, foreground = _image(), np.ones((16, 18, 20), dtype=bool)
    first, g1 = perturbation.apply(image, GEOMETRY, foreground, seed=3)
    again, g2 = perturbation.apply(image, GEOMETRY, foreground, seed=3)
    np.testing.assert_array_equal(first, again)
    assert g1 == g2 and first.dtype == np.float32 and np.isfinite(first).all()
    assert not np.array_equal(first, image) or first.shape != image.shape


def test_perturbations_do_what_they_say():
    image, foreground = _image(), np.ones((16, 18, 20), dtype=bool)
    noisy, _ = GaussianNoise(0.1).apply(image, GEOMETRY, foreground, seed=1)
    other, _ = GaussianNoise(0.1).apply(image, GEOMETRY, foreground, seed=2)
    lo, hi = np.percentile(image, (1, 99))
    assert np.std(noisy - image) == pytest.approx(0.1 * (hi - lo), rel=0.05)
    assert not np.array_equal(noisy, other)
    np.testing.assert_allclose(IntensityScale(3.0).apply(image, GEOMETRY, foreground, 0)[0], 3 * image)
    biased, _ = BiasField(0.4).apply(image, GEOMETRY, foreground, seed=1)
    log_ratio = np.log(biased / image)
    assert log_ratio.max() - log_ratio.min() == pytest.approx(0.4, rel=1e-4)
    ghosted, _ = Ghosting(0.5).apply(image, GEOMETRY, foreground, 0)
    unchanged, _ = Ghosting(0.0).apply(image, GEOMETRY, foreground, 0)
    np.testing.assert_allclose(unchanged, image, rtol=1e-5)
    assert np.abs(ghosted - image).max() > 1
    coarse, grid = VoxelSize(1.5).apply(image, GEOMETRY, foreground, 0)
    assert grid.spacing_zyx == pytest.approx((2.25, 2.25, 2.25), rel=0.1)
    assert np.allclose(grid.physical_extent_zyx, GEOMETRY.physical_extent_zyx, atol=2.3)
    assert coarse.shape == grid.size_zyx
    assert perturbation_seed(0, 1, 2) == perturbation_seed(0, 1, 2) != perturbation_seed(0, 2, 1)


def test_a_lesion_is_read_back_in_the_same_physical_place_on_two_grids():
    fine = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), DIRECTION, (30, 30, 30))
    coarse = Geometry((1.5, 1.5, 1.5), (-0.25, -0.25, -0.25), DIRECTION, (20, 20, 20))
    lesion = Lesion((14.0, 15.0, 13.0), 6.0, 0.6)
    for geometry in (fine, coarse):
        image = np.full(geometry.size_zyx, 200.0, dtype=np.float32)
        changed = insert_lesions(image, geometry, [lesion])
        inside = sphere_mask(geometry, lesion)
        np.testing.assert_array_equal(changed[inside], np.float32(200 * np.float32(0.6)))
        np.testing.assert_array_equal(changed[~inside], 200.0)
        centre_zyx = np.argwhere(inside).mean(axis=0)
        centre_world = geometry.index_to_world(centre_zyx[::-1])[0]
        np.testing.assert_allclose(centre_world, lesion.centre_xyz, atol=geometry.spacing_zyx[0] / 2)
        volume = inside.sum() * np.prod(geometry.spacing_zyx)
        assert volume == pytest.approx(4 / 3 * np.pi * 3**3, rel=0.3)


def test_lesions_are_placed_seeded_inside_their_tissue_and_apart():
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), DIRECTION, (40, 40, 40))
    z, y, x = np.meshgrid(*[np.arange(40)] * 3, indexing="ij")
    radius = np.sqrt((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2)
    target = np.where(radius < 10, 300.0, np.where(radius < 16, 200.0, 100.0)).astype(np.float32)
    target += np.random.default_rng(0).normal(0, 5, target.shape).astype(np.float32)
    mask = radius < 19
    labels = tissue_labels(target, mask)
    assert (labels[radius < 8] == 2).all() and (labels[(radius > 12) & (radius < 14)] == 1).all()
    first = place_lesions(labels, geometry, "wm", (3.0, 6.0), 0.6, seed=5)
    assert first == place_lesions(labels, geometry, "wm", (3.0, 6.0), 0.6, seed=5)
    both = first + place_lesions(labels, geometry, "gm", (3.0, 6.0), 0.6, seed=6, existing=first)
    for lesion in both[:2]:
        assert (labels[sphere_mask(geometry, lesion)] == 2).all()
    for a in range(len(both)):
        for b in range(a + 1, len(both)):
            distance = np.linalg.norm(np.subtract(both[a].centre_xyz, both[b].centre_xyz))
            assert distance > (both[a].diameter_mm + both[b].diameter_mm) / 2
