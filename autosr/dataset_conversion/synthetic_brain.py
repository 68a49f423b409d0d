"""A synthetic paired brain dataset (low-field-like input -> high-field-like target) from the MNI152 template.

The MNI152 2009a symmetric T1 template and its grey/white-matter probability maps ship inside the nilearn
wheel (`nilearn/datasets/data`), so nothing is downloaded; the files are read with SimpleITK and no nilearn
module is imported. Each subject is a random smooth deformation (small affine + smooth displacement field)
of the template's tissue maps. From the deformed maps:

- the target is high-field-like: strong grey/white contrast, only anti-aliasing blur, little noise, on the
  target grid (the reference grid, `target_spacing_mm`);
- the input is low-field-like: weaker grey/white contrast, a blur matching its voxel size, a smooth
  multiplicative bias field, Rician noise, sampled on a coarser grid covering the same physical extent;
- the brain mask is the deformed grey + white matter + CSF map above 0.5, on the target grid;
- optionally (`tissue_labels=True`) the true tissue label map, on the target grid: inside the brain mask
  the most probable of the deformed maps, 1 CSF, 2 grey matter, 3 white matter; 0 outside
  (`labelsTr/<case>.nii.gz`, `labelsTs/`), the ground truth for tissue segmenters.

Everything is drawn from `numpy.random.default_rng(seed, case index)`, so a seed gives the same dataset
whatever the number of processes.

`misalign=(MM, DEG)` displaces each input by a known rigid transform (a translation of MM mm in a random
direction and a rotation of DEG degrees about a random axis through the target's centre), written into the
input's header (no resampling); the transforms are listed in `misalignment.json` beside dataset.json. The
images are the same as without it, so registration (`autosr register`) can be checked against the truth.
"""

from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from autosr.dataset_conversion.acquisition import acquire
from autosr.dataset_conversion.raw_writer import new_dataset_folder, write_dataset_json
from autosr.errors import AutosrError
from autosr.io.atomic import atomic_write_json
from autosr.io.geometry import Geometry, grid_covering
from autosr.io.image_io import geometry_of, write_image
from autosr.io.resampling import resample_to_geometry
from autosr.registration.transforms import displace_geometry, random_rigid_displacement

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# T1-weighted tissue intensities (csf, gm, wm). High field: GM/WM ratio 0.55; low field: 0.71, CSF closer
# to GM. Round numbers in the range of the contrast ratios reported for 3T vs 7T MPRAGE.
TARGET_INTENSITY = (150.0, 550.0, 1000.0)
INPUT_INTENSITY = (300.0, 600.0, 850.0)
TARGET_NOISE = 5.0  # Gaussian, inside the brain only
INPUT_RICIAN_SIGMA = 25.0  # about 3% of white matter
CONTRASTS = ("low-field", "same")
BIAS_AMPLITUDE = 0.15  # the multiplicative bias field stays within about +-15%
DISPLACEMENT_MM = 3.0  # standard deviation of the smooth displacement's control points
MARGIN_MM = 8.0  # space kept around the brain when cropping the template


@dataclass(frozen=True)
class TissueTemplate:
    """Template tissue probability maps (csf, gm, wm) on the target grid, float32 (Z, Y, X) in [0, 1]."""

    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    geometry: Geometry


def template_folder() -> Path:
    """nilearn's bundled data folder, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise AutosrError(
            "the synthetic brain generator needs the MNI152 template shipped with nilearn; "
            "install it with `pip install autosr[demo]` (or `pip install nilearn`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    missing = [name for name in TEMPLATE_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise AutosrError(
            f"{folder}: nilearn is installed but lacks {', '.join(missing)}; "
            "reinstall it with `pip install --force-reinstall autosr[demo]`"
        )
    return folder


def load_template(target_spacing_mm: float) -> TissueTemplate:
    """Read the 1 mm template, crop it to the brain plus a margin, and bring it onto the target grid."""
    folder = template_folder()
    images = {key: sitk.ReadImage(str(folder / name)) for key, name in TEMPLATE_FILES.items()}
    geometry = geometry_of(images["t1"])
    arrays = {key: sitk.GetArrayFromImage(image).astype(np.float32) / 255.0 for key, image in images.items()}
    head = ndimage.binary_fill_holes(arrays["t1"] > 10 / 255.0)
    arrays["csf"] = np.clip(head.astype(np.float32) - arrays["gm"] - arrays["wm"], 0.0, 1.0)
    # crop to the brain's bounding box plus a margin
    margin = int(np.ceil(MARGIN_MM / min(geometry.spacing_zyx)))
    nonzero = np.nonzero(head)
    low = [max(int(i.min()) - margin, 0) for i in nonzero]
    high = [min(int(i.max()) + 1 + margin, n) for i, n in zip(nonzero, geometry.size_zyx)]
    crop = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    origin = geometry.index_to_world(np.array(low[::-1], dtype=np.float64))[0]
    cropped = Geometry(
        geometry.spacing_zyx, tuple(origin), geometry.direction, tuple(h - lo for lo, h in zip(low, high))
    )
    target_geometry = grid_covering(cropped, (target_spacing_mm,) * 3)
    maps = {}
    for key in ("csf", "gm", "wm"):
        array = arrays[key][crop]
        sigma = [max(0.0, 0.4 * (target_spacing_mm / s - 1.0)) for s in cropped.spacing_zyx]  # anti-aliasing
        if any(s > 0 for s in sigma):
            array = ndimage.gaussian_filter(array, sigma)
        maps[key] = np.clip(resample_to_geometry(array, cropped, target_geometry, order=1), 0.0, 1.0)
    return TissueTemplate(maps["csf"], maps["gm"], maps["wm"], target_geometry)


def smooth_random_field(shape_zyx: tuple[int, ...], rng: np.random.Generator, control_points: int = 5) -> np.ndarray:
    """A smooth zero-mean unit-scale random field: random control points upsampled with cubic splines."""
    control = rng.normal(size=(control_points,) * 3)
    factors = [n / control_points for n in shape_zyx]
    return ndimage.zoom(control, factors, order=3, mode="nearest", grid_mode=False).astype(np.float32)


def random_deformation(template: TissueTemplate, rng: np.random.Generator) -> np.ndarray:
    """Source coordinates (3, Z, Y, X) in voxels: a small random affine plus a smooth displacement."""
    shape = template.geometry.size_zyx
    spacing = np.asarray(template.geometry.spacing_zyx)
    centre = (np.asarray(shape) - 1) / 2.0
    angles = np.deg2rad(rng.uniform(-5, 5, size=3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        r = np.eye(3)
        r[a, a] = r[b, b] = np.cos(angle)
        r[a, b], r[b, a] = -np.sin(angle), np.sin(angle)
        rotation = rotation @ r
    matrix = rotation @ np.diag(rng.uniform(0.93, 1.07, size=3))
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1) - centre[:, None]
    coordinates = (matrix @ grid + centre[:, None]).reshape(3, *shape).astype(np.float32)
    for axis in range(3):
        coordinates[axis] += smooth_random_field(shape, rng) * (DISPLACEMENT_MM / spacing[axis])
    return coordinates


def input_spacing_zyx(input_spacing_mm: float, slice_thickness_mm: float | None, slice_axis: int) -> list[float]:
    """The input grid's spacing: `input_spacing_mm` everywhere, or thick slices along `slice_axis`."""
    spacing = [float(input_spacing_mm)] * 3
    if slice_thickness_mm is not None:
        spacing[slice_axis] = float(slice_thickness_mm)
    return spacing


@dataclass
class SubjectParts:
    """One synthetic subject before the input's noise: the noise-free input on its grid, the noise-free and the
    written (noisy) target and the brain mask on the template grid. Benchmarks use the noise-free images to
    separate what a model's error owes to the subject from what it owes to the noise draw."""

    clean_input: np.ndarray
    input_geometry: Geometry
    clean_target: np.ndarray
    target: np.ndarray
    brain: np.ndarray


def subject_parts(
    template: TissueTemplate,
    input_spacing_mm: float,
    rng: np.random.Generator,
    slice_thickness_mm: float | None = None,
    slice_axis: int = 0,
    contrast: str = "low-field",
) -> SubjectParts:
    """One synthetic subject up to the input's noise (`rician` adds it with the same `rng`, as the dataset does).

    With `slice_thickness_mm` the input is a thick-slice acquisition: slices along array axis `slice_axis`
    (0 = z) average the signal over their thickness (`autosr.dataset_conversion.acquisition`).
    `contrast`: "low-field" (weaker grey/white contrast and a bias field: contrast synthesis as well) or
    "same" (the target's contrast, no bias field: resolution enhancement alone)."""
    coordinates = random_deformation(template, rng)
    csf, gm, wm = (
        ndimage.map_coordinates(m, coordinates, order=1, mode="constant", cval=0.0)
        for m in (template.csf, template.gm, template.wm)
    )
    brain = ndimage.binary_fill_holes((csf + gm + wm) > 0.5)
    clean_target = TARGET_INTENSITY[0] * csf + TARGET_INTENSITY[1] * gm + TARGET_INTENSITY[2] * wm
    target = clean_target + brain * rng.normal(0.0, TARGET_NOISE, clean_target.shape).astype(np.float32)
    target = np.clip(target, 0.0, None)
    if contrast == "same":  # resolution enhancement alone: the target's tissue contrast, no bias field
        fine_input = TARGET_INTENSITY[0] * csf + TARGET_INTENSITY[1] * gm + TARGET_INTENSITY[2] * wm
    else:
        fine_input = INPUT_INTENSITY[0] * csf + INPUT_INTENSITY[1] * gm + INPUT_INTENSITY[2] * wm
        fine_input *= 1.0 + BIAS_AMPLITUDE * np.tanh(smooth_random_field(target.shape, rng, control_points=3))
    fine_input *= rng.uniform(0.9, 1.1)  # scanner gain differs per session
    thick_axes = [slice_axis] if slice_thickness_mm is not None else []
    spacing = input_spacing_zyx(input_spacing_mm, slice_thickness_mm, slice_axis)
    coarse, input_geometry = acquire(fine_input, template.geometry, spacing, thick_axes)
    return SubjectParts(coarse, input_geometry, clean_target.astype(np.float32), target.astype(np.float32), brain)


def rician(image: np.ndarray, rng: np.random.Generator, sigma: float = INPUT_RICIAN_SIGMA) -> np.ndarray:
    """The magnitude of `image` plus complex Gaussian noise of `sigma` per channel (Rician), float32."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imaginary = rng.normal(0.0, sigma, image.shape)
    return np.sqrt(real**2 + imaginary**2).astype(np.float32)


_WORKER_TEMPLATE: TissueTemplate | None = None


def _set_worker_template(template: TissueTemplate) -> None:
    global _WORKER_TEMPLATE
    _WORKER_TEMPLATE = template


def misalign_input(
    input_geometry: Geometry, target_geometry: Geometry, translation_mm: float, rotation_deg: float, rng
) -> tuple[Geometry, dict]:
    """Move the input's header by a random rigid transform about the target's centre; returns the new
    geometry and the transform (`matrix`, `offset_mm`: target point -> input point, what registration finds)."""
    centre = target_geometry.index_to_world((np.asarray(target_geometry.size_zyx[::-1], dtype=np.float64) - 1) / 2)[0]
    linear_map, parameters = random_rigid_displacement(rng, translation_mm, rotation_deg, centre)
    return displace_geometry(input_geometry, linear_map), parameters


def _write_subject(
    job: tuple[Path, str, str, int, int, float, float | None, int, str, tuple[float, float] | None],
) -> tuple[str, dict | None]:
    folder, split, case_id, seed, case_index, input_spacing_mm, slice_thickness_mm, slice_axis, contrast, misalign = job
    rng = np.random.default_rng([seed, case_index])
    parts = subject_parts(_WORKER_TEMPLATE, input_spacing_mm, rng, slice_thickness_mm, slice_axis, contrast)
    inp, input_geometry, target, mask = rician(parts.clean_input, rng), parts.input_geometry, parts.target, parts.brain
    target_geometry = _WORKER_TEMPLATE.geometry
    displacement = None
    if misalign is not None:  # its own random stream: the images stay those of the aligned dataset
        input_geometry, displacement = misalign_input(
            input_geometry, target_geometry, *misalign, np.random.default_rng([seed, case_index, 1])
        )
    write_image(inp, input_geometry, folder / f"images{split}" / f"{case_id}_0000.nii.gz")
    write_image(target, target_geometry, folder / f"targets{split}" / f"{case_id}.nii.gz")
    write_image(mask, target_geometry, folder / f"masks{split}" / f"{case_id}.nii.gz", dtype=np.uint8)
    return case_id, displacement


TISSUE_LABELS = {1: "csf", 2: "gm", 3: "wm"}


def true_tissue_labels(template: TissueTemplate, seed: int, case_index: int) -> np.ndarray:
    """The true tissue label map (uint8, target grid, `TISSUE_LABELS`) of case `case_index` of a seed.

    Repeats `subject_parts`'s deformation, which is the first draw from the case's generator, so the
    labels belong to exactly the written target (their union equals its brain mask).
    """
    coordinates = random_deformation(template, np.random.default_rng([seed, case_index]))
    maps = np.stack(
        [
            ndimage.map_coordinates(m, coordinates, order=1, mode="constant", cval=0.0)
            for m in (template.csf, template.gm, template.wm)
        ]
    )
    brain = ndimage.binary_fill_holes(maps.sum(axis=0) > 0.5)
    return ((np.argmax(maps, axis=0) + 1) * brain).astype(np.uint8)


def _write_tissue_labels(job: tuple) -> str:
    folder, split, case_id, seed, case_index = job[:5]
    labels = true_tissue_labels(_WORKER_TEMPLATE, seed, case_index)
    write_image(labels, _WORKER_TEMPLATE.geometry, folder / f"labels{split}" / f"{case_id}.nii.gz", dtype=np.uint8)
    return case_id


@dataclass(frozen=True)
class SyntheticBrainSettings:
    """A synthetic brain dataset: how many cases, the target's voxel size, and how the input is acquired
    (voxel size, thick slices, contrast, misalignment). A seed always gives the same dataset."""

    num_train: int = 20
    num_test: int = 4
    target_spacing_mm: float = 2.0
    # input voxel size (mm); None: 1.5 x the target's (a 2 mm target gets a 3 mm input)
    input_spacing_mm: float | None = None
    # the input as a thick-slice acquisition: slices this thick (mm) along array axis `slice_axis` (0 = z,
    # axial; 1 = y, coronal; 2 = x, sagittal), each averaging the signal over its thickness; the input
    # spacing is then the in-plane voxel size
    slice_thickness_mm: float | None = None
    slice_axis: int = 0
    # "low-field" (a low-field-like contrast with a bias field) or "same" (the target's: resolution alone)
    contrast: str = "low-field"
    # also write the true tissue label maps (1 csf, 2 gm, 3 wm) to labelsTr/ and labelsTs/
    tissue_labels: bool = False
    # (mm, degrees): every input displaced rigidly by that much (see the module docstring); None: aligned
    misalign: tuple[float, float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target_spacing_mm <= 0 or (self.input_spacing_mm is not None and self.input_spacing_mm <= 0):
            raise AutosrError("voxel sizes must be positive (--target-spacing, --input-spacing in mm)")
        if self.slice_thickness_mm is not None and self.slice_thickness_mm <= 0:
            raise AutosrError(f"--slice-thickness must be positive (mm), got {self.slice_thickness_mm}")
        if self.contrast not in CONTRASTS:
            raise AutosrError(f"--contrast must be one of {', '.join(CONTRASTS)}, got '{self.contrast}'")
        if self.slice_axis not in (0, 1, 2):
            raise AutosrError(f"--slice-axis must be 0 (z), 1 (y) or 2 (x), got {self.slice_axis}")
        if self.num_train < 1 or self.num_test < 0:
            raise AutosrError("--num-train must be at least 1 and --num-test at least 0")
        if self.misalign is not None:
            if len(self.misalign) != 2 or min(self.misalign) < 0:
                raise AutosrError(
                    "--misalign takes two non-negative numbers: the translation in mm and the rotation in degrees"
                )
            object.__setattr__(self, "misalign", tuple(float(v) for v in self.misalign))

    @property
    def input_spacing(self) -> float:
        """The input voxel size (mm), its default resolved."""
        return 1.5 * self.target_spacing_mm if self.input_spacing_mm is None else float(self.input_spacing_mm)


def make_synthetic_brain_dataset(
    raw_root: str | os.PathLike,
    dataset_id: int,
    name: str = "SyntheticBrain",
    settings: SyntheticBrainSettings | None = None,
    num_processes: int = max(1, min(4, os.cpu_count() or 1)),
    overwrite: bool = False,
) -> Path:
    """Write `DatasetXXX_Name` under `raw_root` as `settings` say and return its folder (`num_processes`
    subjects are drawn at once; `overwrite` replaces an existing dataset of that id)."""
    settings = settings or SyntheticBrainSettings()
    num_train, num_test, seed = settings.num_train, settings.num_test, settings.seed
    target_spacing_mm, input_spacing_mm = settings.target_spacing_mm, settings.input_spacing
    slice_thickness_mm, slice_axis = settings.slice_thickness_mm, settings.slice_axis
    contrast, tissue_labels, misalign = settings.contrast, settings.tissue_labels, settings.misalign
    template = load_template(float(target_spacing_mm))
    folder = new_dataset_folder(raw_root, dataset_id, name, overwrite=overwrite)
    jobs = [
        (
            folder,
            "Tr" if index < num_train else "Ts",
            f"brain_{index:03d}",
            seed,
            index,
            input_spacing_mm,
            slice_thickness_mm,
            slice_axis,
            contrast,
            misalign,
        )  # fmt: skip
        for index in range(num_train + num_test)
    ]
    writers = [_write_subject, _write_tissue_labels] if tissue_labels else [_write_subject]
    if num_processes <= 1:
        _set_worker_template(template)
        written = [[writer(job) for job in jobs] for writer in writers]
    else:
        with ProcessPoolExecutor(num_processes, initializer=_set_worker_template, initargs=(template,)) as pool:
            written = [list(pool.map(writer, jobs)) for writer in writers]
    if misalign is not None:  # _write_subject's results: (case, displacement)
        atomic_write_json(
            {
                "maps": "target point (world mm) -> input point: what registration should find",
                "cases": dict(written[0]),
            },
            folder / "misalignment.json",
        )
    write_dataset_json(
        folder,
        name=name,
        channel_names={"0": "T1w_lowfield"},
        target_name="T1w_highfield",
        target_modality="MR",
        file_ending=".nii.gz",
        num_training=num_train,
        num_test=num_test,
        description=(
            f"synthetic paired brains: random smooth deformations of the MNI152 2009a template; input "
            f"{'with the target contrast' if contrast == 'same' else 'low-field-like'} at {'x'.join(f'{v:g}' for v in input_spacing_zyx(input_spacing_mm, slice_thickness_mm, slice_axis))} "
            f"mm (z, y, x{', thick slices averaged over their thickness' if slice_thickness_mm else ''}), target "
            f"high-field-like at {target_spacing_mm:g} mm; seed {seed}"
            + (
                f"; inputs displaced by {misalign[0]:g} mm and {misalign[1]:g} deg (misalignment.json)"
                if misalign is not None
                else ""
            )
        ),
        reference="MNI ICBM152 2009a nonlinear symmetric template (Fonov et al., NeuroImage 2011), as shipped with nilearn",
        licence="template: see the MNI ICBM152 licence (free use with attribution); generated images: same terms",
    )
    return folder
