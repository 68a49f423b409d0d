"""Which voxels count, and the intensity interval R the metrics are relative to.

- Region: the user's mask when given (any non-zero voxel); else the reference's foreground: MR voxels
  above Otsu's threshold (Otsu, IEEE SMC 9(1) 1979) of the reference, CT voxels above -500 HU; holes
  filled in both cases so dark structures inside the head still count.
- Data range: a fixed interval when the user gives one (`--data-range LO HI`) and for CT
  ([-1024, 3000] HU, air to dense cortical bone); otherwise the reference's 0.1th-99.9th percentile
  interval inside the region, per case, robust to a few hot voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CT_DATA_RANGE_HU = (-1024.0, 3000.0)
CT_FOREGROUND_HU = -500.0
RANGE_PERCENTILES = (0.1, 99.9)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold maximising the between-class variance of a histogram of `values`."""
    values = np.asarray(values, dtype=np.float64).ravel()
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def foreground_mask(reference: np.ndarray, modality: str = "MR") -> np.ndarray:
    """The reference's foreground (see module docstring) as a boolean array."""
    reference = np.asarray(reference)
    if modality.upper() == "CT":
        mask = reference > CT_FOREGROUND_HU
    else:
        mask = reference > otsu_threshold(reference)
    return ndimage.binary_fill_holes(mask)


def reference_data_range(reference: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(lo, hi): the reference's 0.1th and 99.9th percentiles inside `mask`."""
    lo, hi = np.percentile(np.asarray(reference)[np.asarray(mask, dtype=bool)], RANGE_PERCENTILES)
    return float(lo), float(hi)
