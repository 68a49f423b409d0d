"""Per-structure metrics, HD95, ICC, Bland-Altman and the label table, each against an independent
computation: brute-force pairwise distances (scipy.spatial.distance.cdist) for HD95, scipy's Dice
dissimilarity for Dice, the worked example of Shrout & Fleiss (1979, Table 2) for the ICC, direct
formulas for Bland-Altman and volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from scipy.spatial.distance import dice as dice_dissimilarity

from autosr.errors import AutosrError
from autosr.evaluation.agreement import anova_mean_squares, bland_altman, icc
from autosr.evaluation.label_table import label_name, read_label_table
from autosr.evaluation.structures import structure_metrics, summarize_structures
from autosr.evaluation.surface import hausdorff_distance, surface_voxels


def brute_force_hd(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float, float], percentile: float) -> float:
    """Every surface voxel of A against every surface voxel of B, in mm; surfaces found without scipy.ndimage."""

    def surface(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        inner = padded[1:-1, 1:-1, 1:-1].copy()
        for axis in range(3):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(mask & ~inner) * np.asarray(spacing)

    distances = cdist(surface(a), surface(b))
    return max(np.percentile(distances.min(axis=1), percentile), np.percentile(distances.min(axis=0), percentile))


def random_blob(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre = rng.uniform(0.3, 0.7, 3) * np.asarray(shape)
    radii = rng.uniform(0.15, 0.3, 3) * np.asarray(shape)
    blob = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
    blob |= rng.random(shape) > 0.995  # stray voxels: what the 95th percentile is for
    return blob


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 1.2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_brute_force(spacing: tuple[float, float, float], seed: int) -> None:
    a, b = random_blob((14, 17, 15), seed), random_blob((14, 17, 15), seed + 10)
    for percentile in (95.0, 100.0):
        expected = brute_force_hd(a, b, spacing, percentile)
        assert hausdorff_distance(a, b, spacing, percentile) == pytest.approx(expected, rel=1e-9)


def test_hd_of_single_voxels_and_empty_structures() -> None:
    a = np.zeros((6, 6, 6), bool)
    b = np.zeros((6, 6, 6), bool)
    a[1, 1, 1] = True
    b[4, 1, 3] = True
    assert hausdorff_distance(a, b, (2.0, 1.0, 0.5)) == pytest.approx(np.hypot(3 * 2.0, 2 * 0.5))
    assert hausdorff_distance(a, a, (1, 1, 1)) == 0.0
    assert hausdorff_distance(a, np.zeros_like(a), (1, 1, 1)) is None
    cube = np.zeros((5, 5, 5), bool)
    cube[1:4, 1:4, 1:4] = True
    assert surface_voxels(cube).sum() == 26  # all but the centre voxel
    edge = np.ones((3, 3, 3), bool)
    assert surface_voxels(edge).sum() == 26  # beyond the image edge counts as outside


def test_structure_metrics_against_scipy_dice_and_direct_volumes() -> None:
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 4, (10, 12, 9))
    labels = np.where(rng.random(reference.shape) < 0.8, reference, rng.integers(0, 4, reference.shape))
    labels[labels == 3] = 5  # label 3 only in the reference, 5 only in the other map
    spacing = (1.5, 0.5, 2.0)
    rows = {r["label"]: r for r in structure_metrics(reference, labels, spacing)}
    assert sorted(rows) == [1, 2, 3, 5]
    voxel = 1.5 * 0.5 * 2.0
    for value in (1, 2):
        a, b = reference.ravel() == value, labels.ravel() == value
        assert rows[value]["dice"] == pytest.approx(1.0 - dice_dissimilarity(a, b))
        assert rows[value]["volume_mm3"] == pytest.approx(b.sum() * voxel)
        assert rows[value]["abs_volume_difference_mm3"] == pytest.approx(abs(int(b.sum()) - int(a.sum())) * voxel)
        assert rows[value]["relative_volume_difference"] == pytest.approx((b.sum() - a.sum()) / a.sum())
        assert rows[value]["hd95_mm"] == pytest.approx(
            brute_force_hd(reference == value, labels == value, spacing, 95.0), rel=1e-9
        )
    assert rows[3]["dice"] == 0.0 and rows[3]["hd95_mm"] is None and rows[3]["volume_mm3"] == 0.0
    assert rows[5]["relative_volume_difference"] is None and rows[5]["reference_volume_mm3"] == 0.0
    chosen = structure_metrics(reference, labels, spacing, structures=[2, 7])
    assert [r["label"] for r in chosen] == [2, 7] and chosen[1]["dice"] is None


# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; Table 4 gives ICC(2,1) = 0.29, ICC(3,1) = 0.71
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def test_icc_reproduces_shrout_and_fleiss_worked_example() -> None:
    msr, msc, mse = anova_mean_squares(SHROUT_FLEISS)
    # their Table 3: BMS 11.24, JMS 32.49, EMS 1.02
    assert (msr, msc, mse) == pytest.approx((11.24, 32.49, 1.02), abs=0.01)
    assert icc(SHROUT_FLEISS, "2,1") == pytest.approx(0.29, abs=0.005)
    assert icc(SHROUT_FLEISS, "3,1") == pytest.approx(0.71, abs=0.005)


def test_icc_separates_bias_from_consistency() -> None:
    truth = np.array([3000.0, 3500.0, 4200.0, 3900.0, 4600.0])
    biased = np.stack([truth, truth * 1.2], axis=1)  # everyone 20% larger
    assert icc(biased, "3,1") > 0.95 > 0.8 > icc(biased, "2,1")
    assert icc(np.stack([truth, truth], axis=1), "2,1") == pytest.approx(1.0)
    assert icc(np.ones((4, 2)), "2,1") is None and icc(truth[:1, None].repeat(2, axis=1), "2,1") is None


def test_bland_altman_direct_formula() -> None:
    a = np.array([10.0, 12.0, 9.0, 15.0])
    b = np.array([11.0, 12.5, 8.0, 17.0])
    d = b - a
    stats = bland_altman(a, b)
    assert stats["bias"] == pytest.approx(d.mean()) and stats["sd"] == pytest.approx(
        np.sqrt(((d - d.mean()) ** 2).sum() / 3)
    )
    assert stats["loa_high"] == pytest.approx(d.mean() + 1.96 * stats["sd"])
    assert bland_altman([1.0], [2.0]) is None


def test_summary_icc_and_paired_difference() -> None:
    rows = []
    for i, volume in enumerate((100.0, 140.0, 90.0)):
        rows.append({"case": f"c{i}", "source": "prediction", "label": 4, "dice": 0.9, "hd95_mm": 1.0,
                     "volume_mm3": volume + 5, "reference_volume_mm3": volume, "abs_volume_difference_mm3": 5.0,
                     "relative_volume_difference": 5 / volume})  # fmt: skip
        rows.append({"case": f"c{i}", "source": "input", "label": 4, "dice": 0.7, "hd95_mm": 3.0,
                     "volume_mm3": volume * 0.5, "reference_volume_mm3": volume, "abs_volume_difference_mm3": volume / 2,
                     "relative_volume_difference": -0.5})  # fmt: skip
    summary = summarize_structures(pd.DataFrame(rows), {4: "Left-Lateral-Ventricle"})
    entry = summary["structures"]["4"]
    assert entry["name"] == "Left-Lateral-Ventricle" and summary["sources"] == ["prediction", "input"]
    volumes = np.array([[100.0, 105.0], [140.0, 145.0], [90.0, 95.0]])
    assert entry["prediction"]["icc2_1"] == pytest.approx(icc(volumes, "2,1"))
    assert entry["prediction"]["bland_altman"]["bias"] == pytest.approx(5.0)
    assert entry["prediction"]["icc2_1"] > entry["input"]["icc2_1"]
    assert entry["prediction_minus_input"]["dice"] == pytest.approx(0.2)
    assert entry["prediction_minus_input"]["hd95_mm"] == pytest.approx(-2.0)


def test_label_table_freesurfer_format(tmp_path: Path) -> None:
    lut = tmp_path / "FreeSurferColorLUT.txt"
    lut.write_text(
        "#$Id: FreeSurferColorLUT.txt\n\n#No. Label Name:   R   G   B   A\n"
        "0   Unknown            0   0   0   0\n17  Left-Hippocampus  220 216  20 0\n53 Right-Hippocampus\n"
    )
    names = read_label_table(lut)
    assert names == {0: "Unknown", 17: "Left-Hippocampus", 53: "Right-Hippocampus"}
    assert label_name(17, names) == "Left-Hippocampus" and label_name(18, names) == "label_18"
    lut.write_text("17 Left-Hippocampus\nhippocampus 17\n")
    with pytest.raises(AutosrError, match="line 2"):
        read_label_table(lut)
    with pytest.raises(AutosrError, match="not found"):
        read_label_table(tmp_path / "missing.txt")
