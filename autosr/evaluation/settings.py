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
MODALITIES = ("MR", "CT")


@dataclass(frozen=True)
class EvaluationSettings:
    """How a pair is compared; recorded in every summary. Checked when made (`__post_init__`)."""

    # target modality: picks the default normalization, data range and tissue model ("MR" or "CT")
    modality: str = "MR"
    # intensity normalization of both images before scoring (NORMALIZATIONS); None: the modality's default
    normalization: str | None = None
    # fixed (lo, hi) interval for PSNR/SSIM; for ct_clip the HU window; None: per case, the reference's
    # 0.1th-99.9th percentiles inside the region
    data_range: tuple[float, float] | None = None
    # resample predictions (B-spline) and masks/label maps (nearest) on another grid onto the reference grid
    resample: bool = False
    # tissue-segmentation agreement (Dice per class) of prediction and reference
    tissue: bool = True
    ms_ssim: bool = True
    # where SSIM's filters run: "auto" (torch when present), "torch" or "scipy"
    backend: str = "auto"
    # also score the whole image (IMAGE_METRICS with suffix _image)
    image_metrics: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", str(self.modality).upper())
        if self.modality not in MODALITIES:
            raise AutosrError(f"--modality must be one of {', '.join(MODALITIES)}, got '{self.modality}'")
        if self.data_range is not None:
            lo, hi = (float(v) for v in self.data_range)
            if not hi > lo:
                raise AutosrError(f"--data-range LO HI needs LO < HI, got {lo:g} {hi:g}")
            object.__setattr__(self, "data_range", (lo, hi))
        self.normalization_name  # noqa: B018 - refuses an unknown name now, before any work

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
