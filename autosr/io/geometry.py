"""The geometry of an image grid: spacing, origin, direction and size, and physical-space helpers.

Inside autosr, axis order is (Z, Y, X) for arrays, spacings and sizes. Origin and direction are physical
(world) quantities and stay in SimpleITK's convention: origin is (x, y, z) in mm, direction is the 3x3
matrix whose *columns* are the world directions of the index axes i, j, k (X, Y, Z array axes), stored
row-major as 9 numbers exactly as SimpleITK returns it. Storing them untouched is what makes round trips
exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """A 3D image grid. `spacing_zyx` in mm, `size_zyx` in voxels, `origin_xyz` in mm (world)."""

    spacing_zyx: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 numbers, SimpleITK row-major order
    size_zyx: tuple[int, int, int]

    def __post_init__(self):
        object.__setattr__(self, "spacing_zyx", tuple(float(v) for v in self.spacing_zyx))
        object.__setattr__(self, "origin_xyz", tuple(float(v) for v in self.origin_xyz))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))
        object.__setattr__(self, "size_zyx", tuple(int(v) for v in self.size_zyx))
        if len(self.spacing_zyx) != 3 or len(self.origin_xyz) != 3 or len(self.size_zyx) != 3:
            raise ValueError(f"geometry must be 3D, got {self}")
        if len(self.direction) != 9:
            raise ValueError(f"direction must have 9 numbers, got {len(self.direction)}")

    # --- serialisation -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "spacing_zyx": list(self.spacing_zyx),
            "origin_xyz": list(self.origin_xyz),
            "direction": list(self.direction),
            "size_zyx": list(self.size_zyx),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Geometry:
        return cls(d["spacing_zyx"], d["origin_xyz"], d["direction"], d["size_zyx"])

    # --- physical space ------------------------------------------------------------------------------
    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def spacing_xyz(self) -> np.ndarray:
        return np.asarray(self.spacing_zyx[::-1], dtype=np.float64)

    def index_to_world(self, index_xyz: np.ndarray) -> np.ndarray:
        """World coordinates (N, 3) of continuous indices (N, 3) given as (i, j, k) = (x, y, z) order."""
        idx = np.atleast_2d(np.asarray(index_xyz, dtype=np.float64))
        return np.asarray(self.origin_xyz) + (idx * self.spacing_xyz) @ self.direction_matrix.T

    def world_corners(self) -> np.ndarray:
        """The 8 corners (8, 3) of the grid's field of view: voxel *edges*, not centres."""
        size_xyz = np.asarray(self.size_zyx[::-1], dtype=np.float64)
        corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.float64)
        return self.index_to_world(corners * size_xyz - 0.5)

    def world_bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world box (min_xyz, max_xyz) of the field of view."""
        c = self.world_corners()
        return c.min(axis=0), c.max(axis=0)

    @property
    def physical_extent_zyx(self) -> tuple[float, float, float]:
        """Field-of-view length along each array axis in mm."""
        return tuple(float(s * n) for s, n in zip(self.spacing_zyx, self.size_zyx))

    def same_grid(self, other: Geometry, tolerance: float = 1e-4) -> bool:
        """True when both grids have the same size and (within `tolerance`, relative to spacing) geometry."""
        if self.size_zyx != other.size_zyx:
            return False
        scale = max(min(self.spacing_zyx), 1e-6)
        return (
            np.allclose(self.spacing_zyx, other.spacing_zyx, atol=tolerance * scale, rtol=0)
            and np.allclose(self.origin_xyz, other.origin_xyz, atol=tolerance * scale * 10, rtol=0)
            and np.allclose(self.direction, other.direction, atol=tolerance, rtol=0)
        )

    def describe(self) -> str:
        sp = "x".join(f"{s:g}" for s in self.spacing_zyx)
        sz = "x".join(str(s) for s in self.size_zyx)
        return f"{sz} voxels (z,y,x) at {sp} mm"


def grid_covering(geometry: Geometry, new_spacing_zyx: tuple[float, float, float]) -> Geometry:
    """A grid with `new_spacing_zyx` and the same direction covering the same field of view.

    The field of view (voxel edges) is kept: the number of voxels per axis is the rounded ratio of extents,
    and the new origin is placed so the new grid is centred on the old one. This is the grid predictions are
    written on ("planned resolution over the input's physical extent").
    """
    new_spacing = np.asarray(new_spacing_zyx, dtype=np.float64)
    extent = np.asarray(geometry.physical_extent_zyx)
    new_size_zyx = np.maximum(1, np.round(extent / new_spacing).astype(int))
    # centre of the old field of view, in continuous index (x, y, z) of the old grid
    old_size_xyz = np.asarray(geometry.size_zyx[::-1], dtype=np.float64)
    centre_world = geometry.index_to_world((old_size_xyz - 1) / 2.0)[0]
    new_size_xyz = new_size_zyx[::-1].astype(np.float64)
    offset = ((new_size_xyz - 1) / 2.0) * new_spacing[::-1]
    new_origin = centre_world - geometry.direction_matrix @ offset
    return Geometry(tuple(new_spacing), tuple(new_origin), geometry.direction, tuple(new_size_zyx))


def overlap_fraction(reference: Geometry, other: Geometry) -> float:
    """Fraction of `reference`'s world bounding box volume that `other`'s world bounding box covers.

    Boxes are axis-aligned in world space, which is exact for axis-aligned grids and a slight
    over-estimate for oblique ones; it is a sanity check for co-registration, not a measurement.
    """
    rmin, rmax = reference.world_bounding_box()
    omin, omax = other.world_bounding_box()
    inter = np.clip(np.minimum(rmax, omax) - np.maximum(rmin, omin), 0, None)
    ref_volume = float(np.prod(rmax - rmin))
    if ref_volume <= 0 or not math.isfinite(ref_volume):
        return 0.0
    return float(np.prod(inter)) / ref_volume
