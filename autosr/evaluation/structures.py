"""Per-structure agreement of label maps: one case (`structure_metrics`, `score_structure_case`), the table
over cases (`structure_table`), and the summary across cases with ICC and Bland-Altman
(`summarize_structures`, `write_structure_results`).

Why: the founding question is not "do the intensities match" but "does the synthetic scan segment like
the real one (or like the manual truth), and better than the input it came from". Each compared
*source* (`prediction`: labels of the synthetic scan; `input`: labels of the input resampled onto the
reference grid; `target`: labels of the real target scan, only when the reference labels are manual) is
scored against the *reference* labels of the same case, structure by structure, on the reference grid.

Per structure (label value v; A = reference voxels with v, B = the source's voxels with v):

- `dice` = 2|A and B| / (|A| + |B|) (Dice, Ecology 26(3) 1945); None when both are empty;
- `hd95_mm`: the 95th-percentile Hausdorff distance in mm (`autosr.evaluation.surface`); None when
  either is empty;
- `volume_mm3` = |B| x voxel volume, `reference_volume_mm3` = |A| x voxel volume;
- `abs_volume_difference_mm3` = | |B| - |A| | x voxel volume;
- `relative_volume_difference` = (|B| - |A|) / |A| (signed: > 0 the source is larger); None when A is empty.

Label maps on another grid than the reference image are brought onto it by nearest neighbour first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from autosr.errors import AutosrError
from autosr.evaluation.agreement import bland_altman, icc, save_bland_altman_plot
from autosr.evaluation.label_table import label_name
from autosr.evaluation.surface import hausdorff_distance
from autosr.io import Geometry, atomic_path, read_image, resample_to_geometry

PathLike = str | os.PathLike
SOURCES = ("prediction", "input", "target")  # the order of columns everywhere
METRICS = ("dice", "hd95_mm", "abs_volume_difference_mm3", "relative_volume_difference")
STRUCTURES_CSV = "structures.csv"
BLAND_ALTMAN_FOLDER = "bland_altman"


def _as_labels(array: np.ndarray, what: str) -> np.ndarray:
    labels = np.rint(np.asarray(array)).astype(np.int64)
    if labels.size and labels.min() < 0:
        raise AutosrError(f"the {what} holds negative label values ({int(labels.min())}); labels must be >= 0")
    return labels


def labels_present(labels: np.ndarray) -> set[int]:
    """Non-zero label values of an integer label map."""
    return set(np.unique(labels).tolist()) - {0}


def structure_metrics(
    reference_labels: np.ndarray,
    labels: np.ndarray,
    spacing_zyx: Sequence[float],
    structures: Iterable[int] | None = None,
) -> list[dict[str, Any]]:
    """One dict per structure (see the module docstring) for two label maps on the same grid.

    `structures`: label values to score (default: every non-zero value present in either map).
    """
    a_all, b_all = _as_labels(reference_labels, "reference label map"), _as_labels(labels, "label map")
    if a_all.shape != b_all.shape:
        raise ValueError(f"label maps differ in shape: {a_all.shape} vs {b_all.shape}")
    if structures is None:
        structures = sorted(labels_present(a_all) | labels_present(b_all))
    voxel_mm3 = float(np.prod([float(s) for s in spacing_zyx]))
    top = int(max(a_all.max(initial=0), b_all.max(initial=0)))
    boxes_a = ndimage.find_objects(a_all, max_label=top) if top else []
    boxes_b = ndimage.find_objects(b_all, max_label=top) if top else []
    rows = []
    for value in structures:
        value = int(value)
        box_a = boxes_a[value - 1] if 0 < value <= top else None
        box_b = boxes_b[value - 1] if 0 < value <= top else None
        boxes = [b for b in (box_a, box_b) if b is not None]
        if boxes:
            box = tuple(slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes)) for i in range(3))
            a, b = a_all[box] == value, b_all[box] == value
        else:
            a = b = np.zeros((1, 1, 1), dtype=bool)
        size_a, size_b = int(a.sum()), int(b.sum())
        rows.append(
            {
                "label": value,
                "dice": 2.0 * int(np.logical_and(a, b).sum()) / (size_a + size_b) if size_a + size_b else None,
                "hd95_mm": hausdorff_distance(a, b, spacing_zyx) if size_a and size_b else None,
                "volume_mm3": size_b * voxel_mm3,
                "reference_volume_mm3": size_a * voxel_mm3,
                "abs_volume_difference_mm3": abs(size_b - size_a) * voxel_mm3,
                "relative_volume_difference": (size_b - size_a) / size_a if size_a else None,
            }
        )
    return rows


@dataclass
class StructureCase:
    """The label maps of one case: the reference's and each compared source's, and the grid that counts."""

    case_id: str
    grid: Path  # the reference image: its grid is where everything is compared
    reference_labels: Path
    compared: dict[str, Path]  # source ('prediction', 'input', 'target') -> label map
    extra: dict[str, Any] = field(default_factory=dict)


def _labels_on_grid(path: Path, grid: Geometry, what: str, case_id: str) -> np.ndarray:
    array, geometry = read_image(path)
    if not geometry.same_grid(grid):
        array = resample_to_geometry(array, geometry, grid, order=0)
    return _as_labels(array, f"{what} {path} of case {case_id}")


def score_structure_case(
    case: StructureCase, structures: Sequence[int] | None = None, reference_only: bool = False
) -> list[dict[str, Any]]:
    """Rows (case, source, label, metrics...) of one case. Default structures: every label present in the
    reference or the source map, or with `reference_only` in the reference map (manual labels that
    delineate a few structures, compared with a segmenter that labels many)."""
    _, grid = read_image(case.grid)
    reference = _labels_on_grid(case.reference_labels, grid, "reference label map", case.case_id)
    rows = []
    for source in (s for s in SOURCES if s in case.compared):
        labels = _labels_on_grid(case.compared[source], grid, f"{source} label map", case.case_id)
        if structures is not None:
            chosen = structures
        elif reference_only:
            chosen = sorted(labels_present(reference))
        else:
            chosen = sorted(labels_present(reference) | labels_present(labels))
        for row in structure_metrics(reference, labels, grid.spacing_zyx, chosen):
            rows.append({"case": case.case_id, **case.extra, "source": source, **row})
    return rows


def _score_safely(
    case: StructureCase, structures: Sequence[int] | None, reference_only: bool
) -> tuple[list[dict[str, Any]], str | None]:
    try:
        return score_structure_case(case, structures, reference_only), None
    except AutosrError as e:
        return [], f"case {case.case_id}: {e}"


def structure_table(
    cases: list[StructureCase],
    structures: Sequence[int] | None = None,
    num_processes: int = 1,
    reference_only: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """(long table: one row per case, source and structure; problems, one message per case not scored).

    Without `structures`, each case is scored on the labels present in it, then every case is completed
    with the labels seen in any case (volume 0, Dice and HD95 empty), so every structure has one value
    per case for the statistics across cases.
    """
    if num_processes > 1 and len(cases) > 1:
        with ProcessPoolExecutor(min(num_processes, len(cases)), mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_score_safely, cases, [structures] * len(cases), [reference_only] * len(cases)))
    else:
        results = [_score_safely(case, structures, reference_only) for case in cases]
    problems = [error for _, error in results if error]
    table = pd.DataFrame([row for rows, _ in results for row in rows])
    if table.empty:
        return table, problems
    if structures is None:
        table = _complete(table)
    return table.sort_values(["case", "source", "label"], kind="stable").reset_index(drop=True), problems


def _complete(table: pd.DataFrame) -> pd.DataFrame:
    """Add rows for labels seen in some case but absent (in both maps) from another case and source."""
    all_labels = sorted(table["label"].unique().tolist())
    keys = [c for c in table.columns if c not in ("label", *_row_metrics())]
    extra_rows = []
    for key_values, group in table.groupby(keys, sort=False, dropna=False):
        present = set(group["label"])
        base = dict(zip(keys, key_values if isinstance(key_values, tuple) else (key_values,)))
        for value in (v for v in all_labels if v not in present):
            extra_rows.append(
                {
                    **base,
                    "label": value,
                    "dice": None,
                    "hd95_mm": None,
                    "volume_mm3": 0.0,
                    "reference_volume_mm3": 0.0,
                    "abs_volume_difference_mm3": 0.0,
                    "relative_volume_difference": None,
                }
            )
    return pd.concat([table, pd.DataFrame(extra_rows)], ignore_index=True) if extra_rows else table


def _row_metrics() -> tuple[str, ...]:
    return ("dice", "hd95_mm", "volume_mm3", "reference_volume_mm3", *METRICS[2:])


def _stats(values: pd.Series) -> dict[str, Any] | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return None
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=0)),
        "median": float(values.median()),
        "n": int(values.size),
    }


def summarize_structures(table: pd.DataFrame, label_names: dict[int, str] | None = None) -> dict[str, Any]:
    """Per structure and source, over cases: mean/std/median/n of each metric, ICC(2,1) and ICC(3,1) of the
    volumes against the reference's, Bland-Altman bias and limits; and `prediction_minus_input`, the
    mean paired difference of Dice and HD95 over the cases where both were scored."""
    summary: dict[str, Any] = {
        "sources": [s for s in SOURCES if not table.empty and s in set(table["source"])],
        "icc": "ICC(2,1), two-way random effects, absolute agreement, single measurement (Shrout & Fleiss 1979); "
        "icc3_1: ICC(3,1), consistency",
        "bland_altman": "source volume minus reference volume (mm3); limits = bias -+ 1.96 SD (Bland & Altman 1986)",
        "structures": {},
    }
    if table.empty:
        return summary
    for value, per_label in table.groupby("label", sort=True):
        entry: dict[str, Any] = {"name": label_name(int(value), label_names)}
        for source, rows in per_label.groupby("source", sort=False):
            rows = rows.sort_values("case")
            volumes = rows[["reference_volume_mm3", "volume_mm3"]].to_numpy(dtype=np.float64)
            entry[str(source)] = {
                **{metric: _stats(rows[metric]) for metric in (*METRICS, "volume_mm3", "reference_volume_mm3")},
                "icc2_1": icc(volumes, "2,1") if len(rows) >= 2 else None,
                "icc3_1": icc(volumes, "3,1") if len(rows) >= 2 else None,
                "bland_altman": bland_altman(volumes[:, 0], volumes[:, 1]),
            }
        if {"prediction", "input"} <= set(per_label["source"]):
            paired = per_label.pivot_table(index="case", columns="source", values=["dice", "hd95_mm"], aggfunc="first")
            difference = {}
            for metric in ("dice", "hd95_mm"):
                if metric in paired.columns.get_level_values(0):
                    both = paired[metric].reindex(columns=["prediction", "input"]).apply(pd.to_numeric).dropna()
                    if len(both):
                        difference[metric] = float((both["prediction"] - both["input"]).mean())
                        difference[f"{metric}_cases"] = int(len(both))
            entry["prediction_minus_input"] = difference
        summary["structures"][str(int(value))] = entry
    return summary


def write_structure_results(
    table: pd.DataFrame, summary: dict[str, Any], out_dir: PathLike, label_names: dict[int, str] | None = None
) -> list[Path]:
    """`structures.csv` (with a `name` column) and one Bland-Altman PNG per structure; returns the PNGs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = table.copy()
    if not written.empty:
        written.insert(
            written.columns.get_loc("label") + 1, "name", [label_name(v, label_names) for v in written["label"]]
        )
    with atomic_path(out_dir / STRUCTURES_CSV) as tmp:
        written.to_csv(tmp, index=False)
    pictures = []
    if table.empty:
        return pictures
    for value, per_label in table.groupby("label", sort=True):
        name = label_name(int(value), label_names)
        panels = {}
        for source in (s for s in SOURCES if s in set(per_label["source"])):
            rows = per_label[per_label["source"] == source]
            panels[source] = (rows["reference_volume_mm3"].to_numpy(float), rows["volume_mm3"].to_numpy(float))
        path = out_dir / BLAND_ALTMAN_FOLDER / f"{int(value)}_{_safe(name)}.png"
        save_bland_altman_plot(path, panels, f"{name} (label {int(value)})")
        pictures.append(path)
    summary["bland_altman_pictures"] = {str(int(p.name.split("_")[0])): str(p.relative_to(out_dir)) for p in pictures}
    return pictures


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]
