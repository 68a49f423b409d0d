"""The no-learning baselines every result table shows beside the model.

Both start from the input scan (channel 0) resampled onto the target grid (cubic B-spline by default) and
map its intensities without learning anything spatial:

- `baseline_linear`: one global line y = a x + b, fitted by least squares inside the masks of the training
  cases. With sums Sx, Sy, Sxx, Sxy over n voxels, a = (n Sxy - Sx Sy) / (n Sxx - Sx^2) and
  b = (Sy - a Sx) / n (ordinary least squares).
- `baseline_standardized`: each scan standardized by its own mean and standard deviation inside its own
  input foreground (`autosr.imaging.foreground.input_foreground`, the region the model's input is
  normalized in), then mapped to the training targets' typical scale there: y = (x - m_x) / s_x * s_T + m_T,
  with m_T, s_T the medians over training cases of the target's mean and std inside that region. MR gain
  differs per session, so this removes what a single line cannot.

Both then get what every exported model prediction gets without learning: outside the subject region (the
input's foreground grown by a margin, `subject_region`) the training targets' background level (the median
over training cases of each target's median outside its foreground). So background differences in the
tables come from the model, not from the export.

The table's `baseline` row is, per metric, the better of the two by their mean over the cases scored
(`autosr.evaluation.summary`); both rows are kept and shown. Why: a model that does not beat the better
of "interpolate and rescale" has learned nothing useful, and part of any gain over a weak baseline would
be normalization, not learning.

The statistics are collected per case (`baseline_statistics`) so cross-validation reads each case once
and solves per fold.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autosr.errors import AutosrError
from autosr.imaging.foreground import input_foreground, subject_region, target_foreground
from autosr.io import Geometry, read_image, resample_to_geometry

PathLike = str | os.PathLike
LINEAR, STANDARDIZED = "baseline_linear", "baseline_standardized"
BASELINE_METHODS = (LINEAR, STANDARDIZED)


@dataclass(frozen=True)
class LinearFitStatistics:
    """Sufficient statistics of a least-squares line through (input, target) voxel pairs."""

    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def __add__(self, other: LinearFitStatistics) -> LinearFitStatistics:
        return LinearFitStatistics(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def as_tuple(self) -> tuple[float, ...]:
        return (self.n, self.sx, self.sy, self.sxx, self.sxy)

    def solve(self) -> tuple[float, float]:
        """(a, b) of y = a x + b; a = 1, b = mean difference when the input is constant."""
        if self.n == 0:
            raise AutosrError("the baseline's linear map has no voxels to fit on (empty masks?)")
        denominator = self.n * self.sxx - self.sx * self.sx
        if denominator <= 1e-12 * max(self.n * self.sxx, 1.0):
            return 1.0, (self.sy - self.sx) / self.n
        a = (self.n * self.sxy - self.sx * self.sy) / denominator
        return a, (self.sy - a * self.sx) / self.n


@dataclass(frozen=True)
class CaseBaselineStatistics:
    """What one training case contributes to both baselines."""

    linear: LinearFitStatistics
    target_mean_in_foreground: float
    target_std_in_foreground: float
    target_background: float | None


def _first_channel(input_files: PathLike | Sequence[PathLike]) -> Path:
    if isinstance(input_files, (str, os.PathLike)):
        return Path(input_files)
    return Path(list(input_files)[0])


def resampled_input(
    input_files: PathLike | Sequence[PathLike], target_geometry: Geometry, order: int = 3
) -> np.ndarray:
    """Channel 0 of the input, resampled onto `target_geometry` (0 outside the input's field of view)."""
    array, geometry = read_image(_first_channel(input_files))
    return resample_to_geometry(array, geometry, target_geometry, order=order)


def _foreground(resampled: np.ndarray, input_scheme: str) -> np.ndarray:
    return input_foreground(resampled[None], [input_scheme])


def baseline_statistics(
    input_files: PathLike | Sequence[PathLike],
    target_file: PathLike,
    mask_file: PathLike | None = None,
    order: int = 3,
    modality: str = "MR",
    input_scheme: str = "zscore",
) -> CaseBaselineStatistics:
    """One training case's sums (inside its mask, or the target's foreground) and its target's mean/std
    inside the input's foreground."""
    target, target_geometry = read_image(target_file)
    mask = read_image(mask_file)[0] > 0 if mask_file is not None else target_foreground(target, modality)
    resampled = resampled_input(input_files, target_geometry, order)
    x = resampled[mask].astype(np.float64)
    y = target[mask].astype(np.float64)
    region = _foreground(resampled, input_scheme)
    inside = target[region].astype(np.float64) if region.any() else target.ravel().astype(np.float64)
    outside = ~target_foreground(target, modality)
    return CaseBaselineStatistics(
        LinearFitStatistics(float(x.size), float(x.sum()), float(y.sum()), float(x @ x), float(x @ y)),
        float(inside.mean()),
        float(inside.std()),
        float(np.median(target[outside])) if outside.any() else None,
    )


def params_from_statistics(
    statistics: Sequence[CaseBaselineStatistics], fitted_on: Sequence[str], order: int = 3, input_scheme: str = "zscore"
) -> dict[str, Any]:
    """JSON-ready parameters of both baselines from the statistics of the training cases."""
    if not statistics:
        raise AutosrError("the baselines need at least one training case to be fitted on")
    total = sum((s.linear for s in statistics), LinearFitStatistics())
    a, b = total.solve()
    backgrounds = [s.target_background for s in statistics if s.target_background is not None]
    return {
        "order": int(order),
        "input_scheme": input_scheme,
        "background": float(np.median(backgrounds)) if backgrounds else None,
        "fitted_on": list(fitted_on),
        "num_voxels": int(total.n),
        LINEAR: {"a": float(a), "b": float(b)},
        STANDARDIZED: {
            "target_mean": float(np.median([s.target_mean_in_foreground for s in statistics])),
            "target_std": float(np.median([s.target_std_in_foreground for s in statistics])),
        },
    }


def fit_baselines(
    pairs: Iterable[tuple[Any, PathLike, PathLike | None]],
    order: int = 3,
    modality: str = "MR",
    case_ids: Sequence[str] | None = None,
    input_scheme: str = "zscore",
) -> dict[str, Any]:
    """Fit both baselines on (input_files, target_file, mask_file or None) training pairs.

    `fitted_on` lists `case_ids` when given, else the target file names.
    """
    statistics, names = [], []
    for input_files, target_file, mask_file in pairs:
        statistics.append(baseline_statistics(input_files, target_file, mask_file, order, modality, input_scheme))
        names.append(Path(target_file).name)
    return params_from_statistics(statistics, list(case_ids) if case_ids is not None else names, order, input_scheme)


def baseline_predictions(resampled: np.ndarray, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """{method: prediction (Z, Y, X) float32} for an input already resampled onto the target grid.

    Parameters from before the standardized baseline existed ({"a", "b"} only) give the linear one alone.
    """
    resampled = np.asarray(resampled, dtype=np.float64)
    linear = params.get(LINEAR, params if "a" in params else None)
    region = _foreground(resampled.astype(np.float32), params.get("input_scheme", "zscore"))
    out = {}
    if linear is not None:
        out[LINEAR] = (float(linear["a"]) * resampled + float(linear["b"])).astype(np.float32)
    standardized = params.get(STANDARDIZED)
    if standardized is not None:
        values = resampled[region] if region.any() else resampled.ravel()
        z = (resampled - values.mean()) / max(float(values.std()), 1e-8)
        out[STANDARDIZED] = (z * standardized["target_std"] + standardized["target_mean"]).astype(np.float32)
    if params.get("background") is not None:
        subject = subject_region(region)
        out = {k: np.where(subject, v, np.float32(params["background"])) for k, v in out.items()}
    return out


def baseline_prediction(
    input_files: PathLike | Sequence[PathLike], target_geometry: Geometry, params: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Both baselines' predictions on `target_geometry`, from the input files."""
    return baseline_predictions(resampled_input(input_files, target_geometry, int(params.get("order", 3))), params)
