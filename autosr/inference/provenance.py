"""Which model made a prediction, and how: the provenance record written beside every predicted file.

A paper must say exactly which model produced which volume, months after the run. So each prediction of a
folder run gets a JSON sidecar `<case>.json` beside `<case><ending>` (`sidecar_path`), written atomically in
the finish step *before* the prediction itself (a present prediction always has its record). It holds:

- the autosr version that predicted, and when;
- the model: dataset, model folder name (trainer, plans, configuration), folds, checkpoint; for a model
  package its file name and SHA-256 (the identity of a package: documentation/model_packages.md); and how
  the model was trained when the folder holds `training_provenance.json` (written into every package by
  `autosr export-model`: dataset fingerprint and plans hashes, package versions, the git commit);
- how the scan was predicted (`PredictionSettings`: step, mirroring and its axes, background fill, sampling
  steps / samples / seed for a generative model), the grid written, whether an uncertainty map exists;
- the quality flag and its reason (the same as summary.csv's row);
- the expected error: the model's validation scores pooled over the folds used (each fold's
  `validation/summary.json`, mean over that fold's held-out cases, weighted by cases), None when absent.

`autosr provenance FILE` reads the record back (`read_provenance`, `describe_provenance`); a BIDS derivative's
sidecar (autosr/inference/bids_outputs.py) carries the same record under the key `autosr`.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autosr import __version__
from autosr.errors import AutosrError
from autosr.inference.calibration import INTERVAL_FOLDER
from autosr.io.atomic import atomic_write_json
from autosr.io.image_io import file_ending_of
from autosr.io.json_file import read_json_file
from autosr.model_layout import ModelFolder

PROVENANCE_FORMAT = "autosr-prediction-provenance"
PROVENANCE_VERSION = 1
# written into a model package's model folder by `autosr export-model` (autosr/packaging/training_record.py)
TRAINING_RECORD_NAME = "training_provenance.json"
VALIDATION_SUMMARY = "summary.json"
HEADLINE_METRICS = ("mae", "psnr", "ssim")  # what `autosr provenance` prints (--json: all of them)
MODEL_METHOD = "model"  # the method name of the model's rows in a validation summary (evaluation/summary.py)


def sidecar_path(image_path: str | os.PathLike) -> Path:
    """`<name>.json` beside `<name><ending>` (the BIDS convention, also used for folder predictions)."""
    image_path = Path(image_path)
    ending = file_ending_of(image_path)
    stem = image_path.name[: -len(ending)] if ending else image_path.stem
    return image_path.with_name(stem + ".json")


def expected_error(model_dir: Path, folds: tuple[int, ...]) -> dict[str, Any] | None:
    """The model's validation scores pooled over `folds`: per metric the case-weighted mean of each fold's mean
    (fold_k/validation/summary.json); None when no fold has a summary (e.g. training stopped before it)."""
    model = ModelFolder.at(model_dir)
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    used = []
    for fold in folds:
        path = model.fold(fold).validation_dir / VALIDATION_SUMMARY
        if not path.is_file():
            continue
        try:
            metrics = read_json_file(path, "run the fold's validation again").get("metrics", {}).get(MODEL_METHOD, {})
        except (AutosrError, AttributeError):
            continue
        used.append(fold)
        for metric, stats in metrics.items():
            if isinstance(stats, dict) and isinstance(stats.get("mean"), (int, float)) and stats.get("n"):
                totals[metric] = totals.get(metric, 0.0) + float(stats["mean"]) * int(stats["n"])
                counts[metric] = counts.get(metric, 0) + int(stats["n"])
    if not counts:
        return None
    return {
        "source": "validation of the folds used (held-out training cases), mean over their cases",
        "folds": used,
        "cases": max(counts.values()),
        "metrics": {metric: totals[metric] / counts[metric] for metric in sorted(counts)},
    }


def training_record(model_dir: Path) -> dict[str, Any] | None:
    """The model folder's `training_provenance.json` (a package's or an installed package's), or None."""
    path = model_dir / TRAINING_RECORD_NAME
    if not path.is_file():
        return None
    return read_json_file(path, "export the model package again")


def model_record(predictor: Any) -> dict[str, Any]:
    """Everything about the model and the prediction settings that is the same for every scan of a run."""
    model_dir: Path | None = getattr(predictor, "model_dir", None)
    folds = getattr(predictor, "folds", None)
    package = getattr(predictor, "package", None)  # a PackageIdentity (hashed once, when the package was opened)
    parts = ModelFolder.parse(model_dir.name) if model_dir is not None else None
    model: dict[str, Any] = {
        "dataset": model_dir.parent.name if model_dir is not None else None,
        "model_folder": model_dir.name if model_dir is not None else None,
        "trainer": parts.trainer if parts else None,
        "plans_name": parts.plans_name if parts else None,
        "configuration": getattr(predictor, "configuration_name", None),
        "folds": list(folds) if folds is not None else None,
        "checkpoint": getattr(predictor, "checkpoint_name", None),
        # a package is unpacked into a temporary folder: its path says nothing, the package's name and hash do
        "path": str(model_dir.resolve()) if model_dir is not None and package is None else None,
        "package": package.name if package is not None else None,
        "package_sha256": package.sha256 if package is not None else None,
        "training": training_record(model_dir) if model_dir is not None else None,
    }
    # read with defaults: any predictor-like object a notebook passes to the folder pipeline gets a record
    settings = getattr(predictor, "settings", None)
    sampler = getattr(predictor, "sampler", None)
    prediction = {
        "step_fraction": getattr(settings, "step_fraction", None),
        "mirror_axes": list(getattr(predictor, "mirror_axes", ())),
        "background_fill": getattr(settings, "background_fill", None),
        "generative": sampler is not None,
        "sampling_steps": (settings.sampling_steps or sampler.steps) if sampler is not None else None,
        "num_samples": getattr(predictor, "num_samples", None) if sampler is not None else None,
        "seed": getattr(settings, "seed", None),
        "device": str(getattr(predictor, "device", None)),
    }
    return {
        "format": PROVENANCE_FORMAT,
        "format_version": PROVENANCE_VERSION,
        "autosr_version": __version__,
        "python": platform.python_version(),
        "model": model,
        "prediction": prediction,
        "expected_error": expected_error(model_dir, tuple(folds)) if model_dir is not None and folds else None,
    }


def scan_record(
    model: dict[str, Any],
    case_id: str,
    prediction_file: Path,
    input_files: list[str],
    uncertainty_file: Path | None,
    on_input_grid: bool,
    flag: bool | None,
    reason: str,
    calibrated: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One scan's record: the run's `model_record` plus the files, the grid and the quality flag; with
    `calibrated` (the summary.csv columns of inference/calibration.write_interval) also this scan's own
    expected error, which the model-wide `expected_error` (pooled fold validation scores) cannot give."""
    record = {
        **model,
        "case": case_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "prediction_file": prediction_file.name,
        "inputs": input_files,
        "uncertainty_file": uncertainty_file.relative_to(prediction_file.parent).as_posix()
        if uncertainty_file is not None
        else None,
        "grid": "input" if on_input_grid else "planned spacing over the input's extent",
        "qc": {"flag": flag, "reason": reason},
    }
    if calibrated is not None:
        record["calibrated_error"] = {
            **calibrated,
            "interval_file": f"{INTERVAL_FOLDER}/{prediction_file.name}",
        }
    return record


def write_sidecar(prediction_file: Path, record: dict[str, Any]) -> Path:
    path = sidecar_path(prediction_file)
    atomic_write_json(record, path)
    return path


def read_provenance(file: str | os.PathLike) -> dict[str, Any]:
    """The provenance record of a prediction (its `<name>.json` sidecar) or of a sidecar given directly; a BIDS
    derivative's sidecar holds it under `autosr`."""
    file = Path(file)
    sidecar = file if file.suffix == ".json" else sidecar_path(file)
    if not file.exists():
        raise AutosrError(f"{file}: no such file")
    if not sidecar.is_file():
        raise AutosrError(
            f"{file}: no provenance sidecar {sidecar.name} beside it; autosr writes one beside every prediction "
            "(since version 0.1.0): was this file made by autosr predict, or moved without its .json?"
        )
    data = read_json_file(sidecar, "predict the file again to rewrite it")
    if isinstance(data, dict) and isinstance(data.get("autosr"), dict):
        data = data["autosr"]
    if not isinstance(data, dict) or data.get("format") != PROVENANCE_FORMAT:
        raise AutosrError(f'{sidecar}: not an autosr provenance record (no "format": "{PROVENANCE_FORMAT}")')
    return data


def describe_provenance(record: dict[str, Any]) -> str:
    """A few lines a person reads: which package/model, which folds, how, and the expected error."""
    model = record.get("model", {})
    prediction = record.get("prediction", {})
    lines = [f"case {record.get('case')}: {record.get('prediction_file')}, predicted {record.get('created')}"]
    lines.append(f"  autosr {record.get('autosr_version')}")
    if model.get("package"):
        lines.append(f"  model package {model['package']} (sha256 {model.get('package_sha256')})")
    elif model.get("path"):
        lines.append(f"  model folder {model['path']}")
    lines.append(
        f"  model {model.get('dataset')}/{model.get('model_folder')}: folds {model.get('folds')}, checkpoint "
        f"{model.get('checkpoint')}"
    )
    training = model.get("training") or {}
    if training:
        lines.append(
            f"  trained: fingerprint sha256 {training.get('fingerprint_sha256')}, plans sha256 "
            f"{training.get('plans_sha256')}, git commit {training.get('git_commit')}"
        )
    settings = ", ".join(f"{k}={v}" for k, v in prediction.items() if v is not None)
    lines.append(f"  prediction: {settings}")
    qc = record.get("qc", {})
    lines.append(f"  quality flag: {qc.get('flag')} ({qc.get('reason')})")
    error = record.get("expected_error")
    if error:
        metrics = error["metrics"]
        headline = [k for k in HEADLINE_METRICS if k in metrics] or list(metrics)
        shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in headline)
        lines.append(f"  expected error (validation, folds {error['folds']}): {shown}")
    else:
        lines.append("  expected error: unknown (the model folder holds no fold validation summary)")
    calibrated = record.get("calibrated_error")
    if calibrated:
        lines.append(
            f"  this scan's calibrated expected error: {calibrated['expected_error']:.4g} (mean absolute, target "
            f"units); interval half width {calibrated['interval_half_width']:.4g} at nominal coverage "
            f"{calibrated['interval_coverage_nominal']:.0%} ({calibrated['interval_file']})"
        )
    return "\n".join(lines)
