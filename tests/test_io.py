"""Image I/O keeps geometry exact; resampling and grids behave in physical space."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from autosr.errors import AutosrError
from autosr.io import (
    Geometry,
    grid_covering,
    overlap_fraction,
    read_channels,
    read_image,
    resample_to_geometry,
    write_image,
)

OBLIQUE = (0.8660254037844387, -0.5, 0.0, 0.5, 0.8660254037844387, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("ending", [".nii.gz", ".mha", ".nrrd", ".nii"])
def test_round_trip_is_exact(tmp_path, ending):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(5, 7, 9)).astype(np.float32)
    geometry = Geometry((3.0, 0.7, 0.55), (-12.25, 30.5, 7.125), OBLIQUE, (5, 7, 9))
    path = tmp_path / f"image{ending}"
    write_image(array, geometry, path)
    back, back_geometry = read_image(path)
    np.testing.assert_array_equal(back, array)
    if ending != ".mha":
        # NIfTI stores geometry as float32 and NRRD folds spacing into its direction vectors, so the first
        # trip is exact to the format's precision; from then on re-writing what was read is bit-exact
        np.testing.assert_allclose(back_geometry.spacing_zyx, geometry.spacing_zyx, rtol=1e-6)
        np.testing.assert_allclose(back_geometry.origin_xyz, geometry.origin_xyz, rtol=1e-6)
        np.testing.assert_allclose(back_geometry.direction, geometry.direction, atol=1e-6)
        # a second round trip from what was read is bit-exact
        write_image(back, back_geometry, tmp_path / f"again{ending}")
        assert read_image(tmp_path / f"again{ending}")[1] == back_geometry
    else:
        assert back_geometry == geometry
    assert back_geometry.size_zyx == (5, 7, 9)
    reader = sitk.ReadImage(str(path))
    assert reader.GetSize() == (9, 7, 5)  # SimpleITK speaks (x, y, z)


def test_geometry_json_round_trip():
    geometry = Geometry((3.0, 0.7, 0.55), (-12.25, 30.5, 7.125), OBLIQUE, (5, 7, 9))
    assert Geometry.from_json(geometry.to_json()) == geometry


def test_write_integer_dtype_and_no_temporary_left(tmp_path):
    geometry = Geometry((1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (2, 3, 4))
    write_image(np.full((2, 3, 4), 1.6), geometry, tmp_path / "mask.nii.gz", dtype=np.uint8)
    array, _ = read_image(tmp_path / "mask.nii.gz")
    assert np.all(array == 2)
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]


def test_read_channels_rejects_different_grids(tmp_path):
    a = Geometry((1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (4, 4, 4))
    b = Geometry((1, 1, 1), (5, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (4, 4, 4))
    write_image(np.zeros((4, 4, 4)), a, tmp_path / "c_0000.nii.gz")
    write_image(np.zeros((4, 4, 4)), b, tmp_path / "c_0001.nii.gz")
    with pytest.raises(AutosrError, match="c_0001.nii.gz.*different grid"):
        read_channels([tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"])


def test_corrupt_file_names_itself(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not an image at all")
    with pytest.raises(AutosrError, match="broken.nii.gz"):
        read_image(path)


@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_metaimage_is_called_truncated(tmp_path, compressed):
    """ITK reports a cut-short .mha with an unrelated errno ("No such file or directory"): the message must
    say what happened (exact byte counts when the data is uncompressed) and how to fix it."""
    path = tmp_path / "cut.mha"
    volume = np.random.default_rng(0).random((12, 10, 8), dtype=np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(path), compressed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(data) // 3])
    expected = "truncated: it holds" if not compressed else "truncated|damaged|cannot be read"
    with pytest.raises(AutosrError, match=expected) as raised:
        read_image(path)
    assert "cut.mha" in str(raised.value) and "No such file" not in str(raised.value)


def test_grid_covering_keeps_field_of_view_and_centre():
    geometry = Geometry((2.0, 1.0, 1.0), (10.0, -4.0, 3.0), OBLIQUE, (10, 20, 30))
    fine = grid_covering(geometry, (1.0, 0.5, 0.5))
    assert fine.size_zyx == (20, 40, 60)
    np.testing.assert_allclose(fine.physical_extent_zyx, geometry.physical_extent_zyx)
    np.testing.assert_allclose(fine.world_corners(), geometry.world_corners(), atol=1e-9)
    assert overlap_fraction(geometry, fine) == pytest.approx(1.0)


def test_resample_linear_function_is_reproduced():
    """A linear intensity ramp stays a linear ramp in physical space after linear resampling."""
    src = Geometry((2.0, 2.0, 2.0), (0, 0, 0), OBLIQUE, (8, 8, 8))
    z, y, x = np.meshgrid(*[np.arange(8)] * 3, indexing="ij")
    world = src.index_to_world(np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1))
    ramp = (world @ np.array([0.5, -1.0, 2.0])).reshape(8, 8, 8).astype(np.float32)
    dst = grid_covering(src, (1.0, 1.0, 1.0))
    out = resample_to_geometry(ramp, src, dst, order=1)
    dz, dy, dx = np.meshgrid(*[np.arange(16)] * 3, indexing="ij")
    dworld = dst.index_to_world(np.stack([dx.ravel(), dy.ravel(), dz.ravel()], axis=1))
    expected = (dworld @ np.array([0.5, -1.0, 2.0])).reshape(16, 16, 16)
    inner = (slice(2, -2),) * 3  # away from the border where the source has no neighbours
    np.testing.assert_allclose(out[inner], expected[inner], atol=1e-3)


def test_overlap_fraction_of_shifted_grids():
    a = Geometry((1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 10, 10))
    b = Geometry((1, 1, 1), (5, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 10, 10))
    c = Geometry((1, 1, 1), (100, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 10, 10))
    assert overlap_fraction(a, b) == pytest.approx(0.5)
    assert overlap_fraction(a, c) == 0.0


@pytest.mark.parametrize("ending, voxels", [(".mhd", ".zraw"), (".nhdr", ".raw.gz")])
def test_header_and_voxel_file_formats_are_written_under_their_final_names(tmp_path, ending, voxels):
    """.mhd/.nhdr name their voxel file in the header: both are written together and moved into place (voxels
    first), so the header never points at a temporary name, and writing again replaces both."""
    geometry = Geometry(
        spacing_zyx=(2.0, 1.0, 1.0), origin_xyz=(0, 0, 0), direction=np.eye(3).ravel(), size_zyx=(3, 4, 5)
    )
    path = tmp_path / f"scan{ending}"
    for value in (1.0, 2.0):
        write_image(np.full((3, 4, 5), value, np.float32), geometry, path)
        assert read_image(path)[0].max() == value
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, f"scan{voxels}"])
