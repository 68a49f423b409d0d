"""What a stress test writes: the per-scan table, the per-lesion table, stress.json's summary and pictures.

The summary's headline numbers (documentation/trust.md defines each):
`uncertainty_error_spearman`, `sparsification_ratio` (and the oracle's, the best possible),
`sparsification_error_ratio` (the area between the curve and the oracle's over a random ordering's) and
`interval_coverage` are means over the clean cases; `interval_coverage_perturbed` is the mean over the
perturbed scans with a known truth (acquisition changes and paired lesions); the AUROCs rank all scans with a
known truth for "error (MAE in the mask) above the worst clean scan's": `flag_auroc` by the yes/no flag,
`flag_score_auroc` by the flag's score, `input_shift_auroc` by the score over the network's input alone,
`expected_error_auroc` by the calibrated expected error.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autosr.evaluation.stress.scan_scores import expected_errors, voxel_scores
from autosr.evaluation.stress.trust_metrics import auroc, calibration_table, sparsification_curve
from autosr.inference.calibration import Calibration, fit_calibration
from autosr.io.atomic import atomic_path, atomic_write_json

KEPT_RANGE = (0.7, 1.3)  # a lesion counts as kept when its contrast ratio lies here (the acceptance)
REMOVED_BELOW = 0.3  # ... and as removed below this ratio


def _mean(values) -> float | None:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def case_calibrations(results) -> tuple[dict[str, Calibration], Calibration | None, bool]:
    """Leave-one-case-out calibrations from the clean scans, the one of all clean scans, and whether the
    per-case ones are in-sample (a single case)."""
    clean = {r.case: r.voxels.for_calibration() for r in results if r.variant.kind == "clean"}
    if not clean:
        return {}, None, True
    every = fit_calibration(list(clean.values()))
    if len(clean) == 1:
        return {case: every for case in clean}, every, True
    per_case = {}
    for case in clean:
        per_case[case] = fit_calibration([v for c, v in clean.items() if c != case])
    return per_case, every, False


def scan_rows(results, calibrations: dict[str, Calibration]) -> list[dict[str, Any]]:
    """One row per case x perturbation: voxel scores with the case's calibration, and the flag."""
    clean_mae = {r.case: float(r.voxels.error.mean()) for r in results if r.variant.kind == "clean"}
    rows = []
    for r in results:
        scores = voxel_scores(r.voxels, calibrations.get(r.case))
        rows.append(
            {
                "case": r.case,
                "perturbation": r.variant.name,
                "kind": r.variant.kind,
                **scores,
                "mae_ratio_to_clean": scores["mae"] / clean_mae[r.case] if clean_mae.get(r.case) else None,
                **r.qc,
            }
        )
    return rows


def failure_aurocs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """AUROCs of the per-scan scores for the scans worse than the worst clean one (scans with a truth)."""
    known = [r for r in rows if r["kind"] in ("clean", "acquisition", "lesion")]
    worst_clean = max(r["mae"] for r in known if r["kind"] == "clean")
    positive = [r["mae"] > worst_clean for r in known]
    out: dict[str, Any] = {"failure_threshold_mae": worst_clean, "failures": int(sum(positive)), "scans": len(known)}
    for name, column in (
        ("flag_auroc", "flag"),
        ("flag_score_auroc", "flag_score"),
        ("input_shift_auroc", "input_shift"),
        ("expected_error_auroc", "expected_error"),
        ("spread_auroc", "spread_mean"),
    ):
        scores = [r.get(column) for r in known]
        usable = all(s is not None for s in scores)
        out[name] = auroc([float(s) for s in scores], positive) if usable else None
    return out


def lesion_summary(lesion_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (paired or input-only, hypo/hyper, diameter): mean contrast ratio, Dice, spread ratio, and the
    share of lesions kept (ratio in KEPT_RANGE) and removed (ratio below REMOVED_BELOW)."""
    groups = defaultdict(list)
    for row in lesion_rows:
        groups[(row["paired"], row["kind"], row["diameter_mm"])].append(row)
    summary = []
    for (paired, kind, diameter), rows in sorted(groups.items()):
        ratios = [r["contrast_ratio"] for r in rows if r["contrast_ratio"] is not None]
        summary.append(
            {
                "lesion": "paired" if paired else "input_only",
                "kind": kind,
                "diameter_mm": diameter,
                "count": len(rows),
                "contrast_ratio": _mean(ratios),
                "dice": _mean(r["dice"] for r in rows),
                "spread_ratio": _mean(r["spread_ratio"] for r in rows),
                "kept_fraction": _mean(KEPT_RANGE[0] <= v <= KEPT_RANGE[1] for v in ratios),
                "removed_fraction": _mean(v < REMOVED_BELOW for v in ratios),
            }
        )
    return summary


def per_perturbation(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = pd.DataFrame(rows)
    columns = [
        c
        for c in ("mae", "mae_ratio_to_clean", "uncertainty_error_spearman", "interval_coverage", "expected_error")
        if c in table
    ]
    out = []
    for name, group in table.groupby("perturbation", sort=False):
        entry = {"perturbation": name, "kind": group["kind"].iloc[0]}
        entry.update({c: _mean(group[c]) for c in columns})
        entry["flag_rate"] = _mean(group["flag"]) if group["flag"].notna().all() else None
        entry["flag_score"] = _mean(group["flag_score"])
        entry["input_shift"] = _mean(group["input_shift"])
        out.append(entry)
    return out


def summarize(results, lesion_rows, split: str, predictor, opened) -> dict[str, Any]:
    """stress.json's content (plus `_calibration`: the clean cases' calibration, for the model folder)."""
    calibrations, calibration, in_sample = case_calibrations(results)
    rows = scan_rows(results, calibrations)
    clean = [r for r in rows if r["kind"] == "clean"]
    perturbed = [r for r in rows if r["kind"] in ("acquisition", "lesion")]
    pooled = [r for r in results if r.variant.kind == "clean"]
    spread = np.concatenate([r.voxels.spread for r in pooled])
    error = np.concatenate([r.voxels.error for r in pooled])
    expected = np.concatenate([expected_errors(r.voxels, calibrations[r.case]) for r in pooled])
    fractions, by_spread = sparsification_curve(spread, error)
    summary = {
        "cases": sorted({r["case"] for r in rows}),
        "split": "held-out (imagesTs)" if split == "Ts" else "training cases (imagesTr): optimistic",
        "model_dir": str(opened.model_dir),
        "folds": list(opened.folds),
        "members": predictor.num_members,
        "uncertainty_error_spearman": _mean(r["uncertainty_error_spearman"] for r in clean),
        "sparsification_ratio": _mean(r["sparsification_ratio"] for r in clean),
        "sparsification_error_ratio": _mean(r.get("sparsification_error_ratio") for r in clean),
        "spread_error_spearman": _mean(r["spread_error_spearman"] for r in clean),
        "spread_sparsification_ratio": _mean(r["spread_sparsification_ratio"] for r in clean),
        "spread_sparsification_error_ratio": _mean(r["spread_sparsification_error_ratio"] for r in clean),
        "oracle_sparsification_ratio": _mean(r["oracle_sparsification_ratio"] for r in clean),
        "interval_coverage": _mean(r.get("interval_coverage") for r in clean),
        "interval_coverage_perturbed": _mean(r.get("interval_coverage") for r in perturbed),
        "interval_half_width": _mean(r.get("interval_half_width") for r in clean),
        "nominal_coverage": calibration.nominal_coverage if calibration else None,
        "calibration_in_sample": in_sample,
        "clean_mae": _mean(r["mae"] for r in clean),
        **failure_aurocs(rows),
        "lesions": lesion_summary(lesion_rows),
        "calibration": calibration_table(expected, error),
        "spread_calibration": calibration_table(spread, error),
        "perturbations": per_perturbation(rows),
        "_rows": rows,
        "_calibration": calibration,
        "_sparsification": {
            "fractions": fractions.tolist(),
            "by_uncertainty": sparsification_curve(expected, error)[1].tolist(),
            "by_spread": by_spread.tolist(),
            "oracle": sparsification_curve(error, error)[1].tolist(),
            "random": float(error.mean()),
        },
    }
    return summary


def _write_table(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def write_outputs(
    out: Path, summary: dict[str, Any], results, lesion_rows, pictures: list[dict[str, Any]] | None
) -> None:
    """stress.csv, lesions.csv, pictures/ (unless `pictures` is None) and (last) stress.json."""
    rows = summary.pop("_rows")
    curves = summary.pop("_sparsification")
    _write_table(rows, out / "stress.csv")
    _write_table(lesion_rows, out / "lesions.csv")
    if pictures is not None:
        from autosr.evaluation.stress.pictures import save_stress_pictures

        summary["pictures"] = save_stress_pictures(out / "pictures", summary, curves, pictures)
    atomic_write_json(summary, out / "stress.json")
