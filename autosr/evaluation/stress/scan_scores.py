"""The numbers of one stressed scan, from arrays on the target grid: its error, how well its uncertainty ranks
that error, how its interval covers it, and what became of each inserted lesion.

Everything is in target units inside the evaluation mask; `autosr.evaluation.stress.trust_metrics` holds the
definitions. A lesion's *contrast* is measured against the clean scan, voxel by voxel inside the sphere:
mean(prediction with lesion - prediction without) over mean(target with lesion - target without), so 1.0
means the model reproduced the lesion's full contrast, 0 that it removed it, whatever the surrounding
tissue looks like. For input-only lesions the denominator is the contrast the lesion *would* have in the
target; the ratio is then the fraction of the lesion the model carried over into an image whose truth does
not hold it. The lesion's Dice compares the sphere with the voxels near it (within one diameter of its
centre) where the prediction moved by more than half the target's mean lesion contrast, in the lesion's
direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autosr.evaluation.stress.lesions import Lesion, centre_distance
from autosr.evaluation.stress.trust_metrics import interval_coverage, sparsification, spearman
from autosr.evaluation.tissue import dice
from autosr.inference.calibration import Calibration, CalibrationVoxels, edge_strength, residual
from autosr.io import Geometry


@dataclass
class ScanVoxels:
    """One scan's voxels inside the mask: prediction, target, spread (all target units) and the prediction's
    edge strength (gradient magnitude per mm) and signed residual (calibration.residual)."""

    prediction: np.ndarray
    target: np.ndarray
    spread: np.ndarray
    edges: np.ndarray
    residual: np.ndarray

    @property
    def error(self) -> np.ndarray:
        return np.abs(self.prediction - self.target)

    def for_calibration(self) -> CalibrationVoxels:
        return CalibrationVoxels(self.prediction, self.edges, self.residual, self.spread, self.error)


def scan_voxels(
    prediction: np.ndarray, target: np.ndarray, spread: np.ndarray, mask: np.ndarray, geometry: Geometry
) -> ScanVoxels:
    edges = edge_strength(prediction, geometry.spacing_zyx)
    return ScanVoxels(prediction[mask], target[mask], spread[mask], edges[mask], residual(prediction)[mask])


def expected_errors(voxels: ScanVoxels, calibration: Calibration) -> np.ndarray:
    return calibration.expected_error(voxels.prediction, voxels.edges, voxels.residual)


def voxel_scores(voxels: ScanVoxels, calibration: Calibration | None) -> dict[str, float]:
    """For one scan: the MAE; how well the raw spread ranks the voxels' errors (`spread_*`); with a
    calibration, how well its expected error ranks them (`uncertainty_*`, `sparsification_*`), the
    interval's coverage and mean half width and the scan's expected error."""
    error = voxels.error
    raw = sparsification(voxels.spread, error)
    row = {
        "mae": float(error.mean()),
        "spread_error_spearman": spearman(voxels.spread, error),
        "spread_sparsification_ratio": raw["ratio"],
        "spread_sparsification_error_ratio": raw["error_ratio"],
        "oracle_sparsification_ratio": raw["oracle_ratio"],
        "spread_mean": float(voxels.spread.mean()),
    }
    if calibration is not None:
        expected = expected_errors(voxels, calibration)
        half_width = calibration.half_width(expected)
        row["uncertainty_error_spearman"] = spearman(expected, error)
        sparsified = sparsification(expected, error)
        row["sparsification_ratio"] = sparsified["ratio"]
        row["sparsification_error_ratio"] = sparsified["error_ratio"]
        row["interval_coverage"] = interval_coverage(voxels.prediction, voxels.target, half_width)
        row["interval_half_width"] = float(half_width.mean())
        row["expected_error"] = calibration.scan_expected_error(expected, voxels.spread)
    return row


def lesion_scores(
    lesion: Lesion,
    geometry: Geometry,
    prediction: np.ndarray,
    clean_prediction: np.ndarray,
    target: np.ndarray,
    spread: np.ndarray,
    clean_spread: np.ndarray,
) -> dict[str, float | None]:
    """Contrast ratio, Dice and the spread inside the sphere relative to the clean scan's, of one lesion on
    the target grid (`target` without the lesion; its lesioned version is target x factor in the sphere)."""
    distance = centre_distance(geometry, lesion)
    inside = distance <= lesion.diameter_mm / 2  # sphere_mask
    if not inside.any():
        return {"voxels": 0, "contrast_ratio": None, "dice": None, "spread_ratio": None}
    target_change = float(((lesion.factor - 1.0) * target[inside]).mean())
    change = prediction - clean_prediction
    ratio = float(change[inside].mean() / target_change) if target_change != 0 else None
    near = distance <= lesion.diameter_mm
    direction = np.sign(target_change)
    found = near & (direction * change > 0.5 * abs(target_change))
    clean = float(clean_spread[inside].mean())
    return {
        "voxels": int(inside.sum()),
        "contrast_ratio": ratio,
        "dice": dice(found, inside),
        "spread_ratio": float(spread[inside].mean()) / clean if clean > 0 else None,
    }
