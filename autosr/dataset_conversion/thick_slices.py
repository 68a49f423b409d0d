"""Real high-resolution scans -> a thick-slice super-resolution dataset, or self-supervised pairs.

Paired (a reference exists): each source scan, or each of its `slabs` (pieces cut along the first axis
that is not the thick axis, so one subject gives several cases), is the target on its own grid, untouched.
The input is what a 2D multi-slice acquisition of that anatomy records: along `axis`, every `factor`
target slices become one thick slice, whose value is the target weighted by the slice profile (a box of
the slice thickness, or a Gaussian of a given FWHM) integrated over each target voxel; in-plane the input
keeps the target's resolution. A gap between slices makes the slice `gap` mm thinner than the slice
spacing (box) or narrows the Gaussian's FWHM by as much, so anatomy in the gaps is seen less or not at all.
The input grid is exact: its thick voxels tile the target's field of view edge to edge, same direction.

Self-supervised (`no_reference`): the sources are thick-slice scans themselves, sharp in-plane. For each
in-plane axis, the scan with that axis and the thick axis exchanged (the anatomy turned: a fine axis now
lies where the thick one was), resampled to the in-plane spacing along the exchanged (formerly thick) axis
by cubic B-spline, is a target; its input is that target acquired with the same slice profile along the
thick axis. The network so learns to undo the slice profile from the scan's own in-plane detail, with no
reference scan: the same plan/train/predict commands then apply it to the thick scans.

The slice profile goes into dataset.json (`slice_profile`) so plans and reports can say what was
simulated.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from autosr.dataset_conversion.raw_writer import check_file_ending, new_dataset_folder, write_dataset_json
from autosr.errors import AutosrError
from autosr.io.geometry import Geometry
from autosr.io.image_io import SUPPORTED_ENDINGS, file_ending_of, read_image, write_image

PROFILES = ("box", "gaussian")
# A thick slab is resolved only when the through-plane axis keeps this many thick slices per case.
MIN_THICK_SLICES = 3
# Slabs thinner than this many voxels leave too little in-plane context for a case.
MIN_SLAB_VOXELS = 8
# --no-reference: the source's thick/in-plane spacing ratio may differ from --factor by this fraction.
FACTOR_TOLERANCE = 0.1


@dataclass(frozen=True)
class ThickSliceSettings:
    """How the thick slices are simulated and how the sources are cut into cases."""

    factor: int = 4  # target slices per thick slice
    axis: int = 0  # array axis (0 z, 1 y, 2 x) of the thick slices
    profile: str = "box"
    fwhm_mm: float | None = None  # Gaussian profile width; None = slice spacing minus gap
    gap_mm: float = 0.0
    slabs: int = 1  # cases per source scan
    num_test: int = 0  # the last cases (sorted) go to imagesTs/targetsTs
    no_reference: bool = False
    target_modality: str = "MR"
    file_ending: str = ".nii.gz"

    def check(self) -> None:
        if self.factor < 2:
            raise AutosrError(f"--factor {self.factor}: must be at least 2 (target slices per thick slice)")
        if self.axis not in (0, 1, 2):
            raise AutosrError(f"--axis {self.axis}: must be 0 (z), 1 (y) or 2 (x)")
        if self.profile not in PROFILES:
            raise AutosrError(f"--profile {self.profile}: unknown; choose one of {', '.join(PROFILES)}")
        if self.gap_mm < 0:
            raise AutosrError(f"--gap {self.gap_mm:g}: must be 0 or more mm")
        if self.fwhm_mm is not None and (self.profile != "gaussian" or self.fwhm_mm <= 0):
            raise AutosrError(f"--fwhm {self.fwhm_mm:g}: needs --profile gaussian and a positive width in mm")
        if self.slabs < 1 or self.num_test < 0:
            raise AutosrError("--slabs must be at least 1 and --num-test 0 or more")
        check_file_ending(self.file_ending)

    def width_mm(self, slice_spacing_mm: float) -> float:
        """Box thickness or Gaussian FWHM (mm) for slices `slice_spacing_mm` apart."""
        if self.fwhm_mm is not None:
            return self.fwhm_mm
        return slice_spacing_mm - self.gap_mm

    def describe(self, fine_mm: float) -> dict:
        """The `slice_profile` entry of dataset.json."""
        spacing = self.factor * fine_mm
        return {
            "profile": self.profile,
            "axis": self.axis,
            "factor": self.factor,
            "slice_spacing_mm": spacing,
            "width_mm": self.width_mm(spacing),
            "gap_mm": self.gap_mm,
            "self_supervised": self.no_reference,
        }


def profile_weights(settings: ThickSliceSettings, fine_mm: float, num_fine: int) -> np.ndarray:
    """(num_thick, num_fine) weights: row t is thick slice t's profile integrated over each fine voxel.

    Fine voxel j spans [j, j + 1) fine units, thick slice t is centred at (t + 0.5) * factor. Rows sum to 1
    (profile mass outside the scan is dropped, as a scanner records nothing there)."""
    factor = settings.factor
    num_thick = num_fine // factor
    width = settings.width_mm(factor * fine_mm) / fine_mm  # in fine voxels
    edges = np.arange(num_fine + 1, dtype=np.float64)
    centres = (np.arange(num_thick, dtype=np.float64) + 0.5) * factor
    rel = edges[None, :] - centres[:, None]
    if settings.profile == "box":
        cdf = np.clip(rel / width + 0.5, 0.0, 1.0)
    else:
        sigma = width / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        cdf = 0.5 * (1.0 + special.erf(rel / (sigma * math.sqrt(2.0))))
    weights = np.diff(cdf, axis=1)
    return weights / weights.sum(axis=1, keepdims=True)


def thick_geometry(geometry: Geometry, axis: int, factor: int) -> Geometry:
    """The grid whose voxels are `factor` of `geometry`'s along `axis`, tiling the same field of view."""
    spacing = list(geometry.spacing_zyx)
    size = list(geometry.size_zyx)
    first_centre_zyx = [0.0, 0.0, 0.0]
    first_centre_zyx[axis] = (factor - 1) / 2.0  # the first thick centre, in fine voxels
    spacing[axis] *= factor
    size[axis] //= factor
    origin = geometry.index_to_world(first_centre_zyx[::-1])[0]
    return Geometry(tuple(spacing), tuple(origin), geometry.direction, tuple(size))


def acquire_thick(target: np.ndarray, geometry: Geometry, settings: ThickSliceSettings) -> tuple[np.ndarray, Geometry]:
    """The thick-slice input of `target` (whose size along the axis is a multiple of the factor)."""
    axis = settings.axis
    weights = profile_weights(settings, geometry.spacing_zyx[axis], target.shape[axis])
    moved = np.moveaxis(np.asarray(target, dtype=np.float64), axis, 0)
    thick = np.tensordot(weights, moved, axes=(1, 0))
    return np.moveaxis(thick, 0, axis).astype(np.float32), thick_geometry(geometry, axis, settings.factor)


def crop(array: np.ndarray, geometry: Geometry, start_zyx: list[int], stop_zyx: list[int]):
    """A box of the array with its exact grid (the origin moves to the box's first voxel centre)."""
    box = tuple(slice(a, b) for a, b in zip(start_zyx, stop_zyx))
    origin = geometry.index_to_world(start_zyx[::-1])[0]
    size = [b - a for a, b in zip(start_zyx, stop_zyx)]
    return array[box], Geometry(geometry.spacing_zyx, tuple(origin), geometry.direction, tuple(size))


def exchanged_target(scan: np.ndarray, geometry: Geometry, thick_axis: int, fine_axis: int):
    """Self-supervised target: the scan with `fine_axis` and `thick_axis` exchanged, the exchanged thick
    axis resampled (cubic B-spline, voxel edges kept) to the fine spacing. Same direction and field-of-view
    corner as the scan, so the pair lies where the scan lies."""
    fine_mm = geometry.spacing_zyx[fine_axis]
    turned = np.swapaxes(np.asarray(scan, dtype=np.float32), thick_axis, fine_axis)
    ratio = geometry.spacing_zyx[thick_axis] / fine_mm
    zoom = [1.0, 1.0, 1.0]
    zoom[fine_axis] = ratio  # the formerly thick axis now sits at fine_axis
    target = ndimage.zoom(turned, zoom, order=3, mode="nearest", grid_mode=True)
    corner = geometry.index_to_world([-0.5, -0.5, -0.5])[0]  # the field of view's corner (voxel edges)
    spacing = [fine_mm if a in (thick_axis, fine_axis) else geometry.spacing_zyx[a] for a in range(3)]
    from_corner = Geometry(tuple(spacing), tuple(corner), geometry.direction, target.shape)
    origin = from_corner.index_to_world([0.5, 0.5, 0.5])[0]  # the first voxel centre, half a voxel inside
    return target, Geometry(tuple(spacing), tuple(origin), geometry.direction, target.shape)


def source_files(source: Path) -> list[Path]:
    if not source.is_dir():
        raise AutosrError(f"{source}: source folder not found (give a folder of high-resolution scans)")
    files = sorted(p for p in source.iterdir() if p.is_file() and file_ending_of(p) in SUPPORTED_ENDINGS)
    if not files:
        raise AutosrError(
            f"{source}: holds no image ({', '.join(SUPPORTED_ENDINGS)}); give a folder of high-resolution scans"
        )
    return files


def case_stem(path: Path) -> str:
    stem = path.name[: -len(file_ending_of(path))]
    return re.sub(r"[^A-Za-z0-9-]+", "-", stem).strip("-") or "scan"


def check_source(path: Path, array: np.ndarray, geometry: Geometry, settings: ThickSliceSettings) -> None:
    """One clear message per unusable source scan: the file, what is wrong, the fix."""
    axis, factor = settings.axis, settings.factor
    cut = slab_axis(axis)
    slice_mm = factor * geometry.spacing_zyx[axis]
    cut_voxels = array.shape[cut]
    if settings.no_reference:
        inplane = [geometry.spacing_zyx[a] for a in range(3) if a != axis]
        ratio = geometry.spacing_zyx[axis] / min(inplane)
        if abs(ratio - factor) > FACTOR_TOLERANCE * factor:
            raise AutosrError(
                f"{path}: spacing along axis {axis} is {ratio:.2f}x the in-plane spacing, not --factor {factor}; "
                "--no-reference needs thick-slice scans: give their axis and factor"
            )
        slice_mm = geometry.spacing_zyx[axis]
        cut_voxels = min(cut_voxels, array.shape[axis] * factor)  # the exchanged pairs are cut along this axis too
    elif array.shape[axis] < MIN_THICK_SLICES * factor:
        raise AutosrError(
            f"{path}: {array.shape[axis]} slices along axis {axis} give fewer than {MIN_THICK_SLICES} thick slices "
            f"at --factor {factor}; choose a smaller factor or another --axis"
        )
    if cut_voxels // settings.slabs < MIN_SLAB_VOXELS:
        raise AutosrError(
            f"{path}: {cut_voxels} voxels along axis {cut} cannot be cut into {settings.slabs} slabs of at least "
            f"{MIN_SLAB_VOXELS}; lower --slabs"
        )
    if settings.width_mm(slice_mm) <= 0:
        raise AutosrError(
            f"{path}: --gap {settings.gap_mm:g} mm leaves no slice (slices are {slice_mm:g} mm apart); "
            "choose a smaller gap"
        )


def slab_axis(thick_axis: int) -> int:
    """Slabs are cut along the first axis that is not the thick one."""
    return 0 if thick_axis != 0 else 1


def slab_pairs(array: np.ndarray, geometry: Geometry, settings: ThickSliceSettings, stem: str):
    """(case id, input, input geometry, target, target geometry) for each of `slabs` pieces of a fine
    volume: the thick axis cut to a whole number of thick slices, the slab axis cut evenly."""
    axis, cut = settings.axis, slab_axis(settings.axis)
    usable = array.shape[axis] - array.shape[axis] % settings.factor
    edges = np.linspace(0, array.shape[cut], settings.slabs + 1).round().astype(int)
    for index in range(settings.slabs):
        start, stop = [0, 0, 0], list(array.shape)
        stop[axis] = usable
        start[cut], stop[cut] = int(edges[index]), int(edges[index + 1])
        target, target_geometry = crop(array, geometry, start, stop)
        image, image_geometry = acquire_thick(target, target_geometry, settings)
        suffix = f"_slab{index}" if settings.slabs > 1 else ""
        yield f"{stem}{suffix}", image, image_geometry, target, target_geometry


def paired_cases(path: Path, settings: ThickSliceSettings):
    """(case id, input, input geometry, target, target geometry) for every slab of one source scan."""
    array, geometry = read_image(path)
    check_source(path, array, geometry, settings)
    yield from slab_pairs(array, geometry, settings, case_stem(path))


def self_supervised_cases(path: Path, settings: ThickSliceSettings):
    """(case id, input, input geometry, target, target geometry) for each in-plane axis of one thick scan
    (and each of its `slabs`, cut as in paired mode)."""
    array, geometry = read_image(path)
    check_source(path, array, geometry, settings)
    for fine_axis in (a for a in range(3) if a != settings.axis):
        target, target_geometry = exchanged_target(array, geometry, settings.axis, fine_axis)
        yield from slab_pairs(target, target_geometry, settings, f"{case_stem(path)}_axis{fine_axis}")


def convert_thick_slices(
    source: str | os.PathLike,
    raw_root: str | os.PathLike,
    dataset_id: int,
    name: str,
    settings: ThickSliceSettings,
    overwrite: bool = False,
) -> Path:
    """Write the dataset; returns its folder. Every source is checked before anything is written."""
    settings.check()
    files = source_files(Path(source))
    make_cases = self_supervised_cases if settings.no_reference else paired_cases
    cases = [
        case for path in files for case in make_cases(path, settings)
    ]  # each source checked: refused before writing
    if settings.num_test >= len(cases):
        raise AutosrError(
            f"--num-test {settings.num_test} leaves no training case ({len(cases)} cases from {len(files)} scans); "
            "lower --num-test or raise --slabs"
        )
    folder = new_dataset_folder(raw_root, dataset_id, name, overwrite=overwrite)
    ending = settings.file_ending
    num_train = len(cases) - settings.num_test
    for index, (case_id, image, image_geometry, target, target_geometry) in enumerate(cases):
        split = "Tr" if index < num_train else "Ts"
        write_image(image, image_geometry, folder / f"images{split}" / f"{case_id}_0000{ending}")
        write_image(target, target_geometry, folder / f"targets{split}" / f"{case_id}{ending}")
    fine_mm = cases[-1][4].spacing_zyx[settings.axis]
    kind = "self-supervised pairs from thick-slice scans" if settings.no_reference else "thick slices simulated"
    write_dataset_json(
        folder,
        name=name,
        channel_names={"0": settings.target_modality},
        target_name=settings.target_modality,
        target_modality=settings.target_modality,
        file_ending=ending,
        num_training=num_train,
        num_test=settings.num_test,
        description=f"{kind} from {len(files)} scans in {Path(source)}",
        slice_profile=settings.describe(float(fine_mm)),
        conversion=asdict(settings),
    )
    return folder
