"""How a prediction is compared with its reference (modality, intensity normalization, data range, which
metrics): one frozen object, passed to every worker and recorded in every summary, so a table can always be
read back to the rules that made it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from autosr.errors import AutosrError
from autosr.evaluation import metrics
from autosr.evaluation.masks import CT_DATA_RANGE_HU
from autosr.evaluation.normalization import (
    NORMALIZATIONS,
    default_normalization,
    describe_normalization,
)

PathLike = str | os.PathLike


@dataclass(frozen=True)
class EvaluationSettings:
    """How a pair is compared; recorded in every summary."""

    modality: str = "MR"
    normalization: str | None = None  # None: the modality's default
    data_range: tuple[float, float] | None = None  # fixed (lo, hi); for ct_clip the HU window
    resample: bool = False
    tissue: bool = True
    ms_ssim: bool = True
    backend: str = "auto"
    image_metrics: bool = True  # also score the whole image (IMAGE_METRICS with suffix _image)

    @property
    def normalization_name(self) -> str:
        name = self.normalization or default_normalization(self.modality)
        if name not in NORMALIZATIONS:
            raise AutosrError(f"unknown normalization '{name}'; choose one of {', '.join(NORMALIZATIONS)}")
        return name

    @property
    def ct_window(self) -> tuple[float, float]:
        return tuple(self.data_range) if self.data_range else CT_DATA_RANGE_HU

    def describe(self) -> dict[str, Any]:
        name = self.normalization_name
        if name == "ct_clip":
            lo, hi = self.ct_window
            data_range = {"rule": "fixed CT window, after the shift", "lo": 0.0, "hi": hi - lo, "window_hu": [lo, hi]}
        elif self.data_range:
            data_range = {"rule": "fixed (given)", "lo": self.data_range[0], "hi": self.data_range[1]}
        else:
            data_range = {"rule": "per case: the reference's 0.1th-99.9th percentiles inside the region"}
        return {
            "modality": self.modality,
            "normalization": name,
            "normalization_description": describe_normalization(name, self.ct_window if name == "ct_clip" else None),
            "data_range": data_range,
            "psnr_cap_db": metrics.PSNR_CAP_DB,
            "ssim": {
                "sigma": metrics.SSIM_SIGMA,
                "truncate": metrics.SSIM_TRUNCATE,
                "k1": metrics.SSIM_K1,
                "k2": metrics.SSIM_K2,
            },
            "resampled_predictions": self.resample,
            "image_region": "every reference voxel the prediction covers (metrics with suffix _image; "
            "mae_outside_mask: those outside the region)"
            if self.image_metrics
            else None,
        }
