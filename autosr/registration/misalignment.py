"""How far apart input and target of a pair are, measured by registering them (not guessed from headers).

`autosr verify` and the fingerprint register every pair rigidly (input channel 0 to the target, the same
code as `autosr register`, on a cheaper schedule) and report the mean displacement (mm) the registration
implies over the target's mask (or foreground): about zero for a co-registered pair, the size of the
misalignment otherwise. A case whose displacement exceeds `flag_threshold_mm` is named with the fix
(`autosr register`), and the dataset summary states the median.

The measurement has a floor: on perfectly aligned synthetic pairs with a +-15 % bias field it reads
0.2-0.5 mm (documentation/registration.md, "Misalignment measured"), which is why nothing below 1 mm is
flagged.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from autosr.errors import AutosrError
from autosr.imaging.bias_field import foreground_mask
from autosr.io.image_io import geometry_of, read_sitk
from autosr.registration.pairwise import RegistrationError, RegistrationSettings, register_images
from autosr.registration.transforms import displacement_mm, region_points, rotation_angle_deg

# Cheaper than `autosr register`'s default: no N4 (the measurement floor rises from ~0.2 to 0.2-0.5 mm on
# the synthetic brains, far below the flag threshold) and no level finer than 2 mm.
MEASUREMENT_SETTINGS = RegistrationSettings(transform="rigid", bias_correction=False, finest_level_mm=2.0)
# A case is flagged above max(FLAG_MIN_MM, FLAG_TARGET_VOXEL_FRACTION x its largest target voxel size):
# above the measurement floor (see the module docstring), and at least half a target voxel, the scale at
# which an L1-trained network starts to learn blur.
FLAG_MIN_MM = 1.0
FLAG_TARGET_VOXEL_FRACTION = 0.5


@dataclass(frozen=True)
class MisalignmentEstimate:
    """Displacement (mm) over the target's mask implied by rigidly registering a pair; `error` when the
    pair could not be registered (then the numbers are None)."""

    mean_mm: float | None
    max_mm: float | None
    rotation_deg: float | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MisalignmentEstimate:
        return cls(**d)


def flag_threshold_mm(target_spacing_zyx: tuple[float, ...]) -> float:
    """Misalignment above which a case is flagged, for a target with this voxel size."""
    return max(FLAG_MIN_MM, FLAG_TARGET_VOXEL_FRACTION * max(target_spacing_zyx))


def estimate_misalignment(
    target: sitk.Image,
    moving: sitk.Image,
    mask: sitk.Image | None = None,
    settings: RegistrationSettings = MEASUREMENT_SETTINGS,
) -> MisalignmentEstimate:
    """Register `moving` (input channel 0) to `target` and measure the implied displacement over the mask
    (or the target's foreground)."""
    try:
        result = register_images(target, moving, mask, settings)
    except RegistrationError as e:
        return MisalignmentEstimate(None, None, None, error=str(e))
    region = mask if mask is not None else foreground_mask(sitk.Cast(target, sitk.sitkFloat32))
    points = region_points(sitk.GetArrayViewFromImage(region), geometry_of(target))
    moved = displacement_mm(result.rigid_map, points)
    return MisalignmentEstimate(
        float(moved.mean()), float(moved.max()), rotation_angle_deg(result.rigid_map.matrix), error=None
    )


def measure_pair_misalignment(
    input_path: str | os.PathLike,
    target_path: str | os.PathLike,
    mask_path: str | os.PathLike | None = None,
    settings: RegistrationSettings = MEASUREMENT_SETTINGS,
) -> MisalignmentEstimate:
    """`estimate_misalignment` of the files of one case (input channel 0, target, optional mask)."""
    target = read_sitk(target_path)
    mask = read_sitk(mask_path) if mask_path is not None else None
    if mask is not None:
        mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
        mask.CopyInformation(target)
    return estimate_misalignment(target, read_sitk(input_path), mask, settings)


def measure_case_job(job: tuple[str, Path, Path, Path | None]) -> tuple[str, MisalignmentEstimate]:
    """(case_id, input channel 0, target, mask) -> (case_id, estimate); for process pools."""
    case_id, input_path, target_path, mask_path = job
    try:
        return case_id, measure_pair_misalignment(input_path, target_path, mask_path)
    except AutosrError as e:
        return case_id, MisalignmentEstimate(None, None, None, error=str(e))


def misalignment_warnings(
    estimates: dict[str, MisalignmentEstimate],
    target_spacings: dict[str, tuple[float, ...]],
    dataset_name: str = "DATASET",
) -> list[str]:
    """One line per case that is misaligned beyond its threshold or could not be measured, with the fix."""
    warnings = []
    for case_id, estimate in estimates.items():
        if estimate.error is not None:
            warnings.append(
                f"case {case_id}: the misalignment of input and target could not be measured ({estimate.error})"
            )
            continue
        threshold = flag_threshold_mm(target_spacings[case_id])
        if estimate.mean_mm > threshold:
            warnings.append(
                f"case {case_id}: input and target are misaligned by {estimate.mean_mm:.1f} mm on average over the "
                f"mask (rotation {estimate.rotation_deg:.1f} deg; flagged above {threshold:.1f} mm); register the "
                f"pairs with `autosr register {dataset_name}` and use the registered dataset it writes"
            )
    return warnings


def median_misalignment_mm(estimates: dict[str, MisalignmentEstimate]) -> float | None:
    values = [e.mean_mm for e in estimates.values() if e.mean_mm is not None]
    return float(np.median(values)) if values else None


def describe_misalignment(estimates: dict[str, MisalignmentEstimate]) -> str:
    """One line for a dataset summary: the median residual, the worst case, how many could not be measured."""
    measured = {k: e for k, e in estimates.items() if e.mean_mm is not None}
    if not measured:
        return "not measured" if not estimates else f"could not be measured for any of {len(estimates)} cases"
    worst = max(measured, key=lambda k: measured[k].mean_mm)
    text = (
        f"median {median_misalignment_mm(measured):.2f} mm, max {measured[worst].mean_mm:.2f} mm ({worst}) "
        f"[{len(measured)} cases]"
    )
    failed = len(estimates) - len(measured)
    return text + (f"; {failed} could not be measured" if failed else "")
