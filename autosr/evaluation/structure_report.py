"""The structure-agreement part of the HTML report: per structure, each source's Dice, HD95, volume
differences and volume ICC side by side, and the Bland-Altman pictures. Reads `structure_agreement` of a
summary.json and the PNGs beside it; computes nothing."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

COLUMNS = (
    ("dice", "Dice", "{:.3f}"),
    ("hd95_mm", "HD95 mm", "{:.2f}"),
    ("abs_volume_difference_mm3", "|ΔV| mm³", "{:.0f}"),
    ("relative_volume_difference", "ΔV/V", "{:+.3f}"),
)


def _mean(stats: dict[str, Any] | None, pattern: str) -> str:
    if not stats:
        return "-"
    return pattern.format(stats["mean"]) + f" &plusmn; {pattern.format(stats['std']).lstrip('+')}"


def _number(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


def structure_section_html(summary: dict[str, Any], results_dir: Path) -> str:
    """HTML for `summary["structure_agreement"]` (empty string when there is none)."""
    agreement = summary.get("structure_agreement")
    if not agreement:
        return ""
    sources = agreement.get("sources", [])
    segmenter = agreement.get("segmenter") or {}
    parts = [
        "<h3>Structure agreement</h3>",
        f"<p>{agreement.get('num_cases', 0)} cases; reference: {html.escape(str(agreement.get('reference')))}; "
        f"segmenter: <code>{html.escape(str(segmenter.get('command', 'none (label maps given)')))}</code>. "
        "Mean &plusmn; std over cases; ICC(2,1) of the volumes against the reference's (two-way random, "
        "absolute agreement), ICC(3,1) (consistency) in brackets.</p>",
    ]
    head = "<th>structure</th>" + "".join(
        f"<th>{html.escape(title)} {html.escape(s)}</th>" for _, title, _ in COLUMNS for s in sources
    )
    head += "".join(f"<th>ICC {html.escape(s)}</th>" for s in sources)
    rows = []
    for value, entry in agreement.get("structures", {}).items():
        cells = "".join(
            f"<td>{_mean(entry.get(s, {}).get(key), pattern)}</td>" for key, _, pattern in COLUMNS for s in sources
        )
        cells += "".join(
            f"<td>{_number(entry.get(s, {}).get('icc2_1'))} ({_number(entry.get(s, {}).get('icc3_1'))})</td>"
            for s in sources
        )
        rows.append(f"<tr><td>{html.escape(entry['name'])} ({value})</td>{cells}</tr>")
    parts.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    failures = agreement.get("failures") or []
    if failures:
        parts.append(
            f"<details><summary>{len(failures)} segmentation problem(s)</summary><ul>"
            + "".join(f"<li>{html.escape(m)}</li>" for m in failures)
            + "</ul></details>"
        )
    pictures = [results_dir / p for p in (agreement.get("bland_altman_pictures") or {}).values()]
    pictures = [p for p in pictures if p.is_file()]
    if pictures:
        images = "".join(
            f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode("ascii")}">'
            for p in pictures
        )
        parts.append(
            f"<details><summary>Bland-Altman plots of the volumes ({len(pictures)})</summary>{images}</details>"
        )
    return "\n".join(parts)
