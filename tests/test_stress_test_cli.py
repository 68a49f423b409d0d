"""`autosr stress-test` end to end on the tiny trained phantom, its section in `autosr report`, and its
calibration used by `autosr predict --uncertainty` (expected error and interval columns, interval maps) and
carried by `autosr export-model`."""

from __future__ import annotations

import json
import shutil
import zipfile

import pandas as pd
import pytest

from autosr.cli import main
from autosr.evaluation.stress.perturbations import ACQUISITION_CHANGES
from autosr.inference.calibration import CALIBRATION_NAME


def test_stress_test_runs_end_to_end_and_its_calibration_reaches_predictions(trained_phantom, tmp_path, capsys):
    flags = []
    for key in ("raw", "preprocessed", "results"):  # a private copy: the stress test writes into the model folder
        shutil.copytree(trained_phantom[key], tmp_path / key)
        flags.append(f"--{key}={tmp_path / key}")
    model_dir = tmp_path / "results" / "Dataset999_Phantom" / "Trainer__autosrPlans__2d"
    out = tmp_path / "stress"
    ensemble = ["-f", "0", "1", "--no-tta", "--device", "cpu"]
    args = ["stress-test", "999", "-c", "2d", "-o", str(out), "--max-cases", "1", *ensemble, *flags]
    assert main(args) == 0
    summary = json.loads((out / "stress.json").read_text())
    for key in (
        "uncertainty_error_spearman",
        "sparsification_ratio",
        "sparsification_error_ratio",
        "flag_auroc",
        "interval_coverage",
        "interval_half_width",
        "lesions",
        "calibration",
    ):
        assert key in summary, key
    assert summary["calibration_in_sample"] is True and summary["cases"] == ["phantom_006"]
    assert 0.85 <= summary["interval_coverage"] <= 1.0  # in-sample: at least the nominal 90% up to ties
    table = pd.read_csv(out / "stress.csv")
    kinds = table["kind"].value_counts().to_dict()
    assert kinds == {"clean": 1, "acquisition": len(ACQUISITION_CHANGES), "lesion": 2, "input_only_lesion": 2}
    lesions = pd.read_csv(out / "lesions.csv")
    assert len(lesions) == 2 * 2 * 6  # hypo/hyper x paired/input-only x 3 sizes in 2 tissues
    assert {"contrast_ratio", "dice", "spread_ratio"} <= set(lesions.columns)
    assert {"calibration.png", "sparsification.png", "perturbations.png", "lesions_hypo.png"} <= {
        p.name for p in (out / "pictures").iterdir()
    }
    assert (model_dir / CALIBRATION_NAME).is_file()
    report = tmp_path / "report.html"
    assert main(["report", "999", "--stress-test", "Phantom", str(out), "-o", str(report), *flags]) == 0
    page = report.read_text()
    assert "Phantom: stress test" in page and "contrast ratio" in page and page.count("data:image/png") >= 4

    inputs = tmp_path / "raw" / "Dataset999_Phantom" / "imagesTs"
    predictions = tmp_path / "predictions"
    predict = ["predict", "-i", str(inputs), "-o", str(predictions), "-d", "999", "-c", "2d", "--uncertainty"]
    assert main([*predict, *ensemble, "--num-workers", "0", *flags]) == 0
    rows = pd.read_csv(predictions / "summary.csv").set_index("case")
    assert (rows["expected_error"] > 0).all() and (rows["interval_half_width"] > 0).all()
    assert (predictions / "intervals" / "phantom_006.nii.gz").is_file()
    sidecar = json.loads((predictions / "phantom_006.json").read_text())  # the scan's own error in its record
    calibrated = sidecar["calibrated_error"]
    assert calibrated["expected_error"] == pytest.approx(
        rows.loc["phantom_006", "expected_error"], rel=1e-3
    )  # csv rounds
    assert calibrated["interval_file"] == "intervals/phantom_006.nii.gz"
    capsys.readouterr()
    assert main(["provenance", str(predictions / "phantom_006.nii.gz")]) == 0
    assert "this scan's calibrated expected error" in capsys.readouterr().out

    package = tmp_path / "model.zip"
    assert main(["export-model", "-d", "999", "-c", "2d", "-f", "0", "1", "-o", str(package), *flags]) == 0
    with zipfile.ZipFile(package) as archive:
        assert any(name.endswith(CALIBRATION_NAME) for name in archive.namelist())
        card = next(name for name in archive.namelist() if name.endswith("README.md"))
        assert "interval_half_width" in archive.read(card).decode()
    capsys.readouterr()
