"""Resampling an image into another grid's physical space (SimpleITK does the interpolation).

Orders: 0 nearest neighbour (masks, labels), 1 linear, 3 cubic B-spline (intensities). B-spline can
overshoot at sharp edges; callers that need a bounded result clip afterwards.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from autosr.io.geometry import Geometry
from autosr.io.image_io import apply_geometry

INTERPOLATORS = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}


def resample_to_geometry(
    array: np.ndarray,
    source: Geometry,
    destination: Geometry,
    order: int = 3,
    default_value: float = 0.0,
) -> np.ndarray:
    """Resample a (Z, Y, X) or (C, Z, Y, X) array from `source` onto `destination`'s grid.

    Returns float32 (for order 0 the values are copied, so labels keep their values). Voxels of the
    destination outside the source field of view get `default_value`.
    """
    if order not in INTERPOLATORS:
        raise ValueError(f"interpolation order must be one of {sorted(INTERPOLATORS)}, got {order}")
    array = np.asarray(array)
    if array.ndim == 4:
        return np.stack([resample_to_geometry(c, source, destination, order, default_value) for c in array], axis=0)
    if tuple(array.shape) != tuple(source.size_zyx):
        raise ValueError(f"array shape {array.shape} does not match source size {source.size_zyx}")
    if source.same_grid(destination, tolerance=1e-6):
        return array.astype(np.float32, copy=True)
    image = apply_geometry(sitk.GetImageFromArray(np.ascontiguousarray(array.astype(np.float32))), source)
    reference = apply_geometry(sitk.Image(list(destination.size_zyx[::-1]), sitk.sitkFloat32), destination)
    resampled = sitk.Resample(
        image, reference, sitk.Transform(), INTERPOLATORS[order], float(default_value), sitk.sitkFloat32
    )
    return sitk.GetArrayFromImage(resampled).astype(np.float32, copy=False)
