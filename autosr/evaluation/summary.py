"""Summaries of a scored table: per-method statistics, the baseline row, the gain over it, and the files.

A table has one row per case and method (`model`, `baseline_linear`, `baseline_standardized`). The summary's
`baseline` entry is, per metric, the better of the baseline methods by their mean over the cases
(`baseline_choice` says which), so every gain is reported against the stronger no-learning map
(autosr.evaluation.baseline).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autosr.evaluation.baseline import BASELINE_METHODS
from autosr.io import atomic_path, atomic_write_json

SUMMARY_METRICS = (
    "mae",
    "mse",
    "nmse",
    "psnr",
    "ssim",
    "ssim_luminance",
    "ssim_contrast",
    "ssim_structure",
    "ms_ssim",
    "mae_image",
    "psnr_image",
    "ssim_image",
    "ms_ssim_image",
    "mae_outside_mask",
)
HIGHER_IS_BETTER = {
    "psnr", "ssim", "ssim_luminance", "ssim_contrast", "ssim_structure", "ms_ssim",
    "psnr_image", "ssim_image", "ms_ssim_image",
}  # fmt: skip
MODEL, BASELINE = "model", "baseline"


def higher_is_better(metric: str) -> bool:
    """Image similarity and Dice-like agreement grow with quality; errors and distances shrink."""
    return metric in HIGHER_IS_BETTER or metric.startswith(("tissue_dice", "seg_dice", "dice"))


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-inf) replaced by None, so allow_nan=False holds."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a table, in a fixed order: image metrics, then tissue and label Dice."""
    extra = sorted(c for c in table.columns if c.startswith(("tissue_", "seg_dice_")))
    return [c for c in SUMMARY_METRICS if c in table.columns] + extra


def _statistics(values: pd.Series) -> dict[str, Any]:
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=0)),
        "median": float(values.median()),
        "min": float(values.min()),
        "max": float(values.max()),
        "n": int(values.size),
    }


def best_baseline(table: pd.DataFrame, cases: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per metric, the baseline method with the better mean (over `cases`, default all): a table with one
    `baseline` row per case holding each metric from its chosen method, and {metric: chosen method}."""
    present = [m for m in BASELINE_METHODS if m in set(table["method"])]
    if not present:
        return table.iloc[0:0], {}
    rows = table[table["method"].isin(present)]
    if cases is not None:
        rows = rows[rows["case"].isin(cases)]
    choice: dict[str, str] = {}
    for column in metric_columns(table):
        means = {m: pd.to_numeric(rows.loc[rows["method"] == m, column], errors="coerce").mean() for m in present}
        means = {m: v for m, v in means.items() if np.isfinite(v)}
        if means:
            pick = max if higher_is_better(column) else min
            choice[column] = pick(means, key=means.get)
    by_method = {m: rows[rows["method"] == m].set_index("case") for m in present}
    case_ids = sorted(set.intersection(*(set(t.index) for t in by_method.values())))
    combined = pd.DataFrame({"case": case_ids, "method": BASELINE})
    for column, method in choice.items():
        combined[column] = by_method[method].loc[case_ids, column].to_numpy()
    return combined, choice


def summarize_table(table: pd.DataFrame) -> dict[str, Any]:
    """Per method: {metric: {mean, std, median, min, max, n}} over cases (missing values skipped); the
    `baseline` entry (the better baseline per metric, `baseline_choice`), and `gain_over_baseline`: model
    mean minus baseline mean over the cases both have."""
    summary: dict[str, Any] = {"metrics": {}}
    if table.empty:
        return summary
    columns = metric_columns(table)
    combined, choice = best_baseline(table)
    full = pd.concat([table, combined], ignore_index=True) if choice else table
    for method, group in full.groupby("method", sort=False):
        stats = {}
        for column in columns:
            values = pd.to_numeric(group[column], errors="coerce").dropna() if column in group else pd.Series()
            if not values.empty:
                stats[column] = _statistics(values)
        summary["metrics"][str(method)] = stats
    if choice:
        summary["baseline_choice"] = choice
    if MODEL in set(table["method"]) and choice:
        model = table[table["method"] == MODEL].set_index("case")
        baseline = combined.set_index("case")
        common = model.index.intersection(baseline.index)
        summary["gain_over_baseline"] = {
            "cases": int(len(common)),
            "against": "per metric, the better of the baselines (baseline_choice)",
            "model_minus_baseline": {
                c: float(pd.to_numeric(model.loc[common, c]).mean() - pd.to_numeric(baseline.loc[common, c]).mean())
                for c in choice
                if pd.to_numeric(model.loc[common, c], errors="coerce").notna().any()
            },
        }
    return summary


def write_results(table: pd.DataFrame, summary: dict[str, Any], out_dir: str | os.PathLike) -> None:
    """`cases.csv` (one row per case and method) and `summary.json` into `out_dir`, atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "cases.csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic_write_json(json_safe(summary), out_dir / "summary.json")
