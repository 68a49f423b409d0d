"""Scoring one case (`evaluate_case`: the model row, the baseline rows, tissue agreement, user label maps, a
picture) and a list of cases in worker processes (`score_cases`, every user error reported together).

Both `evaluate_folders` (two folders) and cross-validation (the folds' validation predictions) build
`CaseJob`s and call `score_cases`; they differ only in how they find the files.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from autosr.errors import AutosrError, DatasetProblems
from autosr.evaluation import metrics, tissue
from autosr.evaluation.baseline import baseline_predictions, resampled_input
from autosr.evaluation.masks import reference_data_range
from autosr.evaluation.normalization import (
    normalize_pair,
)
from autosr.evaluation.settings import EvaluationSettings
from autosr.evaluation.summary import MODEL
from autosr.imaging.foreground import target_foreground
from autosr.io import (
    Geometry,
    read_image,
    resample_to_geometry,
)

PathLike = str | os.PathLike


@dataclass
class CaseJob:
    """The files of one case to score."""

    case_id: str
    reference: Path
    prediction: Path
    mask: Path | None = None
    input_files: list[Path] | None = None
    seg_reference: Path | None = None
    seg_prediction: Path | None = None
    baseline_params: dict[str, Any] | None = None
    picture: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _on_reference_grid(
    array: np.ndarray,
    geometry: Geometry,
    reference: Geometry,
    what: str,
    path: Path,
    case_id: str,
    resample: bool,
    order: int,
) -> np.ndarray:
    if geometry.same_grid(reference):
        return array
    if not resample:
        raise AutosrError(
            f"case {case_id}: the {what} {path} is on a different grid ({geometry.describe()}, origin "
            f"{tuple(round(v, 3) for v in geometry.origin_xyz)}) than the reference ({reference.describe()}, origin "
            f"{tuple(round(v, 3) for v in reference.origin_xyz)}); pass --resample to resample it onto the "
            "reference grid (voxels outside the prediction's field of view are then left out)"
        )
    return resample_to_geometry(array, geometry, reference, order=order)


# Metrics repeated over the whole image (every reference voxel the prediction covers) beside the region's:
# background and border problems show there, and MS-SSIM's coarse scales see beyond any mask anyway.
IMAGE_METRICS = ("mae", "psnr", "ssim", "ms_ssim")


def _score(
    prediction: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    settings: EvaluationSettings,
    case_id: str,
    image_region: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, tuple[float, float]]:
    name = settings.normalization_name
    window = settings.ct_window if name == "ct_clip" else None
    pred_n, ref_n = normalize_pair(prediction, reference, mask, name, window)
    if name == "ct_clip":
        lo, hi = 0.0, window[1] - window[0]
    elif settings.data_range:
        lo, hi = settings.data_range
    else:
        lo, hi = reference_data_range(ref_n, mask)
    if not hi > lo:
        raise AutosrError(
            f"case {case_id}: the reference is constant inside the region (data range [{lo:g}, {hi:g}]); "
            "check the reference and mask, or pass --data-range LO HI"
        )
    backend = _backend(settings)
    row: dict[str, Any] = metrics.image_metrics(pred_n, ref_n, mask, hi - lo, settings.ms_ssim, backend)
    row.update(data_range_lo=float(lo), data_range_hi=float(hi), num_voxels=int(mask.sum()))
    if image_region is not None and settings.image_metrics:
        whole = metrics.image_metrics(pred_n, ref_n, image_region, hi - lo, settings.ms_ssim, backend)
        row.update({f"{k}_image": whole[k] for k in IMAGE_METRICS if k in whole})
        outside = image_region & ~mask
        row["mae_outside_mask"] = metrics.mae(pred_n, ref_n, outside) if outside.any() else float("nan")
    if settings.tissue:
        if settings.modality.upper() == "CT":
            row.update(tissue.tissue_agreement(prediction, reference, mask, "CT"))
        else:
            row.update(tissue.tissue_agreement(pred_n, ref_n, mask, "MR"))
    return row, pred_n, ref_n, (lo, hi)


def _backend(settings: EvaluationSettings) -> str:
    return metrics.resolve_backend(settings.backend)


def evaluate_case(job: CaseJob, settings: EvaluationSettings) -> list[dict[str, Any]]:
    """Rows for one case: the model's, and the baseline's when `job` has inputs and baseline params."""
    reference, ref_geometry = read_image(job.reference)
    prediction, pred_geometry = read_image(job.prediction)
    # reference voxels outside the prediction's field of view (a new scan's grid may cover less than its
    # target's) are left out of every score, the baseline's too, rather than scored against zeros
    covered = None
    if not pred_geometry.same_grid(ref_geometry) and settings.resample:
        covered = resample_to_geometry(np.ones(pred_geometry.size_zyx, np.float32), pred_geometry, ref_geometry, 0) > 0
    prediction = _on_reference_grid(
        prediction, pred_geometry, ref_geometry, "prediction", job.prediction, job.case_id, settings.resample, 3
    )
    if job.mask is not None:
        mask_array, mask_geometry = read_image(job.mask)
        mask_array = _on_reference_grid(
            mask_array, mask_geometry, ref_geometry, "mask", job.mask, job.case_id, settings.resample, 0
        )
        mask = mask_array > 0
        if not mask.any():
            raise AutosrError(
                f"case {job.case_id}: the mask {job.mask} is empty (no non-zero voxel); fix the mask or leave "
                "--mask-dir out to score inside the reference's foreground"
            )
    else:
        mask = target_foreground(reference, settings.modality)
        if not mask.any():
            raise AutosrError(f"case {job.case_id}: the reference {job.reference} has no foreground; pass a mask")
    if covered is not None:
        mask = mask & covered
        if not mask.any():
            raise AutosrError(
                f"case {job.case_id}: the prediction {job.prediction} does not overlap its reference's mask"
            )
    base = {"case": job.case_id, **job.extra}
    image_region = covered if covered is not None else np.ones(reference.shape, dtype=bool)
    row, pred_n, ref_n, window = _score(prediction, reference, mask, settings, job.case_id, image_region)
    if job.seg_reference is not None and job.seg_prediction is not None:
        seg_ref, seg_ref_geometry = read_image(job.seg_reference)
        seg_ref = _on_reference_grid(
            seg_ref,
            seg_ref_geometry,
            ref_geometry,
            "reference segmentation",
            job.seg_reference,
            job.case_id,
            settings.resample,
            0,
        )
        seg_pred, seg_pred_geometry = read_image(job.seg_prediction)
        seg_pred = _on_reference_grid(
            seg_pred,
            seg_pred_geometry,
            ref_geometry,
            "prediction segmentation",
            job.seg_prediction,
            job.case_id,
            settings.resample,
            0,
        )
        row.update(tissue.label_agreement(seg_ref, seg_pred))
    rows = [{**base, "method": MODEL, **row}]
    input_image, input_label, shown_in_scale = None, "input", False
    if job.input_files:
        params = job.baseline_params
        input_image = resampled_input(job.input_files, ref_geometry, int(params.get("order", 3)) if params else 1)
        if params is not None:
            best_ssim = -np.inf
            for method, guess in baseline_predictions(input_image, params).items():
                baseline_row, guess_n, _, _ = _score(guess, reference, mask, settings, job.case_id, image_region)
                rows.append({**base, "method": method, **baseline_row})
                if baseline_row["ssim"] > best_ssim:  # the picture shows the input as the better baseline maps it
                    best_ssim, input_image, input_label, shown_in_scale = baseline_row["ssim"], guess_n, method, True
    if job.picture is not None:
        from autosr.evaluation.pictures import save_case_picture

        save_case_picture(
            job.picture, pred_n, ref_n, mask, window, input_image, title=job.case_id, input_label=input_label,
            input_in_target_scale=shown_in_scale,
        )  # fmt: skip
    return rows


def _evaluate_case_safely(job: CaseJob, settings: EvaluationSettings) -> tuple[list[dict[str, Any]], str | None]:
    try:
        return evaluate_case(job, settings), None
    except AutosrError as e:
        message = str(e)
        return [], message if message.startswith(f"case {job.case_id}") else f"case {job.case_id}: {message}"


def score_cases(jobs: list[CaseJob], settings: EvaluationSettings, num_processes: int = 1) -> pd.DataFrame:
    """Score every job (in `num_processes` worker processes); all user errors are reported together."""
    settings = replace(settings, backend=metrics.resolve_backend(settings.backend))  # once, not per worker
    results: list[tuple[list[dict[str, Any]], str | None]] = []
    progress = dict(total=len(jobs), desc="evaluating", unit="case", disable=len(jobs) < 2)
    if num_processes > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_evaluate_case_safely, job, settings) for job in jobs]
            results = [f.result() for f in tqdm(futures, **progress)]
    else:
        results = [_evaluate_case_safely(job, settings) for job in tqdm(jobs, **progress)]
    problems = [error for _, error in results if error]
    if problems:
        raise DatasetProblems(problems, header="some cases cannot be scored")
    return pd.DataFrame([row for rows, _ in results for row in rows])
