"""Provenance: every prediction has a sidecar naming the model (package and its SHA-256), folds, settings, the
quality flag and the expected error; a package records how its model was trained; `autosr provenance` reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autosr.cli import main
from autosr.formats.package_archive import sha256_of
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
