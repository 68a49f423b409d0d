"""Structure-level evaluation of a set of cases: segment what needs segmenting, score every structure,
summarise across cases. `evaluate_folders` and the cross-validation call `evaluate_structures`.

Per case the **reference** labels are the user's label maps when given (`--reference-labels`, e.g. manual
delineations), else the segmenter's labels of the reference image. Compared with them:

- `prediction`: the user's label maps of the predictions when given (`--seg-pred`), else the segmenter's
  labels of the prediction;
- `input`: the segmenter's labels of input channel 0 resampled onto the reference grid (linear
  interpolation, 0 outside its field of view), when inputs are given;
- `target`: the segmenter's labels of the real reference image, when the reference labels are the
  user's: how close the segmenter gets on the real scan, the ceiling for the other two.

Files (`out_dir` = the evaluation's output folder; `cache` = `--segmentation-cache`, default
`out_dir/segmentations`): `out_dir/segmentations/prediction/<case>.nii.gz` (predictions differ per
evaluation), `cache/target/`, `cache/input/`, `cache/input_on_reference/` (the resampled inputs given to
the segmenter), `cache/logs/<what>/<case>.log`; each label map has a `.json` sidecar saying what it was
made from (see `segmenter_hook`). Results: `out_dir/structures.csv`, `out_dir/bland_altman/*.png`, and the
returned summary (stored under `structure_agreement` in `summary.json`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from autosr.errors import AutosrError
from autosr.evaluation.label_table import read_label_table
from autosr.evaluation.segmenter_hook import (
    BUILTIN_LABEL_NAMES,
    OUTPUT_ENDING,
    Segmenter,
    SegmenterRun,
    builtin_segmenter,
    file_fingerprint,
    is_current,
    load_segmenter,
    parse_structures,
    run_segmenter_jobs,
    sidecar_of,
)
from autosr.evaluation.structures import (
    StructureCase,
    structure_table,
    summarize_structures,
    write_structure_results,
)
from autosr.io import atomic_write_json, read_image, resample_to_geometry, write_image

PathLike = str | os.PathLike
SEGMENTATIONS_FOLDER = "segmentations"
INPUT_ORDER = 1  # linear: no B-spline overshoot (negative values) for the segmenter to trip over


@dataclass(frozen=True)
class StructureOptions:
    """How to get and name the label maps: the segmenter (or None), label names, chosen structures, cache."""

    segmenter: Segmenter | None = None
    label_names: dict[int, str] | None = None
    label_names_source: str | None = None
    structures: tuple[int, ...] | None = None
    cache_dir: Path | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "segmenter": self.segmenter.describe() if self.segmenter else None,
            "label_names": self.label_names_source,
            "structures_selected": list(self.structures) if self.structures else None,
        }


def structure_options(
    segmenter: str | Segmenter | None = None,
    label_names: PathLike | None = None,
    structures: list[int] | tuple[int, ...] | None = None,
    cache_dir: PathLike | None = None,
) -> StructureOptions:
    """Options from user values: `segmenter` a command template, `builtin` or a JSON config file; a
    FreeSurfer-format `label_names` table; `structures` label values. Given values win over the config's."""
    config_table, config_structures = None, None
    if isinstance(segmenter, str):
        segmenter, config_table, config_structures = load_segmenter(segmenter)
    table_path = Path(label_names) if label_names is not None else config_table
    names, names_source = None, None
    if table_path is not None:
        names, names_source = read_label_table(table_path), str(table_path)
    elif segmenter is not None and segmenter.command == builtin_segmenter().command:
        names, names_source = dict(BUILTIN_LABEL_NAMES), "builtin tissue classes"
    chosen = parse_structures(structures, "--structures") if structures else config_structures
    return StructureOptions(segmenter, names, names_source, chosen, Path(cache_dir) if cache_dir else None)


@dataclass
class StructureCaseFiles:
    """The files of one case the structure evaluation may use."""

    case_id: str
    reference: Path  # the reference (target) image: segmented when no reference labels; its grid counts
    prediction: Path
    input_file: Path | None = None  # input channel 0, on its own grid
    mask: Path | None = None
    reference_labels: Path | None = None  # the user's (e.g. manual) label maps on the reference grid
    prediction_labels: Path | None = None  # the user's label maps of the prediction
    extra: dict[str, Any] = field(default_factory=dict)


def _resample_input(case: StructureCaseFiles, output: Path) -> str | None:
    """Write the case's input resampled onto the reference grid (cached); None on success, else the message."""
    key = {"input": file_fingerprint(case.input_file), "grid": file_fingerprint(case.reference), "order": INPUT_ORDER}
    if is_current(output, key):
        return None
    try:
        _, grid = read_image(case.reference)
        array, geometry = read_image(case.input_file)
        write_image(resample_to_geometry(array, geometry, grid, order=INPUT_ORDER), grid, output)
    except AutosrError as e:
        return f"case {case.case_id}: the input could not be resampled onto the reference grid: {e}"
    atomic_write_json(key, sidecar_of(output))
    return None


def evaluate_structures(
    cases: list[StructureCaseFiles],
    options: StructureOptions,
    out_dir: PathLike,
    num_processes: int = 1,
    cache_dir: PathLike | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Segment, score and summarise (see the module docstring); writes into `out_dir`.

    `cache_dir`: where target and input segmentations go when `options.cache_dir` is not set (default
    `out_dir/segmentations`). Segmenter failures and unreadable label maps are collected in the
    summary's `failures` (one message per case and image) and the other cases are still scored.
    """
    out_dir = Path(out_dir)
    segmenter = options.segmenter
    cache = options.cache_dir or (Path(cache_dir) if cache_dir else out_dir / SEGMENTATIONS_FOLDER)
    prediction_dir = out_dir / SEGMENTATIONS_FOLDER / "prediction"
    user_reference = any(c.reference_labels is not None for c in cases)
    if segmenter is None and not all(c.reference_labels and c.prediction_labels for c in cases):
        raise AutosrError(
            "structure agreement needs a segmenter (--segmenter) or label maps of both the references and the "
            "predictions (--reference-labels with --seg-pred)"
        )
    if segmenter is not None and segmenter.needs_mask and any(c.mask is None for c in cases):
        raise AutosrError("the segmenter command uses {mask}: give the masks (--mask-dir, or masksTr/ in the dataset)")
    failures: list[str] = []
    resampled: dict[str, Path] = {}
    with_input = [c for c in cases if c.input_file is not None] if segmenter is not None else []
    if with_input:
        targets = {c.case_id: cache / "input_on_reference" / f"{c.case_id}{OUTPUT_ENDING}" for c in with_input}
        with ThreadPoolExecutor(max(1, num_processes)) as pool:
            messages = list(pool.map(lambda c: _resample_input(c, targets[c.case_id]), with_input))
        for case, message in zip(with_input, messages):
            if message is None:
                resampled[case.case_id] = targets[case.case_id]
            else:
                failures.append(message)
    runs: list[SegmenterRun] = []
    labels: dict[tuple[str, str], Path] = {}  # (case, what) -> label map
    for case in cases:
        sources = {}
        if case.prediction_labels is not None:
            labels[(case.case_id, "prediction")] = case.prediction_labels
        elif segmenter is not None:
            sources["prediction"] = (case.prediction, prediction_dir)
        if segmenter is not None:
            sources["target"] = (case.reference, cache / "target")
            if case.case_id in resampled:
                sources["input"] = (resampled[case.case_id], cache / "input")
        for what, (source, folder) in sources.items():
            output = folder / f"{case.case_id}{OUTPUT_ENDING}"
            log = cache / "logs" / what / f"{case.case_id}.log"
            runs.append(SegmenterRun(case.case_id, what, Path(source), output, log, case.mask))
            labels[(case.case_id, what)] = output
    if runs:
        failed = run_segmenter_jobs(segmenter, runs, num_processes)
        failures.extend(failed.values())
        for run in failed:
            labels.pop((run.case_id, run.what), None)
    structure_cases = []
    for case in cases:
        reference = case.reference_labels if case.reference_labels is not None else labels.get((case.case_id, "target"))
        if reference is None:
            continue  # the segmenter failed on the reference image: the case has no reference (said above)
        compared = {w: labels[(case.case_id, w)] for w in ("prediction", "input") if (case.case_id, w) in labels}
        if case.reference_labels is not None and (case.case_id, "target") in labels:
            compared["target"] = labels[(case.case_id, "target")]
        if compared:
            structure_cases.append(StructureCase(case.case_id, case.reference, reference, compared, dict(case.extra)))
    table, problems = structure_table(
        structure_cases, options.structures, num_processes, reference_only=user_reference and not options.structures
    )
    failures.extend(problems)
    summary = {
        **options.describe(),
        "reference": "the given label maps (--reference-labels)"
        if user_reference
        else "the segmenter's labels of the reference images",
        "input_resampling": "linear, onto the reference grid" if resampled else None,
        "num_cases": int(table["case"].nunique()) if not table.empty else 0,
        "failures": failures,
        **summarize_structures(table, options.label_names),
    }
    write_structure_results(table, summary, out_dir, options.label_names)
    return table, summary


def headline(summary: dict[str, Any], max_rows: int = 12) -> list[str]:
    """Terminal lines: per structure the mean Dice and HD95 of each source; then the failures."""
    sources = summary.get("sources", [])
    lines = [
        f"structure agreement ({summary.get('num_cases', 0)} cases; reference: {summary.get('reference')}):",
        f"  {'structure':<28}" + "".join(f"{'dice ' + s:>18}{'hd95 ' + s:>18}" for s in sources),
    ]
    structures = summary.get("structures", {})
    for value in list(structures)[:max_rows]:
        entry = structures[value]
        cells = ""
        for source in sources:
            stats = entry.get(source, {})
            dice, hd = stats.get("dice"), stats.get("hd95_mm")
            cells += f"{dice['mean']:>18.4f}" if dice else f"{'-':>18}"
            cells += f"{hd['mean']:>15.2f} mm" if hd else f"{'-':>18}"
        lines.append(f"  {entry['name'][:28]:<28}{cells}")
    if len(structures) > max_rows:
        lines.append(f"  ... {len(structures) - max_rows} more in structures.csv and summary.json")
    for message in summary.get("failures", []):
        lines.append(f"WARNING: {message}")
    return lines
