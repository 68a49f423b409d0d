"""Raw case -> network-ready arrays on the planned grid, and the properties needed to go back.

One path for training, cross-validation and prediction (`prepare_input`): the input channels are resampled
onto a *working grid* in the canonical orientation (`autosr.io.orientation`: world-aligned axes, the planned
spacing), the input foreground is derived from the resampled input alone (`autosr.imaging.foreground`),
everything is cropped to that foreground's box grown by a margin (`crop_box`), and each channel is normalized
(an MR channel inside its own foreground). Only the grid differs: a training case's working grid covers the
target's field of view (target and mask are resampled onto it and cropped by the same box), a new scan's
covers its own. So a scan is normalized identically whether it is a training case, a cross-validation case
or a new scan, and the network always sees anatomy the same way round.

Properties (JSON, one per case) hold the original input (and target) geometries, the working grid, the
crop box, the normalization parameters of every channel and of the target, the grid predictions are
exported on (the input's own orientation at the planned spacing), a hash of the plan entries that
shaped the arrays, and a record of the raw files they were made from (`autosr.formats.source_files`: size,
time and content hash of each). A re-run skips the cases preprocessed with the same plans from the same raw
files and intact arrays, and redoes the others, naming each one redone for a reason other than being new:
raw files replaced since, arrays damaged (truncated, wrong type), no record of the raw files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from autosr.errors import AutosrError
from autosr.formats.dataset_spec import CaseFiles, discover_cases, load_dataset_spec
from autosr.formats.plans import Plans
from autosr.formats.source_files import changed_source_files, record_source_files
from autosr.imaging.foreground import crop_box, input_foreground, target_foreground
from autosr.io import Geometry, read_channels, read_image, resample_to_geometry
from autosr.io.orientation import output_grid, working_grid
from autosr.paths import ensure_writable_folder
from autosr.preprocessing.case_store import array_problems, case_paths, is_complete, save_case
from autosr.preprocessing.normalization import normalize_image, normalize_target, target_export_parameters

# bumped when the arrays a plan produces change (2: canonical orientation; 3: resolution-enhancement targets in
# their input's units, `normalize_target`)
PREPROCESSING_VERSION = 3


def preprocessing_hash(plans: Plans, config_name: str) -> str:
    """Hash of everything that shapes preprocessed arrays: spacing, resampling orders, normalization."""
    config = plans.configuration(config_name)
    relevant = {
        "version": PREPROCESSING_VERSION,
        "spacing": config.spacing_zyx,
        "resampling": config.resampling,
        "normalization": plans.raw["normalization"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _resample_clipped(array: np.ndarray, source: Geometry, destination: Geometry, order: int) -> np.ndarray:
    """Resample and clip to the source's value range (B-spline overshoots at sharp edges)."""
    out = resample_to_geometry(array, source, destination, order=order)
    if order > 1:
        lo, hi = float(array.min()), float(array.max())
        np.clip(out, lo, hi, out=out)
    return out


def _crop(array: np.ndarray, box: Sequence[Sequence[int]]) -> np.ndarray:
    return np.ascontiguousarray(array[(slice(None),) + tuple(slice(a, b) for a, b in box)])


def input_schemes(plans: Plans) -> list[str]:
    """The normalization scheme of each input channel (it decides how the channel's foreground is found)."""
    return [entry["scheme"] for entry in plans.input_normalization]


@dataclass
class PreparedInput:
    """An input on its working grid: normalized and cropped, with its foreground and what produced it."""

    input: np.ndarray  # float32 (C, Z, Y, X), cropped
    foreground: np.ndarray  # bool (Z, Y, X), cropped like `input`
    grid: Geometry  # the working grid before cropping
    crop_box_zyx: list[list[int]]
    normalization: list[dict[str, Any]]


def prepare_input(
    inputs: np.ndarray, input_geometry: Geometry, grid: Geometry, plans: Plans, config_name: str
) -> PreparedInput:
    """Resample input channels (C, Z, Y, X) onto `grid`, find their foreground, crop, normalize.

    The single definition of what the network sees of a scan, for training and prediction alike.
    """
    order = plans.configuration(config_name).resampling["input_order"]
    resampled = np.stack([_resample_clipped(c, input_geometry, grid, order) for c in inputs])
    foreground = input_foreground(resampled, input_schemes(plans))
    box = crop_box(foreground, grid.spacing_zyx)
    cropped = _crop(resampled, box)
    foreground = _crop(foreground[None], box)[0]
    normalized, params = [], []
    for channel, entry in zip(cropped, plans.input_normalization):
        n, p = normalize_image(channel, entry, foreground)
        normalized.append(n)
        params.append(p)
    return PreparedInput(np.stack(normalized).astype(np.float32), foreground, grid, box, params)


def _check_finite(inputs: np.ndarray, where: str) -> None:
    """Arrays handed over from Python have not been through the reader's checks."""
    if not np.all(np.isfinite(inputs)):
        raise AutosrError(f"{where}: contains NaN or Inf voxels; fix or replace the scan")


def preprocess_training_case(
    case_files: CaseFiles, plans: Plans, config_name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(input (C,Z,Y,X), target (1,Z,Y,X), mask uint8 (1,Z,Y,X), properties) of one training case."""
    config = plans.configuration(config_name)
    orders = config.resampling
    # recorded before reading: a file replaced while this case is preprocessed is seen as changed next time
    source_files = record_source_files(case_source_files(case_files), dataset_folder_of(case_files))
    inputs, input_geometry = read_channels(case_files.channels)  # the reader refuses NaN/Inf and truncation
    target, target_geometry = read_image(case_files.target)
    if case_files.mask is not None:
        mask_raw, mask_geometry = read_image(case_files.mask)
        mask_raw = (mask_raw > 0).astype(np.float32)
    else:
        mask_raw, mask_geometry = target_foreground(target, plans.target_modality).astype(np.float32), target_geometry
    grid = working_grid(target_geometry, config.spacing_zyx)
    prepared = prepare_input(inputs, input_geometry, grid, plans, config_name)
    box = prepared.crop_box_zyx
    target_c = _crop(_resample_clipped(target, target_geometry, grid, orders["target_order"])[None], box)
    mask_c = _crop((resample_to_geometry(mask_raw, mask_geometry, grid, order=orders["mask_order"]) > 0.5)[None], box)
    target_n, target_params = normalize_target(
        target_c[0], plans.target_normalization, mask_c[0], prepared.normalization
    )
    properties = {
        "case_id": case_files.case_id,
        "configuration": config_name,
        "preprocessing_hash": preprocessing_hash(plans, config_name),
        "input_geometry": input_geometry.to_json(),
        "target_geometry": target_geometry.to_json(),
        "planned_geometry": grid.to_json(),
        "output_geometry": target_geometry.to_json(),
        "crop_box_zyx": box,
        "input_normalization": prepared.normalization,
        "target_normalization": target_params,
        "export_normalization": target_export_parameters(plans.target_normalization, prepared.normalization),
        "has_mask": case_files.mask is not None,
        "source_files": source_files,
    }
    return prepared.input, target_n[None], mask_c.astype(np.uint8), properties


def case_source_files(case_files: CaseFiles) -> list[Path]:
    """The raw files a training case is made from: its input channels, target and mask."""
    return [Path(p) for p in [*case_files.channels, case_files.target, case_files.mask] if p is not None]


def dataset_folder_of(case_files: CaseFiles) -> Path:
    """The raw dataset folder a case's files lie in (`<dataset>/targetsTr/<case><ending>`)."""
    return Path(case_files.target).parent.parent


@dataclass
class PreprocessedScan:
    """A new scan ready for the network: `input` (C, Z, Y, X) float32, its cropped `foreground` (bool) and
    the `properties` that invert the preprocessing."""

    input: np.ndarray
    foreground: np.ndarray
    properties: dict[str, Any]


def preprocess_for_inference(
    channel_files: Sequence[str | os.PathLike], plans: Plans, config_name: str
) -> PreprocessedScan:
    """A scan without a target on the working grid over its own field of view (see the module docstring)."""
    if len(channel_files) != plans.num_input_channels:
        raise AutosrError(
            f"{channel_files[0] if channel_files else '?'}: {len(channel_files)} channel file(s) given, the model "
            f"was trained on {plans.num_input_channels} ({', '.join(plans.raw.get('input_channel_names', []))})"
        )
    inputs, input_geometry = read_channels(channel_files)
    return preprocess_arrays(inputs, input_geometry, plans, config_name, str(channel_files[0]))


def preprocess_arrays(
    inputs: np.ndarray, input_geometry: Geometry, plans: Plans, config_name: str, where: str = "input"
) -> PreprocessedScan:
    """`preprocess_for_inference` for channels already in memory: (C, Z, Y, X) float32 and their geometry."""
    config = plans.configuration(config_name)
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 4 or inputs.shape[0] != plans.num_input_channels:
        raise AutosrError(
            f"{where}: input of shape {inputs.shape} does not fit the model: it wants "
            f"({plans.num_input_channels}, Z, Y, X), one channel per trained input"
        )
    _check_finite(inputs, where)
    grid = working_grid(input_geometry, config.spacing_zyx)
    prepared = prepare_input(inputs, input_geometry, grid, plans, config_name)
    properties = {
        "configuration": config_name,
        "input_geometry": input_geometry.to_json(),
        "planned_geometry": grid.to_json(),
        "output_geometry": output_grid(input_geometry, config.spacing_zyx).to_json(),
        "crop_box_zyx": prepared.crop_box_zyx,
        "input_normalization": prepared.normalization,
        "export_normalization": target_export_parameters(plans.target_normalization, prepared.normalization),
    }
    return PreprocessedScan(prepared.input, prepared.foreground, properties)


def _preprocess_one(job: tuple[CaseFiles, dict, str, str]) -> str:
    case_files, plans_raw, config_name, out_dir = job
    inputs, target, mask, properties = preprocess_training_case(case_files, Plans(plans_raw), config_name)
    save_case(out_dir, case_files.case_id, inputs, properties, target, mask)
    return case_files.case_id


NEW_CASE = "not preprocessed yet"
OTHER_PLANS = "preprocessed with other plans"
NO_RECORD = "no record of the raw files it was made from (preprocessed by an older autosr)"


def why_redo(out_dir: Path, case_files: CaseFiles, expected_hash: str) -> str | None:
    """Why a training case must be preprocessed (again) into `out_dir`, or None when it is up to date:
    `NEW_CASE`, other plans, its raw files changed, no record of them, its arrays damaged."""
    case_id = case_files.case_id
    if not is_complete(out_dir, case_id):
        return NEW_CASE
    properties_path = case_paths(out_dir, case_id)["properties"]
    try:
        with open(properties_path, encoding="utf-8") as f:
            properties = json.load(f)
    except (OSError, ValueError, RecursionError):
        return f"its properties file {properties_path.name} cannot be read"
    if not isinstance(properties, dict) or properties.get("preprocessing_hash") != expected_hash:
        return OTHER_PLANS
    recorded = properties.get("source_files")
    changed = changed_source_files(recorded, case_source_files(case_files), dataset_folder_of(case_files))
    if changed is None:
        return NO_RECORD
    if changed:
        return f"its raw files changed since it was preprocessed ({', '.join(changed)})"
    problems = array_problems(out_dir, case_id)
    if problems:
        return f"its arrays are damaged: {problems[0]}"
    return None


def report_redone(identifier: str, reasons: dict[str, str | None]) -> None:
    """Say which cases are preprocessed again and why: one line per case for a changed or damaged case, one
    line in all for the cases of reasons shared by a whole dataset (new plans, an older autosr)."""
    shared: dict[str, list[str]] = {}
    for case_id, reason in reasons.items():
        if reason in (OTHER_PLANS, NO_RECORD):
            shared.setdefault(reason, []).append(case_id)
        elif reason not in (None, NEW_CASE):
            print(f"{identifier}/{case_id}: {reason}; preprocessing it again")
    for reason, case_ids in shared.items():
        print(f"{identifier}: {len(case_ids)} case(s) {reason}; preprocessing them again")


def preprocess_dataset(
    raw_dataset_dir: str | os.PathLike,
    preprocessed_dataset_dir: str | os.PathLike,
    plans: Plans,
    configurations: Sequence[str],
    num_processes: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Preprocess every training case for each configuration's data folder; returns {identifier: n done}.

    Cases already preprocessed with the same plans from the same raw files, with sound arrays, are skipped;
    the others are redone and named (`why_redo`); a killed run leaves only complete cases (properties JSON
    written last), so running again finishes the job.
    """
    raw_dataset_dir, preprocessed_dataset_dir = Path(raw_dataset_dir), Path(preprocessed_dataset_dir)
    spec = load_dataset_spec(raw_dataset_dir)
    cases = [c for c in discover_cases(raw_dataset_dir, spec, "Tr").values() if c.target is not None]
    done: dict[str, int] = {}
    seen_identifiers = set()
    for name in configurations:
        config = plans.configuration(name)
        if config.data_identifier in seen_identifiers:
            continue
        seen_identifiers.add(config.data_identifier)
        out_dir = preprocessed_dataset_dir / config.data_identifier
        ensure_writable_folder(out_dir, "AUTOSR_PREPROCESSED")
        expected = preprocessing_hash(plans, name)
        reasons = {c.case_id: why_redo(out_dir, c, expected) for c in cases}
        report_redone(config.data_identifier, reasons)
        todo = [c for c in cases if reasons[c.case_id] is not None]
        jobs = [(c, plans.raw, name, str(out_dir)) for c in todo]
        bar = dict(total=len(jobs), desc=f"preprocess {config.data_identifier}", unit="case", disable=not progress)
        if num_processes > 1 and len(jobs) > 1:
            with get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
                for _ in tqdm(pool.imap_unordered(_preprocess_one, jobs), **bar):
                    pass
        else:
            for job in tqdm(jobs, **bar):
                _preprocess_one(job)
        done[config.data_identifier] = len(jobs)
    return done
