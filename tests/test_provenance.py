"""Provenance: every prediction has a sidecar naming the model (package and its SHA-256), folds, settings, the
quality flag and the expected error; a package records how its model was trained; `autosr provenance` reads it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest
from bids_world import make_bids_dataset
from test_dicom import integer_scan, kept_locale, write_series  # noqa: F401 - kept_locale: GDCM's locale put back

from autosr.cli import main
from autosr.formats.package_archive import sha256_of
from autosr.inference.predictor import Predictor
from autosr.inference.provenance import PROVENANCE_FORMAT, read_provenance, sidecar_path


def test_sidecar_path_strips_the_whole_image_ending():
    assert sidecar_path(Path("a/scan_01.nii.gz")) == Path("a/scan_01.json")
    assert sidecar_path(Path("a/sub-01_T1w.mha")) == Path("a/sub-01_T1w.json")


def test_folder_and_package_predictions_carry_their_provenance(trained_phantom, tmp_path, capsys):
    inputs = trained_phantom["raw"] / "Dataset999_Phantom" / "imagesTs"
    package = tmp_path / "phantom.zip"
    export = ["export-model", "-d", "999", "-c", "2d", "-f", "0", "1", "-o", str(package), *trained_phantom["flags"]]
    assert main(export) == 0
    common = ["--device", "cpu", "--num-workers", "0", "--seed", "7"]
    from_folder, from_zip = tmp_path / "folder", tmp_path / "zip"
    assert main(["predict", "-i", str(inputs), "-o", str(from_folder), "-d", "999", "-c", "2d", "-f", "0", "1",
                 "--uncertainty", *common, *trained_phantom["flags"]]) == 0  # fmt: skip
    assert main(["predict", "-i", str(inputs), "-o", str(from_zip), "--model", str(package), *common]) == 0

    record = json.loads((from_folder / "phantom_006.json").read_text())
    assert record["format"] == PROVENANCE_FORMAT and record["case"] == "phantom_006"
    assert (
        record["prediction_file"] == "phantom_006.nii.gz"
        and record["uncertainty_file"] == "uncertainty/phantom_006.nii.gz"
    )
    assert record["inputs"] == [str(inputs / "phantom_006_0000.nii.gz")]
    model = record["model"]
    assert (model["dataset"], model["model_folder"]) == ("Dataset999_Phantom", "Trainer__autosrPlans__2d")
    assert model["folds"] == [0, 1] and model["checkpoint"] == "final" and model["package"] is None
    assert model["path"] == str(trained_phantom["model_dir"].resolve())
    assert record["prediction"]["seed"] == 7 and record["prediction"]["generative"] is False
    assert set(record["qc"]) == {"flag", "reason"}
    error = record["expected_error"]  # both folds validated their held-out cases at the end of training
    assert error["folds"] == [0, 1] and error["metrics"]["mae"] > 0

    packaged = read_provenance(from_zip / "phantom_007.nii.gz")
    assert packaged["model"]["package"] == "phantom.zip"
    assert packaged["model"]["package_sha256"] == sha256_of(package) and packaged["model"]["path"] is None
    training = packaged["model"]["training"]  # how the model was trained, from the package's record
    fingerprint = trained_phantom["model_dir"] / "fingerprint.json"
    assert training["fingerprint_sha256"] == sha256_of(fingerprint)
    assert training["plans_sha256"] == sha256_of(trained_phantom["model_dir"] / "plans.json")
    assert set(training["epochs_per_fold"]) == {"0", "1"} and "torch" in training["versions_at_export"]
    assert packaged["expected_error"]["metrics"] == error["metrics"]  # the package carries the fold summaries

    capsys.readouterr()
    assert main(["provenance", str(from_zip / "phantom_007.nii.gz")]) == 0
    shown = capsys.readouterr().out
    assert f"model package phantom.zip (sha256 {sha256_of(package)})" in shown and "folds [0, 1]" in shown


def test_provenance_of_a_file_without_sidecar_names_the_file(tmp_path, capsys):
    image = tmp_path / "scan.nii.gz"
    image.write_bytes(b"x")
    assert main(["provenance", str(image)]) == 2
    assert "no provenance sidecar scan.json beside it" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["{broken", '{"format": "other"}'])
def test_a_broken_sidecar_is_one_message(tmp_path, capsys, content):
    (tmp_path / "scan.nii.gz").write_bytes(b"x")
    (tmp_path / "scan.json").write_text(content)
    assert main(["provenance", str(tmp_path / "scan.nii.gz")]) == 2
    assert "scan.json" in capsys.readouterr().err


# --- a run stopped after its first scan: the record already names the original input -------------------------


@dataclass
class StoppedRun:
    """One input layout: the predict arguments, each case's record during the run and once done (the same file
    but for BIDS, whose records are published from a working folder), and the inputs each record must name."""

    args: list[str]
    record_in_run: Callable[[str], Path]
    record_done: Callable[[str], Path]
    inputs: dict[str, list[str]]  # case -> the original files
    done_key: str | None = None  # where the finished record lies in its file (a BIDS derivative's: "autosr")


def files_layout(scans: list[Path], root: Path) -> StoppedRun:
    (root / "in").mkdir()
    for case, scan in zip("ab", scans):
        (root / "in" / f"{case}_0000.nii.gz").write_bytes(scan.read_bytes())
    record = lambda case: root / "out" / f"{case}.json"  # noqa: E731
    inputs = {case: [str(root / "in" / f"{case}_0000.nii.gz")] for case in "ab"}
    return StoppedRun(["-i", str(root / "in"), "-o", str(root / "out")], record, record, inputs)


def dicom_layout(scans: list[Path], root: Path) -> StoppedRun:
    """Two DICOM series (case ids a_t1, b_t1), converted into a temporary folder the run removes."""
    inputs = {}
    for number, (case, scan) in enumerate(zip("ab", scans), start=1):
        files = write_series(integer_scan(scan), root / "in" / case / "t1", uid=f"1.2.826.0.1.3680043.8.498.{number}")
        inputs[f"{case}_t1"] = [str(f) for f in files]
    record = lambda case: root / "out" / f"{case}.json"  # noqa: E731
    return StoppedRun(["-i", str(root / "in"), "-o", str(root / "out")], record, record, inputs)


def bids_layout(scans: list[Path], root: Path) -> StoppedRun:
    """Two subjects' 3T scans, linked into a working folder that the next run replaces."""
    bids = make_bids_dataset(root / "study", scans)
    out = bids / "derivatives" / "autosr"
    cases = {f"sub-0{n}_ses-3T_T1w": f"sub-0{n}/ses-3T/anat" for n in (1, 2)}
    return StoppedRun(
        ["--bids", str(bids), "--bids-filter", "ses=3T,suffix=T1w"],
        lambda case: out / ".autosr" / "predictions" / f"{case}.json",
        lambda case: out / cases[case] / f"{case.replace('_T1w', '_desc-autosr_T1w')}.json",
        {case: [str(bids / folder / f"{case}.nii.gz")] for case, folder in cases.items()},
        done_key="autosr",
    )


needs_pybids = pytest.mark.skipif(find_spec("bids") is None, reason="needs pybids: pip install autosr[bids]")
STOPPED_RUNS = [  # one line a layout: how its scans reach the run
    pytest.param(files_layout, id="image-files"),
    pytest.param(dicom_layout, id="dicom-series-converted-to-a-temporary-folder"),
    pytest.param(bids_layout, id="bids-scans-linked-into-a-working-folder", marks=needs_pybids),
]


@pytest.mark.parametrize("layout", STOPPED_RUNS)
def test_a_run_stopped_after_its_first_scan_leaves_a_record_naming_the_original_input(
    layout, trained_phantom, tmp_path, monkeypatch, capsys
):
    """The record is right when first written: a stopped run leaves no record naming a temporary file, and the
    rerun, which skips the finished scan, has nothing to correct."""
    scans = sorted((trained_phantom["raw"] / "Dataset999_Phantom" / "imagesTs").glob("*_0000.nii.gz"))
    run = layout(scans, tmp_path)
    args = ["predict", *run.args, "-d", "999", "-c", "2d", "-f", "0", "--no-tta", "--device", "cpu"]
    args += ["--num-workers", "0", *trained_phantom["flags"]]
    first, second = sorted(run.inputs)
    network = Predictor.predict_preprocessed

    def interrupted_at_the_second_scan(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C (or the run killed) once the first scan is written
        return network(self, *a, **k)

    calls: list[int] = []
    with monkeypatch.context() as patched:
        patched.setattr(Predictor, "predict_preprocessed", interrupted_at_the_second_scan)
        assert main(args) == 130
    assert len(calls) == 2 and not run.record_in_run(second).exists()
    during = json.loads(run.record_in_run(first).read_text())
    assert during["inputs"] == run.inputs[first]

    capsys.readouterr()
    assert main(args) == 0
    assert "1 predicted, 1 already done" in "".join(capsys.readouterr())
    for case in (first, second):
        done = json.loads(run.record_done(case).read_text())
        assert (done[run.done_key] if run.done_key else done)["inputs"] == run.inputs[case]
