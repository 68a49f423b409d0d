"""How the synthetic generators acquire a low-resolution input from a fine image, as a scanner would.

In-plane, a voxel integrates the signal over its extent: a Gaussian blur matching the voxel size stands in
for that point-spread function. Along a slice axis whose slices are thick (a 2D multi-slice acquisition),
each slice *averages* the signal over its whole thickness (a box slice profile), so anatomy thinner than a
slice is partial-volumed into it, not skipped: the input is what a scanner would have recorded, and
decimating a fine image (keeping every k-th slice) would not be.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from autosr.io.geometry import Geometry, grid_covering
from autosr.io.resampling import resample_to_geometry

# Samples per slice when integrating a slab profile: enough that the box average of the fine image
# differs from its exact integral by far less than the input noise.
SLAB_SAMPLES_PER_FINE_VOXEL = 2
# An input axis counts as thick-slice (box profile) when its spacing is at least this many fine voxels.
THICK_SLICE_RATIO = 2.0


def in_plane_blur_sigma(coarse_mm: float, fine_mm: float) -> float:
    """Gaussian sigma (fine voxels) approximating a coarse voxel's in-plane point-spread function."""
    return max(0.0, 0.5 * coarse_mm / fine_mm - 0.3)


def acquire(
    fine: np.ndarray,
    fine_geometry: Geometry,
    coarse_spacing_zyx: Sequence[float],
    thick_axes: Sequence[int] | None = None,
) -> tuple[np.ndarray, Geometry]:
    """The fine image (Z, Y, X) acquired on a coarser grid over the same field of view.

    Axes in `thick_axes` (default: every axis whose coarse spacing is at least `THICK_SLICE_RATIO` fine
    voxels) average the signal over the slice thickness (= the coarse spacing, contiguous slices); the
    other axes get the Gaussian point-spread function. Returns (coarse array float32, coarse geometry).
    """
    coarse_spacing = [float(s) for s in coarse_spacing_zyx]
    fine_spacing = fine_geometry.spacing_zyx
    if thick_axes is None:
        thick_axes = [a for a in range(3) if coarse_spacing[a] >= THICK_SLICE_RATIO * fine_spacing[a]]
    sigma = [0.0 if a in thick_axes else in_plane_blur_sigma(coarse_spacing[a], fine_spacing[a]) for a in range(3)]
    blurred = ndimage.gaussian_filter(np.asarray(fine, dtype=np.float32), sigma) if any(sigma) else fine
    coarse_geometry = grid_covering(fine_geometry, coarse_spacing)
    if not thick_axes:
        return resample_to_geometry(blurred, fine_geometry, coarse_geometry, order=1), coarse_geometry
    # integrate the box profile: average over sample positions spread evenly across each slab
    counts = [
        int(np.ceil(coarse_spacing[a] / fine_spacing[a])) * SLAB_SAMPLES_PER_FINE_VOXEL if a in thick_axes else 1
        for a in range(3)
    ]
    direction = fine_geometry.direction_matrix
    total = np.zeros(coarse_geometry.size_zyx, dtype=np.float64)
    n = 0
    for index in np.ndindex(*counts):
        shift_zyx = [
            ((i + 0.5) / k - 0.5) * coarse_spacing[a] if k > 1 else 0.0 for a, (i, k) in enumerate(zip(index, counts))
        ]
        shift_world = direction @ np.asarray(shift_zyx[::-1])
        shifted = Geometry(
            coarse_geometry.spacing_zyx,
            tuple(np.asarray(coarse_geometry.origin_xyz) + shift_world),
            coarse_geometry.direction,
            coarse_geometry.size_zyx,
        )
        total += resample_to_geometry(blurred, fine_geometry, shifted, order=1)
        n += 1
    return (total / n).astype(np.float32), coarse_geometry
