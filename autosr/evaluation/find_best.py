"""Rank configurations and their ensembles by cross-validation, and say how to predict with the winner.

For every model folder `<Trainer>__<plans>__<configuration>` of a dataset, the folds' validation
predictions are scored together (`crossval.merge_crossval`). Every pair of models is also ensembled
(voxel-wise mean of their validation predictions, written to `$AUTOSR_RESULTS/<dataset>/ensembles/`)
and scored the same way. All candidates are compared on the cases every one of them has; the ranking
metric is stated (default SSIM, higher is better), ties broken by MAE (lower is better). `best.json`
holds the ranking, the baseline's numbers and the exact `autosr predict` (and `autosr ensemble`)
lines for the winner.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pandas as pd

from autosr.errors import AutosrError
from autosr.evaluation.crossval import (
    fold_baseline_params,
    merge_crossval,
    score_validation_predictions,
    validation_predictions,
)
from autosr.evaluation.structure_evaluation import SEGMENTATIONS_FOLDER, StructureOptions
from autosr.evaluation.summary import BASELINE, HIGHER_IS_BETTER, MODEL, SUMMARY_METRICS, best_baseline, json_safe
from autosr.formats.dataset_spec import load_dataset_spec
from autosr.formats.splits import read_splits
from autosr.inference.api import average_images
from autosr.io import atomic_write_json, write_image
from autosr.model_layout import CROSSVAL_FOLDER, ENSEMBLES_FOLDER, ModelFolder, model_folders
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER, AutosrPaths

TIE_DECIMALS = 6  # metric means equal to 6 decimals count as a tie (then MAE decides)


def find_model_folders(results_dataset_dir: Path) -> list[ModelFolder]:
    """Every model folder with at least one fold_k/validation/."""
    return [m for m in model_folders(results_dataset_dir) if any(m.path.glob("fold_*/validation"))]


def ensemble_validation(members: list[ModelFolder], out_dir: Path, num_folds: int, file_ending: str) -> dict[str, Path]:
    """Voxel-wise mean of the members' validation predictions for the cases all have; {case: file}."""
    per_member = [validation_predictions(m.path, num_folds) for m in members]
    common = sorted(set.intersection(*(set(p) for p in per_member)))
    written = {}
    for case in common:
        target = out_dir / f"{case}{file_ending}"
        mean, geometry = average_images([p[case] for p in per_member], case)
        write_image(mean, geometry, target)
        written[case] = target
    return written


def predict_lines(dataset_name: str, members: list[ModelFolder], folds: list[int]) -> tuple[list[str], str | None]:
    """The `autosr predict` line per member (and the `autosr ensemble` line for several)."""
    fold_text = " ".join(str(k) for k in folds)
    lines = []
    outputs = []
    for m in members:
        out = "OUTPUT_FOLDER" if len(members) == 1 else f"OUTPUT_FOLDER_{m.configuration}"
        outputs.append(out)
        line = f"autosr predict -i INPUT_FOLDER -o {out} -d {dataset_name} -c {m.configuration} -f {fold_text}"
        if m.trainer != DEFAULT_TRAINER:
            line += f" --trainer {m.trainer}"
        if m.plans_name != DEFAULT_PLANS_NAME:
            line += f" --plans {m.plans_name}"
        lines.append(line)
    ensemble = f"autosr ensemble -i {' '.join(outputs)} -o OUTPUT_FOLDER" if len(members) > 1 else None
    return lines, ensemble


def _ranking_key(metric: str):
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0

    def key(entry: dict[str, Any]) -> tuple[float, float, str]:
        return (round(sign * entry[metric], TIE_DECIMALS), entry["mae"], entry["name"])

    return key


def _means(table: pd.DataFrame, cases: list[str], method: str = MODEL) -> dict[str, float]:
    rows = table[(table["method"] == method) & (table["case"].isin(cases))]
    return {c: float(pd.to_numeric(rows[c], errors="coerce").mean()) for c in SUMMARY_METRICS if c in rows.columns}


def _baseline_entries(table: pd.DataFrame, cases: list[str]) -> dict[str, Any]:
    """`baseline_means` (per metric, the better no-learning baseline over `cases`) and which one it was."""
    combined, choice = best_baseline(table, cases)
    if not choice:
        return {"baseline_means": None}
    return {"baseline_means": _means(combined, cases, BASELINE), "baseline_choice": choice}


def find_best(
    dataset: str | int,
    paths: AutosrPaths,
    configurations: list[str] | None = None,
    trainers: list[str] | None = None,
    plans_name: str | None = None,
    metric: str = "ssim",
    ensembles: bool = True,
    num_processes: int = 1,
    pictures: bool = True,
    structures: StructureOptions | None = None,
    reference_labels_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score, rank and write `best.json` into `$AUTOSR_RESULTS/<dataset>/`; returns its contents.

    `structures` (a segmenter) and/or `reference_labels_dir` add the structure agreement to every
    candidate's cross-validation results (ranking stays by `metric`); target and input segmentations are
    shared in `$AUTOSR_RESULTS/<dataset>/segmentations/`.
    """
    if metric not in SUMMARY_METRICS:
        raise AutosrError(f"unknown metric '{metric}'; choose one of {', '.join(SUMMARY_METRICS)}")
    dataset_name = paths.dataset_name(dataset)
    raw_dir = paths.raw_dataset(dataset_name)
    preprocessed_dir = paths.preprocessed_dataset(dataset_name)
    results_dir = paths.results_dataset(dataset_name)
    spec = load_dataset_spec(raw_dir)
    models = find_model_folders(results_dir)
    available = ", ".join(m.name for m in models) or "none"
    if configurations:
        models = [m for m in models if m.configuration in configurations]
    if trainers:
        models = [m for m in models if m.trainer in trainers]
    if plans_name:
        models = [m for m in models if m.plans_name == plans_name]
    if not models:
        raise AutosrError(
            f"no trained model folders with validation predictions match in {results_dir} (found: {available}); "
            "train all folds first, or check -c/--trainers/-p"
        )
    splits = read_splits(preprocessed_dir)
    baseline_params = fold_baseline_params(raw_dir, spec, splits)
    candidates: list[dict[str, Any]] = []
    tables: dict[str, pd.DataFrame] = {}
    structure_kwargs = dict(
        structures=structures,
        reference_labels_dir=reference_labels_dir,
        segmentation_cache=results_dir / SEGMENTATIONS_FOLDER,
    )
    for m in models:
        table, summary = merge_crossval(
            m.path, raw_dir, preprocessed_dir, num_processes, pictures, baseline_params, **structure_kwargs
        )
        tables[m.name] = table
        candidates.append(
            {
                "name": m.name,
                "kind": "model",
                "members": [m],
                "folds": summary["folds"],
                "results": str(m.crossval_dir),
            }
        )
    if ensembles and len(models) > 1:
        for a, b in itertools.combinations(models, 2):
            name = f"ensemble__{a.name}--{b.name}"
            folder = results_dir / ENSEMBLES_FOLDER / name
            predictions = ensemble_validation([a, b], folder, len(splits), spec.file_ending)
            if not predictions:
                continue
            table, _ = score_validation_predictions(
                predictions,
                raw_dir,
                splits,
                folder / CROSSVAL_FOLDER,
                baseline_params,
                num_processes,
                pictures,
                description={"ensemble_of": [a.name, b.name], "predictions": str(folder)},
                **structure_kwargs,
            )
            tables[name] = table
            folds = sorted(set(candidates[models.index(a)]["folds"]) & set(candidates[models.index(b)]["folds"]))
            candidates.append(
                {
                    "name": name,
                    "kind": "ensemble",
                    "members": [a, b],
                    "folds": folds,
                    "results": str(folder / CROSSVAL_FOLDER),
                }
            )
    cases = sorted(set.intersection(*(set(t.loc[t["method"] == MODEL, "case"]) for t in tables.values())))
    if not cases:
        raise AutosrError("the configurations share no validated case; finish the folds of each before comparing")
    for c in candidates:
        c["means"] = _means(tables[c["name"]], cases)
    ranking = sorted(candidates, key=lambda c: _ranking_key(metric)({"name": c["name"], **c["means"]}))
    best = ranking[0]
    lines, ensemble_line = predict_lines(dataset_name, best["members"], best["folds"])
    first_table = tables[models[0].name]
    result = {
        "dataset": dataset_name,
        "metric": metric,
        "higher_is_better": metric in HIGHER_IS_BETTER,
        "tie_breaker": "mae (lower is better)",
        "cases_compared": cases,
        "best": best["name"],
        "predict_commands": lines,
        "ensemble_command": ensemble_line,
        "ranking": [
            {
                "name": c["name"],
                "kind": c["kind"],
                "members": [m.name for m in c["members"]],
                "folds": c["folds"],
                "results": c["results"],
                "means": c["means"],
            }
            for c in ranking
        ],
        **_baseline_entries(first_table, cases),
    }
    atomic_write_json(json_safe(result), results_dir / "best.json")
    return json_safe(result)
