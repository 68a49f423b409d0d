"""Raw case -> network-ready arrays on the planned grid, and the properties needed to go back.

Training case: every input channel is resampled into the target's physical space on the planned spacing
(`grid_covering(target_geometry, spacing)`), the target and mask onto the same grid; then all are cropped
to the box of non-zero input voxels and normalized. Inference case (no target): the input is resampled
onto the planned spacing over its own field of view (`grid_covering(input_geometry, spacing)`), cropped by
the same rule and normalized. Using one crop rule for both keeps what the network sees at training and at
prediction time alike.

Properties (JSON, one per case) hold the original input and target geometries, the planned grid, the
crop box, the normalization parameters of every channel and of the target, the output geometry
predictions are exported on, and a hash of the plan entries that shaped the arrays (so a re-run skips
cases preprocessed with the same plans and redoes the others).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from autosr.dataset.spec import CaseFiles, discover_cases, load_dataset_spec
from autosr.errors import AutosrError
from autosr.io import Geometry, grid_covering, read_channels, read_image, resample_to_geometry
from autosr.paths import ensure_writable_folder
from autosr.planning.fingerprint import foreground_of, nonzero_bbox
from autosr.planning.plans import Plans
from autosr.preprocessing.case_store import case_paths, is_complete, save_case
from autosr.preprocessing.normalization import normalize_image, target_export_parameters


def preprocessing_hash(plans: Plans, config_name: str) -> str:
    """Hash of everything that shapes preprocessed arrays: spacing, resampling orders, normalization."""
    config = plans.configuration(config_name)
    relevant = {
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


def _normalize_inputs(
    inputs: np.ndarray, plans: Plans, mask: np.ndarray | None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    normalized, params = [], []
    for channel, entry in zip(inputs, plans.input_normalization):
        n, p = normalize_image(channel, entry, mask)
        normalized.append(n)
        params.append(p)
    return np.stack(normalized).astype(np.float32), params


def preprocess_training_case(
    case_files: CaseFiles, plans: Plans, config_name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(input (C,Z,Y,X), target (1,Z,Y,X), mask uint8 (1,Z,Y,X), properties) of one training case."""
    config = plans.configuration(config_name)
    orders = config.resampling
    inputs, input_geometry = read_channels(case_files.channels)
    target, target_geometry = read_image(case_files.target)
    if case_files.mask is not None:
        mask_raw = (read_image(case_files.mask)[0] > 0).astype(np.float32)
    else:
        mask_raw = foreground_of(target, plans.target_modality).astype(np.float32)
    grid = grid_covering(target_geometry, config.spacing_zyx)
    inputs_grid = np.stack([_resample_clipped(c, input_geometry, grid, orders["input_order"]) for c in inputs])
    target_grid = _resample_clipped(target, target_geometry, grid, orders["target_order"])
    mask_grid = resample_to_geometry(mask_raw, target_geometry, grid, order=orders["mask_order"]) > 0.5
    box = nonzero_bbox(np.any(inputs_grid != 0, axis=0))
    inputs_c = _crop(inputs_grid, box)
    target_c = _crop(target_grid[None], box)
    mask_c = _crop(mask_grid[None], box)
    inputs_n, input_params = _normalize_inputs(inputs_c, plans, mask_c[0])
    target_n, target_params = normalize_image(target_c[0], plans.target_normalization, mask_c[0])
    properties = {
        "case_id": case_files.case_id,
        "configuration": config_name,
        "preprocessing_hash": preprocessing_hash(plans, config_name),
        "input_geometry": input_geometry.to_json(),
        "target_geometry": target_geometry.to_json(),
        "planned_geometry": grid.to_json(),
        "output_geometry": target_geometry.to_json(),
        "crop_box_zyx": box,
        "input_normalization": input_params,
        "target_normalization": target_params,
        "export_normalization": target_export_parameters(plans.target_normalization),
        "has_mask": case_files.mask is not None,
    }
    return inputs_n, target_n[None], mask_c.astype(np.uint8), properties


def preprocess_for_inference(
    channel_files: Sequence[str | os.PathLike], plans: Plans, config_name: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """(input (C,Z,Y,X) float32, properties) of a scan without a target, on the planned grid over its extent."""
    config = plans.configuration(config_name)
    if len(channel_files) != plans.num_input_channels:
        raise AutosrError(
            f"{channel_files[0] if channel_files else '?'}: {len(channel_files)} channel file(s) given, the model "
            f"was trained on {plans.num_input_channels} ({', '.join(plans.raw.get('input_channel_names', []))})"
        )
    inputs, input_geometry = read_channels(channel_files)
    if not np.all(np.isfinite(inputs)):
        raise AutosrError(f"{channel_files[0]}: contains NaN or Inf voxels; fix or replace the scan")
    grid = grid_covering(input_geometry, config.spacing_zyx)
    order = config.resampling["input_order"]
    inputs_grid = np.stack([_resample_clipped(c, input_geometry, grid, order) for c in inputs])
    box = nonzero_bbox(np.any(inputs_grid != 0, axis=0))
    inputs_c = _crop(inputs_grid, box)
    inputs_n, input_params = _normalize_inputs(inputs_c, plans, None)
    properties = {
        "configuration": config_name,
        "input_geometry": input_geometry.to_json(),
        "planned_geometry": grid.to_json(),
        "output_geometry": grid.to_json(),
        "crop_box_zyx": box,
        "input_normalization": input_params,
        "export_normalization": target_export_parameters(plans.target_normalization),
    }
    return inputs_n, properties


def _preprocess_one(job: tuple[CaseFiles, dict, str, str]) -> str:
    case_files, plans_raw, config_name, out_dir = job
    inputs, target, mask, properties = preprocess_training_case(case_files, Plans(plans_raw), config_name)
    save_case(out_dir, case_files.case_id, inputs, properties, target, mask)
    return case_files.case_id


def _up_to_date(out_dir: Path, case_id: str, expected_hash: str) -> bool:
    if not is_complete(out_dir, case_id):
        return False
    try:
        with open(case_paths(out_dir, case_id)["properties"], encoding="utf-8") as f:
            return json.load(f).get("preprocessing_hash") == expected_hash
    except (OSError, json.JSONDecodeError):
        return False


def preprocess_dataset(
    raw_dataset_dir: str | os.PathLike,
    preprocessed_dataset_dir: str | os.PathLike,
    plans: Plans,
    configurations: Sequence[str],
    num_processes: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Preprocess every training case for each configuration's data folder; returns {identifier: n done}.

    Cases already preprocessed with the same plans are skipped; a killed run leaves only complete cases
    (properties JSON written last), so running again finishes the job.
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
        todo = [c for c in cases if not _up_to_date(out_dir, c.case_id, expected)]
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
