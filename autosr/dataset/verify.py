"""Check a raw dataset before anything is planned or trained, and list every problem in one pass.

A researcher preparing paired data fixes problems in batches: one run should say everything that is wrong
(each line naming the case, the file and what to do), not stop at the first broken file. Planning calls
`verify_dataset(...).raise_if_problems()` first, so a dataset that passes here is safe to fingerprint.

Every file is read once through autosr's one reader (`autosr.io.read_image`, which refuses truncated
files, NaN/Inf voxels, broken links and 2D images), optionally in several processes; a target's mask is
read again beside it to check that something varies inside the region that counts.

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
from tqdm import tqdm

from autosr.errors import AutosrError, DatasetProblems, ImageFileProblem
from autosr.formats.dataset_spec import CHANNEL_SUFFIX, CaseFiles, DatasetSpec, discover_cases, load_dataset_spec
from autosr.imaging.foreground import target_foreground
from autosr.io.atomic import is_temporary
from autosr.io.geometry import Geometry, overlap_fraction
from autosr.io.image_io import detached_data_files, file_ending_of, read_image
from autosr.paths import SAFE_NAME_RULE, name_problem
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

# The physical range of a voxel and of a field of view. Scanners make voxels from about 1 micrometre (micro-CT,
# histology stacks) to a few centimetres (thick-slice MR, PET); a whole-body scan is about 2 m long. A spacing
# or field of view outside these bounds is a header in the wrong unit (metres, micrometres) or a broken
# header, and planning on it would make grids of billions of voxels.
MIN_SPACING_MM = 1e-3
MAX_SPACING_MM = 100.0
MAX_FIELD_OF_VIEW_MM = 4000.0

SPLITS = ("Tr", "Ts")
FOLDERS = ("images", "targets", "masks")


@dataclass(frozen=True)
class ImageFacts:
    """What verification needs to know about one file; `error` is set when it could not be used.

    `value_range` is (min, max) over the whole image; for a target, `region_range` is (min, max) inside
    the region that counts (its mask, else its foreground) and `region_size` the number of voxels in it
    (None when the region could not be formed, e.g. a mask on another grid, reported on its own)."""

    path: Path
    geometry: Geometry | None = None
    num_nonzero: int = 0
    value_range: tuple[float, float] = (0.0, 0.0)
    region_range: tuple[float, float] | None = None
    region_size: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class InspectJob:
    """One file to inspect; a target also names its mask (or the modality whose foreground rule applies)."""

    path: Path
    mask: Path | None = None
    foreground_modality: str | None = None


def inspect_image(job: InspectJob | Path) -> ImageFacts:
    """Geometry, value range and non-zero count of one image file, read through autosr's one reader (so a
    truncated file, NaN/Inf voxels, a broken link or a 2D image are the same problem here as everywhere)."""
    job = job if isinstance(job, InspectJob) else InspectJob(Path(job))
    try:
        array, geometry = read_image(job.path)
    except ImageFileProblem as e:
        return ImageFacts(job.path, error=f"{e.problem}; {e.fix}")
    except AutosrError as e:
        return ImageFacts(job.path, error=str(e))
    value_range = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    region_range, region_size = None, None
    region = None
    if job.mask is not None:
        try:
            mask_array, mask_geometry = read_image(job.mask)
            region = mask_array > 0 if mask_geometry.same_grid(geometry) else None
        except AutosrError:
            region = None  # the mask's own inspection reports it
    elif job.foreground_modality is not None:
        region = target_foreground(array, job.foreground_modality)
    if region is not None:
        region_size = int(np.count_nonzero(region))
        if region_size:
            inside = array[region]
            region_range = (float(inside.min()), float(inside.max()))
    return ImageFacts(job.path, geometry, int(np.count_nonzero(array)), value_range, region_range, region_size)


def inspect_images(jobs: Iterable[InspectJob | Path], num_processes: int = 1) -> dict[Path, ImageFacts]:
    """`inspect_image` over many files, in `num_processes` worker processes when more than one."""
    jobs = [j if isinstance(j, InspectJob) else InspectJob(Path(j)) for j in jobs]
    if num_processes <= 1 or len(jobs) < 2:
        return {j.path: inspect_image(j) for j in jobs}
    with ProcessPoolExecutor(max_workers=num_processes) as pool:
        return {j.path: facts for j, facts in zip(jobs, pool.map(inspect_image, jobs, chunksize=4))}


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
    report.problems.extend(check_split_leakage(cases_by_split))
    jobs = []
    for cases in cases_by_split.values():
        for case in cases.values():
            jobs += [InspectJob(p) for p in [*case.channels, case.mask] if p is not None]
            if case.target is not None:
                modality = spec.target_modality if case.mask is None else None
                jobs.append(InspectJob(case.target, case.mask, modality))
    facts = inspect_images(jobs, num_processes)
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
    """Files in the dataset folders that autosr would silently ignore or could not name its outputs after:
    hidden names, wrong endings, names without a channel index, case ids outside the allow-list."""
    problems = []
    for split in SPLITS:
        for kind in FOLDERS:
            folder = root / f"{kind}{split}"
            if not folder.is_dir():
                continue
            data_files = detached_data_files(folder)  # a .mhd's .raw is part of it, not a file of its own
            for p in sorted(folder.iterdir()):
                if p.name in data_files:
                    continue
                shown = p if p.name.isprintable() else folder / repr(p.name)
                if p.name.startswith("."):
                    if p.name.endswith(spec.file_ending):
                        problems.append(hidden_file_problem(p))
                    continue
                if p.is_dir():
                    problems.append(f"{p}: a folder inside {folder.name}/; move its files up or remove it")
                    continue
                if not p.name.endswith(spec.file_ending):
                    found = file_ending_of(p) or (p.suffix or "no ending")
                    problems.append(
                        f"{shown}: file ending '{found}' but dataset.json says '{spec.file_ending}'; convert the file "
                        f"to {spec.file_ending} (or remove it) so every file in {folder.name}/ has the same ending"
                    )
                    continue
                stem = p.name[: -len(spec.file_ending)]
                if (problem := name_problem(stem)) is not None:
                    problems.append(
                        f"{folder}/{p.name!r}: the file name {problem}; rename it: case ids become file and folder names, so "
                        f"{SAFE_NAME_RULE}"
                    )
                    continue
                if kind == "images":
                    match = CHANNEL_SUFFIX.fullmatch(stem)
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


def hidden_file_problem(path: Path) -> str:
    """Why a hidden image file in a dataset folder matters, and what to do with it."""
    if is_temporary(path):
        return (
            f"{path}: left over from an interrupted write (autosr's temporary files are named .<name>.tmp-*); delete it"
        )
    if path.name.startswith("._"):
        return f"{path}: a macOS metadata file ('._' copy), not an image; delete it"
    return (
        f"{path}: the name starts with '.', which hides the file, so autosr would skip this case without a word; "
        "rename it without the leading '.' (or delete it if it is not a case)"
    )


def check_split_leakage(cases_by_split: dict[str, dict[str, CaseFiles]]) -> list[str]:
    """Case ids that are both training and test cases: scoring a test case the model was trained on
    flatters every number."""
    both = sorted(set(cases_by_split["Tr"]) & set(cases_by_split["Ts"]))
    return [
        f"case {case}: is a training case (imagesTr/, targetsTr/) and a test case (imagesTs/, targetsTs/); a test "
        "case must be unseen in training: remove it from one of the two (or rename one if they are different scans)"
        for case in both
    ]


def check_orphan_masks(root: Path, spec: DatasetSpec, split: str, cases: dict[str, CaseFiles]) -> list[str]:
    """Masks whose case has neither inputs nor a target (case discovery drops them silently)."""
    folder = root / f"masks{split}"
    if not folder.is_dir():
        return []
    problems = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.name.endswith(spec.file_ending):
            continue  # reported by check_file_names
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
            problems.append(f"{name}: {path} {fact.error}")
            continue
        if (problem := geometry_problem(fact.geometry)) is not None:
            problems.append(f"{name}: {path} {problem}")
            continue
        if path != case.mask:
            problems.extend(check_contrast(name, path, fact, "target" if path == case.target else "input"))
        usable[path] = fact
    channel_geometries = [(p, usable[p].geometry) for p in case.channels if p is not None and p in usable]
    input_geometry = channel_geometries[0][1] if channel_geometries else None
    for path, geometry in channel_geometries[1:]:
        if not geometry.same_grid(input_geometry):
            problems.append(
                f"{name}: {path} is on another grid ({geometry.describe()}) than {channel_geometries[0][0].name} "
                f"({input_geometry.describe()}); resample all input channels of a case onto one grid"
            )
    if case.target in usable:
        problems.extend(check_target_foreground(name, split, case, usable[case.target], spec))
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


def geometry_problem(geometry: Geometry) -> str | None:
    """What is physically impossible about a grid (see `MIN_SPACING_MM`), phrased to follow a file name."""
    spacing = " x ".join(f"{s:g}" for s in geometry.spacing_zyx)
    fix = (
        "the header's spacing is wrong or in another unit (metres, micrometres?): set the spacing in mm "
        "(e.g. SimpleITK's SetSpacing) and re-save the file"
    )
    if not all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in geometry.spacing_zyx):
        return (
            f"has voxels of {spacing} mm (z, y, x), outside the {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm any "
            f"scanner makes; {fix}"
        )
    extent = geometry.physical_extent_zyx
    if max(extent) > MAX_FIELD_OF_VIEW_MM:
        shown = " x ".join(f"{e:.0f}" for e in extent)
        return (
            f"covers {shown} mm (z, y, x; {' x '.join(map(str, geometry.size_zyx))} voxels of {spacing} mm), longer than the "
            f"{MAX_FIELD_OF_VIEW_MM / 1000:g} m of any body; {fix} (or its size)"
        )
    return None


def check_contrast(name: str, path: Path, fact: ImageFacts, role: str) -> list[str]:
    """An input or target with one value in every voxel (all zero, or constant) carries nothing to learn."""
    low, high = fact.value_range
    if low != high:
        return []
    what = "is all zero" if low == 0 else f"has the same value ({low:g}) in every voxel"
    why = (
        "an input without contrast cannot be translated"
        if role == "input"
        else "a target without contrast teaches nothing"
    )
    return [f"{name}: {path} {what}: {why}; re-export the scan, or remove the case"]


def check_target_foreground(name: str, split: str, case: CaseFiles, fact: ImageFacts, spec: DatasetSpec) -> list[str]:
    """A target with nothing to learn inside the region that counts (its mask, else its foreground):
    normalization inside the region divides by a spread of zero and every score of the case is undefined."""
    low, high = fact.value_range
    if low == high or fact.region_size is None:
        return []  # a constant image is reported by check_contrast; a region that could not be formed elsewhere
    if case.mask is not None:
        region = f"its mask {case.mask}"
        fix = "fix the mask (it should cover the anatomy) or the target, or remove the case"
    else:
        region = "its foreground (the region that counts when a case has no mask)"
        fix = f"add a mask masks{split}/{case.case_id}{spec.file_ending}, fix the target, or remove the case"
    if fact.region_size == 0:
        if case.mask is not None:
            return []  # an empty mask is reported with the mask
        return [f"{name}: target {case.target} has no foreground (nothing stands out from the background); {fix}"]
    inside_low, inside_high = fact.region_range
    if inside_low != inside_high:
        return []
    return [
        f"{name}: target {case.target} has the same value ({inside_low:g}) everywhere inside {region}, so there "
        f"is nothing to learn or score there; {fix}"
    ]
