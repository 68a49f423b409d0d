"""The intensity normalization applied to both images before they are compared.

- `none` (default for MR): compare as exported. autosr writes predictions in the target's units, so
  this is right for its own outputs and keeps a global intensity bias visible in every metric.
- `zscore`: each image minus its own mean, divided by its own standard deviation, inside the region;
  for predictions from another tool in another scale (hides global scale and offset errors).
- `percentile`: each image mapped so its own 0.1th/99.9th percentiles inside the region become 0/1.
- `ct_clip` (default for CT): both images clipped to the CT window (default [-1024, 3000] HU) and
  shifted so the window starts at 0; SSIM's luminance term then compares non-negative values. MAE,
  MSE and PSNR do not change with the shift.
"""

from __future__ import annotations

import numpy as np

from autosr.evaluation.masks import CT_DATA_RANGE_HU, RANGE_PERCENTILES

NORMALIZATIONS = ("none", "zscore", "percentile", "ct_clip")


def default_normalization(modality: str) -> str:
    return "ct_clip" if modality.upper() == "CT" else "none"


def describe_normalization(name: str, window: tuple[float, float] | None = None) -> str:
    lo, hi = window or CT_DATA_RANGE_HU
    return {
        "none": "none: both images compared in their exported units",
        "zscore": "zscore: each image standardized by its own mean and std inside the region",
        "percentile": "percentile: each image's own 0.1th/99.9th percentiles inside the region mapped to 0/1",
        "ct_clip": f"ct_clip: both images clipped to [{lo:g}, {hi:g}] HU and shifted by {-lo:+g} (window starts at 0)",
    }[name]


def _one(image: np.ndarray, mask: np.ndarray, name: str, window: tuple[float, float] | None) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if name == "none":
        return image
    if name == "zscore":
        values = image[mask].astype(np.float64)
        return ((image - values.mean()) / max(values.std(), 1e-8)).astype(np.float32)
    if name == "percentile":
        lo, hi = np.percentile(image[mask], RANGE_PERCENTILES)
        return ((image - lo) / max(hi - lo, 1e-8)).astype(np.float32)
    if name == "ct_clip":
        lo, hi = window or CT_DATA_RANGE_HU
        return (np.clip(image, lo, hi) - lo).astype(np.float32)
    raise ValueError(f"unknown normalization {name!r}; choose one of {', '.join(NORMALIZATIONS)}")


def normalize_pair(
    prediction: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    name: str,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Both images normalized by scheme `name` (each by its own statistics where the scheme has any)."""
    mask = np.asarray(mask, dtype=bool)
    return _one(prediction, mask, name, window), _one(reference, mask, name, window)
