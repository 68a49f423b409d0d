"""The report's section of a stress test (`autosr report DATASET --stress-test TITLE DIR`): what stress.json
says, in words a reviewer understands, with its pictures embedded."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from autosr.io import read_json


def _number(value: Any, pattern: str = "{:.2f}") -> str:
    return pattern.format(value) if isinstance(value, (int, float)) and value == value else "n/a"


def _picture(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def stress_section_html(folder: str | Path, title: str) -> str:
    """HTML of one stress-test folder; a short note when it holds no stress.json."""
    folder = Path(folder)
    path = folder / "stress.json"
    if not path.is_file():
        return (
            f"<h2>{html.escape(title)}</h2><p>No stress.json in {html.escape(str(folder))}: run autosr stress-test.</p>"
        )
    s = read_json(path)
    nominal = s.get("nominal_coverage") or 0.9
    sentences = [
        f"On {len(s['cases'])} {html.escape(s['split'])} case(s), the calibrated per-voxel uncertainty ranks the "
        f"errors with a Spearman correlation of {_number(s.get('uncertainty_error_spearman'))} (the raw ensemble "
        f"spread: {_number(s.get('spread_error_spearman'))}; 1 is a perfect ranking, 0 none).",
        f"Removing the voxels it calls most uncertain lowers the remaining error as measured by a sparsification "
        f"ratio of {_number(s.get('sparsification_ratio'))} (1 = no better than removing voxels at random, "
        f"{_number(s.get('oracle_sparsification_ratio'))} = removing the true largest errors first); the area "
        f"between its curve and the oracle's is {_number(s.get('sparsification_error_ratio'))} of a random "
        f"ordering's (0 = the oracle, 1 = chance).",
        f"The nominal {nominal:.0%} interval covered {_number(s.get('interval_coverage'), '{:.1%}')} of clean "
        f"voxels and {_number(s.get('interval_coverage_perturbed'), '{:.1%}')} of the voxels of perturbed scans; "
        f"mean half width {_number(s.get('interval_half_width'), '{:.3g}')} target units.",
        f"Of {s.get('scans')} scans, {s.get('failures')} had an error above the worst clean scan's. Ranking scans "
        f"by the expected error finds them with an AUROC of {_number(s.get('expected_error_auroc'))}; by the "
        f"quality flag's score {_number(s.get('flag_score_auroc'))}; by the input shift (the flag's score over "
        f"the signals of what the network sees) {_number(s.get('input_shift_auroc'))}; by the yes/no flag "
        f"{_number(s.get('flag_auroc'))} (0.5 = chance).",
    ]
    rows = "".join(
        f"<tr><td>{html.escape(r['lesion'])}</td><td>{html.escape(r['kind'])}</td><td>{r['diameter_mm']:g}</td>"
        f"<td>{r['count']}</td><td>{_number(r['contrast_ratio'])}</td><td>{_number(r['dice'])}</td>"
        f"<td>{_number(r['kept_fraction'])}</td><td>{_number(r['removed_fraction'])}</td>"
        f"<td>{_number(r['spread_ratio'])}</td></tr>"
        for r in s.get("lesions", [])
    )
    lesion_table = (
        "<p>Lesions: the contrast ratio is the lesion's contrast in the prediction over its contrast in the target "
        "(1 = kept; for input-only lesions, the fraction carried over into an output whose truth has none); "
        "kept = ratio in [0.7, 1.3], removed = below 0.3; spread ratio = the ensemble spread inside the lesion "
        "over the clean scan's there (above 1: the uncertainty noticed it).</p>"
        "<table><tr><th>lesion</th><th>kind</th><th>mm</th><th>n</th><th>contrast ratio</th><th>Dice</th>"
        f"<th>kept</th><th>removed</th><th>spread ratio</th></tr>{rows}</table>"
    )
    pictures = "".join(_picture(folder / "pictures" / name, name) for name in s.get("pictures", []))
    return (
        f"<h2>{html.escape(title)}: stress test</h2>"
        + "".join(f"<p>{sentence}</p>" for sentence in sentences)
        + lesion_table
        + pictures
    )
