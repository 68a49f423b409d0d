"""Check a raw dataset before anything is planned or trained, and list every problem in one pass.

A researcher preparing paired data fixes problems in batches: one run should say everything that is wrong
(each line naming the case, the file and what to do), not stop at the first broken file. Planning calls
`verify_dataset(...).raise_if_problems()` first, so a dataset that passes here is safe to fingerprint.

Headers are read cheaply (SimpleITK's `ReadImageInformation`); voxel data is read once per file for the
NaN/Inf check (and, for masks, the emptiness check), optionally in several processes.

With `measure_misalignment`, every pair without problems is also registered rigidly
(`autosr.registration.misalignment`) to measure how far input and target are apart: the summary states the
median, and cases beyond the threshold become `warnings` naming the fix (`autosr register`). Misalignment
is a warning, not a problem: a dataset with it is valid, only worse to learn from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from autosr.dataset.nifti_nonfinite import count_nonfinite_nifti
from autosr.dataset.spec import CHANNEL_SUFFIX, CaseFiles, DatasetSpec, discover_cases, load_dataset_spec
from autosr.errors import AutosrError, DatasetProblems
from autosr.io.geometry import Geometry, overlap_fraction
from autosr.io.image_io import file_ending_of, geometry_of
from autosr.registration.misalignment import (
    MisalignmentEstimate,
    describe_misalignment,
    measure_case_job,
    misalignment_warnings,
)

# Fraction of the target's field of view (world bounding box) the input must cover. Paired scans of one
# subject cover nearly the same anatomy once co-registered (1.0 for resampled pairs; ~0.7-0.9 when a 7T
# slab or a cropped CT meets a whole-head input). Below one half, most target voxels have no input to be
# predicted from, which in practice means a wrong origin or direction (unregistered pair, flipped axes),
# not a genuine field-of-view difference. (documentation/dataset_format.md, "Why 50 % overlap")
MIN_OVERLAP_FRACTION = 0.5

SPLITS = ("Tr", "Ts")
FOLDERS = ("images", "targets", "masks")


@dataclass(frozen=True)
class ImageFacts:
    """What verification needs to know about one file; `error` is set when it could not be read."""

    path: Path
    geometry: Geometry | None = None
    num_nonfinite: int = 0
    num_nonzero: int = 0
    error: str | None = None


def inspect_image(path: Path) -> ImageFacts:
    """Header geometry, count of NaN/Inf voxels and of non-zero voxels of one image file."""
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        dimension = reader.GetDimension()
        size = reader.GetSize()
        if reader.GetNumberOfComponents() != 1:
            return ImageFacts(
                path, error=f"has {reader.GetNumberOfComponents()} components per voxel; store one channel per file"
            )
        if not (dimension == 3 or (dimension == 4 and size[3] == 1)):
            return ImageFacts(path, error=f"is {dimension}D with size {size}; autosr needs 3D volumes")
        image = reader.Execute()
    except RuntimeError as e:
        message = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown reader error"
        return ImageFacts(path, error=f"cannot be read ({message})")
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    array = sitk.GetArrayViewFromImage(image)
    if file_ending_of(path) in (".nii", ".nii.gz"):
        num_nonfinite = count_nonfinite_nifti(path)  # SimpleITK reads NIfTI NaN/Inf as 0
    elif np.issubdtype(array.dtype, np.floating):
        num_nonfinite = int(array.size - np.count_nonzero(np.isfinite(array)))
    else:
        num_nonfinite = 0
    return ImageFacts(path, geometry_of(image), num_nonfinite, int(np.count_nonzero(array)))


def inspect_images(paths: Iterable[Path], num_processes: int = 1) -> dict[Path, ImageFacts]:
    """`inspect_image` over many files, in `num_processes` worker processes when more than one."""
    paths = list(paths)
    if num_processes <= 1 or len(paths) < 2:
        return {p: inspect_image(p) for p in paths}
    with ProcessPoolExecutor(max_workers=num_processes) as pool:
        return dict(zip(paths, pool.map(inspect_image, paths, chunksize=4)))


@dataclass
class CaseOverview:
    """Grids of one verified case, for the summary."""

    case_id: str
    split: str
    input_geometry: Geometry | None
    target_geometry: Geometry | None
    has_mask: bool


@dataclass
class VerificationReport:
    """All problems of one dataset and an overview of what it holds."""

    dataset_dir: Path
    spec: DatasetSpec | None = None
    problems: list[str] = field(default_factory=list)
    cases: list[CaseOverview] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    misalignment: dict[str, MisalignmentEstimate] | None = None  # case label -> estimate, when measured

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_problems(self) -> None:
        """Raise `DatasetProblems` listing every problem (one per line) when there is any."""
        if self.problems:
            raise DatasetProblems(self.problems, header=f"dataset {self.dataset_dir} has problems")

    def summary(self) -> str:
        """One screen: cases per split, channels, grids and spacings of inputs and targets, masks."""
        lines = [f"dataset {self.dataset_dir.name} ({self.dataset_dir})"]
        if self.spec is not None:
            channels = ", ".join(f"{k}={v}" for k, v in sorted(self.spec.channel_names.items()))
            lines.append(f"  input channels: {channels}")
            lines.append(
                f"  target: {self.spec.target_name} (modality {self.spec.target_modality}); file ending {self.spec.file_ending}"
            )
        for split, label in (("Tr", "training"), ("Ts", "test")):
            cases = [c for c in self.cases if c.split == split]
            if not cases and split == "Ts":
                lines.append("  test cases: none")
                continue
            masks = sum(c.has_mask for c in cases)
            mask_text = "yes" if masks == len(cases) and cases else ("no" if masks == 0 else f"{masks} of {len(cases)}")
            lines.append(f"  {label} cases: {len(cases)}; masks: {mask_text}")
            lines.append("    inputs:  " + describe_grids([c.input_geometry for c in cases]))
            lines.append("    targets: " + describe_grids([c.target_geometry for c in cases]))
        if self.misalignment is not None:
            lines.append(
                "  misalignment of input and target (rigid registration, mean displacement over the mask): "
                + describe_misalignment(self.misalignment)
            )
        lines.append(f"  problems: {len(self.problems) if self.problems else 'none'}")
        lines.extend(f"    - {p}" for p in self.problems)
        if self.warnings:
            lines.append(f"  warnings: {len(self.warnings)}")
            lines.extend(f"    - {w}" for w in self.warnings)
        return "\n".join(lines)


def describe_grids(geometries: list[Geometry | None]) -> str:
    """Median spacing and size with their ranges, e.g. 'spacing (z,y,x) 1x1x1 mm, size 160x192x160'."""
    known = [g for g in geometries if g is not None]
    if not known:
        return "none"
    spacings = np.array([g.spacing_zyx for g in known])
    sizes = np.array([g.size_zyx for g in known])

    def axis_text(values: np.ndarray, fmt: str) -> str:
        median = "x".join(format(v, fmt) for v in np.median(values, axis=0))
        low, high = values.min(axis=0), values.max(axis=0)
        if np.allclose(low, high):
            return median
        return f"{median} (range {'x'.join(format(v, fmt) for v in low)} .. {'x'.join(format(v, fmt) for v in high)})"

    return f"spacing (z,y,x) {axis_text(spacings, 'g')} mm, size {axis_text(sizes, '.0f')} voxels [{len(known)} cases]"


def verify_dataset(
    dataset_dir: str | os.PathLike,
    num_folds: int = 5,
    num_processes: int = 1,
    measure_misalignment: bool = False,
    progress: bool = False,
) -> VerificationReport:
    """Check a raw dataset folder; every problem found ends up in the returned report's `problems`.

    `measure_misalignment` also registers each sound pair to measure its misalignment (seconds per case;
    see the module docstring); `progress` shows a bar for that.
    """
    root = Path(dataset_dir)
    report = VerificationReport(root)
    if not root.is_dir():
        report.problems.append(f"{root}: dataset folder not found; check the path or the dataset id")
        return report
    try:
        report.spec = load_dataset_spec(root)
    except DatasetProblems as e:
        report.problems.extend(f"{p}; fix dataset.json" for p in e.problems)
    except AutosrError as e:
        report.problems.append(str(e))
    images_tr = root / "imagesTr"
    if not images_tr.is_dir() or not any(p for p in images_tr.iterdir() if not p.name.startswith(".")):
        report.problems.append(
            f"{images_tr}: missing or empty; put the input channels of every training case there as <case>_0000<ending>"
        )
    if report.spec is None:
        return report
    spec = report.spec
    cases_by_split = {split: discover_cases(root, spec, split) for split in SPLITS}
    report.problems.extend(check_file_names(root, spec))
    for split in SPLITS:
        report.problems.extend(check_orphan_masks(root, spec, split, cases_by_split[split]))
    files = [
        p
        for cases in cases_by_split.values()
        for case in cases.values()
        for p in [*case.channels, case.target, case.mask]
        if p is not None
    ]
    facts = inspect_images(files, num_processes)
    sound_pairs = []
    for split in SPLITS:
        targets_required = split == "Tr" or (root / f"targets{split}").is_dir()
        for case in cases_by_split[split].values():
            overview, problems = check_case(case, split, spec, facts, targets_required)
            report.cases.append(overview)
            report.problems.extend(problems)
            if not problems and case.target is not None and case.channels and case.channels[0] is not None:
                sound_pairs.append((case, overview))
    if measure_misalignment:
        report.misalignment, report.warnings = measure_pairs(sound_pairs, num_processes, progress, root.name)
    num_training = len(cases_by_split["Tr"])
    if 0 < num_training < num_folds:
        report.problems.append(
            f"imagesTr: {num_training} training cases, fewer than the {num_folds} cross-validation folds; "
            f"add cases (at least {num_folds}): every fold needs its own validation cases"
        )
    if spec.num_training is not None and spec.num_training != num_training:
        report.problems.append(
            f"{root / 'dataset.json'}: 'numTraining' is {spec.num_training} but imagesTr/targetsTr hold "
            f"{num_training} training cases; set 'numTraining' to {num_training} (or add the missing cases)"
        )
    return report


def measure_pairs(
    pairs: list[tuple[CaseFiles, CaseOverview]],
    num_processes: int = 1,
    progress: bool = False,
    dataset_name: str = "DATASET",
) -> tuple[dict[str, MisalignmentEstimate], list[str]]:
    """Misalignment of each (case, overview) pair, keyed 'case' (training) or 'case (Ts)', and the warnings."""
    labels = [case.case_id if o.split == "Tr" else f"{case.case_id} (Ts)" for case, o in pairs]
    jobs = [(label, case.channels[0], case.target, case.mask) for label, (case, _) in zip(labels, pairs)]
    bar = dict(total=len(jobs), desc="misalignment", unit="case", disable=not progress)
    if num_processes > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=num_processes) as pool:
            results = dict(tqdm(pool.map(measure_case_job, jobs), **bar))
    else:
        results = dict(tqdm(map(measure_case_job, jobs), **bar))
    estimates = {label: results[label] for label in labels}
    spacings = {label: o.target_geometry.spacing_zyx for label, (_, o) in zip(labels, pairs)}
    return estimates, misalignment_warnings(estimates, spacings, dataset_name)


def check_file_names(root: Path, spec: DatasetSpec) -> list[str]:
    """Files in the dataset folders that autosr would silently ignore: wrong ending or wrong name."""
    problems = []
    for split in SPLITS:
        for kind in FOLDERS:
            folder = root / f"{kind}{split}"
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if p.name.startswith("."):
                    continue
                if p.is_dir():
                    problems.append(f"{p}: a folder inside {folder.name}/; move its files up or remove it")
                    continue
                if not p.name.endswith(spec.file_ending):
                    found = file_ending_of(p) or (p.suffix or "no ending")
                    problems.append(
                        f"{p}: file ending '{found}' but dataset.json says '{spec.file_ending}'; convert the file "
                        f"to {spec.file_ending} (or remove it) so every file in {folder.name}/ has the same ending"
                    )
                    continue
                if kind == "images":
                    match = CHANNEL_SUFFIX.match(p.name[: -len(spec.file_ending)])
                    if not match:
                        problems.append(
                            f"{p}: name lacks the 4-digit channel index; rename it <case>_0000{spec.file_ending}"
                        )
                    elif int(match.group("channel")) >= spec.num_channels:
                        problems.append(
                            f"{p}: channel {int(match.group('channel'))} but dataset.json lists "
                            f"{spec.num_channels} channel(s); add it to 'channel_names' or remove the file"
                        )
    return problems


def check_orphan_masks(root: Path, spec: DatasetSpec, split: str, cases: dict[str, CaseFiles]) -> list[str]:
    """Masks whose case has neither inputs nor a target (case discovery drops them silently)."""
    folder = root / f"masks{split}"
    if not folder.is_dir():
        return []
    problems = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.name.endswith(spec.file_ending):
            continue
        case_id = p.name[: -len(spec.file_ending)]
        if case_id not in cases:
            problems.append(
                f"case {case_id}: mask {p} has no inputs in images{split}/ and no target in targets{split}/; "
                "add the case's images or remove the mask"
            )
    return problems


def check_case(
    case: CaseFiles, split: str, spec: DatasetSpec, facts: dict[Path, ImageFacts], targets_required: bool
) -> tuple[CaseOverview, list[str]]:
    """All problems of one case, and its grids for the summary."""
    name = f"case {case.case_id} ({split})"
    problems = []
    if all(c is None for c in case.channels):
        present = case.target or case.mask
        problems.append(
            f"{name}: {present} has no input images; add images{split}/{case.case_id}_0000{spec.file_ending} "
            "(one file per channel) or remove the case's files"
        )
    else:
        for channel in case.missing_channels:
            channel_name = spec.channel_names.get(str(channel), "?")
            problems.append(
                f"{name}: input channel {channel} ({channel_name}) missing; add "
                f"images{split}/{case.case_id}_{channel:04d}{spec.file_ending}"
            )
    if case.target is None and targets_required:
        problems.append(
            f"{name}: target missing; add targets{split}/{case.case_id}{spec.file_ending} or remove the case"
        )
    usable: dict[Path, ImageFacts] = {}
    for path in [*case.channels, case.target, case.mask]:
        if path is None:
            continue
        fact = facts[path]
        if fact.error is not None:
            problems.append(f"{name}: {path} {fact.error}; re-export or replace the file")
            continue
        if fact.num_nonfinite:
            problems.append(
                f"{name}: {path} has {fact.num_nonfinite} NaN/Inf voxels (SimpleITK would read NIfTI ones as 0, "
                "silently); replace them with the background value (e.g. 0) and re-save the file"
            )
        usable[path] = fact
    channel_geometries = [(p, usable[p].geometry) for p in case.channels if p is not None and p in usable]
    input_geometry = channel_geometries[0][1] if channel_geometries else None
    for path, geometry in channel_geometries[1:]:
        if not geometry.same_grid(input_geometry):
            problems.append(
                f"{name}: {path} is on another grid ({geometry.describe()}) than {channel_geometries[0][0].name} "
                f"({input_geometry.describe()}); resample all input channels of a case onto one grid"
            )
    target_geometry = usable[case.target].geometry if case.target in usable else None
    if input_geometry is not None and target_geometry is not None:
        fraction = overlap_fraction(target_geometry, input_geometry)
        if fraction < MIN_OVERLAP_FRACTION:
            problems.append(
                f"{name}: input {channel_geometries[0][0]} covers {fraction:.0%} of the target {case.target}'s "
                f"field of view (at least {MIN_OVERLAP_FRACTION:.0%} needed); co-register the pair so both share "
                "one physical space (`autosr register` writes a registered copy of the dataset; also check "
                "origin and direction in the headers)"
            )
    if case.mask is not None:
        if case.target is None:
            problems.append(f"{name}: mask {case.mask} has no target; add the target or remove the mask")
        if case.mask in usable:
            mask_fact = usable[case.mask]
            if target_geometry is not None and not mask_fact.geometry.same_grid(target_geometry):
                problems.append(
                    f"{name}: mask {case.mask} is on another grid ({mask_fact.geometry.describe()}) than the target "
                    f"({target_geometry.describe()}); resample the mask onto the target grid (nearest neighbour)"
                )
            if mask_fact.num_nonzero == 0:
                problems.append(f"{name}: mask {case.mask} is empty (all zero); fix the mask or remove the file")
    overview = CaseOverview(case.case_id, split, input_geometry, target_geometry, case.mask is not None)
    return overview, problems
