"""The fingerprint: per-case geometry and intensity statistics, the misregistration alarm, the measured
misalignment."""

from __future__ import annotations

import numpy as np

from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_dataset
from autosr.io import Geometry, read_image, write_image
from autosr.planning.fingerprint import extract_fingerprint


def test_fingerprint_records_geometry_and_statistics(phantom_dataset):
    fp = extract_fingerprint(phantom_dataset, num_processes=1, progress=False)
    assert fp["num_training_cases"] == 6 and len(fp["cases"]) == 6
    case = fp["cases"][0]
    assert case["target_spacing_zyx"] == [1.0, 1.0, 1.0] and case["input_spacing_zyx"] == [1.5, 1.5, 1.5]
    assert case["target_shape_zyx"] == [32, 32, 32]
    assert all(c <= s for c, s in zip(case["cropped_shape_zyx"], case["target_shape_zyx"]))
    target_stats = fp["intensity_statistics"]["target"]
    assert target_stats["p00_5"] <= target_stats["median"] <= target_stats["p99_5"]
    assert fp["warnings"] == []  # co-registered pairs
    assert all(c["input_target_correlation"] > 0.5 for c in fp["cases"])


def test_a_misregistered_pair_is_named(tmp_path):
    raw = make_phantom_dataset(tmp_path, 997, "Shifted", PhantomSettings(num_train=6, num_test=0))
    shifted_file = raw / "imagesTr" / "phantom_002_0000.nii.gz"
    array, geometry = read_image(shifted_file)
    # move the input by a quarter of the field of view: still overlapping, no longer aligned
    origin = np.asarray(geometry.origin_xyz) + np.array([8.0, 8.0, 0.0])
    write_image(array, Geometry(geometry.spacing_zyx, origin, geometry.direction, geometry.size_zyx), shifted_file)
    fp = extract_fingerprint(raw, num_processes=1, progress=False)
    # two alarms, both for the shifted case: the correlation drop and the measured misalignment with its fix
    assert len(fp["warnings"]) == 2 and all("phantom_002" in w for w in fp["warnings"])
    assert "co-registered" in fp["warnings"][0]
    assert "autosr register Dataset997_Shifted" in fp["warnings"][1]
    measured = {c["case_id"]: c["misalignment"]["mean_mm"] for c in fp["cases"]}
    assert abs(measured["phantom_002"] - np.hypot(8.0, 8.0)) < 1.0  # the shift that was applied
    assert all(v < 1.0 for k, v in measured.items() if k != "phantom_002")
    assert fp["median_misalignment_mm"] < 1.0
