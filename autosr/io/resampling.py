"""Resampling an image into another grid's physical space (SimpleITK does the interpolation).

Orders: 0 nearest neighbour (masks, labels), 1 linear, 3 cubic B-spline (intensities). B-spline can
overshoot at sharp edges; callers that need a bounded result clip afterwards.

When every destination voxel centre is a source voxel centre (the same grid, a crop or pad of it, or the
same voxels with axes permuted and flipped, as between a scan and its canonical orientation), resampling is
a pure re-indexing: `reindexing` detects it and the values are copied exactly, whatever the order.

A destination grid beyond `MAX_RESAMPLED_VOXELS` is refused with one message before anything is allocated.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from autosr.errors import AutosrError
from autosr.io.geometry import Geometry
from autosr.io.image_io import apply_geometry

INTERPOLATORS = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}
# The most voxels one resampled volume may hold: 2 Gi voxels, 8 GiB as float32. A 0.7 mm whole-body CT
# (700 x 700 x 2500) holds 1.2 Gi; a grid beyond this comes from a wrong spacing or size in a header (a 1 mm
# scan whose header says 10 m), and allocating it would fail deep inside ITK without naming anything.
MAX_RESAMPLED_VOXELS = 2**31


def check_voxel_budget(destination: Geometry, channels: int = 1) -> None:
    """Refuse, before anything is allocated, a resampled volume beyond `MAX_RESAMPLED_VOXELS`."""
    voxels = math.prod(destination.size_zyx) * channels
    if voxels > MAX_RESAMPLED_VOXELS:
        spacing = " x ".join(f"{s:g}" for s in destination.spacing_zyx)
        size = " x ".join(str(s) for s in destination.size_zyx)
        raise AutosrError(
            f"resampling onto a grid of {size} voxels at {spacing} mm (z, y, x) would make {voxels:.3g} voxels, more "
            f"than autosr's budget of {MAX_RESAMPLED_VOXELS:.3g} ({MAX_RESAMPLED_VOXELS * 4 / 1024**3:.0f} GiB as "
            "float32); the spacing or size in the image's header is probably wrong (metres instead of mm?): check it"
        )


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
    check_voxel_budget(destination, array.shape[0] if array.ndim == 4 else 1)
    if array.ndim == 4:
        return np.stack([resample_to_geometry(c, source, destination, order, default_value) for c in array], axis=0)
    if tuple(array.shape) != tuple(source.size_zyx):
        raise ValueError(f"array shape {array.shape} does not match source size {source.size_zyx}")
    mapping = reindexing(source, destination)
    if mapping is not None:
        return _reindex(array, mapping, destination.size_zyx, default_value)
    image = apply_geometry(sitk.GetImageFromArray(np.ascontiguousarray(array.astype(np.float32))), source)
    reference = apply_geometry(sitk.Image(list(destination.size_zyx[::-1]), sitk.sitkFloat32), destination)
    resampled = sitk.Resample(
        image, reference, sitk.Transform(), INTERPOLATORS[order], float(default_value), sitk.sitkFloat32
    )
    return sitk.GetArrayFromImage(resampled).astype(np.float32, copy=False)


# A destination voxel centre within this many source voxels of a source centre counts as that centre.
REINDEX_TOLERANCE_VOXELS = 1e-4


def reindexing(source: Geometry, destination: Geometry) -> tuple[list[int], list[int], list[int]] | None:
    """How destination array axes read the source when no interpolation is needed, else None.

    Returns (source axis, step +1/-1, source index of destination index 0) per destination array axis
    (z, y, x): destination[..., i, ...] = source[..., step * i + start, ...] along each axis.
    """
    scaled_source = source.direction_matrix * np.asarray(source.spacing_zyx[::-1])
    scaled_destination = destination.direction_matrix * np.asarray(destination.spacing_zyx[::-1])
    inverse = np.linalg.inv(scaled_source)
    linear = inverse @ scaled_destination  # destination index (x, y, z) -> source index (x, y, z)
    offset = inverse @ (np.asarray(destination.origin_xyz) - np.asarray(source.origin_xyz))
    rounded, rounded_offset = np.round(linear), np.round(offset)
    tolerance = REINDEX_TOLERANCE_VOXELS
    if not (np.allclose(linear, rounded, atol=tolerance) and np.allclose(offset, rounded_offset, atol=tolerance)):
        return None
    if not (np.all(np.abs(rounded).sum(axis=0) == 1) and np.all(np.abs(rounded).sum(axis=1) == 1)):
        return None
    axes, steps, starts = [], [], []
    for n in range(3):  # destination array axis n is index axis 2 - n
        column = rounded[:, 2 - n]
        a = int(np.flatnonzero(column)[0])
        axes.append(2 - a)
        steps.append(int(column[a]))
        starts.append(int(rounded_offset[a]))
    return axes, steps, starts


def _reindex(
    array: np.ndarray, mapping: tuple[list[int], list[int], list[int]], size_zyx, default_value: float
) -> np.ndarray:
    axes, steps, starts = mapping
    moved = np.transpose(array, axes)
    out = np.full(tuple(size_zyx), default_value, dtype=np.float32)
    source_slices, destination_slices = [], []
    for n in range(3):
        length, step, start = moved.shape[n], steps[n], starts[n]
        # destination indices i with 0 <= step * i + start < length
        if step > 0:
            lo, hi = max(0, -start), min(size_zyx[n], length - start)
        else:
            lo, hi = max(0, start - length + 1), min(size_zyx[n], start + 1)
        if hi <= lo:
            return out
        first, last = step * lo + start, step * (hi - 1) + start
        if step > 0:
            source_slices.append(slice(first, last + 1))
        else:
            source_slices.append(slice(first, last - 1 if last > 0 else None, -1))
        destination_slices.append(slice(lo, hi))
    out[tuple(destination_slices)] = moved[tuple(source_slices)]
    return out
