"""Score two folders (`evaluate_folders`, what `autosr evaluate` runs): match references, predictions,
masks, inputs and label maps by case, fit the no-learning baseline when inputs are given, score every case
(`case_scoring.score_cases`), add structure agreement when asked, and write `cases.csv` and `summary.json`
(documentation/evaluation.md). Settings live in settings.py, case scoring in case_scoring.py, file
matching in folder_matching.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from autosr import __version__
from autosr.errors import AutosrError, DatasetProblems
from autosr.evaluation.baseline import fit_baselines
from autosr.evaluation.case_scoring import CaseJob, score_cases
from autosr.evaluation.folder_matching import images_in, names, refuse_self_comparison, require_folder
from autosr.evaluation.settings import EvaluationSettings
from autosr.evaluation.structure_evaluation import StructureCaseFiles, StructureOptions, evaluate_structures
from autosr.evaluation.summary import json_safe, summarize_table, write_results

PathLike = str | os.PathLike


def evaluate_folders(
    ref_dir: PathLike,
    pred_dir: PathLike,
    mask_dir: PathLike | None = None,
    input_dir: PathLike | None = None,
    out_dir: PathLike | None = None,
    settings: EvaluationSettings | None = None,
    seg_ref_dir: PathLike | None = None,
    seg_pred_dir: PathLike | None = None,
    baseline_params: dict[str, Any] | None = None,
    num_processes: int = 1,
    pictures: bool = True,
    structures: StructureOptions | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every prediction `<case><ending>` in `pred_dir` against `ref_dir/<case><ending>`, as `settings`
    say (`EvaluationSettings`: modality, normalization, data range, resampling, which metrics; default
    `EvaluationSettings()`).

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
    settings = settings or EvaluationSettings()
    ref_dir, pred_dir = require_folder(ref_dir, "reference"), require_folder(pred_dir, "prediction")
    mask_dir, input_dir = require_folder(mask_dir, "mask"), require_folder(input_dir, "input")
    seg_ref_dir, seg_pred_dir = (
        require_folder(seg_ref_dir, "reference segmentation"),
        require_folder(seg_pred_dir, "prediction segmentation"),
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
            f"no matching files: the references in {ref_dir} ({names(sorted(references))}) and the predictions in "
            f"{pred_dir} ({names(sorted(predictions))}) share no case name; predictions must be named like "
            "the references (<case><ending>)"
        )
    refuse_self_comparison(ref_dir, pred_dir, references, predictions, cases)
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
            problems.append(f"{folder}: no {what} for {names(lacking)}")
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
