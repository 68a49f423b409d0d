"""Per-scan quality flags: bounds from the cross-validation cases, reasons in words, and the acceptance check
(scans made out of distribution on purpose are flagged, the held-out in-distribution scans are not)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from autosr.cli import main
from autosr.inference.qc import (
    SIGNAL_RULES,
    QCReference,
    SignalRule,
    bounds_from_values,
    check_against,
    intensity_distances,
    rule_of,
)
from autosr.io import grid_covering, read_image, resample_to_geometry, write_image

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_autosr_environment(monkeypatch):
    for name in ("AUTOSR_RAW", "AUTOSR_PREPROCESSED", "AUTOSR_RESULTS"):
        monkeypatch.delenv(name, raising=False)


def test_bounds_follow_the_documented_rule():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    linear = SignalRule("x", "", log=False, sides="high", floor=0.1)
    lo, hi = np.percentile(values, [1, 99])  # 1.04, 4.96
    b = bounds_from_values(values, linear)
    assert b["low"] is None and math.isclose(b["high"], hi + 0.5 * (hi - lo))
    assert math.isclose(b["cv_low"], lo) and math.isclose(b["cv_high"], hi) and b["num_cases"] == 5
    # identical training values: the floor decides (a factor 1.5 on the log scale, both sides)
    b = bounds_from_values([2.0, 2.0, 2.0], SIGNAL_RULES["spacing"])
    assert math.isclose(b["low"], 2.0 / 1.5) and math.isclose(b["high"], 3.0)


def test_reasons_name_the_signal_value_and_limit():
    bounds = {"spacing_z": bounds_from_values([1.0, 1.0], SIGNAL_RULES["spacing"])}
    assert check_against({"spacing_z": 1.2}, bounds) == []
    (reason,) = check_against({"spacing_z": 3.0}, bounds)
    assert reason.startswith("voxel spacing (spacing_z) 3 mm above the limit 1.5 mm")
    assert "training cases 1 mm to 1 mm" in reason
    (reason,) = check_against({"spacing_z": 0.5}, bounds)
    assert "below the limit 0.667 mm" in reason
    assert rule_of("intensity_scale_c1") is SIGNAL_RULES["intensity_scale"] and rule_of("shape_z") is None


def test_intensity_distance_is_the_mean_quantile_difference():
    q = [[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]]
    r = [[0.5, 1.0, 1.0], [5.0, 5.0, 6.5]]
    assert intensity_distances(q, r) == {"intensity_distance_c0": 0.5, "intensity_distance_c1": 0.5}


def _out_of_distribution_scans(source: Path, folder: Path) -> None:
    """Three copies of a held-out scan, each out of distribution in one way."""
    array, geometry = read_image(source)
    coarse = grid_covering(geometry, tuple(3 * s for s in geometry.spacing_zyx))
    write_image(resample_to_geometry(array, geometry, coarse, order=1), coarse, folder / "ood_spacing_0000.nii.gz")
    write_image(array * 10, geometry, folder / "ood_scaled_0000.nii.gz")
    head = array > 0.5 * np.percentile(array, 99)  # intensities inverted inside the head: a T2-like contrast
    write_image(np.where(head, array.max() + array.min() - array, array), geometry, folder / "ood_contrast_0000.nii.gz")


def test_out_of_distribution_scans_are_flagged_and_held_out_scans_are_not(trained_phantom, tmp_path):
    test_images = trained_phantom["raw"] / "Dataset999_Phantom" / "imagesTs"
    inputs = tmp_path / "in"
    shutil.copytree(test_images, inputs)
    _out_of_distribution_scans(test_images / "phantom_006_0000.nii.gz", inputs)
    out = tmp_path / "out"
    args = ["predict", "-i", str(inputs), "-o", str(out), "-d", "999", "-c", "2d", "-f", "0", "1", "--device", "cpu"]
    assert main([*args, "--num-workers", "1", *trained_phantom["flags"]]) == 0  # flagged scans are predicted too
    table = pd.read_csv(out / "summary.csv").set_index("case")
    assert (table["status"] == "predicted").all()
    assert not table.loc["phantom_006", "flag"] and not table.loc["phantom_007", "flag"]
    assert table.loc[["ood_spacing", "ood_scaled", "ood_contrast"], "flag"].all()
    assert "voxel spacing (spacing_z) 4.5 mm above the limit" in table.loc["ood_spacing", "reason"]
    assert "intensity scale" in table.loc["ood_scaled", "reason"]
    assert "intensity-by-depth profile" in table.loc["ood_contrast", "reason"]
    assert table.loc["phantom_006", "spacing_z"] == 1.5 and table.loc["phantom_006", "network_s"] > 0
    # the scores to sort by: above 1 exactly when flagged; x10 units leave the network's input as it was
    assert ((table["flag_score"] > 1) == table["flag"]).all()
    assert table.loc["ood_scaled", "input_shift"] == pytest.approx(table.loc["phantom_006", "input_shift"], abs=1e-6)
    assert table.loc["ood_contrast", "input_shift"] > 1 and table.loc["ood_spacing", "input_shift"] > 1

    # the report page of the folder: the flagged scans with their reasons, the signals, a picture of each
    assert main(["report", "--predictions", "held-out + OOD", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "5 scans: 5 predicted, 0 failed, 3 flagged by the quality check" in page
    assert all(f"<td>{case}</td>" in page for case in ("ood_spacing", "ood_scaled", "ood_contrast"))
    assert "<td>phantom_006</td>" not in page and "Quality signals" in page
    assert page.count("data:image/png;base64") == 1 + 3  # the signal panels and one picture per flagged scan


def test_uncertainty_is_compared_with_its_own_ensemble(trained_phantom, tmp_path):
    model_dir = tmp_path / "results" / "Dataset999_Phantom" / "Trainer__autosrPlans__2d"
    shutil.copytree(trained_phantom["model_dir"], model_dir)  # the shared model folder stays as it is
    raw = ["--raw", str(trained_phantom["raw"])]
    assert main(["qc-reference", "-m", str(model_dir), "--uncertainty", "-f", "0", "1", "--device", "cpu", *raw]) == 0
    reference = QCReference.load(model_dir)
    (key,) = reference.data["uncertainty"]
    # measuring the inputs again (in two processes) gives the same reference and keeps the uncertainty entry
    assert main(["qc-reference", "-m", str(model_dir), "--rebuild", "-np", "2", *raw]) == 0
    rebuilt = QCReference.load(model_dir).data
    assert rebuilt["bounds"] == reference.data["bounds"] and list(rebuilt["uncertainty"]) == [key]
    assert key.startswith("folds=0,1;checkpoint=final;") and set(reference.data["uncertainty"][key]["bounds"]) == {
        "uncertainty_mean",
        "uncertainty_p99",
    }
    assert len(reference.data["cases"]) == 6  # every training case is a cross-validation case
    inputs = trained_phantom["raw"] / "Dataset999_Phantom" / "imagesTs"
    base = ["predict", "-i", str(inputs), "-m", str(model_dir), "--device", "cpu", "--num-workers", "0"]
    assert main([*base, "-o", str(tmp_path / "same"), "-f", "0", "1", "--uncertainty"]) == 0
    table = pd.read_csv(tmp_path / "same" / "summary.csv")
    assert (table["uncertainty_mean"] > 0).all() and (table["uncertainty_p99"] >= table["uncertainty_mean"]).all()
    assert not table["reason"].astype(str).str.contains("no reference").any()
    # another ensemble (no mirroring) has another spread: not compared with this reference, and it says so
    assert main([*base, "-o", str(tmp_path / "other"), "-f", "0", "1", "--uncertainty", "--no-tta"]) == 0
    table = pd.read_csv(tmp_path / "other" / "summary.csv")
    assert table["reason"].str.contains("uncertainty not compared: no reference for this ensemble").all()
