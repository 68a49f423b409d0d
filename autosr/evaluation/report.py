"""`autosr report DATASET`: one self-contained HTML page of a dataset's results, readable offline.

It reads what the other stages wrote and computes nothing: `best.json` (ranking and predict lines), each
model's and ensemble's `crossval_results/` (summary table, baseline vs model, per-case table, per-case
pictures, worst case first), the training curves `fold_k/progress.png`, and any `autosr evaluate` output
folders given (e.g. a held-out test set's). Pictures are embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

import pandas as pd

from autosr.evaluation.baseline import BASELINE_METHODS
from autosr.evaluation.prediction_report import GENERATOR_META, REPORT_OUTPUT, prediction_section
from autosr.evaluation.stress.report_section import stress_section_html
from autosr.evaluation.summary import BASELINE, MODEL, SUMMARY_METRICS
from autosr.evaluation.viewer import evaluated_case_volumes, page_head, viewer_section
from autosr.io import atomic_path, read_json
from autosr.io.outputs import check_output_file
from autosr.model_layout import CROSSVAL_FOLDER, ENSEMBLES_FOLDER, model_folders
from autosr.paths import AutosrPaths

STYLE = """
body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}
img{max-width:100%}code{background:#f4f4f4;padding:2px 4px}.gain{color:#070}.loss{color:#a00}
"""
DEFAULT_MAX_PICTURES = 6  # per model: the worst cases by SSIM, which are the ones worth looking at


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _summary_table(summary: dict[str, Any]) -> str:
    stats = summary.get("metrics", {})
    methods = [m for m in (MODEL, BASELINE, *BASELINE_METHODS) if m in stats]
    gain = summary.get("gain_over_baseline", {}).get("model_minus_baseline", {})
    head = "".join(f"<th>{m} mean &plusmn; std</th>" for m in methods) + ("<th>model - baseline</th>" if gain else "")
    rows = []
    metrics = [m for m in SUMMARY_METRICS if any(m in stats[x] for x in methods)]
    metrics += sorted({k for x in methods for k in stats[x] if k.startswith(("tissue_dice", "seg_dice"))})
    for metric in metrics:
        cells = "".join(
            f"<td>{_fmt(stats[m][metric]['mean'])} &plusmn; {_fmt(stats[m][metric]['std'])}</td>"
            if metric in stats[m]
            else "<td>-</td>"
            for m in methods
        )
        if gain:
            cells += f"<td>{_fmt(gain.get(metric))}</td>"
        rows.append(f"<tr><td>{metric}</td>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _structure_section(summary: dict[str, Any], results: Path) -> str:
    """Per-structure agreement and Bland-Altman plots, when a segmenter or label maps were used."""
    from autosr.evaluation.structure_report import structure_section_html

    return structure_section_html(summary, results)


def _section(title: str, folder: Path, model_dir: Path | None, max_pictures: int, report: Path | None = None) -> str:
    results = folder / CROSSVAL_FOLDER if (folder / CROSSVAL_FOLDER).is_dir() else folder
    parts = [f"<h2>{html.escape(title)}</h2>"]
    if not (results / "summary.json").is_file():
        return parts[0] + "<p>No cross-validation results yet: run <code>autosr find-best DATASET</code>.</p>"
    summary = read_json(results / "summary.json")
    parts.append(
        f"<p>{summary.get('num_cases')} cases; normalization: {html.escape(str(summary.get('normalization_description')))}; "
        f"data range: {html.escape(str(summary.get('data_range', {}).get('rule')))}</p>"
    )
    if summary.get("cases_missing_prediction"):
        parts.append(f"<p>Missing predictions: {html.escape(', '.join(summary['cases_missing_prediction']))}</p>")
    parts.append(_summary_table(summary))
    parts.append(_structure_section(summary, results))
    if model_dir is not None:
        curves = sorted(model_dir.glob("fold_*/progress.png"))
        if curves:
            parts.append(
                "<h3>Training curves</h3>" + "".join(f"<p>{c.parent.name}</p>{_img(c, c.parent.name)}" for c in curves)
            )
    table_path = results / "cases.csv"
    if table_path.is_file():
        table = pd.read_csv(table_path)
        columns = (
            "case",
            "fold",
            "method",
            "ssim",
            "psnr",
            "mae",
            "ms_ssim",
            "ssim_image",
            "ms_ssim_image",
            "mae_outside_mask",
        )
        shown = [c for c in columns if c in table.columns]
        parts.append(
            "<details><summary>Per-case table</summary>"
            + table[shown].to_html(index=False, float_format=lambda v: f"{v:.4f}")
            + "</details>"
        )
        model_rows = table[table["method"] == MODEL].sort_values("ssim") if "ssim" in table.columns else table
        pictures = [results / "images" / f"{c}.png" for c in model_rows["case"].astype(str)]
        pictures = [p for p in pictures if p.is_file()][:max_pictures]
        if pictures:
            parts.append(
                f"<h3>Worst {len(pictures)} cases by SSIM</h3>"
                + "".join(f"<p>{p.stem}</p>{_img(p, p.stem)}" for p in pictures)
            )
        if report is not None and not model_rows.empty:  # the worst case, interactive (evaluation/viewer.py)
            worst = str(model_rows["case"].iloc[0])
            volumes = evaluated_case_volumes(summary, worst)
            if "prediction" in volumes:
                parts.append(viewer_section(report, f"{title}-{worst}", volumes, f"Worst case {worst}, interactive"))
    return "\n".join(parts)


def write_report(
    dataset: str | int,
    paths: AutosrPaths,
    output: str | os.PathLike | None = None,
    max_pictures: int = DEFAULT_MAX_PICTURES,
    evaluations: dict[str, str | os.PathLike] | None = None,
    predictions: dict[str, str | os.PathLike] | None = None,
    overwrite: bool = False,
    stress_tests: dict[str, str | os.PathLike] | None = None,
) -> Path:
    """Write the HTML report (default `$AUTOSR_RESULTS/<dataset>/report.html`) and return its path. An existing
    `output` is replaced when it is an autosr report, otherwise only with `overwrite` (autosr.io.outputs).

    `evaluations`: {title: folder written by `autosr evaluate`} shown first, e.g. a held-out test set.
    `predictions`: {title: folder written by `autosr predict`}: its quality flags (prediction_report.py).
    `stress_tests`: {title: folder written by `autosr stress-test`} (stress/report_section.py)."""
    dataset_name = paths.dataset_name(dataset)
    results_dir = paths.results_dataset(dataset_name)
    out = check_output_file(Path(output) if output else results_dir / "report.html", REPORT_OUTPUT, overwrite)
    body = [f"<h1>autosr results: {html.escape(dataset_name)}</h1>"]
    best_path = results_dir / "best.json"
    if best_path.is_file():
        best = read_json(best_path)
        rows = "".join(
            f"<tr><td>{html.escape(e['name'])}</td><td>{e['kind']}</td>"
            + "".join(f"<td>{_fmt(e['means'].get(m))}</td>" for m in ("ssim", "psnr", "mae"))
            + "</tr>"
            for e in best["ranking"]
        )
        if best.get("baseline_means"):
            b = best["baseline_means"]
            rows += (
                "<tr><td>baseline (better of the no-learning maps, per metric)</td><td>baseline</td>"
                + "".join(f"<td>{_fmt(b.get(m))}</td>" for m in ("ssim", "psnr", "mae"))
                + "</tr>"
            )
        commands = [*best["predict_commands"], *([best["ensemble_command"]] if best.get("ensemble_command") else [])]
        body.append(
            f"<h2>Ranking by {html.escape(best['metric'])} over {len(best['cases_compared'])} cases</h2>"
            f"<table><tr><th>candidate</th><th>kind</th><th>ssim</th><th>psnr</th><th>mae</th></tr>{rows}</table>"
            f"<p>Best: <b>{html.escape(best['best'])}</b>. Predict with:</p><pre>{html.escape(chr(10).join(commands))}</pre>"
        )
    else:
        body.append("<p>No <code>best.json</code> yet: run <code>autosr find-best DATASET</code>.</p>")
    for title, folder in (evaluations or {}).items():
        body.append(_section(title, Path(folder), None, max_pictures, out))
    for title, folder in (predictions or {}).items():
        body.append(prediction_section(folder, title))
    for title, folder in (stress_tests or {}).items():
        body.append(stress_section_html(folder, title))
    for model in model_folders(results_dir):
        body.append(_section(model.name, model.path, model.path, max_pictures))
    ensembles = results_dir / ENSEMBLES_FOLDER
    if ensembles.is_dir():
        for folder in sorted(p for p in ensembles.iterdir() if p.is_dir()):
            body.append(_section(folder.name, folder, None, max_pictures))
    head = page_head(out) if any('class="autosr-viewer"' in part for part in body) else ""
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'>{GENERATOR_META}<title>autosr {html.escape(dataset_name)}</title><style>{STYLE}</style>{head}</head><body>{''.join(body)}</body></html>"
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
