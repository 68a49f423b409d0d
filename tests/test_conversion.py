"""Converters build valid raw datasets from small trees in the real layouts, without touching the sources."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import needs_nilearn

from autosr.cli import main
from autosr.dataset.verify import verify_dataset
from autosr.dataset_conversion import synthetic_brain
from autosr.dataset_conversion.acquisition import acquire
from autosr.dataset_conversion.bids import BidsPairSelection, convert_bids
from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset
from autosr.errors import AutosrError
from autosr.io import Geometry, grid_covering, overlap_fraction, read_image, write_image

FINE = Geometry((1.0, 1.0, 1.0), (-8.0, -8.0, -8.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (16, 16, 16))
COARSE = grid_covering(FINE, (2.0, 2.0, 2.0))
SYNTHRAD_GRID = Geometry((2.5, 1.0, 1.0), (10.0, 20.0, -30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (8, 16, 16))


def blob(geometry: Geometry, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 100, size=geometry.size_zyx) + 50).astype(np.float32)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def bids_tree(tmp_path: Path) -> Path:
    """sub-01..03 with 3T and 7T T1w sessions (and a 7T brain mask); sub-03 lacks 7T; sub-01's 3T is .nii."""
    root = tmp_path / "bids"
    for index, subject in enumerate(("sub-01", "sub-02", "sub-03")):
        sessions = {"3T": COARSE} if subject == "sub-03" else {"3T": COARSE, "7T": FINE}
        for session, geometry in sessions.items():
            anat = root / subject / f"ses-{session}" / "anat"
            ending = ".nii" if (subject, session) == ("sub-01", "3T") else ".nii.gz"
            write_image(blob(geometry, index), geometry, anat / f"{subject}_ses-{session}_T1w{ending}")
            if session == "7T":
                write_image(np.ones(FINE.size_zyx), FINE, anat / f"{subject}_ses-7T_mask.nii.gz", dtype=np.uint8)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"}))
    return root


def test_bids_sessions_through_the_cli(bids_tree, autosr_roots, capsys):
    before = tree_digest(bids_tree)
    code = main(
        ["convert", "bids", str(bids_tree), "--id", "902", "--name", "Brain3T7T", "--suffix", "T1w",
         "--input-session", "3T", "--target-session", "7T", "--mask-suffix", "mask"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "sub-03: no target file (suffix T1w, ses-7T)" in out
    folder = autosr_roots.raw / "Dataset902_Brain3T7T"
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "T1w_3T"} and spec["target_name"] == "T1w_7T"
    assert spec["numTraining"] == 2 and spec["target_modality"] == "MR"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["sub01_0000.nii.gz", "sub02_0000.nii.gz"]
    assert sorted(p.name for p in (folder / "masksTr").iterdir()) == ["sub01.nii.gz", "sub02.nii.gz"]
    # the .nii source was re-written as .nii.gz with the same voxels and geometry
    array, geometry = read_image(folder / "imagesTr" / "sub01_0000.nii.gz")
    np.testing.assert_array_equal(array, blob(COARSE, 0))
    assert geometry.same_grid(COARSE)
    assert tree_digest(bids_tree) == before  # the source is untouched
    assert verify_dataset(folder, num_folds=2).problems == []


def test_bids_acquisitions_within_one_session(tmp_path):
    root = tmp_path / "bids"
    for index, subject in enumerate(("sub-a", "sub-b")):
        anat = root / subject / "anat"
        write_image(blob(COARSE, index), COARSE, anat / f"{subject}_acq-low_T1w.nii.gz")
        write_image(blob(FINE, index), FINE, anat / f"{subject}_acq-high_T1w.nii.gz")
    folder, skipped = convert_bids(
        root, tmp_path / "raw", 7, "Acq", BidsPairSelection("T1w", input_acq="low", target_acq="high")
    )
    assert skipped == {}
    assert verify_dataset(folder, num_folds=2).problems == []
    with pytest.raises(AutosrError, match="same files"):
        convert_bids(root, tmp_path / "raw", 8, "Same", BidsPairSelection("T1w"))


def test_bids_ambiguous_subject_is_skipped_with_reason(bids_tree, tmp_path):
    anat = bids_tree / "sub-02" / "ses-3T" / "anat"
    write_image(blob(COARSE, 9), COARSE, anat / "sub-02_ses-3T_run-2_T1w.nii.gz")
    folder, skipped = convert_bids(bids_tree, tmp_path / "raw", 9, "B", BidsPairSelection("T1w", "3T", "7T"))
    assert "2 input files" in skipped["sub-02"] and "sub-02_ses-3T_run-2_T1w.nii.gz" in skipped["sub-02"]
    assert [p.name for p in (folder / "targetsTr").iterdir()] == ["sub01.nii.gz"]


def write_synthrad_case(folder: Path, input_kind: str, ending: str, seed: int, with_input: bool = True) -> None:
    geometry = SYNTHRAD_GRID
    if with_input:
        write_image(blob(geometry, seed), geometry, folder / f"{input_kind}{ending}")
    write_image(blob(geometry, seed + 1) * 10 - 1000, geometry, folder / f"ct{ending}", dtype=np.int16)
    write_image(np.ones(geometry.size_zyx), geometry, folder / f"mask{ending}", dtype=np.uint8)


def test_synthrad_nifti_layout_through_the_cli(tmp_path, autosr_roots, capsys):
    root = tmp_path / "Task1"
    for region, code in (("brain", "B"), ("pelvis", "P")):
        for i in range(2):
            write_synthrad_case(
                root / region / f"1{code}A00{i}", "mr", ".nii.gz", i, with_input=(region, i) != ("pelvis", 1)
            )
    before = tree_digest(root)
    assert main(["convert", "synthrad", str(root), "--id", "910", "--name", "MRCT"]) == 0
    assert "pelvis/1PA001: no mr image" in capsys.readouterr().out
    folder = autosr_roots.raw / "Dataset910_MRCT"
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["target_modality"] == "CT" and spec["channel_names"] == {"0": "MR"} and spec["numTraining"] == 3
    assert sorted(p.name for p in (folder / "targetsTr").iterdir()) == [
        "1BA000.nii.gz",
        "1BA001.nii.gz",
        "1PA000.nii.gz",
    ]
    ct, _ = read_image(folder / "targetsTr" / "1BA000.nii.gz")
    np.testing.assert_array_equal(ct, np.rint(blob(SYNTHRAD_GRID, 1) * 10 - 1000))  # HU kept exactly
    assert tree_digest(root) == before
    assert verify_dataset(folder, num_folds=3).problems == []


def test_synthrad_mha_cbct_layout(tmp_path):
    from autosr.dataset_conversion.synthrad import convert_synthrad

    root = tmp_path / "Task2" / "brain"
    for i in range(2):
        write_synthrad_case(root / f"2BA00{i}", "cbct", ".mha", i)
    folder, skipped = convert_synthrad(root, tmp_path / "raw", 11, "CBCT", input_kind="cbct")
    assert skipped == {}
    assert sitk.ReadImage(str(folder / "imagesTr" / "2BA000_0000.nii.gz")).GetSpacing() == (1.0, 1.0, 2.5)
    assert verify_dataset(folder, num_folds=2).problems == []
    with pytest.raises(AutosrError, match="no case folder holds both mr and ct"):
        convert_synthrad(root, tmp_path / "raw", 12, "None", input_kind="mr")


@needs_nilearn
def test_synthetic_brain_is_valid_deterministic_and_on_two_grids(tmp_path):
    settings = SyntheticBrainSettings(num_train=2, num_test=1, target_spacing_mm=6.0, seed=3)
    first = make_synthetic_brain_dataset(tmp_path / "a", 950, settings=settings, num_processes=1)
    second = make_synthetic_brain_dataset(tmp_path / "b", 950, settings=settings, num_processes=1)
    report = verify_dataset(first, num_folds=2)
    assert report.problems == []
    assert "test cases: 1; masks: yes" in report.summary()
    inp, input_geometry = read_image(first / "imagesTr" / "brain_000_0000.nii.gz")
    target, target_geometry = read_image(first / "targetsTr" / "brain_000.nii.gz")
    mask, _ = read_image(first / "masksTr" / "brain_000.nii.gz")
    assert target_geometry.spacing_zyx == (6.0, 6.0, 6.0) and input_geometry.spacing_zyx == (9.0, 9.0, 9.0)
    assert overlap_fraction(target_geometry, input_geometry) > 0.9
    assert 0.05 < mask.mean() < 0.8 and np.isfinite(inp).all()
    for name in ("imagesTr/brain_000_0000.nii.gz", "targetsTr/brain_001.nii.gz", "imagesTs/brain_002_0000.nii.gz"):
        np.testing.assert_array_equal(read_image(first / name)[0], read_image(second / name)[0])
    other = read_image(first / "targetsTr" / "brain_001.nii.gz")[0]
    assert not np.array_equal(target, other)  # subjects differ


def test_synthetic_brain_without_nilearn_says_how_to_install(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nilearn" else real_find_spec(name, *a)
    )
    with pytest.raises(AutosrError, match=r"pip install autosr\[demo\]"):
        synthetic_brain.template_folder()


def test_phantom_through_the_cli_and_overwrite(autosr_roots, capsys):
    args = ["convert", "phantom", "5", "--size", "12", "--num-train", "2", "--num-test", "1"]
    assert main(args) == 0
    folder = autosr_roots.raw / "Dataset005_Phantom"
    assert verify_dataset(folder, num_folds=2).problems == []
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--modality", "CT"]) == 0
    assert json.loads((folder / "dataset.json").read_text())["target_modality"] == "CT"


def test_thick_slices_average_the_signal_over_their_thickness():
    # a one-voxel-thin bright sheet at z = 5 mm: a 4 mm slice holding it records a quarter of its intensity
    # (partial volume), the neighbouring slices nothing; decimation would record all or nothing
    fine = np.zeros((16, 6, 6), np.float32)
    fine[5] = 100.0
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (16, 6, 6))
    coarse, coarse_geometry = acquire(fine, geometry, (4.0, 1.0, 1.0), thick_axes=[0])
    assert coarse_geometry.spacing_zyx == (4.0, 1.0, 1.0) and coarse.shape == (4, 6, 6)
    profile = coarse[:, 3, 3]
    assert profile[1] == pytest.approx(25.0, rel=0.05) and profile[0] == pytest.approx(0.0, abs=1e-3)
    assert profile[2] == pytest.approx(0.0, abs=1e-3) and profile.sum() == pytest.approx(25.0, rel=0.05)


@needs_nilearn
def test_thick_slice_datasets_through_the_cli(autosr_roots):
    assert main(["convert", "phantom", "6", "--size", "16", "--num-train", "2", "--num-test", "0",
                 "--slice-thickness", "4", "--slice-axis", "1"]) == 0  # fmt: skip
    folder = autosr_roots.raw / "Dataset006_Phantom"
    _, geometry = read_image(folder / "imagesTr" / "phantom_000_0000.nii.gz")
    assert geometry.spacing_zyx == (1.5, 4.0, 1.5)
    assert verify_dataset(folder, num_folds=2).problems == []
    thick = SyntheticBrainSettings(
        num_train=1, num_test=0, target_spacing_mm=6.0, input_spacing_mm=6.0, slice_thickness_mm=18.0, slice_axis=0
    )
    brain = make_synthetic_brain_dataset(autosr_roots.raw, 7, settings=thick, num_processes=1)
    assert read_image(brain / "imagesTr" / "brain_000_0000.nii.gz")[1].spacing_zyx == (18.0, 6.0, 6.0)


# --- thick slices from real high-resolution scans ------------------------------------------------------

OBLIQUE = tuple(np.linalg.qr(np.array([[0.9, 0.3, 0.1], [-0.2, 1.0, 0.2], [0.1, -0.3, 1.0]]))[0].ravel())


def write_scans(folder: Path, geometry: Geometry, count: int = 2) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    arrays = [blob(geometry, seed) for seed in range(count)]
    for index, array in enumerate(arrays):
        write_image(array, geometry, folder / f"subject{index}.nii.gz")
    return arrays


def corners(geometry: Geometry) -> np.ndarray:
    return np.sort(geometry.world_corners(), axis=0)


def test_thick_slices_keep_the_target_and_tile_its_field_of_view(tmp_path, autosr_roots, capsys):
    """Target = the source slab untouched (values and grid); input = box averages of 3 slices on a grid whose
    thick voxels cover the target's field of view edge to edge (oblique direction, odd spacings)."""
    scan = Geometry((0.9, 1.1, 0.8), (12.5, -40.0, 7.25), OBLIQUE, (16, 16, 12))
    array = write_scans(tmp_path / "src", scan, count=3)[0]  # 3 scans x 2 slabs: enough cases for 5 folds
    code = main(["convert", "thick-slices", str(tmp_path / "src"), "--id", "310", "--name", "Thick",
                 "--factor", "3", "--axis", "1", "--slabs", "2"])  # fmt: skip
    assert code == 0
    folder = autosr_roots.raw / "Dataset310_Thick"
    assert verify_dataset(folder).ok
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["slice_profile"] == {
        "profile": "box", "axis": 1, "factor": 3, "slice_spacing_mm": pytest.approx(3.3), "width_mm": pytest.approx(3.3),
        "gap_mm": 0.0, "self_supervised": False,
    }  # fmt: skip
    for index, rows in enumerate((slice(0, 8), slice(8, 16))):  # slabs cut along axis 0
        target, target_geometry = read_image(folder / "targetsTr" / f"subject0_slab{index}.nii.gz")
        image, image_geometry = read_image(folder / "imagesTr" / f"subject0_slab{index}_0000.nii.gz")
        expected = array[rows, :15]  # 16 slices along axis 1: 15 usable at factor 3
        np.testing.assert_array_equal(target, expected)
        start = scan.index_to_world(np.array([0, 0, rows.start]))[0]
        np.testing.assert_allclose(target_geometry.origin_xyz, start, atol=1e-4)
        np.testing.assert_allclose(target_geometry.direction, scan.direction, atol=1e-6)
        assert image_geometry.spacing_zyx == pytest.approx((0.9, 3.3, 0.8), abs=1e-6)
        assert image.shape == (8, 5, 12)
        np.testing.assert_allclose(corners(image_geometry), corners(target_geometry), atol=1e-4)
        box = expected.reshape(8, 5, 3, 12).mean(axis=2)
        np.testing.assert_allclose(image, box, rtol=1e-5)


@pytest.mark.parametrize(
    "profile, gap, fwhm, expected",
    [
        ("box", 0.0, None, [1 / 3, 1 / 3, 1 / 3]),
        ("box", 1.0, None, [0.25, 0.5, 0.25]),  # 2 mm slices 3 mm apart: half of each outer voxel
        ("gaussian", 0.0, 1e-3, [0.0, 1.0, 0.0]),  # a very narrow Gaussian samples the centre voxel
    ],
)
def test_slice_profiles_weight_the_fine_voxels(profile, gap, fwhm, expected):
    from autosr.dataset_conversion.thick_slices import ThickSliceSettings, profile_weights

    settings = ThickSliceSettings(factor=3, profile=profile, gap_mm=gap, fwhm_mm=fwhm)
    weights = profile_weights(settings, 1.0, 9)
    assert weights.shape == (3, 9)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights[1, 3:6], expected, atol=1e-6)
    assert weights[1, :3].sum() + weights[1, 6:].sum() == pytest.approx(0.0, abs=1e-6)


def test_gaussian_profile_reaches_into_neighbouring_slices():
    from autosr.dataset_conversion.thick_slices import ThickSliceSettings, profile_weights

    weights = profile_weights(ThickSliceSettings(factor=4, profile="gaussian"), 1.0, 16)
    middle = weights[1]  # FWHM 4 mm, centred between fine voxels 5 and 6
    np.testing.assert_allclose(middle[5], middle[6])
    assert middle[3] > 0.01 and middle[8] > 0.01  # beyond the 4 voxels of its own slab
    assert middle[5] > middle[4] > middle[3]


def test_self_supervised_pairs_turn_a_fine_axis_into_the_thick_one(tmp_path, autosr_roots):
    """A scan thick along z (3 mm, 1 mm in-plane), constant along z: each in-plane axis exchanged with z gives a
    1 mm target equal to the scan turned, and its input is that target's thick slices along z."""
    scan = Geometry((3.0, 1.0, 1.0), (5.0, 6.0, 7.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (4, 12, 9))
    rng = np.random.default_rng(3)
    plane = rng.uniform(10, 100, (12, 9)).astype(np.float32)
    (tmp_path / "src").mkdir()
    for index in range(3):  # 3 scans x 2 in-plane axes: enough cases for 5 folds
        name = "thick" if index == 0 else f"other{index}"
        write_image(np.broadcast_to(plane + index, (4, 12, 9)).copy(), scan, tmp_path / "src" / f"{name}.nii.gz")
    code = main(["convert", "thick-slices", str(tmp_path / "src"), "--id", "311", "--name", "Self",
                 "--factor", "3", "--axis", "0", "--no-reference"])  # fmt: skip
    assert code == 0
    folder = autosr_roots.raw / "Dataset311_Self"
    assert verify_dataset(folder).ok
    assert json.loads((folder / "dataset.json").read_text())["slice_profile"]["self_supervised"] is True
    target, target_geometry = read_image(folder / "targetsTr" / "thick_axis2.nii.gz")  # x exchanged with z
    assert target_geometry.spacing_zyx == (1.0, 1.0, 1.0)
    assert target.shape == (9, 12, 12)  # 9 x voxels -> z; 4 thick z slices -> 12 fine x voxels
    np.testing.assert_allclose(target, np.repeat(plane.T[:, :, None], 12, axis=2), rtol=1e-5)  # target[x, y, z]
    scan_corner = np.asarray(scan.origin_xyz) - 0.5 * np.asarray(scan.spacing_xyz)
    target_corner = np.asarray(target_geometry.origin_xyz) - 0.5 * np.asarray(target_geometry.spacing_xyz)
    np.testing.assert_allclose(target_corner, scan_corner, atol=1e-5)
    image, image_geometry = read_image(folder / "imagesTr" / "thick_axis2_0000.nii.gz")
    assert image_geometry.spacing_zyx == (3.0, 1.0, 1.0) and image.shape == (3, 12, 12)
    np.testing.assert_allclose(image, target.reshape(3, 3, 12, 12).mean(axis=1), rtol=1e-5)
    assert (folder / "targetsTr" / "thick_axis1.nii.gz").is_file()  # y exchanged with z: the second pair
