"""The no-learning baseline: the input scan (channel 0) resampled onto the target grid, with a linear
intensity map y = a x + b fitted by least squares inside the masks of the training cases.

Why: every result table shows it beside the model so the gain over "just interpolate and rescale the
input" is visible; a model that does not beat it has learned nothing useful.

The fit pools all masked voxels of the training cases: with sums Sx, Sy, Sxx, Sxy over n voxels,
a = (n Sxy - Sx Sy) / (n Sxx - Sx^2) and b = (Sy - a Sx) / n (ordinary least squares). The sums are
collected per case (`linear_fit_statistics`) so cross-validation reads each case once and solves per
fold. Interpolation: cubic B-spline (order 3) by default, linear (1) on request.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autosr.errors import AutosrError
from autosr.io import Geometry, read_image, resample_to_geometry
from autosr.preprocessing.foreground import target_foreground

PathLike = str | os.PathLike


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


def linear_fit_statistics(
    input_files: PathLike | Sequence[PathLike],
    target_file: PathLike,
    mask_file: PathLike | None = None,
    order: int = 3,
    modality: str = "MR",
) -> LinearFitStatistics:
    """The sums of one training case, inside its mask (or the target's foreground when it has none)."""
    target, target_geometry = read_image(target_file)
    if mask_file is not None:
        mask_array, _ = read_image(mask_file)
        mask = mask_array > 0
    else:
        mask = target_foreground(target, modality)
    x = resampled_input(input_files, target_geometry, order)[mask].astype(np.float64)
    y = target[mask].astype(np.float64)
    return LinearFitStatistics(float(x.size), float(x.sum()), float(y.sum()), float(x @ x), float(x @ y))


def params_from_statistics(statistics: LinearFitStatistics, fitted_on: Sequence[str], order: int = 3) -> dict:
    a, b = statistics.solve()
    return {
        "a": float(a),
        "b": float(b),
        "order": int(order),
        "fitted_on": list(fitted_on),
        "num_voxels": int(statistics.n),
    }


def fit_linear_baseline(
    pairs: Iterable[tuple[Any, PathLike, PathLike | None]],
    order: int = 3,
    modality: str = "MR",
    case_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Fit y = a x + b on (input_files, target_file, mask_file or None) training pairs.

    Returns JSON-ready params {"a", "b", "order", "fitted_on", "num_voxels"}; `fitted_on` lists `case_ids`
    when given, else the target file names.
    """
    total = LinearFitStatistics()
    names = []
    for input_files, target_file, mask_file in pairs:
        total = total + linear_fit_statistics(input_files, target_file, mask_file, order, modality)
        names.append(Path(target_file).name)
    return params_from_statistics(total, list(case_ids) if case_ids is not None else names, order)


def baseline_prediction(
    input_files: PathLike | Sequence[PathLike], target_geometry: Geometry, params: dict[str, Any]
) -> np.ndarray:
    """The baseline's prediction (Z, Y, X) float32 on `target_geometry`: a * resampled input + b."""
    return apply_linear_map(resampled_input(input_files, target_geometry, int(params.get("order", 3))), params)


def apply_linear_map(resampled: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """a * x + b as float32, for an input already resampled onto the target grid."""
    return (float(params["a"]) * np.asarray(resampled, dtype=np.float64) + float(params["b"])).astype(np.float32)
