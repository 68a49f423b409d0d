"""Back from a normalized prediction on the cropped planned grid to an image in target units.

Steps, the exact reverse of `autosr.preprocessing.preprocess`: invert the target normalization (with the
export parameters: the dataset's typical scale for MR, exact dataset parameters for CT), put the crop back
into the planned grid (outside the crop, and outside the subject region when the input foreground is given,
the training targets' background level), and resample onto the output
grid: the original target grid for training/validation cases (so predictions can be scored against the
reference), the planned grid over the input's extent for new scans (no resampling), or the input's own grid
when asked (`on_input_grid`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autosr.formats.plans import Plans
from autosr.imaging.foreground import subject_region
from autosr.io import Geometry, resample_to_geometry
from autosr.preprocessing.normalization import invert_image

# Prediction export resampling: linear, so values stay inside the range the network produced (B-spline
# overshoots at tissue edges and would create intensities no scan has).
EXPORT_ORDER = 1


def revert_prediction(
    prediction: np.ndarray,
    properties: dict[str, Any],
    plans: Plans,
    config_name: str,
    on_input_grid: bool = False,
    foreground: np.ndarray | None = None,
) -> tuple[np.ndarray, Geometry]:
    """(array in target units (Z,Y,X) float32, its Geometry) for a normalized prediction (Z,Y,X).

    `foreground`: the input foreground on the cropped working grid (`PreprocessedScan.foreground`); when
    given, voxels outside the subject region (`subject_region`) get the training targets' background level
    instead of the network's output. None keeps the raw network output everywhere inside the crop.
    """
    prediction = np.asarray(prediction)
    if prediction.ndim == 4:
        prediction = prediction[0]
    planned = Geometry.from_json(properties["planned_geometry"])
    box = properties["crop_box_zyx"]
    expected = tuple(b - a for a, b in box)
    if prediction.shape != expected:
        raise ValueError(f"prediction shape {prediction.shape} does not match the crop box {expected}")
    export = properties["export_normalization"]
    background = float(plans.target_normalization.get("background", 0.0))
    full = np.full(planned.size_zyx, background, dtype=np.float32)
    inside = invert_image(prediction, export)
    if foreground is not None:
        inside = np.where(subject_region(foreground), inside, np.float32(background))
    full[tuple(slice(a, b) for a, b in box)] = inside
    if on_input_grid:
        destination = Geometry.from_json(properties["input_geometry"])
    else:
        destination = Geometry.from_json(properties["output_geometry"])
    if destination.same_grid(planned, tolerance=1e-6):
        return full, planned
    # resample with the background outside the planned field of view
    shifted = resample_to_geometry(full - background, planned, destination, order=EXPORT_ORDER) + background
    return shifted.astype(np.float32), destination
