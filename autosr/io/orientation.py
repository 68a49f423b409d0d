"""One canonical orientation for every array the networks see, and the grids that go with it.

Scanners store voxels in any axis order and direction (a sagittal 3T scan, an axial 7T slab tilted to the
hippocampus). A network trained on arrays of one orientation and shown another sees the anatomy turned.
So training and prediction both resample onto a *working grid* whose axes are the world axes (SimpleITK's
LPS physical space, identity direction): array axis 0 runs inferior->superior, 1 anterior->posterior,
2 right->left.

- Grids whose direction is a signed permutation (the usual case: axes merely stored in another order or
  flipped) are reoriented exactly: the working grid's voxel centres are the planned grid's own centres,
  so resampling between them is a pure re-indexing (`autosr.io.resampling` detects it and copies).
- Oblique grids get an axis-aligned working grid over their world bounding box; resampling onto it
  interpolates once (the input is resampled onto the planned spacing anyway).

Predictions are returned to the input's own orientation (`output_grid`): the planned spacing, mapped back
onto the input's axes, over the input's field of view with the input's direction.
"""

from __future__ import annotations

import itertools

import numpy as np

from autosr.io.geometry import Geometry, grid_covering

IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# Direction entries within this of 0/1 count as exact (NIfTI stores directions as float32 quaternions).
DIRECTION_TOLERANCE = 1e-5


def _index_to_world_axes(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(world axis of index axis a, sign) for a = x, y, z: the assignment with the largest total alignment."""
    best, best_score = (0, 1, 2), -np.inf
    for perm in itertools.permutations(range(3)):
        score = sum(abs(direction[perm[a], a]) for a in range(3))
        if score > best_score + 1e-12:
            best, best_score = perm, score
    signs = tuple(1 if direction[best[a], a] >= 0 else -1 for a in range(3))
    return best, signs


def is_axis_aligned(geometry: Geometry) -> bool:
    """True when the direction is a signed permutation: index axes run along world axes."""
    d = geometry.direction_matrix
    return bool(np.all(np.isclose(np.abs(d), np.round(np.abs(d)), atol=DIRECTION_TOLERANCE)))


def is_canonical(geometry: Geometry) -> bool:
    return bool(np.allclose(geometry.direction, IDENTITY_DIRECTION, atol=DIRECTION_TOLERANCE))


def world_axis_order(geometry: Geometry) -> tuple[int, int, int]:
    """For array axes (z, y, x) of the canonical orientation, the array axis of `geometry` that runs along
    each: `canonical_array = array.transpose(order)` (before flips)."""
    perm, _ = _index_to_world_axes(geometry.direction_matrix)
    # canonical array axis n corresponds to world axis w = 2 - n; index axis a with perm[a] == w lies on
    # array axis 2 - a of the stored array
    return tuple(2 - perm.index(2 - n) for n in range(3))


def to_world_axes(values_zyx, geometry: Geometry) -> list:
    """A per-axis quantity (spacing, size) of `geometry`'s array axes, in canonical (world) axis order."""
    order = world_axis_order(geometry)
    return [values_zyx[a] for a in order]


def from_world_axes(values_world_zyx, geometry: Geometry) -> list:
    """The inverse of `to_world_axes`: a per-world-axis quantity in `geometry`'s own array axis order."""
    order = world_axis_order(geometry)
    out = [None, None, None]
    for n, a in enumerate(order):
        out[a] = values_world_zyx[n]
    return out


def reoriented_geometry(geometry: Geometry) -> Geometry:
    """The same voxels with axes permuted and flipped to the nearest canonical orientation.

    For an axis-aligned grid the result has the identity direction; for an oblique one the residual
    rotation stays in the direction. No voxel moves in world space.
    """
    d = geometry.direction_matrix
    perm, signs = _index_to_world_axes(d)
    size_xyz = np.asarray(geometry.size_zyx[::-1])
    spacing_xyz = np.asarray(geometry.spacing_zyx[::-1], dtype=np.float64)
    # new index axis w (world axis w) is old index axis a with perm[a] == w
    old_of_new = [perm.index(w) for w in range(3)]
    corner = np.array([0.0 if signs[a] > 0 else size_xyz[a] - 1 for a in range(3)])
    origin = geometry.index_to_world(corner)[0]
    new_direction = np.zeros((3, 3))
    for w, a in enumerate(old_of_new):
        new_direction[:, w] = signs[a] * d[:, a]
    if np.allclose(new_direction, np.eye(3), atol=DIRECTION_TOLERANCE):
        new_direction = np.eye(3)
    return Geometry(
        spacing_zyx=tuple(spacing_xyz[old_of_new][::-1]),
        origin_xyz=tuple(origin),
        direction=tuple(new_direction.ravel()),
        size_zyx=tuple(int(v) for v in size_xyz[old_of_new][::-1]),
    )


def working_grid(reference: Geometry, spacing_world_zyx) -> Geometry:
    """The canonical grid (identity direction) at `spacing_world_zyx` over `reference`'s field of view.

    Axis-aligned references: an exact reorientation of `output_grid(reference, spacing_world_zyx)`.
    Oblique references: an axis-aligned grid over the world bounding box of the field of view, centred on it.
    """
    spacing = np.asarray(spacing_world_zyx, dtype=np.float64)
    if is_axis_aligned(reference):
        oriented = reoriented_geometry(output_grid(reference, spacing_world_zyx))
        return Geometry(oriented.spacing_zyx, oriented.origin_xyz, IDENTITY_DIRECTION, oriented.size_zyx)
    lo, hi = reference.world_bounding_box()
    spacing_xyz = spacing[::-1]
    size_xyz = np.maximum(1, np.round((hi - lo) / spacing_xyz).astype(int))
    centre = (lo + hi) / 2.0
    origin = centre - (size_xyz - 1) / 2.0 * spacing_xyz
    return Geometry(tuple(spacing), tuple(origin), IDENTITY_DIRECTION, tuple(size_xyz[::-1]))


def output_grid(reference: Geometry, spacing_world_zyx) -> Geometry:
    """`reference`'s own orientation and field of view at the planned spacing (given in world axis order)."""
    return grid_covering(reference, tuple(float(s) for s in from_world_axes(list(spacing_world_zyx), reference)))
