"""The report page of a prediction folder: which scans were flagged and why, the distribution of every
quality signal against the limits the flags used, and pictures of the flagged scans.

It reads what `autosr predict` wrote and computes nothing new: `OUT/summary.csv` (one row per scan),
`OUT/qc_thresholds.json` (the limits, from the model's cross-validation cases), the predictions and, for the
pictures, each scan's input file (its path is in the row). Used by `autosr report --predictions TITLE OUT`,
as a section of the dataset report or as a page of its own (no dataset needed: a lab predicting on another
machine has only the package and the folder).
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autosr.inference.scan_summary import SUMMARY_NAME, THRESHOLDS_NAME
from autosr.io import atomic_path, file_ending_of, read_image, read_json
from autosr.io.outputs import OutputKind, check_output_file, has_marker

DEFAULT_MAX_FLAGGED_PICTURES = 12
SIGNAL_PREFIXES = ("spacing_", "extent_", "subject_volume", "intensity_scale", "intensity_distance",
                   "intensity_profile", "uncertainty_")  # fmt: skip
PAGE_STYLE = """
body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#eee}img{max-width:100%}
"""

# Every report page says who wrote it, so rerunning `autosr report` refreshes its own page and refuses to
# write over anything else (autosr.io.outputs).
GENERATOR_META = "<meta name='generator' content='autosr report'>"
REPORT_OUTPUT = OutputKind("HTML report", lambda path: has_marker(path, GENERATOR_META.encode()), regenerated=True)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode("ascii")}">'


def _is_flagged(table: pd.DataFrame) -> pd.Series:
    return table["flag"].astype(str).str.lower().isin(("true", "1", "1.0"))


def signal_figure(table: pd.DataFrame, thresholds: dict[str, Any] | None) -> str:
    """One small panel per signal: every scan's value (flagged scans red), the training cases' range
    (shaded) and the flagging limits (dashed). Empty when the table has no signal columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bounds = dict((thresholds or {}).get("bounds") or {})
    bounds.update((thresholds or {}).get("uncertainty_bounds") or {})
    columns = [c for c in table.columns if c.startswith(SIGNAL_PREFIXES) and pd.api.types.is_numeric_dtype(table[c])]
    if not columns:
        return ""
    flagged = _is_flagged(table).to_numpy()
    ncols = 4
    nrows = -(-len(columns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 1.6 * nrows), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes.ravel(), columns):
        values = table[name].to_numpy(dtype=float)
        jitter = rng.uniform(-0.3, 0.3, size=values.size)
        ax.scatter(values[~flagged], jitter[~flagged], s=10, color="#357")
        ax.scatter(values[flagged], jitter[flagged], s=14, color="#c00")
        b = bounds.get(name)
        if b:
            if b["cv_high"] > b["cv_low"]:
                ax.axvspan(b["cv_low"], b["cv_high"], color="#9c9", alpha=0.4, lw=0)
            else:  # every training case had the same value
                ax.axvline(b["cv_low"], color="#9c9", lw=4, alpha=0.6)
            for limit in (b.get("low"), b.get("high")):
                if limit is not None:
                    ax.axvline(limit, color="#c00", ls="--", lw=1)
        ax.set_yticks([])
        ax.set_ylim(-1, 1)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(columns) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def _middle_slices(volume: np.ndarray) -> list[np.ndarray]:
    z, y, x = (s // 2 for s in volume.shape)
    return [volume[z], volume[:, y, :][::-1], volume[:, :, x][::-1]]


def scan_picture(case: str, input_path: Path | None, prediction_path: Path, reason: str) -> str:
    """The middle slices (three orientations) of a scan's input and prediction, each in its own grey window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    if input_path is not None and input_path.is_file():
        rows.append(("input", read_image(input_path)[0]))
    rows.append(("prediction", read_image(prediction_path)[0]))
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for r, (label, volume) in enumerate(rows):
        lo, hi = np.percentile(volume, (0.5, 99.5))
        for c, image in enumerate(_middle_slices(volume)):
            axes[r][c].imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=9)
    fig.suptitle(f"{case}: {reason[:110]}{'...' if len(reason) > 110 else ''}", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _prediction_file(folder: Path, case: str) -> Path | None:
    # images only: beside each prediction lies its provenance sidecar <case>.json (inference/provenance.py)
    matches = sorted(
        p for p in folder.glob(f"{case}.*") if p.is_file() and file_ending_of(p) and p.name != SUMMARY_NAME
    )
    return matches[0] if matches else None


def prediction_section(
    folder: str | os.PathLike, title: str | None = None, max_pictures: int = DEFAULT_MAX_FLAGGED_PICTURES
) -> str:
    """The HTML section of one prediction folder."""
    folder = Path(folder)
    heading = f"<h2>{html.escape(title or str(folder))}</h2>"
    summary_path = folder / SUMMARY_NAME
    if not summary_path.is_file():
        return (
            heading
            + f"<p>No {SUMMARY_NAME} in {html.escape(str(folder))}: run <code>autosr predict</code> into it.</p>"
        )
    table = pd.read_csv(summary_path)
    thresholds = read_json(folder / THRESHOLDS_NAME) if (folder / THRESHOLDS_NAME).is_file() else None
    flagged = _is_flagged(table)
    predicted = table["status"] == "predicted"
    parts = [
        heading,
        f"<p>{len(table)} scans: {int(predicted.sum())} predicted, {int((~predicted).sum())} failed, "
        f"{int((flagged & predicted).sum())} flagged by the quality check.",
    ]
    times = [c for c in ("preprocess_s", "network_s", "export_s") if c in table.columns]
    if times and predicted.any():
        medians = ", ".join(f"{c[:-2]} {table.loc[predicted, c].median():.1f} s" for c in times)
        parts[-1] += f" Median per scan: {medians}."
    parts[-1] += "</p>"
    if thresholds is None:
        parts.append("<p>No limits recorded (the model had no QC reference): signals are shown without limits.</p>")
    attention = table[flagged | ~predicted]
    if len(attention):
        rows = "".join(
            f"<tr><td>{html.escape(str(r.case))}</td><td>{html.escape(str(r.status))}</td>"
            f"<td>{html.escape(str(r.reason))}</td></tr>"
            for r in attention.itertuples()
        )
        parts.append(f"<table><tr><th>scan</th><th>status</th><th>reason</th></tr>{rows}</table>")
    figure = signal_figure(table[predicted], thresholds)
    if figure:
        parts.append(
            "<h3>Quality signals</h3><p>Each dot a scan (red: flagged); green band: the training cases' range; "
            "dashed: the limits beyond which a scan is flagged.</p>" + figure
        )
    pictures = []
    for row in table[flagged & predicted].itertuples():
        if len(pictures) >= max_pictures:
            break
        prediction = _prediction_file(folder, str(row.case))
        if prediction is None:
            continue
        source = getattr(row, "input", None)
        input_path = Path(source) if isinstance(source, str) else None
        pictures.append(scan_picture(str(row.case), input_path, prediction, str(row.reason)))
    if pictures:
        parts.append(f"<h3>Flagged scans ({len(pictures)} shown)</h3>" + "".join(pictures))
    return "\n".join(parts)


def write_prediction_report(
    folders: dict[str, str | os.PathLike],
    output: str | os.PathLike,
    max_pictures: int = DEFAULT_MAX_FLAGGED_PICTURES,
    overwrite: bool = False,
) -> Path:
    """A page of its own for prediction folders ({title: folder}); returns its path. An existing `output`
    is replaced when it is an autosr report, otherwise only with `overwrite` (autosr.io.outputs)."""
    output = check_output_file(output, REPORT_OUTPUT, overwrite)
    body = "".join(prediction_section(folder, title, max_pictures) for title, folder in folders.items())
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>{GENERATOR_META}<title>autosr predictions</title>"
        f"<style>{PAGE_STYLE}</style></head><body><h1>autosr predictions</h1>{body}</body></html>"
    )
    with atomic_path(output) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return output
