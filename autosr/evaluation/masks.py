"""Which voxels count, and the intensity interval R the metrics are relative to.

- Region: the user's mask when given (any non-zero voxel); else the reference's foreground as autosr
  defines it everywhere (`autosr.imaging.foreground.target_foreground`): CT voxels above -500 HU,
  other images above Otsu's threshold (Otsu, IEEE SMC 9(1) 1979) after light smoothing, where only the
  dark region connected to the border is background; holes filled, so dark structures inside still count.
- Data range: a fixed interval when the user gives one (`--data-range LO HI`) and for CT
  ([-1024, 3000] HU, air to dense cortical bone); otherwise the reference's 0.1th-99.9th percentile
  interval inside the region, per case, robust to a few hot voxels.
"""

from __future__ import annotations

import numpy as np

CT_DATA_RANGE_HU = (-1024.0, 3000.0)
RANGE_PERCENTILES = (0.1, 99.9)


def reference_data_range(reference: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(lo, hi): the reference's 0.1th and 99.9th percentiles inside `mask`."""
    lo, hi = np.percentile(np.asarray(reference)[np.asarray(mask, dtype=bool)], RANGE_PERCENTILES)
    return float(lo), float(hi)
