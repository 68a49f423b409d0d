"""Bad inputs that a line of `test_bad_inputs.CASES` cannot express: a trained fold whose preprocessed data
changed under it, values at the edge of what autosr accepts, a segmenter never handed an option, detached
image headers."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from autosr.cli import main
from autosr.errors import AutosrError


def copy_trained(trained: dict, tmp_path: Path) -> tuple[Path, list[str]]:
    """A private copy of the trained phantom's raw, preprocessed and results folders (the fixture's own must
    not change); its raw dataset folder and the flags pointing at the copy."""
    flags = []
    for key in ("raw", "preprocessed", "results"):
        shutil.copytree(trained[key], tmp_path / key)
        flags.append(f"--{key}={tmp_path / key}")
    return tmp_path / "raw" / "Dataset999_Phantom", flags


def scale_image(path: Path, factor: float, dtype: type = np.float32) -> None:
    image = sitk.ReadImage(str(path))
    changed = sitk.GetImageFromArray((sitk.GetArrayFromImage(image).astype(np.float64) * factor).astype(dtype))
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(path))


def test_a_fold_is_not_continued_on_cases_preprocessed_again_from_changed_raw_files(
    trained_phantom: dict, tmp_path: Path, capsys
) -> None:
    """A target replaced after training: `plan` says it measures and preprocesses the case again; continuing
    a fold trained on the old case is refused (naming fold, case and fix) until the old file is back."""
    raw, flags = copy_trained(trained_phantom, tmp_path)
    target = raw / "targetsTr" / "phantom_001.nii.gz"
    original = target.read_bytes()
    scale_image(target, 2.0)
    assert main(["plan", "999", "-np", "1", *flags]) == 0
    out = capsys.readouterr().out
    assert "fingerprint.json: raw files changed since it was measured (targetsTr/phantom_001.nii.gz)" in out
    assert "autosrPlans_3d_fullres/phantom_001: its raw files changed since it was preprocessed" in out
    assert "pass --replan to plan from the new one" in out

    train = ["train", "999", "2d", "0", "--continue", "--device", "cpu", "--num-workers", "0", *flags]
    assert main(train) == 2
    err = capsys.readouterr().err
    assert "fold_0: this fold was trained on preprocessed cases that have been preprocessed again" in err
    assert "phantom_001" in err and "delete" in err and "Traceback" not in err

    target.write_bytes(original)  # the old content (a new modification time): the same case again
    assert main(["plan", "999", "-np", "1", *flags]) == 0
    capsys.readouterr()
    assert main(train) == 0  # fold 0 is finished: its final validation runs again


def test_values_up_to_the_bound_stay_finite_through_plan_and_evaluate(phantom_dataset: Path, autosr_roots, tmp_path):
    """Voxel values just inside `MAX_ABS_VOXEL_VALUE` (float64 files): preprocessing writes finite arrays and
    JSON, and scores are finite; just beyond it, one message naming the file."""
    from autosr.evaluation.evaluate import evaluate_folders
    from autosr.evaluation.settings import EvaluationSettings
    from autosr.io.image_io import read_image
    from autosr.planning.api import plan_dataset

    bound = 1e12  # autosr.io.image_io.MAX_ABS_VOXEL_VALUE
    for path in sorted(phantom_dataset.glob("*/*.nii.gz")):
        if "masks" not in path.parent.name:
            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            scale_image(path, 0.99 * bound / np.abs(array).max(), np.float64)
    plan_dataset(999, autosr_roots, configurations=["3d_fullres"], num_processes=1, progress=False)
    data = autosr_roots.preprocessed / phantom_dataset.name / "autosrPlans_3d_fullres"
    arrays = sorted(data.glob("*.npy"))
    assert len(arrays) == 18 and all(np.isfinite(np.load(p)).all() for p in arrays)
    assert all(json.loads(p.read_text(), parse_constant=pytest.fail) for p in data.glob("*.json"))  # no NaN/Infinity

    predictions = tmp_path / "preds"
    predictions.mkdir()
    for path in sorted((phantom_dataset / "targetsTr").iterdir())[:2]:
        image = sitk.ReadImage(str(path))
        shifted = sitk.GetImageFromArray(sitk.GetArrayFromImage(image) * 0.9)
        shifted.CopyInformation(image)
        sitk.WriteImage(shifted, str(predictions / path.name))
    table, summary = evaluate_folders(
        phantom_dataset / "targetsTr",
        predictions,
        pictures=False,
        settings=EvaluationSettings(tissue=False, ms_ssim=False),
    )
    assert np.isfinite(table[["mae", "mse", "psnr", "ssim"]].to_numpy(dtype=float)).all()

    scale_image(predictions / path.name, 1.2)
    with pytest.raises(AutosrError, match=r"phantom_001\.nii\.gz: has voxel values up to 1\.\d+e\+12 in magnitude"):
        read_image(predictions / path.name)


def test_the_segmenter_is_never_handed_an_option(tmp_path: Path) -> None:
    """A value that would start an argument with '-' is never passed as one: a relative path gets './', a
    case id is refused (and the run reports it like any failing case)."""
    from autosr.evaluation.segmenter_hook import SegmenterRun, parse_command, run_segmenter

    segmenter = parse_command(f"{sys.executable} -c pass {{input}} {{output}} {{case}} --subject={{case}}")
    argv = segmenter.argv("-scan.nii.gz", "out.nii.gz", "case_1")
    assert argv[3:] == ["./-scan.nii.gz", "out.nii.gz", "case_1", "--subject=case_1"]
    with pytest.raises(AutosrError, match="would become '--mask', which the program would read as an option"):
        segmenter.argv("scan.nii.gz", "out.nii.gz", "--mask")
    run = SegmenterRun("--mask", "prediction", tmp_path / "a.nii.gz", tmp_path / "seg.nii.gz", tmp_path / "log")
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkFloat32), str(run.source))
    message = run_segmenter(segmenter, run)
    assert message is not None and "'--mask'" in message and "rename the case" in message
    assert not run.output.exists() and not run.log.exists()


@pytest.mark.parametrize("ending, data_ending", [(".mhd", ".raw"), (".mhd", ".zraw"), (".nhdr", ".raw.gz")])
def test_the_data_files_of_detached_headers_are_not_images(tmp_path: Path, ending: str, data_ending: str) -> None:
    """The voxel file a .mhd or .nhdr header names belongs to it: `verify` does not call it a file with the
    wrong ending, `predict` does not list it as left out; other image files it leaves out are listed, with the
    fix (another ending, no channel index)."""
    from autosr.inference.folder import ignored_input_files
    from autosr.io.image_io import detached_data_files

    image = sitk.GetImageFromArray(np.arange(64, dtype=np.float32).reshape(4, 4, 4))
    sitk.WriteImage(image, str(tmp_path / f"scan_0000{ending}"), useCompression=data_ending != ".raw")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f"scan_0000{ending}", f"scan_0000{data_ending}"])
    assert detached_data_files(tmp_path) == {f"scan_0000{data_ending}"}
    assert ignored_input_files(tmp_path, ending) == []
    (tmp_path / "notes.txt").write_text("not an image")
    sitk.WriteImage(image, str(tmp_path / "other_0000.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / f"lone{ending}"), useCompression=data_ending != ".raw")
    assert ignored_input_files(tmp_path, ending) == [
        f"lone{ending}: not predicted: the name lacks the 4-digit channel index; rename it <case>_0000{ending} "
        "(one file per channel)",
        f"other_0000.nii.gz: not predicted: file ending .nii.gz, the model reads {ending}; rename it (if it is a "
        f"{ending} file) or convert it to {ending}",
    ]
