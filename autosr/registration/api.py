"""`register_dataset`: co-register every pair of a raw dataset and write a registered copy beside it.

Why a copy, not transforms applied at preprocessing: the registered dataset is an ordinary raw dataset, so
verify, fingerprint, planning, preprocessing, training, prediction and evaluation run on it unchanged (one
preprocessing path for training and prediction; new scans at prediction time have no target to register
to anyway). The user's files are never written to, the registered copy can be checked in a viewer next to
the raw one, and `autosr verify` measures what registration left.

What the copy holds, per case that has a target:

- `imagesTr/<case>_XXXX`: every input channel moved by the transform found for channel 0.
  *Rigid* (default): the move is written into the header (origin and direction), the voxels are the
  original ones, so no resampling blur is added. *Affine*: each channel is resampled (cubic B-spline,
  clipped to the channel's range) onto the input grid moved by the rigid part, so only the small
  affine remainder is interpolated.
- `targetsTr/`, `masksTr/`: byte-for-byte copies (the target grid stays the reference).
- `registration/<split>/<case>.tfm` (ITK transform: target point -> input point; `sitk.Resample(input,
  target, transform)` puts the raw input on the target grid) and `<case>.json` (parameters, metric before
  and after, displacement, timings, settings, and the source files' sizes and times).

A case without a target (a test scan to predict) is copied unchanged. A case that cannot be registered
(empty image, no overlap) is reported by name at the end, after all the others are written, and left out.
A rerun skips cases whose JSON says they were registered with the same settings from the same files, and
whose outputs have the sizes the JSON recorded.

Resuming: the copy is marked as this source's (`registration/source.json`) before its first case, so a run
stopped part way (kill -9, a full disk) is found and continued by the same command, in the same folder; its
`dataset.json` is written last, so an unfinished copy is never taken for a dataset. Every file is written
atomically and checked before its rename (`autosr.io.atomic`): a full disk stops the run with one message,
never a cut-short image. One run writes a copy at a time (`registration/.register.lock`).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import SimpleITK as sitk
from tqdm import tqdm

from autosr import __version__
from autosr.errors import AutosrError, DatasetProblems
from autosr.formats.dataset_spec import CaseFiles, DatasetSpec, discover_cases, load_dataset_spec
from autosr.imaging.bias_field import foreground_mask
from autosr.io.atomic import atomic_copy, atomic_path, atomic_write_json, read_json
from autosr.io.image_io import apply_geometry, geometry_of, read_sitk, write_sitk_image
from autosr.io.locks import exclusive_lock
from autosr.paths import (
    SAFE_NAME_RULE,
    dataset_folder_name,
    dataset_id_of,
    ensure_writable_folder,
    is_dataset_name,
    name_problem,
    parse_dataset_name,
)
from autosr.registration.pairwise import (
    DEFAULT_SETTINGS,
    PairRegistration,
    RegistrationError,
    RegistrationSettings,
    register_images,
)
from autosr.registration.transforms import displace_geometry, displacement_mm, region_points, rotation_angle_deg

REGISTERED_NAME_SUFFIX = "Registered"
REGISTRATION_FOLDER = "registration"
SOURCE_MARKER = "source.json"  # registration/source.json: whose copy a folder is, from the first case on
LOCK_NAME = ".register.lock"
SPLITS = ("Tr", "Ts")


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one case: 'registered', 'done' (skipped, registered before), 'copied' (no target),
    'incomplete' (files missing) or 'failed' (`message` says why)."""

    case_id: str
    split: str
    status: str
    message: str = ""
    record: dict[str, Any] | None = None


@dataclass
class RegistrationSummary:
    """The outcome of `register_dataset`."""

    source_dir: Path
    output_dir: Path
    settings: RegistrationSettings
    outcomes: list[CaseOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status in ("failed", "incomplete")]

    def raise_if_failed(self) -> None:
        """Raise `DatasetProblems` naming every case that could not be registered (the others are written)."""
        if self.failed:
            done = sum(o.status in ("registered", "done") for o in self.outcomes)
            raise DatasetProblems(
                [f"case {o.case_id} ({o.split}): {o.message}" for o in self.failed],
                header=f"{done} case(s) registered into {self.output_dir}, but these were left out",
            )

    def table(self) -> str:
        """One line per registered case: how far the input moved, rotation, metric before/after, time."""
        lines = [
            f"{'case':<20} {'split':<5} {'moved (mm)':>10} {'rot (deg)':>9} {'MI before':>10} {'MI after':>9} {'s':>6}"
        ]
        for o in sorted(self.outcomes, key=lambda o: (o.split, o.case_id)):
            if o.record is None:
                lines.append(f"{o.case_id:<20} {o.split:<5} {o.status}: {o.message}")
                continue
            r = o.record
            before = r["metric"]["at_headers"]
            lines.append(
                f"{o.case_id:<20} {o.split:<5} {r['displacement_mm']['mean']:>10.2f} {r['rotation_deg']:>9.2f} "
                f"{'n/a' if before is None else format(before, '.4f'):>10} {r['metric']['registered']:>9.4f} "
                f"{r['seconds']:>6.1f}" + ("" if o.status == "registered" else "  (done before)")
            )
        return "\n".join(lines)


# --- where the registered copy goes ---------------------------------------------------------------------


def _registered_from(folder: Path) -> str | None:
    """The source dataset name a folder was registered from (finished, or stopped part way), or None when it
    is not a registered copy."""
    for path, key in ((folder / "dataset.json", "registration"), (folder / REGISTRATION_FOLDER / SOURCE_MARKER, None)):
        if not path.is_file():
            continue
        try:
            content = read_json(path)
        except (json.JSONDecodeError, OSError):
            continue
        record = content.get(key) if key is not None and isinstance(content, dict) else content
        if isinstance(record, dict) and isinstance(record.get("source"), str):
            return record["source"]
    return None


def registered_dataset_folder(source_dir: Path, dataset_id: int | None = None, name: str | None = None) -> Path:
    """Where the registered copy of `source_dir` goes, beside it: `DatasetYYY_<Name>Registered`.

    Without `dataset_id`: the folder an earlier run wrote for this source (so a rerun resumes), else the
    first free id after the source's. With one: that id, which must be free or hold this source's copy.
    """
    root = source_dir.parent
    source_name = source_dir.name
    match = parse_dataset_name(source_name)
    base_name = match[1] if match else source_name
    name = name or f"{base_name}{REGISTERED_NAME_SUFFIX}"
    siblings = sorted(p for p in root.iterdir() if p.is_dir() and is_dataset_name(p.name))
    if dataset_id is None:
        for folder in siblings:
            if folder != source_dir and _registered_from(folder) == source_name:
                return folder
        taken = {dataset_id_of(p.name) for p in siblings}
        start = dataset_id_of(source_name) if match else 0
        free = [i % 1000 for i in range(start + 1, start + 1001) if i % 1000 not in taken]
        if not free:
            raise AutosrError(f"{root}: every dataset id 0-999 is taken; pass --id with one to reuse")
        dataset_id = free[0]
    folder = root / dataset_folder_name(dataset_id, name)
    for other in siblings:
        if dataset_id_of(other.name) != int(dataset_id):
            continue
        if other == source_dir:
            raise AutosrError(f"dataset id {dataset_id} is the source dataset's own; choose another --id")
        ours = other == folder and (_registered_from(other) == source_name or not any(other.iterdir()))
        if not ours:
            raise AutosrError(
                f"dataset id {dataset_id} is taken by {other} (not a registered copy of {source_name}); "
                "choose another --id"
            )
    return folder


# --- one case -----------------------------------------------------------------------------------------


def _file_stamp(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}


def _source_stamps(case: CaseFiles) -> list[dict[str, Any]]:
    return [_file_stamp(p) for p in [*case.channels, case.target, case.mask] if p is not None]


def _output_sizes(outputs: list[Path], out: Path) -> dict[str, int]:
    """{path inside the copy: bytes} of a case's outputs, recorded so a rerun trusts only whole files."""
    return {p.relative_to(out).as_posix(): p.stat().st_size for p in outputs}


def _transform_problem(path: Path) -> str | None:
    """A `verify` for a written .tfm: ITK reads it back."""
    try:
        sitk.ReadTransform(str(path))
    except RuntimeError:
        return f"the transform cannot be read back: only {path.stat().st_size} bytes reached the disk"
    return None


def _moved_channel(image: sitk.Image, result: PairRegistration, transform_kind: str) -> sitk.Image:
    """A channel moved by the registration: header only (rigid) or resampled (affine)."""
    rigid_geometry = displace_geometry(geometry_of(image), result.rigid_map.inverse())
    if transform_kind == "rigid":
        return apply_geometry(sitk.Image(image), rigid_geometry)
    values = sitk.GetArrayViewFromImage(image)
    low, high = float(values.min()), float(values.max())
    reference = apply_geometry(sitk.Image(list(image.GetSize()), sitk.sitkFloat32), rigid_geometry)
    resampled = sitk.Resample(
        sitk.Cast(image, sitk.sitkFloat32), reference, result.transform, sitk.sitkBSpline, low, sitk.sitkFloat32
    )
    return sitk.Clamp(resampled, sitk.sitkFloat32, low, high)


def _case_record(
    case: CaseFiles, split: str, result: PairRegistration, target: sitk.Image, mask: sitk.Image | None, settings
) -> dict[str, Any]:
    region = mask if mask is not None else foreground_mask(sitk.Cast(target, sitk.sitkFloat32))
    moved = displacement_mm(result.linear_map, region_points(sitk.GetArrayViewFromImage(region), geometry_of(target)))
    return {
        "case_id": case.case_id,
        "split": split,
        "transform": settings.transform,
        "transform_file": f"{case.case_id}.tfm",
        "maps": "a target point (world mm) to the input point showing the same anatomy (ITK convention)",
        "linear_map": result.linear_map.to_json(),
        "rigid_map": result.rigid_map.to_json(),
        "rotation_deg": rotation_angle_deg(result.rigid_map.matrix),
        "displacement_mm": {
            "mean": float(moved.mean()),
            "max": float(moved.max()),
            "over": "target mask" if mask is not None else "target foreground (Otsu)",
        },
        "initialization": result.initialization,
        "metric": {
            "name": "Mattes mutual information (negated: lower is better), finest level",
            "at_headers": result.metric_at_headers,
            "registered": result.metric_registered,
        },
        "stages": result.stages,
        "inputs_written_as": "header moved, voxels unchanged" if settings.transform == "rigid" else "resampled",
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        "settings": settings.to_json(),
        "source_files": _source_stamps(case),
        "autosr_version": __version__,
    }


def _is_done(
    case: CaseFiles, record_path: Path, outputs: list[Path], settings: RegistrationSettings, out: Path
) -> dict | None:
    """The existing record when this case was registered before with these settings from these files, and its
    outputs are the files then written (records of older versions hold no sizes: their files are trusted)."""
    if not record_path.is_file() or not all(p.is_file() for p in outputs):
        return None
    try:
        record = read_json(record_path)
    except (json.JSONDecodeError, OSError):
        return None
    if record.get("settings") != settings.to_json() or record.get("source_files") != _source_stamps(case):
        return None
    if "output_bytes" in record and record["output_bytes"] != _output_sizes(outputs, out):
        return None
    return record


def _remove(outputs: list[Path], record_folder: Path, case_id: str) -> None:
    """Remove what an earlier run wrote for a case that now fails, so no stale copy stays behind."""
    for path in [*outputs, record_folder / f"{case_id}.json", record_folder / f"{case_id}.tfm"]:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _CaseJob:
    case: CaseFiles
    split: str
    output_dir: Path
    spec: DatasetSpec
    settings: RegistrationSettings
    overwrite: bool


def register_case(job: _CaseJob) -> CaseOutcome:
    """Register (or copy, or skip) one case into the output dataset; never raises for a bad case."""
    case, split, out, ending = job.case, job.split, job.output_dir, job.spec.file_ending
    if (problem := name_problem(case.case_id)) is not None:  # it becomes file names in the output dataset
        return CaseOutcome(case.case_id, split, "failed", f"the case id {problem}; rename its files ({SAFE_NAME_RULE})")
    input_outputs = [out / f"images{split}" / f"{case.case_id}_{i:04d}{ending}" for i in range(len(case.channels))]
    if case.missing_channels or (case.target is None and split == "Tr"):
        return CaseOutcome(case.case_id, split, "incomplete", "input channel(s) or target missing; run `autosr verify`")
    if case.target is None:
        for source, destination in zip(case.channels, input_outputs):
            atomic_copy(source, destination)
        return CaseOutcome(case.case_id, split, "copied", "no target to register to: copied unchanged")
    record_folder = out / REGISTRATION_FOLDER / split
    record_path = record_folder / f"{case.case_id}.json"
    outputs = [*input_outputs, out / f"targets{split}" / f"{case.case_id}{ending}"]
    if case.mask is not None:
        outputs.append(out / f"masks{split}" / f"{case.case_id}{ending}")
    if not job.overwrite:
        record = _is_done(case, record_path, outputs, job.settings, out)
        if record is not None:
            return CaseOutcome(case.case_id, split, "done", record=record)
    try:
        target = read_sitk(case.target)
        mask = read_sitk(case.mask) if case.mask is not None else None
        channels = [read_sitk(p) for p in case.channels]
        if mask is not None:
            mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
            mask.CopyInformation(target)
        result = register_images(target, channels[0], mask, job.settings)
    except RegistrationError as e:
        _remove(outputs, record_folder, case.case_id)
        return CaseOutcome(
            case.case_id, split, "failed", f"{case.channels[0].name} -> {case.target.name}: {e}; fix or remove the case"
        )
    except AutosrError as e:
        _remove(outputs, record_folder, case.case_id)
        return CaseOutcome(case.case_id, split, "failed", str(e))
    for channel, destination in zip(channels, input_outputs):
        write_sitk_image(_moved_channel(channel, result, job.settings.transform), destination)
    atomic_copy(case.target, outputs[len(input_outputs)])
    if case.mask is not None:
        atomic_copy(case.mask, outputs[-1])
    with atomic_path(record_folder / f"{case.case_id}.tfm", verify=_transform_problem) as tmp:
        sitk.WriteTransform(result.transform, str(tmp))
    record = _case_record(case, split, result, target, mask, job.settings)
    record["output_bytes"] = _output_sizes(outputs, out)
    atomic_write_json(record, record_path)  # last: a record marks the case done
    return CaseOutcome(case.case_id, split, "registered", record=record)


def _set_worker_threads(num_threads: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(num_threads)


# --- the dataset --------------------------------------------------------------------------------------


def register_dataset(
    source_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    settings: RegistrationSettings = DEFAULT_SETTINGS,
    num_processes: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> RegistrationSummary:
    """Register every case of the raw dataset `source_dir` into `output_dir` (default
    `registered_dataset_folder(source_dir)`); see the module docstring. Does not raise for cases that
    cannot be registered: call `.raise_if_failed()` on the summary."""
    source_dir = Path(source_dir).resolve()
    spec = load_dataset_spec(source_dir)
    output_dir = Path(output_dir) if output_dir is not None else registered_dataset_folder(source_dir)
    output_dir = output_dir.resolve()
    if output_dir == source_dir:
        raise AutosrError(f"{output_dir}: the registered copy must not replace the source dataset; choose another id")
    ensure_writable_folder(output_dir, "AUTOSR_RAW")
    jobs = [
        _CaseJob(case, split, output_dir, spec, settings, overwrite)
        for split in SPLITS
        for case in discover_cases(source_dir, spec, split).values()
    ]
    if not jobs:
        raise AutosrError(f"{source_dir}: no cases found in imagesTr/ or imagesTs/; run `autosr verify` first")
    with exclusive_lock(output_dir / REGISTRATION_FOLDER / LOCK_NAME, f"the registered copy {output_dir}"):
        marker = output_dir / REGISTRATION_FOLDER / SOURCE_MARKER
        if not marker.is_file():
            atomic_write_json({"source": source_dir.name, "source_path": str(source_dir)}, marker)
        summary = _register_jobs(jobs, RegistrationSummary(source_dir, output_dir, settings), num_processes, progress)
        _write_dataset_json(source_dir, output_dir, spec, summary)
    return summary


def _register_jobs(
    jobs: list[_CaseJob], summary: RegistrationSummary, num_processes: int, progress: bool
) -> RegistrationSummary:
    bar = tqdm(total=len(jobs), desc="register", unit="case", disable=not progress)
    if num_processes > 1 and len(jobs) > 1:
        threads = max(1, (os.cpu_count() or 1) // num_processes)
        with ProcessPoolExecutor(num_processes, initializer=_set_worker_threads, initargs=(threads,)) as pool:
            futures = [pool.submit(register_case, job) for job in jobs]
            for future in as_completed(futures):
                summary.outcomes.append(future.result())
                bar.update()
    else:
        for job in jobs:
            summary.outcomes.append(register_case(job))
            bar.update()
    bar.close()
    return summary


def _write_dataset_json(source_dir: Path, output_dir: Path, spec: DatasetSpec, summary: RegistrationSummary) -> None:
    content = read_json(source_dir / "dataset.json")
    match = parse_dataset_name(output_dir.name)
    content["name"] = match[1] if match else output_dir.name
    registered = [o for o in summary.outcomes if o.status in ("registered", "done")]
    content["numTraining"] = sum(o.split == "Tr" for o in registered)
    content["registration"] = {
        "source": source_dir.name,
        "transform": summary.settings.transform,
        "records": f"{REGISTRATION_FOLDER}/<split>/<case>.json and .tfm",
        "cases_left_out": sorted(f"{o.case_id} ({o.split})" for o in summary.failed),
    }
    atomic_write_json(content, output_dir / "dataset.json")
    atomic_write_json(
        {
            "source": str(source_dir),
            "settings": summary.settings.to_json(),
            "cases": {
                f"{o.split}/{o.case_id}": {"status": o.status, "message": o.message}
                for o in sorted(summary.outcomes, key=lambda o: (o.split, o.case_id))
            },
            "autosr_version": __version__,
        },
        output_dir / REGISTRATION_FOLDER / "summary.json",
    )
