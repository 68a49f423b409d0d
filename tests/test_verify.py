"""`verify_dataset` finds every kind of broken dataset, names case, file and fix, and lists all at once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from autosr.cli import main
from autosr.dataset.verify import MIN_OVERLAP_FRACTION, verify_dataset
from autosr.errors import DatasetProblems
from autosr.io import Geometry, read_image, write_image


def edit_json(dataset: Path, **changes) -> None:
    path = dataset / "dataset.json"
    d = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            d.pop(key, None)
        else:
            d[key] = value
    path.write_text(json.dumps(d))


def rewrite(path: Path, array=None, geometry: Geometry | None = None) -> None:
    """Re-write an image with a changed array and/or geometry."""
    old_array, old_geometry = read_image(path)
    write_image(old_array if array is None else array, old_geometry if geometry is None else geometry, path)


def shifted(geometry: Geometry, offset_xyz) -> Geometry:
    origin = tuple(o + d for o, d in zip(geometry.origin_xyz, offset_xyz))
    return Geometry(geometry.spacing_zyx, origin, geometry.direction, geometry.size_zyx)


def only_problem(dataset: Path, **kwargs) -> str:
    problems = verify_dataset(dataset, **kwargs).problems
    assert len(problems) == 1, problems
    return problems[0]


def test_valid_dataset_passes_with_summary(phantom_dataset, capsys):
    report = verify_dataset(phantom_dataset)
    assert report.problems == []
    report.raise_if_problems()
    summary = report.summary()
    assert "training cases: 6; masks: yes" in summary
    assert "test cases: 2" in summary
    assert "1.5x1.5x1.5 mm" in summary and "1x1x1 mm" in summary
    assert main(["verify", "999"]) == 0
    assert "dataset is valid" in capsys.readouterr().out


def test_missing_channel_and_target_without_inputs(phantom_dataset):
    (phantom_dataset / "imagesTr" / "phantom_001_0000.nii.gz").unlink()
    message = only_problem(phantom_dataset)
    assert "phantom_001" in message and "targetsTr/phantom_001.nii.gz has no input images" in message
    assert "phantom_001_0000.nii.gz" in message


def test_missing_second_channel(phantom_dataset):
    edit_json(phantom_dataset, channel_names={"0": "lowfield", "1": "T2w"})
    for i in range(6):
        if i != 3:
            src = phantom_dataset / "imagesTr" / f"phantom_{i:03d}_0000.nii.gz"
            (phantom_dataset / "imagesTr" / f"phantom_{i:03d}_0001.nii.gz").write_bytes(src.read_bytes())
    for i in (6, 7):
        src = phantom_dataset / "imagesTs" / f"phantom_{i:03d}_0000.nii.gz"
        (phantom_dataset / "imagesTs" / f"phantom_{i:03d}_0001.nii.gz").write_bytes(src.read_bytes())
    message = only_problem(phantom_dataset)
    assert "case phantom_003 (Tr): input channel 1 (T2w) missing" in message
    assert "imagesTr/phantom_003_0001.nii.gz" in message


def test_missing_target(phantom_dataset):
    (phantom_dataset / "targetsTr" / "phantom_002.nii.gz").unlink()
    problems = verify_dataset(phantom_dataset).problems
    assert any("phantom_002" in p and "target missing" in p and "targetsTr/phantom_002.nii.gz" in p for p in problems)
    # its mask now has no target either
    assert any("phantom_002" in p and "mask" in p and "no target" in p for p in problems)
    assert len(problems) == 2, problems
    # a test case lacks its target only when the dataset has targetsTs/ at all
    (phantom_dataset / "targetsTs" / "phantom_007.nii.gz").unlink()
    (phantom_dataset / "masksTs" / "phantom_007.nii.gz").unlink()
    problems = verify_dataset(phantom_dataset).problems
    assert any(
        p.startswith("case phantom_007 (Ts): target missing; add targetsTs/phantom_007.nii.gz") for p in problems
    )


def test_corrupt_file(phantom_dataset):
    (phantom_dataset / "targetsTr" / "phantom_004.nii.gz").write_bytes(b"definitely not a NIfTI file")
    message = only_problem(phantom_dataset)
    assert "case phantom_004 (Tr)" in message and "targetsTr/phantom_004.nii.gz cannot be read" in message
    assert "replace the file" in message


def test_vector_image_and_invalid_json(phantom_dataset):
    path = phantom_dataset / "targetsTr" / "phantom_003.nii.gz"
    vector = sitk.Compose([sitk.ReadImage(str(path))] * 2)
    sitk.WriteImage(vector, str(path))
    message = only_problem(phantom_dataset)
    assert "phantom_003.nii.gz has 2 components per voxel" in message
    (phantom_dataset / "dataset.json").write_text("{")
    message = only_problem(phantom_dataset)
    assert "dataset.json: is not valid JSON" in message


def test_nan_and_inf(phantom_dataset):
    path = phantom_dataset / "imagesTr" / "phantom_000_0000.nii.gz"
    array, _ = read_image(path)
    array[0, 0, 0] = np.nan
    array[1, 1, 1] = np.inf
    rewrite(path, array=array)
    message = only_problem(phantom_dataset)
    assert "phantom_000_0000.nii.gz has 2 NaN/Inf voxels" in message


def test_channels_on_different_grids(phantom_dataset):
    edit_json(phantom_dataset, channel_names={"0": "lowfield", "1": "T2w"})
    for split, ids in (("Tr", range(6)), ("Ts", (6, 7))):
        for i in ids:
            src = phantom_dataset / f"images{split}" / f"phantom_{i:03d}_0000.nii.gz"
            (phantom_dataset / f"images{split}" / f"phantom_{i:03d}_0001.nii.gz").write_bytes(src.read_bytes())
    moved = phantom_dataset / "imagesTr" / "phantom_005_0001.nii.gz"
    rewrite(moved, geometry=shifted(read_image(moved)[1], (3.0, 0, 0)))
    message = only_problem(phantom_dataset)
    assert "phantom_005" in message and "phantom_005_0001.nii.gz is on another grid" in message


def test_input_and_target_not_overlapping(phantom_dataset):
    path = phantom_dataset / "imagesTr" / "phantom_001_0000.nii.gz"
    geometry = read_image(path)[1]
    # a shift of 80% of the field of view along x leaves ~20% overlap
    rewrite(path, geometry=shifted(geometry, (0.8 * geometry.physical_extent_zyx[2], 0, 0)))
    message = only_problem(phantom_dataset)
    assert "phantom_001" in message and "covers 20% of the target" in message
    assert f"{MIN_OVERLAP_FRACTION:.0%}" in message and "co-register" in message


def test_mask_not_on_target_grid_and_empty_mask(phantom_dataset):
    mask_path = phantom_dataset / "masksTr" / "phantom_000.nii.gz"
    target_geometry = read_image(phantom_dataset / "targetsTr" / "phantom_000.nii.gz")[1]
    coarse = Geometry((2, 2, 2), target_geometry.origin_xyz, target_geometry.direction, (16, 16, 16))
    write_image(np.ones((16, 16, 16)), coarse, mask_path, dtype=np.uint8)
    empty_path = phantom_dataset / "masksTr" / "phantom_001.nii.gz"
    write_image(np.zeros(target_geometry.size_zyx), target_geometry, empty_path, dtype=np.uint8)
    problems = verify_dataset(phantom_dataset).problems
    assert len(problems) == 2, problems
    assert "phantom_000" in problems[0] and "masksTr/phantom_000.nii.gz is on another grid" in problems[0]
    assert "phantom_001" in problems[1] and "masksTr/phantom_001.nii.gz is empty" in problems[1]


def test_wrong_file_ending_and_bad_names(phantom_dataset):
    (phantom_dataset / "imagesTr" / "phantom_009_0000.nii").write_bytes(b"x")
    (phantom_dataset / "imagesTr" / "notes.txt").write_text("hello")
    (phantom_dataset / "imagesTr" / "phantom_010.nii.gz").write_bytes(
        (phantom_dataset / "imagesTr" / "phantom_000_0000.nii.gz").read_bytes()
    )
    problems = verify_dataset(phantom_dataset).problems
    assert any("phantom_009_0000.nii: file ending '.nii'" in p and "'.nii.gz'" in p for p in problems)
    assert any("notes.txt: file ending '.txt'" in p for p in problems)
    assert any("phantom_010.nii.gz: name lacks the 4-digit channel index" in p for p in problems)
    assert len(problems) == 3, problems


def test_too_few_cases_for_folds(phantom_dataset):
    message = only_problem(phantom_dataset, num_folds=10)
    assert "6 training cases, fewer than the 10" in message


def test_dataset_json_missing_key_and_wrong_count(phantom_dataset):
    edit_json(phantom_dataset, target_modality=None)
    message = only_problem(phantom_dataset)
    assert "dataset.json" in message and "missing key 'target_modality'" in message
    edit_json(phantom_dataset, target_modality="MR", numTraining=7)
    message = only_problem(phantom_dataset)
    assert "'numTraining' is 7" in message and "hold 6 training cases" in message


def test_orphan_mask(phantom_dataset):
    (phantom_dataset / "masksTr" / "ghost.nii.gz").write_bytes(
        (phantom_dataset / "masksTr" / "phantom_000.nii.gz").read_bytes()
    )
    message = only_problem(phantom_dataset)
    assert "case ghost" in message and "masksTr/ghost.nii.gz has no inputs" in message


def test_empty_images_folder(phantom_dataset):
    for p in (phantom_dataset / "imagesTr").iterdir():
        p.unlink()
    problems = verify_dataset(phantom_dataset).problems
    assert any("imagesTr: missing or empty" in p for p in problems)
    # each target is now listed as a case without inputs
    assert sum("has no input images" in p for p in problems) == 6


def test_many_problems_in_one_run_through_the_cli(phantom_dataset, capsys):
    (phantom_dataset / "targetsTr" / "phantom_002.nii.gz").unlink()
    (phantom_dataset / "masksTr" / "phantom_002.nii.gz").unlink()
    (phantom_dataset / "imagesTr" / "phantom_004_0000.nii.gz").write_bytes(b"garbage")
    (phantom_dataset / "imagesTr" / "extra.mha").write_bytes(b"x")
    edit_json(phantom_dataset, numTraining=3)
    path = phantom_dataset / "targetsTs" / "phantom_006.nii.gz"
    array, _ = read_image(path)
    array[2, 2, 2] = np.nan
    rewrite(path, array=array)
    report = verify_dataset(phantom_dataset, num_processes=2)
    assert len(report.problems) == 5, report.problems
    with pytest.raises(DatasetProblems) as raised:
        report.raise_if_problems()
    assert raised.value.problems == report.problems
    assert main(["verify", str(phantom_dataset)]) == 2
    err = capsys.readouterr().err
    for expected in ("phantom_002", "phantom_004_0000.nii.gz", "extra.mha", "'numTraining' is 3", "phantom_006.nii.gz"):
        assert expected in err
    assert "Traceback" not in err


def test_unknown_dataset_id_is_an_error_not_a_traceback(autosr_roots, capsys):
    assert main(["verify", "123"]) == 2
    assert "no dataset '123'" in capsys.readouterr().err
