"""`autosr predict --bids`: a BIDS dataset in, a BIDS derivatives dataset out that the BIDS validator accepts,
with complete sidecars; a rerun skips what is done; extra files of the dataset are never predicted."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from bids_world import make_bids_dataset

from autosr.cli import main

VALIDATOR = shutil.which("bids-validator-deno")
needs_validator = pytest.mark.skipif(VALIDATOR is None, reason="needs the BIDS validator: pip install autosr[test]")
pytest.importorskip("bids", reason="needs pybids: pip install autosr[bids]")


def validate(folder: Path) -> list[dict]:
    """The BIDS validator's issues for `folder` (errors and warnings)."""
    result = subprocess.run([VALIDATOR, "--json", str(folder)], capture_output=True, text=True, timeout=300)
    return json.loads(result.stdout)["issues"]["issues"]


@needs_validator
def test_bids_in_derivatives_out_validator_clean_and_resumable(trained_phantom, tmp_path, capsys):
    scans = sorted((trained_phantom["raw"] / "Dataset999_Phantom" / "imagesTs").glob("*_0000.nii.gz"))
    bids = make_bids_dataset(tmp_path / "study", scans)
    args = ["predict", "--bids", str(bids), "--bids-filter", "ses=3T,suffix=T1w", "-d", "999", "-c", "2d",
            "-f", "0", "1", "--uncertainty", "--device", "cpu", "--num-workers", "0", *trained_phantom["flags"]]  # fmt: skip
    assert main(args) == 0
    assert "2 predicted, 0 already done" in capsys.readouterr().out
    out = bids / "derivatives" / "autosr"
    images = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz") if ".autosr" not in p.parts)
    assert images == [  # the 7T sessions, the T2w, the bold run, sourcedata and other derivatives left alone
        "sub-01/ses-3T/anat/sub-01_ses-3T_desc-autosrStd_T1w.nii.gz",
        "sub-01/ses-3T/anat/sub-01_ses-3T_desc-autosr_T1w.nii.gz",
        "sub-02/ses-3T/anat/sub-02_ses-3T_desc-autosrStd_T1w.nii.gz",
        "sub-02/ses-3T/anat/sub-02_ses-3T_desc-autosr_T1w.nii.gz",
    ]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "autosr"
    assert "Trainer__autosrPlans__2d" in description["GeneratedBy"][0]["Description"]
    sidecar = json.loads((out / "sub-02/ses-3T/anat/sub-02_ses-3T_desc-autosr_T1w.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-02/ses-3T/anat/sub-02_ses-3T_T1w.nii.gz"]
    assert sidecar["SkullStripped"] is False and sidecar["Folds"] == [0, 1] and sidecar["Trainer"] == "Trainer"
    assert sidecar["Seed"] == 0 and sidecar["Sampling"]["generative"] is False
    row = next(r for r in csv.DictReader((out / "summary.csv").open()) if r["case"] == "sub-02_ses-3T_T1w")
    # checked against the measured training cases (a scan like them): not flagged, as summary.csv says
    assert sidecar["QualityFlag"] is False and row["flag"] == "False"
    assert sidecar["QualityFlagReason"] == row["reason"] == sidecar["autosr"]["qc"]["reason"]
    assert sidecar["ExpectedError"]["mae"] > 0
    assert sidecar["autosr"]["inputs"] == [str(bids / "sub-02/ses-3T/anat/sub-02_ses-3T_T1w.nii.gz")]
    assert sidecar["autosr"]["prediction_file"] == "sub-02_ses-3T_desc-autosr_T1w.nii.gz"
    assert sidecar["autosr"]["uncertainty_file"] == "sub-02_ses-3T_desc-autosrStd_T1w.nii.gz"
    assert len((out / "summary.csv").read_text().splitlines()) == 3  # a header and the two scans

    issues = validate(out)
    assert [i for i in issues if i["severity"] == "error"] == []

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and ".autosr" not in p.parts}
    assert main(args) == 0
    assert "0 predicted, 2 already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    assert main(["provenance", str(out / "sub-01/ses-3T/anat/sub-01_ses-3T_desc-autosr_T1w.nii.gz")]) == 0
    assert "model Dataset999_Phantom/Trainer__autosrPlans__2d: folds [0, 1]" in capsys.readouterr().out

    # the control: the validator does check the derivatives rules (an anat derivative must say SkullStripped)
    path = out / "sub-01/ses-3T/anat/sub-01_ses-3T_desc-autosr_T1w.json"
    broken = json.loads(path.read_text())
    del broken["SkullStripped"]
    path.write_text(json.dumps(broken))
    errors = [i for i in validate(out) if i["severity"] == "error"]
    assert [(e["code"], e.get("subCode")) for e in errors] == [("SIDECAR_KEY_REQUIRED", "SkullStripped")]


def test_a_split_run_predicts_its_part_only(trained_phantom, tmp_path, capsys):
    scans = sorted((trained_phantom["raw"] / "Dataset999_Phantom" / "imagesTs").glob("*_0000.nii.gz"))
    bids = make_bids_dataset(tmp_path / "study", scans)
    out = tmp_path / "derivatives"
    base = ["predict", "--bids", str(bids), "--bids-filter", "session=3T,suffix=T1w", "-o", str(out), "-d", "999", "-c", "2d",
            "-f", "0", "--no-tta", "--device", "cpu", "--num-workers", "0", *trained_phantom["flags"]]  # fmt: skip
    assert main([*base, "--num-parts", "2", "--part-id", "1"]) == 0
    assert "1 predicted, 0 already done" in capsys.readouterr().out
    assert sorted(p.name for p in out.rglob("*_T1w.nii.gz")) == ["sub-02_ses-3T_desc-autosr_T1w.nii.gz"]
    assert main(base) == 0
    assert "1 predicted, 1 already done" in capsys.readouterr().out
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetLinks"]["raw"] == os.path.relpath(bids, out) + "/"


def test_a_package_is_unpacked_and_hashed_once_per_run(trained_phantom, tmp_path, monkeypatch, capsys):
    """`--bids --model PKG` reads the model (its file ending, its identity) and predicts with it inside one
    opening: the package is unpacked once and its SHA-256 computed once, and that hash names the model in the
    dataset description and in every sidecar."""
    from autosr.formats import package_archive, package_reader

    scans = sorted((trained_phantom["raw"] / "Dataset999_Phantom" / "imagesTs").glob("*_0000.nii.gz"))
    bids = make_bids_dataset(tmp_path / "study", scans)
    package = tmp_path / "phantom.zip"
    export = ["export-model", "-d", "999", "-c", "2d", "-f", "0", "-o", str(package), *trained_phantom["flags"]]
    assert main(export) == 0
    digest = package_archive.sha256_of(package)
    unpacked, hashed = [], []
    unpack, sha256_of = package_reader.unpack_package, package_archive.sha256_of
    monkeypatch.setattr(package_reader, "unpack_package", lambda p, d: unpacked.append(Path(p)) or unpack(p, d))
    monkeypatch.setattr(package_archive, "sha256_of", lambda p: hashed.append(Path(p)) or sha256_of(p))
    args = ["predict", "--bids", str(bids), "--bids-filter", "ses=3T,suffix=T1w", "--model", str(package),
            "--no-tta", "--device", "cpu", "--num-workers", "0"]  # fmt: skip
    assert main(args) == 0
    assert "2 predicted" in capsys.readouterr().out
    assert unpacked == [package] and hashed.count(package) == 1
    out = bids / "derivatives" / "autosr"
    description = json.loads((out / "dataset_description.json").read_text())
    assert f"package phantom.zip sha256 {digest}" in description["GeneratedBy"][0]["Description"]
    for number in (1, 2):
        sidecar = json.loads((out / f"sub-0{number}/ses-3T/anat/sub-0{number}_ses-3T_desc-autosr_T1w.json").read_text())
        assert (sidecar["ModelPackage"], sidecar["ModelPackageSHA256"]) == ("phantom.zip", digest)
