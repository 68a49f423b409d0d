"""`export_model`: one zip with everything a trained model needs to predict elsewhere, and nothing else.

What goes in (documentation/model_packages.md):

- plans.json, dataset.json, fingerprint.json: how scans are preprocessed, what the inputs are;
- splits.json and the cross-validation summary (`crossval_results/summary.json` and `cases.csv` when
  `autosr find-best` made them, each exported fold's `validation/summary.json`): what the figures rest on;
- qc_reference.json: the thresholds of the per-scan quality flags (built from the raw training cases when
  the raw dataset is reachable and the model folder has no current one);
- the distilled student's final checkpoint (`fold_distilled/`, from `autosr distill`) when there is one, reduced
  the same way;
- calibration.json when `autosr stress-test` made one: the expected error and 90% interval of each measured
  ensemble (autosr/inference/calibration.py);
- one checkpoint per exported fold, reduced to what prediction reads (`PREDICTION_CHECKPOINT_KEYS`: the
  weights, the network plan, the mirror axes, names and epochs; no optimizer state, no discriminator), loaded
  with `weights_only=True` and saved as plain tensors;
- training_provenance.json: how the model was trained (fingerprint and plans hashes, versions, git commit;
  packaging/training_record.py), which every prediction's provenance sidecar quotes;
- README.md (the model card) and autosr_model.json (the manifest with every file's SHA-256).

Validation predictions, training logs, progress pictures and the other checkpoints stay behind.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autosr import __version__
from autosr.checkpoint import load_checkpoint, save_torch
from autosr.errors import AutosrError
from autosr.formats.dataset_spec import load_dataset_spec
from autosr.formats.package_archive import sha256_of
from autosr.formats.package_manifest import MANIFEST_NAME, MODEL_CARD_NAME, PACKAGE_OUTPUT, Manifest
from autosr.formats.plans import Plans
from autosr.inference.calibration import CALIBRATION_NAME
from autosr.inference.model_folder import locate_model_folder, require_checkpoints
from autosr.inference.provenance import TRAINING_RECORD_NAME
from autosr.inference.qc import QC_REFERENCE_NAME, QCReference
from autosr.io import atomic_path, read_json
from autosr.io.atomic import atomic_copy, atomic_write_json, zip_problem
from autosr.io.outputs import check_output_file
from autosr.io.temporaries import private_folder
from autosr.model_layout import PLANNING_FILES, ModelFolder
from autosr.packaging.model_card import model_card
from autosr.packaging.training_record import training_record
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER, AutosrPaths

SUMMARY_FILE = "summary.json"  # the scores of a validation or cross-validation folder
CROSSVAL_TABLE = "cases.csv"
PREDICTION_CHECKPOINT_KEYS = (
    "format_version",
    "trainer",
    "configuration",
    "fold",
    "plans_name",
    "epoch",
    "num_epochs",
    "iters_per_epoch",
    "mirror_axes",
    "network_plan",
    "network_weights",
)

EXPORT_PREFIX = ".autosr-export-"  # the staging folder beside the package (owner in its name: io/temporaries)


def prediction_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The part of a training checkpoint that prediction reads (`PREDICTION_CHECKPOINT_KEYS`)."""
    return {k: checkpoint[k] for k in PREDICTION_CHECKPOINT_KEYS if k in checkpoint}


def _splits_file(model_dir: Path, dataset_name: str, paths: AutosrPaths) -> Path:
    candidates = [model_dir / "splits.json"]
    if paths.preprocessed is not None:
        candidates.append(paths.preprocessed / dataset_name / "splits.json")
    for path in candidates:
        if path.is_file():
            return path
    raise AutosrError(
        f"no splits.json for {dataset_name} (looked in {', '.join(map(str, candidates))}): the package records which "
        "cases each fold held out; set AUTOSR_PREPROCESSED (or --preprocessed) to the folder the model was trained from"
    )


def _qc_reference(model_dir: Path, dataset_name: str, paths: AutosrPaths, num_processes: int, progress: bool):
    """The model folder's current QC reference, built from the raw dataset when needed; None if impossible."""
    from autosr.inference.model_folder import configuration_of
    from autosr.inference.qc import reference_is_current
    from autosr.inference.qc_reference import ensure_reference
    from autosr.preprocessing.preprocess import preprocessing_hash

    raw = paths.raw / dataset_name if paths.raw is not None else None
    if raw is not None and raw.is_dir():
        return ensure_reference(model_dir, raw, num_processes, progress)
    plans = Plans.load(model_dir / "plans.json")
    configuration = configuration_of(model_dir, None, plans.configuration_names)
    existing = QCReference.load(model_dir)
    if reference_is_current(existing, configuration, preprocessing_hash(plans, configuration)):
        return existing
    print(
        f"autosr export-model: warning: the raw dataset {dataset_name} is not reachable (AUTOSR_RAW) and the model "
        f"folder has no current {QC_REFERENCE_NAME}: the package will not flag out-of-distribution scans"
    )
    return None


def _stage_checkpoint(path: Path, model_dir: Path, staging: Path, files: dict[str, Path]) -> dict:
    """A checkpoint reduced to what prediction reads, saved at its model-folder path under `staging` and
    listed in `files`; returns the reduced checkpoint."""
    reduced = prediction_checkpoint(load_checkpoint(path))
    name = path.relative_to(model_dir).as_posix()
    files[name] = staging / name
    files[name].parent.mkdir(parents=True, exist_ok=True)
    save_torch(reduced, files[name])
    return reduced


def export_model(
    dataset: str | int,
    configuration: str,
    output: str | os.PathLike,
    trainer: str = DEFAULT_TRAINER,
    plans_name: str = DEFAULT_PLANS_NAME,
    folds: Sequence[int] = (0, 1, 2, 3, 4),
    checkpoint: str = "final",
    paths: AutosrPaths | None = None,
    num_processes: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the model package of a trained model to `output` (a .zip, written atomically); returns its path.
    An existing `output` is replaced only with `overwrite` (autosr.io.outputs)."""
    paths = paths or AutosrPaths.resolve()
    output = Path(output)
    if output.suffix.lower() != ".zip":
        raise AutosrError(f"{output}: a model package is a .zip file; name it e.g. model.zip")
    check_output_file(output, PACKAGE_OUTPUT, overwrite)
    model_dir = locate_model_folder(paths, dataset, configuration, trainer, plans_name)
    dataset_name = model_dir.parent.name
    checkpoints = require_checkpoints(model_dir, list(folds), checkpoint)
    sources: dict[str, Path] = {}
    for name in PLANNING_FILES:
        if not (model_dir / name).is_file():
            raise AutosrError(
                f"{model_dir / name}: missing; training copies it into the model folder (copy it from "
                f"$AUTOSR_PREPROCESSED/{dataset_name}/{name})"
            )
        sources[name] = model_dir / name
    sources["splits.json"] = _splits_file(model_dir, dataset_name, paths)
    model = ModelFolder.at(model_dir)
    crossval_summary = model.crossval_dir / SUMMARY_FILE
    fold_summary_files = {fold: model.fold(fold).validation_dir / SUMMARY_FILE for fold in folds}
    for path in (crossval_summary, model.crossval_dir / CROSSVAL_TABLE, *fold_summary_files.values()):
        if path.is_file():
            sources[path.relative_to(model_dir).as_posix()] = path
    reference = _qc_reference(model_dir, dataset_name, paths, num_processes, progress)
    if reference is not None:
        sources[QC_REFERENCE_NAME] = model_dir / QC_REFERENCE_NAME
    if (model_dir / CALIBRATION_NAME).is_file():
        sources[CALIBRATION_NAME] = model_dir / CALIBRATION_NAME

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = private_folder(output.parent, EXPORT_PREFIX)
    try:
        files: dict[str, Path] = {}
        for name, source in sources.items():
            files[name] = staging / name
            files[name].parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(source, files[name])
        epochs = {}
        for fold, path in checkpoints.items():
            reduced = _stage_checkpoint(path, model_dir, staging, files)
            epochs[fold] = int(reduced.get("epoch", 0))
            trainer = reduced.get("trainer", trainer)
        student = model.distilled.checkpoint("final")
        if student.is_file():  # the distilled student travels with its teacher (`predict -f distilled`)
            _stage_checkpoint(student, model_dir, staging, files)
        files[TRAINING_RECORD_NAME] = staging / TRAINING_RECORD_NAME  # how the model was trained (provenance)
        record = training_record(files, dataset_name, model_dir.name, epochs, trainer)
        atomic_write_json(record, files[TRAINING_RECORD_NAME])
        manifest = Manifest(
            dataset_name=dataset_name,
            model_folder=model_dir.name,
            folds=[int(f) for f in folds],
            checkpoint=checkpoint,
            autosr_version=__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            files={name: {"sha256": sha256_of(p), "bytes": p.stat().st_size} for name, p in sorted(files.items())},
        )
        crossval = read_json(crossval_summary) if crossval_summary.is_file() else None
        fold_summaries = {fold: read_json(path) for fold, path in fold_summary_files.items() if path.is_file()}
        card = model_card(
            manifest,
            Plans.load(sources["plans.json"]),
            load_dataset_spec(model_dir),
            read_json(sources["fingerprint.json"]),
            crossval,
            fold_summaries,
            epochs,
            reference.data if reference is not None else None,
        )
        with atomic_path(output, verify=zip_problem) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2) + "\n")
                archive.writestr(MODEL_CARD_NAME, card)
                for name, path in sorted(files.items()):
                    archive.write(path, f"{manifest.model_path}/{name}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output
