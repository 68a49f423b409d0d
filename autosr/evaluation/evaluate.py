"""Score predictions against references: one case (`evaluate_case`), a list of cases (`score_cases`) or
two folders (`evaluate_folders`), with the optional no-learning baseline row, tissue agreement, user
segmentations and a picture per case. Writes `cases.csv` and `summary.json` (documentation/evaluation.md).
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

from autosr import __version__
from autosr.errors import AutosrError, DatasetProblems
from autosr.evaluation import metrics, tissue
from autosr.evaluation.baseline import baseline_predictions, fit_baselines, resampled_input
from autosr.evaluation.masks import CT_DATA_RANGE_HU, reference_data_range
from autosr.evaluation.normalization import (
    NORMALIZATIONS,
    default_normalization,
    describe_normalization,
    normalize_pair,
)
from autosr.evaluation.structure_evaluation import StructureCaseFiles, StructureOptions, evaluate_structures
from autosr.evaluation.summary import MODEL, json_safe, summarize_table, write_results
from autosr.io import (
    Geometry,
    file_ending_of,
    read_image,
    resample_to_geometry,
)
from autosr.preprocessing.foreground import target_foreground

PathLike = str | os.PathLike


@dataclass(frozen=True)
class EvaluationSettings:
    """How a pair is compared; recorded in every summary."""

    modality: str = "MR"
    normalization: str | None = None  # None: the modality's default
    data_range: tuple[float, float] | None = None  # fixed (lo, hi); for ct_clip the HU window
    resample: bool = False
    tissue: bool = True
    ms_ssim: bool = True
    backend: str = "auto"
    image_metrics: bool = True  # also score the whole image (IMAGE_METRICS with suffix _image)

    @property
    def normalization_name(self) -> str:
        name = self.normalization or default_normalization(self.modality)
        if name not in NORMALIZATIONS:
            raise AutosrError(f"unknown normalization '{name}'; choose one of {', '.join(NORMALIZATIONS)}")
        return name

    @property
    def ct_window(self) -> tuple[float, float]:
        return tuple(self.data_range) if self.data_range else CT_DATA_RANGE_HU

    def describe(self) -> dict[str, Any]:
        name = self.normalization_name
        if name == "ct_clip":
            lo, hi = self.ct_window
            data_range = {"rule": "fixed CT window, after the shift", "lo": 0.0, "hi": hi - lo, "window_hu": [lo, hi]}
        elif self.data_range:
            data_range = {"rule": "fixed (given)", "lo": self.data_range[0], "hi": self.data_range[1]}
        else:
            data_range = {"rule": "per case: the reference's 0.1th-99.9th percentiles inside the region"}
        return {
            "modality": self.modality,
            "normalization": name,
            "normalization_description": describe_normalization(name, self.ct_window if name == "ct_clip" else None),
            "data_range": data_range,
            "psnr_cap_db": metrics.PSNR_CAP_DB,
            "ssim": {
                "sigma": metrics.SSIM_SIGMA,
                "truncate": metrics.SSIM_TRUNCATE,
                "k1": metrics.SSIM_K1,
                "k2": metrics.SSIM_K2,
            },
            "resampled_predictions": self.resample,
            "image_region": "every reference voxel the prediction covers (metrics with suffix _image; "
            "mae_outside_mask: those outside the region)"
            if self.image_metrics
            else None,
        }


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


# --- folders -------------------------------------------------------------------------------------------


def images_in(folder: PathLike, suffix: str = "") -> dict[str, Path]:
    """{case: file} for the image files of `folder` named `<case><suffix><ending>`.

    Two files for one case (`case.mha` beside `case.nii.gz`) are an error naming both: picking one would
    score whichever sorts first, perhaps a stale export.
    """
    folder = Path(folder)
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    duplicates: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        ending = file_ending_of(p)
        if not ending:
            continue
        stem = p.name[: -len(ending)]
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if stem in found:
            duplicates.setdefault(stem, [found[stem]]).append(p)
        found.setdefault(stem, p)
    if duplicates:
        raise DatasetProblems(
            [
                f"case {case}: {folder} holds {len(files)} files for it ({', '.join(p.name for p in files)}); keep one "
                "(autosr cannot tell which one to use): move the others out of the folder"
                for case, files in sorted(duplicates.items())
            ],
            header="a case has more than one file",
        )
    return found


def _require_folder(folder: PathLike | None, what: str) -> Path | None:
    if folder is None:
        return None
    folder = Path(folder)
    if not folder.is_dir():
        raise AutosrError(f"the {what} folder {folder} does not exist")
    return folder


def _names(cases: list[str], limit: int = 8) -> str:
    shown = ", ".join(cases[:limit])
    return shown + (f", ... ({len(cases)} in all)" if len(cases) > limit else "") if cases else "none"


def evaluate_folders(
    ref_dir: PathLike,
    pred_dir: PathLike,
    mask_dir: PathLike | None = None,
    input_dir: PathLike | None = None,
    out_dir: PathLike | None = None,
    modality: str = "MR",
    normalization: str | None = None,
    data_range: tuple[float, float] | None = None,
    resample: bool = False,
    seg_ref_dir: PathLike | None = None,
    seg_pred_dir: PathLike | None = None,
    baseline_params: dict[str, Any] | None = None,
    num_processes: int = 1,
    pictures: bool = True,
    tissue_agreement: bool = True,
    ms_ssim: bool = True,
    backend: str = "auto",
    structures: StructureOptions | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every prediction `<case><ending>` in `pred_dir` against `ref_dir/<case><ending>`.

    Masks `mask_dir/<case><ending>`; inputs `input_dir/<case>_0000<ending>` (for the baseline row and the
    pictures); user label maps `seg_ref_dir` (the reference labels, e.g. manual) and `seg_pred_dir`
    `/<case><ending>`. Without `baseline_params` the baseline's linear map is fitted on the evaluated
    cases themselves (in-sample; said in the summary). Reference cases without a prediction are listed in
    the summary and the rest are still scored. Writes `cases.csv`, `summary.json` and `images/<case>.png`
    into `out_dir` when given.

    Structure agreement (`structure_evaluation.evaluate_structures`: `structures.csv`, Bland-Altman
    pictures, `structure_agreement` in the summary) runs with `structures` holding a segmenter, or with
    both label-map folders and an `out_dir`.
    """
    settings = EvaluationSettings(
        modality.upper(), normalization, data_range, resample, tissue_agreement, ms_ssim, backend
    )
    settings.normalization_name  # noqa: B018 - validates the name before any work
    ref_dir, pred_dir = _require_folder(ref_dir, "reference"), _require_folder(pred_dir, "prediction")
    mask_dir, input_dir = _require_folder(mask_dir, "mask"), _require_folder(input_dir, "input")
    seg_ref_dir, seg_pred_dir = (
        _require_folder(seg_ref_dir, "reference segmentation"),
        _require_folder(seg_pred_dir, "prediction segmentation"),
    )
    segmenter = structures.segmenter if structures is not None else None
    if segmenter is None and (seg_ref_dir is None) != (seg_pred_dir is None):
        raise AutosrError(
            "--reference-labels (--seg-ref) and --seg-pred go together without a segmenter: give both "
            "label-map folders, or --segmenter to segment what is missing"
        )
    if segmenter is not None and out_dir is None:
        raise AutosrError("structure agreement with a segmenter needs an output folder for the label maps")
    references, predictions = images_in(ref_dir), images_in(pred_dir)
    if not references:
        raise AutosrError(f"no reference images in {ref_dir} (expected <case><ending>, e.g. case_001.nii.gz)")
    cases = sorted(set(references) & set(predictions))
    missing = sorted(set(references) - set(predictions))
    unmatched = sorted(set(predictions) - set(references))
    if not cases:
        raise AutosrError(
            f"no matching files: the references in {ref_dir} ({_names(sorted(references))}) and the predictions in "
            f"{pred_dir} ({_names(sorted(predictions))}) share no case name; predictions must be named like "
            "the references (<case><ending>)"
        )
    problems = []
    masks = images_in(mask_dir) if mask_dir else {}
    inputs = images_in(input_dir, "_0000") if input_dir else {}
    seg_refs = images_in(seg_ref_dir) if seg_ref_dir else {}
    seg_preds = images_in(seg_pred_dir) if seg_pred_dir else {}
    for folder, found, what in (
        (mask_dir, masks, "mask <case><ending>"),
        (input_dir, inputs, "input <case>_0000<ending>"),
        (seg_ref_dir, seg_refs, "label map <case><ending>"),
        (seg_pred_dir, seg_preds, "label map <case><ending>"),
    ):
        if folder is not None and (lacking := [c for c in cases if c not in found]):
            problems.append(f"{folder}: no {what} for {_names(lacking)}")
    if problems:
        raise DatasetProblems(problems, header="files are missing")
    baseline_note = None
    if input_dir is not None and baseline_params is None:
        baseline_params = fit_baselines(
            ((inputs[c], references[c], masks.get(c)) for c in cases), modality=settings.modality, case_ids=cases
        )
        baseline_note = "fitted on the evaluated cases themselves (in-sample: slightly flatters the baseline)"
    elif baseline_params is not None:
        baseline_note = "given by the user (--baseline-params)"
    out = Path(out_dir) if out_dir is not None else None
    jobs = [
        CaseJob(
            case_id=c,
            reference=references[c],
            prediction=predictions[c],
            mask=masks.get(c),
            input_files=[inputs[c]] if c in inputs else None,
            seg_reference=seg_refs.get(c),
            seg_prediction=seg_preds.get(c),
            baseline_params=baseline_params if input_dir is not None else None,
            picture=(out / "images" / f"{c}.png") if (out is not None and pictures) else None,
        )
        for c in cases
    ]
    table = score_cases(jobs, settings, num_processes)
    summary = {
        "autosr_version": __version__,
        "reference_dir": str(ref_dir),
        "prediction_dir": str(pred_dir),
        "mask_dir": str(mask_dir) if mask_dir else None,
        "region": "the masks" if mask_dir else "each reference's foreground (see documentation/evaluation.md)",
        "input_dir": str(input_dir) if input_dir else None,
        **settings.describe(),
        "num_cases": len(cases),
        "cases_missing_prediction": missing,
        "predictions_without_reference": unmatched,
        "baseline": {**baseline_params, "note": baseline_note} if input_dir is not None else None,
        **summarize_table(table),
    }
    if out is not None and (segmenter is not None or (seg_ref_dir is not None and seg_pred_dir is not None)):
        structure_cases = [
            StructureCaseFiles(
                c, references[c], predictions[c], inputs.get(c), masks.get(c), seg_refs.get(c), seg_preds.get(c)
            )
            for c in cases
        ]
        _, summary["structure_agreement"] = evaluate_structures(
            structure_cases, structures or StructureOptions(), out, num_processes
        )
    if out is not None:
        write_results(table, summary, out)
    return table, json_safe(summary)
