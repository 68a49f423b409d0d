"""From an ensemble's output to an expected error and an interval with a stated coverage, in target units.

The spread of the fold ensemble (`--uncertainty`: folds x mirrorings, in target units) is not an error: it
can be small where every fold makes the same mistake, and measured on the benchmark datasets it ranks the
voxels' errors no better than chance (documentation/trust.md). What did rank them there is *where* a voxel
is and what the output looks like there: a model's error depends on the tissue (the predicted intensity), on
edges (the prediction's gradient magnitude) and on the output's local *residual* (its signed difference from
the mean of its 3 x 3 x 3 neighbourhood: noise the model carried over, fine detail it drew; signed, so the
table can learn that a bright excursion errs differently from a dark one in the same tissue). A calibration
measured on cases with known targets therefore maps these three features of each voxel, all computed from
the prediction alone, to its expected error, and that expected error to an interval:

- *expected error* per voxel: an `ErrorTable`, the mean |error| of the calibration voxels in the same cell
  of a grid of quantile bins per feature (`BINS`: 32 for the predicted intensity, 4 each for the edge
  strength and the residual); a cell with fewer than `MIN_CELL_VOXELS` calibration voxels holds the overall
  mean. The features and bins were chosen by leave-one-case-out measurements on both benchmark datasets
  (documentation/trust.md): most of what ranks the errors is the tissue, so the intensity gets the fine bins;
- an *interval*: prediction +- half_width with half_width = q x (expected error + offset), where q is the
  split-conformal quantile (Vovk et al. 2005; Angelopoulos & Bates 2021, "A gentle introduction to conformal
  prediction") of |error| / (expected error + offset) over the calibration voxels at the nominal level (0.9:
  90% of voxels inside). `offset` keeps a voxel with a small expected error from a zero-width interval; it
  is chosen among multiples of the median expected error as the one giving the narrowest mean interval;
- a *scan's expected error*: the mean of its voxels' expected errors, raised by the factor its mean spread
  exceeds the calibration cases' (`scan_expected_error`): the voxel table knows the clean scans' error
  pattern, the spread is what rises when a scan is unlike them. It is the column `autosr predict
  --uncertainty` writes to summary.csv so thousands of outputs can be sorted by how much to distrust them.

The calibration of each ensemble (its `qc.uncertainty_key`: folds, checkpoint, mirroring, step) is kept in
the model folder as `calibration.json` (written atomically by `autosr stress-test`, carried by packages).
Coverage holds for scans like the calibration cases; documentation/trust.md states what was measured on
perturbed scans.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autosr.io import Geometry, read_json, write_image
from autosr.io.atomic import atomic_write_json

CALIBRATION_NAME = "calibration.json"
CALIBRATION_VERSION = 3  # 2: roughness instead of the spread; 3: signed residual, bins 32 x 4 x 4 (not 8 x 8 x 8)
NOMINAL_COVERAGE = 0.9
OFFSET_MULTIPLES = (0.01, 0.1, 0.3, 1.0, 3.0)  # of the median expected error: the offsets tried
FEATURES = ("prediction", "edges", "residual")
BINS = (32, 4, 4)  # quantile bins per feature: 512 cells, most with hundreds of voxels from a few held-out scans
MIN_CELL_VOXELS = 20


def edge_strength(image: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """|gradient| of an image (Z, Y, X), central differences in physical units (intensity per mm)."""
    gradients = np.gradient(np.asarray(image, dtype=np.float64), *spacing_zyx)
    return np.sqrt(sum(g * g for g in gradients)).astype(np.float32)


def residual(image: np.ndarray) -> np.ndarray:
    """image - the mean of its 3 x 3 x 3 neighbourhood per voxel (mirrored at the borders), image units, signed."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    return (image - ndimage.uniform_filter(image, 3, mode="reflect")).astype(np.float32)


@dataclass(frozen=True)
class ErrorTable:
    """Mean |error| per cell of a grid of quantile bins over `FEATURES` (see the module docstring)."""

    cuts: tuple[tuple[float, ...], ...]  # per feature: its bins - 1 inner bin edges
    means: tuple[float, ...]  # the product of the features' bin counts, C order

    def cells(self, features: Sequence[np.ndarray]) -> np.ndarray:
        bins = [
            np.searchsorted(np.asarray(c), np.asarray(f, dtype=np.float64).ravel()) for c, f in zip(self.cuts, features)
        ]
        return np.ravel_multi_index(bins, tuple(len(c) + 1 for c in self.cuts))

    def lookup(self, features: Sequence[np.ndarray]) -> np.ndarray:
        shape = np.asarray(features[0]).shape
        return np.asarray(self.means, dtype=np.float32)[self.cells(features)].reshape(shape)

    @classmethod
    def fit(cls, features: Sequence[np.ndarray], error: np.ndarray, bins: int | Sequence[int] = BINS) -> ErrorTable:
        """Quantile cuts per feature (`bins`: one count for all, or one per feature) and each cell's mean."""
        counts_per_feature = [bins] * len(features) if isinstance(bins, int) else list(bins)
        if len(counts_per_feature) != len(features):
            raise ValueError(f"{len(features)} features but {len(counts_per_feature)} bin counts")
        error = np.abs(np.asarray(error, dtype=np.float64).ravel())
        cuts = tuple(
            tuple(float(v) for v in np.quantile(np.asarray(f, dtype=np.float64), np.linspace(0.0, 1.0, b + 1)[1:-1]))
            for f, b in zip(features, counts_per_feature)
        )
        table = cls(cuts, ())
        cells = table.cells(features)
        size = int(np.prod(counts_per_feature))
        sums, counts = np.bincount(cells, error, size), np.bincount(cells, None, size)
        means = np.where(counts >= MIN_CELL_VOXELS, sums / np.maximum(counts, 1), error.mean())
        return cls(cuts, tuple(float(v) for v in means))


@dataclass(frozen=True)
class Calibration:
    """One ensemble's calibration (see the module docstring); all values in target units."""

    table: ErrorTable
    quantile: float  # q: half_width = q x (expected error + offset)
    offset: float
    spread_mean: float  # the calibration voxels' mean spread
    nominal_coverage: float = NOMINAL_COVERAGE
    num_cases: int = 0
    num_voxels: int = 0

    def expected_error(self, prediction: np.ndarray, edges: np.ndarray, local_residual: np.ndarray) -> np.ndarray:
        """Expected |error| per voxel (arrays of one shape: prediction, its edge strength, its residual)."""
        return self.table.lookup([prediction, edges, local_residual])

    def half_width(self, expected_error: np.ndarray) -> np.ndarray:
        """Half width of the nominal interval per voxel, from the voxels' expected errors."""
        return (self.quantile * (np.asarray(expected_error, dtype=np.float64) + self.offset)).astype(np.float32)

    def scan_expected_error(self, expected_error: np.ndarray, spread: np.ndarray) -> float:
        """A scan's expected mean |error| from its subject's voxels (module docstring)."""
        raise_by = max(1.0, float(np.mean(spread)) / self.spread_mean) if self.spread_mean > 0 else 1.0
        return float(np.mean(expected_error)) * raise_by

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "cuts": [list(c) for c in self.table.cuts],
            "means": list(self.table.means),
            "quantile": self.quantile,
            "offset": self.offset,
            "spread_mean": self.spread_mean,
            "nominal_coverage": self.nominal_coverage,
            "num_cases": self.num_cases,
            "num_voxels": self.num_voxels,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        table = ErrorTable(
            tuple(tuple(float(v) for v in c) for c in data["cuts"]), tuple(float(v) for v in data["means"])
        )
        return cls(
            table,
            float(data["quantile"]),
            float(data["offset"]),
            float(data["spread_mean"]),
            float(data.get("nominal_coverage", NOMINAL_COVERAGE)),
            int(data.get("num_cases", 0)),
            int(data.get("num_voxels", 0)),
        )


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ceil((n + 1) coverage)-th smallest score (the split-conformal quantile; the largest when that
    rank exceeds n)."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    rank = min(len(s), math.ceil((len(s) + 1) * coverage))
    return float(s[rank - 1])


@dataclass
class CalibrationVoxels:
    """One case's voxels inside its subject: prediction, its edge strength and residual, the spread and the
    |error|."""

    prediction: np.ndarray
    edges: np.ndarray
    residual: np.ndarray
    spread: np.ndarray
    error: np.ndarray


def fit_calibration(cases: Sequence[CalibrationVoxels], coverage: float = NOMINAL_COVERAGE) -> Calibration:
    """The calibration from the voxels of cases with known targets."""
    if not cases:
        raise ValueError("need at least one case to calibrate on")

    def joined(name: str) -> np.ndarray:
        return np.concatenate([np.asarray(getattr(c, name), dtype=np.float64).ravel() for c in cases])

    names = ("prediction", "edges", "residual", "spread", "error")
    prediction, edges, local_residual, spread, error = (joined(n) for n in names)
    error = np.abs(error)
    if not prediction.size == edges.size == local_residual.size == spread.size == error.size or error.size == 0:
        raise ValueError("every case needs as many prediction, edge, residual, spread and error values, and voxels")
    table = ErrorTable.fit([prediction, edges, local_residual], error)
    expected = table.lookup([prediction, edges, local_residual]).astype(np.float64)
    scale = float(np.median(expected)) or float(expected.mean()) or 1.0
    best = None
    for multiple in OFFSET_MULTIPLES:
        offset = multiple * scale
        q = conformal_quantile(error / (expected + offset), coverage)
        width = q * float((expected + offset).mean())
        if best is None or width < best[0]:
            best = (width, q, offset)
    _, q, offset = best
    return Calibration(table, q, offset, float(spread.mean()), coverage, len(cases), int(error.size))


def save_calibration(model_dir: str | os.PathLike, key: str, calibration: Calibration, source: str) -> Path:
    """Store one ensemble's calibration in the model folder's calibration.json (other ensembles kept)."""
    path = Path(model_dir) / CALIBRATION_NAME
    data = _read(path) or {"version": CALIBRATION_VERSION, "ensembles": {}}
    data["ensembles"][key] = {**calibration.to_json(), "source": source}
    atomic_write_json(data, path)
    return path


def load_calibration(model_dir: str | os.PathLike, key: str) -> Calibration | None:
    """The calibration of ensemble `key` in the model folder, or None."""
    data = _read(Path(model_dir) / CALIBRATION_NAME)
    entry = data["ensembles"].get(key) if data else None
    return Calibration.from_json(entry) if entry else None


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get("version") != CALIBRATION_VERSION or "ensembles" not in data:
        return None
    return data


INTERVAL_FOLDER = "intervals"


def write_interval(
    calibration: Calibration, prediction: np.ndarray, spread: np.ndarray, geometry: Geometry, output_path: Path
) -> dict[str, float]:
    """For a folder run with `--uncertainty` and a calibrated ensemble: write the half width of the nominal
    interval beside the prediction (`OUT/intervals/<case><ending>`, target units) and return the summary.csv
    columns `expected_error` (the scan's) and `interval_half_width` (its mean over the subject, the voxels
    with a non-zero spread)."""
    edges = edge_strength(prediction, geometry.spacing_zyx)
    expected = calibration.expected_error(prediction, edges, residual(prediction))
    half_width = calibration.half_width(expected)
    subject = spread > 0
    if not subject.any():
        subject = np.ones(spread.shape, dtype=bool)
    half_width[~subject] = 0.0
    path = Path(output_path).parent / INTERVAL_FOLDER / Path(output_path).name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(half_width, geometry, path)
    return {
        "expected_error": calibration.scan_expected_error(expected[subject], spread[subject]),
        "interval_half_width": float(half_width[subject].mean()),
        "interval_coverage_nominal": calibration.nominal_coverage,
    }
