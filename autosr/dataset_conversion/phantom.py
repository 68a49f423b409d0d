"""A tiny procedural paired phantom dataset, made in seconds without any download.

Each case is a random ellipsoidal "head": an outer shell (grey-matter-like), an inner core
(white-matter-like) with a few embedded blobs, and a fluid rim. The target is sharp and high-contrast on a
fine grid; the input is lower-contrast, blurred, bias-modulated, noisy and sampled on a coarser grid over
the same physical extent, like a low-field scan of the same subject. Tests and quick smoke runs use it;
the MNI-based brain generator (`synthetic_brain`) is the realistic one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from autosr.dataset_conversion.acquisition import acquire
from autosr.errors import AutosrError
from autosr.io.atomic import atomic_write_json
from autosr.io.geometry import Geometry, grid_covering
from autosr.io.image_io import write_image
from autosr.io.resampling import resample_to_geometry

# tissue intensities: (fluid, shell, core, blob); target has the stronger contrast
TARGET_MR = (150.0, 600.0, 1000.0, 350.0)
INPUT_MR = (250.0, 550.0, 800.0, 450.0)
TARGET_CT_HU = (40.0, 40.0, 900.0, 300.0)  # fluid, soft tissue, bone-like core, dense blobs (HU)
CT_BACKGROUND_HU = -1000.0


def _tissue_maps(shape_zyx: tuple[int, int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape_zyx], indexing="ij")
    centre = rng.uniform(-0.08, 0.08, size=3)
    radii = rng.uniform(0.6, 0.8, size=3)
    r_outer = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    head = r_outer <= 1.0
    shell_ratio = rng.uniform(0.55, 0.7)
    core = r_outer <= shell_ratio**2
    fluid = head & (r_outer > 0.85)
    blobs = np.zeros(shape_zyx, dtype=bool)
    for _ in range(3):
        bc = centre + rng.uniform(-0.3, 0.3, size=3) * radii
        br = rng.uniform(0.08, 0.16)
        blobs |= sum((g - c) ** 2 for g, c in zip(grids, bc)) <= br**2
    blobs &= core
    return {"head": head, "fluid": fluid, "shell": head & ~core & ~fluid, "core": core & ~blobs, "blob": blobs}


def _paint(maps: dict[str, np.ndarray], values: tuple[float, float, float, float], background: float) -> np.ndarray:
    image = np.full(maps["head"].shape, background, dtype=np.float32)
    for key, value in zip(("fluid", "shell", "core", "blob"), values):
        image[maps[key]] = value
    return image


@dataclass(frozen=True)
class PhantomSettings:
    """A phantom dataset: how many cases, and how each pair is acquired (grid, voxel sizes, modality,
    orientation, thick slices, files). A seed always gives the same dataset."""

    num_train: int = 6
    num_test: int = 2
    # the target grid in voxels, and the voxel sizes (mm) of target and input over the same physical extent
    shape_zyx: tuple[int, int, int] = (32, 32, 32)
    target_spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    input_spacing_zyx: tuple[float, float, float] = (1.5, 1.5, 1.5)
    # "MR" (low-field to high-field contrast) or "CT" (MR-like input, a CT target in HU)
    modality: str = "MR"
    with_masks: bool = True
    file_ending: str = ".nii.gz"
    seed: int = 0
    # SimpleITK's 9 direction numbers and the origin (x, y, z) in mm, shared by input and target
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    origin_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # input axes acquired as thick slices that average the signal over their thickness (acquisition.py),
    # e.g. input_spacing_zyx=(4, 1, 1) with thick_axes=(0,)
    thick_axes: tuple[int, ...] = ()
    # the input's scanner: peak slope of its linear bias field per axis, and the Rician noise level; another
    # scanner's scans (a shifted distribution, benchmarks/bench_distillation.py) differ in these
    bias_amplitude: float = 0.12
    noise_sigma: float = 20.0

    def __post_init__(self) -> None:
        if self.num_train < 1 or self.num_test < 0:
            raise AutosrError("--num-train must be at least 1 and --num-test at least 0")
        if self.modality not in ("MR", "CT"):
            raise AutosrError(f"--modality must be MR or CT, got '{self.modality}'")
        if min(self.shape_zyx) < 4:
            raise AutosrError(f"--size must be at least 4 voxels, got {self.shape_zyx}")
        if min(self.target_spacing_zyx) <= 0 or min(self.input_spacing_zyx) <= 0:
            raise AutosrError("voxel sizes must be positive (mm)")


def make_phantom_case(
    settings: PhantomSettings | None = None, case_seed: int = 0
) -> tuple[np.ndarray, Geometry, np.ndarray, Geometry, np.ndarray]:
    """One phantom pair drawn from `case_seed` (the dataset draws case i from `settings.seed` and i), acquired as `settings` say: (input (Z,Y,X), input geometry,
    target, target geometry, mask uint8 on the target grid)."""
    settings = settings or PhantomSettings()
    shape_zyx, modality = settings.shape_zyx, settings.modality
    target_spacing_zyx, input_spacing_zyx = settings.target_spacing_zyx, settings.input_spacing_zyx
    origin_xyz, direction, thick_axes = settings.origin_xyz, settings.direction, settings.thick_axes
    rng = np.random.default_rng(case_seed)
    maps = _tissue_maps(shape_zyx, rng)
    target_geometry = Geometry(target_spacing_zyx, origin_xyz, direction, shape_zyx)
    if modality == "CT":
        target = _paint(maps, TARGET_CT_HU, CT_BACKGROUND_HU)
    else:
        target = _paint(maps, TARGET_MR, 0.0)
        target = ndimage.gaussian_filter(target, 0.5) + rng.normal(0, 10.0, shape_zyx).astype(np.float32)
        target[~maps["head"]] = 0.0
    fine_input = _paint(maps, INPUT_MR, 0.0)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape_zyx], indexing="ij")
    bias = 1.0 + sum(rng.uniform(-settings.bias_amplitude, settings.bias_amplitude) * g for g in grids)
    fine_input = ndimage.gaussian_filter(fine_input * bias, 1.2)
    if thick_axes:
        coarse, input_geometry = acquire(fine_input, target_geometry, input_spacing_zyx, thick_axes)
    else:
        input_geometry = grid_covering(target_geometry, input_spacing_zyx)
        coarse = resample_to_geometry(fine_input, target_geometry, input_geometry, order=1)
    noise_sigma = settings.noise_sigma
    coarse = np.sqrt(
        (coarse + rng.normal(0, noise_sigma, coarse.shape)) ** 2 + rng.normal(0, noise_sigma, coarse.shape) ** 2
    )
    mask = maps["head"].astype(np.uint8)
    return coarse.astype(np.float32), input_geometry, target.astype(np.float32), target_geometry, mask


def make_phantom_dataset(
    raw_root: str | os.PathLike, dataset_id: int = 999, name: str = "Phantom", settings: PhantomSettings | None = None
) -> Path:
    """Write a phantom paired dataset `DatasetXXX_Name` under `raw_root` and return its folder."""
    settings = settings or PhantomSettings()
    num_train, num_test, file_ending = settings.num_train, settings.num_test, settings.file_ending
    modality = settings.modality
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    for split, count, offset in (("Tr", num_train, 0), ("Ts", num_test, num_train)):
        for i in range(count):
            case_id = f"phantom_{offset + i:03d}"
            inp, inp_geo, tgt, tgt_geo, mask = make_phantom_case(settings, settings.seed * 100003 + offset + i)
            write_image(inp, inp_geo, folder / f"images{split}" / f"{case_id}_0000{file_ending}")
            write_image(tgt, tgt_geo, folder / f"targets{split}" / f"{case_id}{file_ending}")
            if settings.with_masks:
                write_image(mask, tgt_geo, folder / f"masks{split}" / f"{case_id}{file_ending}", dtype=np.uint8)
    atomic_write_json(
        {
            "name": name,
            "description": "procedural paired phantom (low-contrast coarse input -> sharp high-contrast target)",
            "channel_names": {"0": "lowfield" if modality == "MR" else "MR"},
            "target_name": "highfield" if modality == "MR" else "CT",
            "target_modality": modality,
            "file_ending": file_ending,
            "numTraining": num_train,
            "numTest": num_test,
            "licence": "generated by autosr, public domain",
        },
        folder / "dataset.json",
    )
    return folder
