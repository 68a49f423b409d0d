"""`autosr.preprocessing.foreground` moved to `autosr.imaging.foreground` (it sits below its users in the layers of documentation/architecture.md);
this name stays so that code written against it keeps working. New code imports `autosr.imaging.foreground`."""

from autosr.imaging.foreground import (  # noqa: F401 - re-exported
    CROP_MARGIN_MM,
    CT_FOREGROUND_HU,
    OTSU_SAMPLE_VOXELS,
    SUBJECT_MARGIN_VOXELS,
    THRESHOLD_SMOOTHING_SIGMA,
    border_values,
    bounding_box,
    channel_foreground,
    crop_box,
    input_foreground,
    otsu_threshold,
    subject_region,
    target_foreground,
)

__all__ = [
    "border_values",
    "bounding_box",
    "channel_foreground",
    "crop_box",
    "CROP_MARGIN_MM",
    "CT_FOREGROUND_HU",
    "input_foreground",
    "OTSU_SAMPLE_VOXELS",
    "otsu_threshold",
    "SUBJECT_MARGIN_VOXELS",
    "subject_region",
    "target_foreground",
    "THRESHOLD_SMOOTHING_SIGMA",
]
