"""Small spherical lesions put into a scan at a physical place: does the model keep real structure, and does
it invent or erase it?

A lesion is a sphere in world coordinates (mm), so the same lesion lands in the same physical place on the
input grid and on the target grid, whatever their voxel sizes. Inside the sphere (voxel centres within the
radius) the image is multiplied by the lesion's `factor` (`HYPO_FACTOR` darker, `HYPER_FACTOR` brighter):
the lesion keeps the local texture and bias field, and its contrast is a fixed fraction of the tissue it
sits in, in each image's own units. Paired lesions go into input and target (the truth holds them);
input-only lesions go into the input alone (the truth does not: a model that carries them over is faithful
to its input, one that removes them erases anatomy it was shown).

Where: in the tissue class the lesion names, found by a 3-class Gaussian mixture of the target's
intensities inside the mask (`autosr.evaluation.tissue`: `high` = white matter, `mid` = grey matter on a
T1-weighted brain; on other images the brightest and middle classes). Each centre is drawn (seeded) among
the voxels of that class deepest inside it (distance to the class border at least the radius when the
class allows, else the deepest 5%), and far enough from the lesions already placed that they do not touch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from autosr.evaluation.tissue import fit_gaussian_mixture
from autosr.io import Geometry

HYPO_FACTOR = 0.6  # a 40% darker lesion (e.g. a T1-hypointense white-matter lesion)
HYPER_FACTOR = 1.4  # a 40% brighter one
LESION_DIAMETERS_MM = (3.0, 6.0, 10.0)
TISSUE_CLASSES = {"wm": 2, "gm": 1}  # index of the class in the mixture sorted by mean intensity
GAP_MM = 4.0  # at least this much tissue between two lesions of one scan


@dataclass(frozen=True)
class Lesion:
    """A sphere: centre in world coordinates (x, y, z) mm, diameter in mm, intensity factor."""

    centre_xyz: tuple[float, float, float]
    diameter_mm: float
    factor: float

    @property
    def kind(self) -> str:
        return "hypo" if self.factor < 1 else "hyper"

    def to_json(self) -> dict:
        return {"centre_xyz": list(self.centre_xyz), "diameter_mm": self.diameter_mm, "factor": self.factor}


def world_coordinates(geometry: Geometry) -> np.ndarray:
    """(Z, Y, X, 3) world coordinates (x, y, z) in mm of every voxel centre."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in geometry.size_zyx], indexing="ij")
    index_xyz = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    return geometry.index_to_world(index_xyz).reshape(*geometry.size_zyx, 3)


def centre_distance(geometry: Geometry, lesion: Lesion, world: np.ndarray | None = None) -> np.ndarray:
    """Distance in mm of every voxel centre of `geometry` from the lesion's centre (`world`: the grid's
    `world_coordinates`, when the caller already has them: they cost a (Z, Y, X, 3) array)."""
    world = world_coordinates(geometry) if world is None else world
    return np.sqrt(((world - np.asarray(lesion.centre_xyz)) ** 2).sum(axis=-1))


def sphere_mask(geometry: Geometry, lesion: Lesion, world: np.ndarray | None = None) -> np.ndarray:
    """Voxels of `geometry` whose centres lie within the lesion's radius of its centre."""
    return centre_distance(geometry, lesion, world) <= lesion.diameter_mm / 2


def insert_lesions(array: np.ndarray, geometry: Geometry, lesions: Sequence[Lesion]) -> np.ndarray:
    """A copy of `array` with each lesion's sphere multiplied by its factor."""
    out = np.array(array, dtype=np.float32, copy=True)
    world = world_coordinates(geometry)
    for lesion in lesions:
        out[sphere_mask(geometry, lesion, world)] *= np.float32(lesion.factor)
    return out


def tissue_labels(target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """-1 outside the mask, else the class (0 low, 1 mid, 2 high) of a 3-class mixture of the target."""
    labels = np.full(target.shape, -1, dtype=np.int8)
    values = target[mask]
    model = fit_gaussian_mixture(values)
    labels[mask] = model.predict(values).astype(np.int8)
    return labels


def place_lesions(
    labels: np.ndarray,
    geometry: Geometry,
    tissue: str,
    diameters_mm: Sequence[float],
    factor: float,
    seed: int,
    existing: Sequence[Lesion] = (),
) -> list[Lesion]:
    """Lesions of `diameters_mm` (largest placed first) in `tissue` ('wm' or 'gm'), seeded, apart from each
    other and from the `existing` ones."""
    rng = np.random.default_rng(seed)
    inside = labels == TISSUE_CLASSES[tissue]
    if not inside.any():
        raise ValueError(f"no {tissue} voxels to put a lesion in")
    depth = distance_transform_edt(inside, sampling=geometry.spacing_zyx)
    world = world_coordinates(geometry)
    placed: list[Lesion] = []
    for diameter in sorted(diameters_mm, reverse=True):
        free = inside.copy()
        for other in [*existing, *placed]:
            free &= centre_distance(geometry, other, world) > (diameter + other.diameter_mm) / 2 + GAP_MM
        if not free.any():
            free = inside
        deep = free & (depth >= diameter / 2)
        if not deep.any():
            deep = free & (depth >= np.percentile(depth[free], 95))
        candidates = np.argwhere(deep)
        z, y, x = candidates[rng.integers(len(candidates))]
        placed.append(Lesion(tuple(float(v) for v in world[z, y, x]), float(diameter), float(factor)))
    return placed
