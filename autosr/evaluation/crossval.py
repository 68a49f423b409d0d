"""Cross-validation results of one configuration: the 5 folds' validation predictions scored together.

Each fold k predicted its held-out cases into `<model_dir>/fold_k/validation/<case><ending>` (what
`autosr predict` writes: target units, the planned grid over the input's field of view; scored on the
target grid). The references are the raw dataset's `targetsTr/`, the regions its `masksTr/`. The
baseline rows of a case use the baselines fitted on *that fold's training cases* (from `splits.json`),
so the baseline is as out-of-sample as the model. Output: `<model_dir>/crossval_results/` with
`cases.csv` (a `fold` column added), `summary.json` and `images/`; with structure options (a segmenter
and/or reference label maps) also `structures.csv` and `bland_altman/` (`structure_evaluation.py`), the
segmentations of targets and inputs kept in `$AUTOSR_RESULTS/<dataset>/segmentations/` for every model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from autosr import __version__
from autosr.errors import AutosrError
from autosr.evaluation.baseline import CaseBaselineStatistics, baseline_statistics, params_from_statistics
from autosr.evaluation.case_scoring import CaseJob, score_cases
from autosr.evaluation.folder_matching import images_in
from autosr.evaluation.settings import EvaluationSettings
from autosr.evaluation.structure_evaluation import StructureCaseFiles, StructureOptions, evaluate_structures
from autosr.evaluation.summary import json_safe, summarize_table, write_results
from autosr.formats.dataset_spec import DatasetSpec, discover_cases, load_dataset_spec
from autosr.formats.splits import read_splits
from autosr.model_layout import ModelFolder
from autosr.preprocessing.normalization import input_scheme_names

PathLike = str | os.PathLike


def fold_of_case(splits: list[dict[str, list[str]]]) -> dict[str, int]:
    return {case: k for k, split in enumerate(splits) for case in split["val"]}


def fold_baseline_params(
    raw_dataset_dir: PathLike, spec: DatasetSpec, splits: list[dict[str, list[str]]], num_folds: int | None = None
) -> dict[int, dict[str, Any]]:
    """{fold: baseline params fitted on that fold's training cases}; each case is read once."""
    cases = discover_cases(raw_dataset_dir, spec, "Tr")
    needed = sorted({c for split in splits for c in split["train"]})
    scheme = input_scheme_names(spec)[0]
    statistics: dict[str, CaseBaselineStatistics] = {}
    for case in needed:
        files = cases.get(case)
        if files is None or files.target is None or files.channels[0] is None:
            raise AutosrError(f"case {case} of splits.json has no input or target in {raw_dataset_dir}")
        statistics[case] = baseline_statistics(
            files.channels[0], files.target, files.mask, modality=spec.target_modality, input_scheme=scheme
        )
    params = {}
    for k, split in enumerate(splits[:num_folds] if num_folds else splits):
        params[k] = params_from_statistics([statistics[c] for c in split["train"]], split["train"], input_scheme=scheme)
    return params


def score_validation_predictions(
    predictions: dict[str, Path],
    raw_dataset_dir: PathLike,
    splits: list[dict[str, list[str]]],
    out_dir: PathLike,
    baseline_params: dict[int, dict[str, Any]] | None = None,
    num_processes: int = 1,
    pictures: bool = True,
    description: dict[str, Any] | None = None,
    precomputed: pd.DataFrame | None = None,
    structures: StructureOptions | None = None,
    reference_labels_dir: PathLike | None = None,
    segmentation_cache: PathLike | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score {case: prediction file} against the raw training targets; the baseline per the case's fold.

    `precomputed`: rows already scored (e.g. by each fold's end-of-training validation) for some of the
    cases; those cases are not scored again. `structures` (with a segmenter) and/or
    `reference_labels_dir` (label maps `<case><ending>`) add the structure agreement;
    `segmentation_cache` keeps the target and input segmentations (default: inside `out_dir`).
    """
    if reference_labels_dir is not None and (structures is None or structures.segmenter is None):
        raise AutosrError("--reference-labels needs --segmenter: the validation predictions must be segmented")
    raw_dataset_dir = Path(raw_dataset_dir)
    spec = load_dataset_spec(raw_dataset_dir)
    cases = discover_cases(raw_dataset_dir, spec, "Tr")
    folds = fold_of_case(splits)
    expected = sorted(folds)
    scored = [c for c in expected if c in predictions]
    if not scored:
        raise AutosrError(
            f"no validation predictions found for the cases of splits.json ({len(expected)} cases); "
            "train the folds (their validation runs at the end of training) first"
        )
    if baseline_params is None:
        baseline_params = fold_baseline_params(raw_dataset_dir, spec, splits)
    out_dir = Path(out_dir)
    done = set(precomputed["case"]) if precomputed is not None and len(precomputed) else set()
    jobs = []
    for case in (c for c in scored if c not in done):
        files = cases.get(case)
        if files is None or files.target is None:
            raise AutosrError(f"case {case}: no target in {raw_dataset_dir / 'targetsTr'}")
        jobs.append(
            CaseJob(
                case_id=case,
                reference=files.target,
                prediction=predictions[case],
                mask=files.mask,
                input_files=[files.channels[0]] if files.channels[0] is not None else None,
                baseline_params=baseline_params.get(folds[case]),
                picture=out_dir / "images" / f"{case}.png" if pictures else None,
                extra={"fold": folds[case]},
            )
        )
    # predictions lie on the planned grid over each input's field of view, as `autosr predict` writes them
    settings = EvaluationSettings(modality="CT" if spec.target_modality.upper() == "CT" else "MR", resample=True)
    table = score_cases(jobs, settings, num_processes) if jobs else None
    if done:
        kept = precomputed[precomputed["case"].isin(scored)]
        table = kept if table is None else pd.concat([kept, table], ignore_index=True)
        table = table.sort_values(["case", "method"], kind="stable").reset_index(drop=True)
    summary = {
        "autosr_version": __version__,
        **(description or {}),
        "raw_dataset": str(raw_dataset_dir),
        "region": "masksTr" if any(cases[c].mask for c in scored) else "each reference's foreground",
        **settings.describe(),
        "num_cases": len(scored),
        "cases_missing_prediction": [c for c in expected if c not in predictions],
        "baseline": {
            "note": "per fold: both no-learning baselines fitted on that fold's training cases",
            "per_fold": {
                str(k): {key: v for key, v in p.items() if key != "fitted_on"} for k, p in baseline_params.items()
            },
        },
        **summarize_table(table),
    }
    if (structures is not None and structures.segmenter is not None) or reference_labels_dir is not None:
        summary["structure_agreement"] = _structure_agreement(
            scored, cases, predictions, folds, structures, reference_labels_dir, out_dir, num_processes,
            segmentation_cache,
        )  # fmt: skip
    write_results(table, summary, out_dir)
    return table, json_safe(summary)


def _structure_agreement(
    scored: list[str],
    cases: dict[str, Any],
    predictions: dict[str, Path],
    folds: dict[str, int],
    structures: StructureOptions | None,
    reference_labels_dir: PathLike | None,
    out_dir: Path,
    num_processes: int,
    segmentation_cache: PathLike | None,
) -> dict[str, Any]:
    labels = {}
    if reference_labels_dir is not None:
        labels = images_in(reference_labels_dir)
        lacking = [c for c in scored if c not in labels]
        if not Path(reference_labels_dir).is_dir() or lacking:
            raise AutosrError(
                f"{reference_labels_dir}: no reference label map <case><ending> for "
                f"{', '.join(lacking[:8]) or 'any case'}{' ...' if len(lacking) > 8 else ''}"
            )
    files = [
        StructureCaseFiles(
            case,
            cases[case].target,
            predictions[case],
            cases[case].channels[0],
            cases[case].mask,
            labels.get(case),
            extra={"fold": folds[case]},
        )
        for case in scored
    ]
    _, summary = evaluate_structures(
        files, structures or StructureOptions(), out_dir, num_processes, segmentation_cache
    )
    return summary


def validation_predictions(model_dir: PathLike, num_folds: int) -> dict[str, Path]:
    """{case: file} over `fold_k/validation/` of k = 0..num_folds-1 (folders that exist)."""
    found: dict[str, Path] = {}
    model = ModelFolder.at(model_dir)
    for k in range(num_folds):
        found.update(images_in(model.fold(k).validation_dir))
    return found


def merge_crossval(
    model_dir: PathLike,
    raw_dataset_dir: PathLike,
    preprocessed_dataset_dir: PathLike,
    num_processes: int = 1,
    pictures: bool = True,
    baseline_params: dict[int, dict[str, Any]] | None = None,
    structures: StructureOptions | None = None,
    reference_labels_dir: PathLike | None = None,
    segmentation_cache: PathLike | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Merge and score the folds of one model folder into `<model_dir>/crossval_results/` (structure
    agreement options as in `score_validation_predictions`)."""
    model = ModelFolder.at(model_dir)
    splits = read_splits(preprocessed_dataset_dir)
    predictions = validation_predictions(model.path, len(splits))
    folds_present = model.folds_with_validation(len(splits))
    if not predictions:
        raise AutosrError(f"{model.path}: no fold_k/validation/ predictions; train the folds first")
    precomputed = _fold_tables(model, folds_present, model.crossval_dir / "images" if pictures else None)
    return score_validation_predictions(
        predictions,
        raw_dataset_dir,
        splits,
        model.crossval_dir,
        baseline_params,
        num_processes,
        pictures,
        description={"model_dir": str(model.path), "folds": folds_present},
        precomputed=precomputed,
        structures=structures,
        reference_labels_dir=reference_labels_dir,
        segmentation_cache=segmentation_cache,
    )


def _fold_tables(model: ModelFolder, folds: list[int], pictures_dir: Path | None) -> pd.DataFrame | None:
    """Rows the folds' own validation already scored, where still current (newer than every prediction of
    that fold, and for the same cases); their pictures are copied next to the merged table."""
    import shutil

    tables = []
    for k in folds:
        folder = model.fold(k).validation_dir
        csv = folder / "cases.csv"
        predictions = images_in(folder)
        if not csv.is_file() or not predictions:
            continue
        table = pd.read_csv(csv)
        newest = max(p.stat().st_mtime for p in predictions.values())
        if set(table["case"].astype(str)) != set(predictions) or csv.stat().st_mtime < newest:
            continue
        table["case"] = table["case"].astype(str)
        tables.append(table)
        if pictures_dir is not None:
            pictures_dir.mkdir(parents=True, exist_ok=True)
            for png in (folder / "images").glob("*.png"):
                shutil.copyfile(png, pictures_dir / png.name)
    return pd.concat(tables, ignore_index=True) if tables else None
