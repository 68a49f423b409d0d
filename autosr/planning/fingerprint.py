"""The dataset fingerprint: what the planner needs to know about the data, measured once.

Per case: input and target spacings, shapes and physical extents, the shape after cropping to the input's
foreground box (on the target's working grid, exactly as preprocessing crops), the target's mean/std
inside the mask, the target's background level (median outside its foreground: what exported predictions
are set to outside the subject), and the correlation
of input channel 0 and target inside the mask (input resampled onto the target grid, linear). Pooled:
intensity statistics (p0.5, p99.5, mean, std, median) of every input channel and of the target, from up
to `SAMPLES_PER_CASE` voxels per case inside the mask (or the foreground when there is no mask).

A case whose input/target correlation falls far below the dataset's median is named in `warnings`: a
cheap alarm for a misregistered or swapped pair (the threshold is `CORRELATION_ALARM_DROP` below the
median). The misalignment itself is measured too: each pair is registered rigidly
(`autosr.registration.misalignment`), the per-case displacement is stored as `misalignment`, the median as
`median_misalignment_mm`, and cases beyond the threshold are named in `warnings` with the fix.

Each case also records the raw files it was measured from (`source_files`); `outdated_because` says why a
saved fingerprint no longer describes the dataset (other cases, or raw files replaced since).

Every per-axis quantity (spacings, shapes, extents) is in the canonical (world) axis order of
`autosr.io.orientation`, the order the networks see, whatever order the files store their axes in.
"""

from __future__ import annotations

import os
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from autosr.errors import AutosrError
from autosr.formats.dataset_spec import CaseFiles, DatasetSpec, discover_cases, load_dataset_spec
from autosr.formats.source_files import changed_source_files, record_source_files
from autosr.imaging.foreground import crop_box, input_foreground, target_foreground
from autosr.io import read_channels, read_image, resample_to_geometry
from autosr.io.orientation import to_world_axes, working_grid
from autosr.preprocessing.normalization import input_scheme_names
from autosr.preprocessing.preprocess import case_source_files, dataset_folder_of
from autosr.registration.misalignment import (
    MisalignmentEstimate,
    measure_pair_misalignment,
    median_misalignment_mm,
    misalignment_warnings,
)

SAMPLES_PER_CASE = 10_000
# A correlation this far below the dataset median flags a case (co-registered synthetic pairs sit within
# 0.1 of each other; a pair shifted by a quarter of the field of view drops by more than 0.3).
CORRELATION_ALARM_DROP = 0.3


def cropped_shape(inputs: np.ndarray, input_geometry, target_geometry, schemes: list[str]) -> list[int]:
    """Shape (canonical axes) of the input foreground's box, margin included, on the target's working grid
    at the target's own spacing: the planner's estimate of what preprocessing keeps of a case."""
    grid = working_grid(target_geometry, to_world_axes(target_geometry.spacing_zyx, target_geometry))
    on_grid = resample_to_geometry(inputs, input_geometry, grid, order=1)
    return [b - a for a, b in crop_box(input_foreground(on_grid, schemes), grid.spacing_zyx)]


def _case_fingerprint(args: tuple[CaseFiles, str, list[str], int]) -> dict[str, Any]:
    case, modality, schemes, seed = args
    source_files = record_source_files(case_source_files(case), dataset_folder_of(case))
    inputs, input_geometry = read_channels(case.channels)
    target, target_geometry = read_image(case.target)
    if case.mask is not None:
        mask = read_image(case.mask)[0] > 0
    else:
        mask = target_foreground(target, modality)
    inputs_on_target = resample_to_geometry(inputs, input_geometry, target_geometry, order=1)
    rng = np.random.default_rng(seed)
    inside = np.flatnonzero(mask)
    if inside.size == 0:
        raise AutosrError(
            f"case {case.case_id}: the mask (or target foreground) is empty; fix {case.mask or case.target}"
        )
    picked = rng.choice(inside, size=min(SAMPLES_PER_CASE, inside.size), replace=False)
    target_values = target.ravel()[picked]
    input_values = [c.ravel()[picked] for c in inputs_on_target]
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = float(np.corrcoef(input_values[0], target_values)[0, 1])
    target_inside = target[mask]
    outside = ~target_foreground(target, modality)
    misalignment = measure_pair_misalignment(case.channels[0], case.target, case.mask)
    return {
        "case_id": case.case_id,
        "input_spacing_zyx": to_world_axes(input_geometry.spacing_zyx, input_geometry),
        "input_shape_zyx": to_world_axes(input_geometry.size_zyx, input_geometry),
        "input_extent_mm_zyx": to_world_axes(input_geometry.physical_extent_zyx, input_geometry),
        "target_spacing_zyx": to_world_axes(target_geometry.spacing_zyx, target_geometry),
        "target_shape_zyx": to_world_axes(target_geometry.size_zyx, target_geometry),
        "target_extent_mm_zyx": to_world_axes(target_geometry.physical_extent_zyx, target_geometry),
        "cropped_shape_zyx": cropped_shape(inputs, input_geometry, target_geometry, schemes),
        "mask_voxels": int(inside.size),
        "target_mean_in_mask": float(target_inside.mean()),
        "target_std_in_mask": float(target_inside.std()),
        "target_background": float(np.median(target[outside])) if outside.any() else None,
        "input_target_correlation": correlation if np.isfinite(correlation) else None,
        "misalignment": misalignment.to_json(),
        "source_files": source_files,
        "_samples": {"inputs": input_values, "target": target_values},
    }


def outdated_because(fingerprint: Any, cases: dict[str, CaseFiles]) -> str | None:
    """Why a saved fingerprint does not describe these training cases (those with a target) any more, or None:
    cases added or removed, raw files changed since it was measured, or no record of them."""
    records = fingerprint.get("cases") if isinstance(fingerprint, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        return "it cannot be read"
    by_case = {r.get("case_id"): r for r in records}
    if sorted(by_case) != sorted(cases):
        return "the training cases changed"
    changed, unrecorded = [], []
    for case_id, case in cases.items():
        found = changed_source_files(
            by_case[case_id].get("source_files"), case_source_files(case), dataset_folder_of(case)
        )
        if found is None:
            unrecorded.append(case_id)
        changed.extend(found or [])
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        return f"raw files changed since it was measured ({shown})"
    if unrecorded:
        return "it holds no record of the raw files it was measured from (made by an older autosr)"
    return None


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def _statistics(values: np.ndarray) -> dict[str, float]:
    values = values.astype(np.float64)
    return {
        "p00_5": float(np.percentile(values, 0.5)),
        "p99_5": float(np.percentile(values, 99.5)),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def extract_fingerprint(raw_dataset_dir: str | os.PathLike, num_processes: int = 1, progress: bool = True) -> dict:
    """Measure the training cases of a raw dataset (assumed verified) and return the fingerprint dict."""
    raw_dataset_dir = Path(raw_dataset_dir)
    spec: DatasetSpec = load_dataset_spec(raw_dataset_dir)
    cases = [c for c in discover_cases(raw_dataset_dir, spec, "Tr").values() if c.target is not None]
    if not cases:
        raise AutosrError(f"{raw_dataset_dir}: no training cases with a target; run `autosr verify` first")
    schemes = input_scheme_names(spec)
    jobs = [(c, spec.target_modality, schemes, i) for i, c in enumerate(cases)]
    bar = dict(total=len(jobs), desc="fingerprint", unit="case", disable=not progress)
    if num_processes > 1:
        with get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
            records = list(tqdm(pool.imap(_case_fingerprint, jobs), **bar))
    else:
        records = [_case_fingerprint(j) for j in tqdm(jobs, **bar)]
    samples = [r.pop("_samples") for r in records]
    channel_stats = {
        str(i): _statistics(np.concatenate([s["inputs"][i] for s in samples])) for i in range(spec.num_channels)
    }
    target_stats = _statistics(np.concatenate([s["target"] for s in samples]))
    correlations = [r["input_target_correlation"] for r in records if r["input_target_correlation"] is not None]
    warnings = []
    if correlations:
        median_corr = float(np.median(correlations))
        for r in records:
            c = r["input_target_correlation"]
            if c is None or c < median_corr - CORRELATION_ALARM_DROP:
                warnings.append(
                    f"case {r['case_id']}: input/target correlation inside the mask is "
                    f"{'undefined' if c is None else f'{c:.2f}'} against a dataset median of {median_corr:.2f}; "
                    "check that input and target are co-registered and belong together"
                )
    estimates = {r["case_id"]: MisalignmentEstimate.from_json(r["misalignment"]) for r in records}
    spacings = {r["case_id"]: tuple(r["target_spacing_zyx"]) for r in records}
    warnings.extend(misalignment_warnings(estimates, spacings, raw_dataset_dir.name))
    return {
        "dataset_name": raw_dataset_dir.name,
        "num_training_cases": len(records),
        "num_input_channels": spec.num_channels,
        "target_modality": spec.target_modality,
        "cases": records,
        "intensity_statistics": {"input_channels": channel_stats, "target": target_stats},
        "median_target_mean_in_mask": float(np.median([r["target_mean_in_mask"] for r in records])),
        "median_target_std_in_mask": float(np.median([r["target_std_in_mask"] for r in records])),
        "median_target_background": _median_or_none([r["target_background"] for r in records]),
        "median_misalignment_mm": median_misalignment_mm(estimates),
        "warnings": warnings,
    }
