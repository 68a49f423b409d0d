"""Linear spatial transforms as plain numbers: x -> A x + b in world millimetres (x, y, z).

Registration (SimpleITK) produces a transform that maps a point of the *target* (fixed image) to the point
of the *input* (moving image) that shows the same anatomy. This module turns such transforms into plain
arrays, measures them (how far they move the points of a region, by how many degrees they rotate), writes
them as JSON, and applies a rigid one to an image header without touching a voxel:

if every input point p should move to T^-1(p), the input grid's origin O and direction D become
O' = T^-1(O) and D' = R^T D (R the rotation of T). Spacing and voxel values stay, so a rigidly registered
input carries no resampling blur. The synthetic generators use the same header move to displace inputs by
a known rigid transform (`random_rigid_displacement`, `displace_geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from autosr.io.geometry import Geometry

ORTHONORMAL_TOLERANCE = 1e-6


@dataclass(frozen=True)
class LinearMap:
    """x -> matrix @ x + offset, x in world mm (x, y, z)."""

    matrix: np.ndarray  # (3, 3)
    offset: np.ndarray  # (3,)

    def apply(self, points_xyz: np.ndarray) -> np.ndarray:
        """Map (N, 3) world points."""
        return np.atleast_2d(points_xyz) @ self.matrix.T + self.offset

    def inverse(self) -> LinearMap:
        inverse_matrix = np.linalg.inv(self.matrix)
        return LinearMap(inverse_matrix, -inverse_matrix @ self.offset)

    @property
    def is_rigid(self) -> bool:
        """True when the matrix is a proper rotation (orthonormal, determinant +1)."""
        return bool(
            np.allclose(self.matrix.T @ self.matrix, np.eye(3), atol=ORTHONORMAL_TOLERANCE)
            and np.linalg.det(self.matrix) > 0
        )

    def to_json(self) -> dict[str, Any]:
        return {"matrix": self.matrix.tolist(), "offset_mm": self.offset.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LinearMap:
        return cls(np.asarray(d["matrix"], dtype=np.float64), np.asarray(d["offset_mm"], dtype=np.float64))


def linear_map_of(transform: sitk.Transform) -> LinearMap:
    """The x -> A x + b form of a SimpleITK matrix-offset transform (Euler, versor, similarity, affine,
    translation), or of a composite of them."""
    transform = transform.Downcast()
    if isinstance(transform, sitk.CompositeTransform):
        result = LinearMap(np.eye(3), np.zeros(3))
        # a composite applies its last-added transform first: T(x) = T0(T1(...(Tn(x))))
        for index in range(transform.GetNumberOfTransforms()):
            part = linear_map_of(transform.GetNthTransform(index))
            result = LinearMap(result.matrix @ part.matrix, result.matrix @ part.offset + result.offset)
        return result
    if transform.GetDimension() != 3:
        raise ValueError(f"expected a 3D transform, got {transform.GetDimension()}D")
    if isinstance(transform, sitk.TranslationTransform):
        return LinearMap(np.eye(3), np.asarray(transform.GetOffset(), dtype=np.float64))
    if not hasattr(transform, "GetMatrix"):
        if transform.GetTransformEnum() == sitk.sitkIdentity:
            return LinearMap(np.eye(3), np.zeros(3))
        raise ValueError(f"{transform.GetName()} is not a linear transform")
    matrix = np.asarray(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    translation = np.asarray(transform.GetTranslation(), dtype=np.float64)
    centre = np.asarray(transform.GetCenter(), dtype=np.float64)
    return LinearMap(matrix, translation + centre - matrix @ centre)


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """The rotation angle (degrees) of the orthonormal part of `matrix` (polar decomposition)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64))
    rotation = u @ vt
    cosine = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)))


def displacement_mm(linear_map: LinearMap, points_xyz: np.ndarray) -> np.ndarray:
    """|T(x) - x| (mm) for each of the (N, 3) world points."""
    points = np.atleast_2d(points_xyz)
    return np.linalg.norm(linear_map.apply(points) - points, axis=1)


def difference_mm(first: LinearMap, second: LinearMap, points_xyz: np.ndarray) -> np.ndarray:
    """|T1(x) - T2(x)| (mm) for each of the (N, 3) world points: how far two transforms disagree there."""
    return np.linalg.norm(first.apply(points_xyz) - second.apply(points_xyz), axis=1)


def region_points(mask: np.ndarray, geometry: Geometry, max_points: int = 20_000) -> np.ndarray:
    """World coordinates (N, 3) of the non-zero voxels of a (Z, Y, X) mask, evenly thinned to `max_points`."""
    index_zyx = np.argwhere(np.asarray(mask) > 0)
    if index_zyx.shape[0] > max_points:
        index_zyx = index_zyx[:: int(np.ceil(index_zyx.shape[0] / max_points))]
    return geometry.index_to_world(index_zyx[:, ::-1].astype(np.float64))


def displace_geometry(geometry: Geometry, linear_map: LinearMap) -> Geometry:
    """The header of an image moved rigidly by `linear_map`: every voxel centre p goes to A p + b.

    Spacing, size and voxel values are unchanged; origin and direction absorb the move. Only rigid maps can
    be expressed this way (a header's direction must stay orthonormal).
    """
    if not linear_map.is_rigid:
        raise ValueError("only a rigid transform (rotation + translation) can be written into an image header")
    origin = linear_map.apply(np.asarray(geometry.origin_xyz))[0]
    direction = linear_map.matrix @ geometry.direction_matrix
    return Geometry(geometry.spacing_zyx, tuple(origin), tuple(direction.ravel()), geometry.size_zyx)


def rotation_matrix(axis_xyz: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotation by `angle_deg` about the unit vector `axis_xyz` (Rodrigues' formula)."""
    axis = np.asarray(axis_xyz, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    angle = np.radians(angle_deg)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def rigid_about(rotation: np.ndarray, translation_xyz: np.ndarray, centre_xyz: np.ndarray) -> LinearMap:
    """x -> R (x - c) + c + t: a rotation about `centre_xyz` followed by a translation."""
    rotation = np.asarray(rotation, dtype=np.float64)
    centre = np.asarray(centre_xyz, dtype=np.float64)
    return LinearMap(rotation, centre + np.asarray(translation_xyz, dtype=np.float64) - rotation @ centre)


def random_rigid_displacement(
    rng: np.random.Generator, translation_mm: float, rotation_deg: float, centre_xyz: np.ndarray
) -> tuple[LinearMap, dict[str, Any]]:
    """A rigid map with a translation of exactly `translation_mm` in a random direction and a rotation of
    exactly `rotation_deg` about a random axis through `centre_xyz`; also its parameters as JSON."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    translation = direction * float(translation_mm)
    linear_map = rigid_about(rotation_matrix(axis, rotation_deg), translation, centre_xyz)
    parameters = {
        "translation_mm": float(translation_mm),
        "rotation_deg": float(rotation_deg),
        "translation_xyz_mm": translation.tolist(),
        "rotation_axis_xyz": axis.tolist(),
        "centre_xyz_mm": np.asarray(centre_xyz, dtype=np.float64).tolist(),
        **linear_map.to_json(),
    }
    return linear_map, parameters
