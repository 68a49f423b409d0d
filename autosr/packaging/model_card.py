"""The model card (README.md) of a model package: what the model was trained on, how well it did, what it is
for, and how to run it, written from the files the package holds so it cannot disagree with them."""

from __future__ import annotations

from typing import Any

from autosr.formats.dataset_spec import DatasetSpec
from autosr.formats.package_manifest import Manifest
from autosr.formats.plans import Plans

CARD_METRICS = ("ssim", "psnr", "mae", "ms_ssim", "ssim_image", "mae_outside_mask")


def _range(values: list[list[float]], digits: int = 2) -> str:
    """'a-b x c-d x e-f' per axis of per-case (z, y, x) lists."""
    if not values:
        return "-"
    parts = []
    for axis in range(len(values[0])):
        lo, hi = min(v[axis] for v in values), max(v[axis] for v in values)
        parts.append(f"{lo:.{digits}f}" if lo == hi else f"{lo:.{digits}f}-{hi:.{digits}f}")
    return " x ".join(parts)


def _metric_rows(summary: dict[str, Any], scope: str) -> list[str]:
    metrics = summary.get("metrics", {})
    model, baseline = metrics.get("model", {}), metrics.get("baseline", {})
    rows = []
    for name in CARD_METRICS:
        if name not in model:
            continue
        m = model[name]
        b = baseline.get(name)
        shown_b = f"{b['mean']:.4g} ± {b['std']:.3g}" if b else "-"
        rows.append(f"| {scope} | {name} | {m['mean']:.4g} ± {m['std']:.3g} | {shown_b} |")
    return rows


def _qc_rows(reference: dict[str, Any] | None) -> list[str]:
    if not reference:
        return []
    from autosr.inference.qc import rule_of

    rows = []
    for name, b in reference.get("bounds", {}).items():
        rule = rule_of(name)
        low = "-" if b["low"] is None else f"{b['low']:.4g}"
        rows.append(f"| {name} | {rule.unit} | {b['cv_low']:.4g} to {b['cv_high']:.4g} | {low} | {b['high']:.4g} |")
    return rows


def model_card(
    manifest: Manifest,
    plans: Plans,
    spec: DatasetSpec,
    fingerprint: dict[str, Any],
    crossval: dict[str, Any] | None,
    fold_summaries: dict[int, dict[str, Any]],
    epochs: dict[int, int],
    qc_reference: dict[str, Any] | None,
) -> str:
    """The README.md text of a package (Markdown)."""
    config = plans.configuration(manifest.configuration)
    trainer = manifest.trainer
    cases = fingerprint.get("cases", [])
    channels = ", ".join(f"{k}: {v}" for k, v in sorted(spec.channel_names.items()))
    network = config.network
    folds = " ".join(map(str, manifest.folds))
    lines = [
        f"# {manifest.dataset_name}: {manifest.configuration} ({trainer})",
        "",
        f"An autosr model package, exported {manifest.created} with autosr {manifest.autosr_version}.",
        "",
        "```bash",
        "autosr predict -i new_scans/ -o predictions/ --model this_model.zip      # straight from the zip",
        "autosr install-model this_model.zip                                       # or install under $AUTOSR_RESULTS",
        f"autosr predict -i new_scans/ -o predictions/ -d {manifest.dataset_name} -c {manifest.configuration} "
        f"--trainer {trainer} -f {folds} --checkpoint {manifest.checkpoint}",
        "```",
        "",
        "## Task",
        "",
        f"- input channel(s): {channels} (files `<case>_0000{spec.file_ending}`, one per channel)",
        f"- output: {spec.target_name} ({spec.target_modality}), in the training targets' units "
        f"({plans.target_normalization.get('scheme')} normalization inverted)",
    ]
    for key in ("description", "reference", "licence"):
        value = spec.extra.get(key)
        if value:
            lines.append(f"- {key}: {value}")
    lines += [
        "",
        "## Training data",
        "",
        f"- {fingerprint.get('num_training_cases', len(cases))} paired training cases (5-fold cross-validation)",
        f"- input spacing (mm; z x y x x, each the range over the cases): {_range([c['input_spacing_zyx'] for c in cases])}",
        f"- input field of view (mm): {_range([c['input_extent_mm_zyx'] for c in cases], 0)}",
        f"- target spacing (mm): {_range([c['target_spacing_zyx'] for c in cases])}",
        f"- planned spacing of this configuration (mm): {' x '.join(f'{s:g}' for s in config.spacing_zyx)}",
    ]
    if fingerprint.get("warnings"):
        lines.append(f"- fingerprint warnings: {len(fingerprint['warnings'])} (see fingerprint.json)")
    lines += [
        "",
        "## Model",
        "",
        f"- configuration `{manifest.configuration}` ({config.dims}D), patch {' x '.join(map(str, config.patch_size))}, "
        f"features per stage {network.get('features_per_stage')}, normalization `{network.get('norm', 'batch')}`, "
        f"residual {bool(network.get('residual', False))}",
        f"- trainer `{trainer}`; folds {folds}, checkpoint `{manifest.checkpoint}`; epochs trained per fold: "
        + ", ".join(f"fold {f}: {e}" for f, e in sorted(epochs.items())),
        "- prediction: sliding window with Gaussian weighting, test-time mirroring, mean over the folds",
        "",
        "## Cross-validation",
        "",
    ]
    if crossval:  # all folds merged (`autosr find-best`)
        scored, rows = crossval, _metric_rows(crossval, f"all folds ({crossval.get('num_cases')} cases)")
    else:  # each exported fold's own validation
        scored = next(iter(fold_summaries.values()), {})
        rows = [
            row
            for fold, summary in sorted(fold_summaries.items())
            for row in _metric_rows(summary, f"fold {fold} ({summary.get('num_cases')} cases)")
        ]
    if rows:
        region = scored.get("region") or "the whole image"
        lines += [
            f"Each case predicted by the fold that did not train on it, scored on the target grid inside {region}; "
            f"data range: {scored.get('data_range', {}).get('rule', '-')}. Baseline: the better (per metric) of the "
            "no-learning intensity maps of the resampled input.",
            "",
            "| cases | metric | model (mean ± std) | baseline |",
            "|---|---|---|---|",
            *rows,
        ]
    else:
        lines.append("No cross-validation results were found when this package was exported.")
    lines += [
        "",
        "## Intended use",
        "",
        f"Research use: mapping scans like the training inputs ({channels}) to {spec.target_name}-like images. "
        "The figures above hold for scans like the training cases; for anything else they are unknown. "
        "Every prediction run writes `summary.csv` with one row per scan and a `flag` where a scan lies outside "
        "the training cases' range (thresholds below, from the cross-validation cases): look at flagged outputs "
        "before using them. Predictions are synthetic images, not measurements: not for diagnosis.",
        "",
        "## Quality-control thresholds",
        "",
    ]
    qc_rows = _qc_rows(qc_reference)
    if qc_rows:
        lines += [
            "Per signal: the training (cross-validation) cases' 1st-99th percentile range and the limits beyond "
            'which a scan is flagged (autosr documentation/inference.md, "Quality flags").',
            "",
            "| signal | unit | training cases | flagged below | flagged above |",
            "|---|---|---|---|---|",
            *qc_rows,
        ]
        keys = list((qc_reference or {}).get("uncertainty", {}))
        if keys:
            lines += ["", f"Uncertainty thresholds for the ensemble(s): {'; '.join(keys)}."]
    else:
        lines.append("No QC reference was included: summary.csv will list the signals without flags.")
    if "calibration.json" in manifest.files:
        lines += [
            "",
            "calibration.json holds the calibrated expected error and 90% interval of the ensemble(s) `autosr "
            "stress-test` measured: `autosr predict --uncertainty` with such an ensemble adds `expected_error` and "
            "`interval_half_width` to summary.csv (autosr documentation/trust.md).",
        ]
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {name} | {e['bytes']} | `{e['sha256'][:16]}…` |" for name, e in sorted(manifest.files.items())]
    return "\n".join(lines) + "\n"
