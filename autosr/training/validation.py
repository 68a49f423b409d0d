"""End-of-fold validation: predict each validation case as a whole volume, export it, score it.

The fold's network goes through the same `Predictor` users run (sliding window with Gaussian weighting,
test-time mirroring over the axes the trainer mirrored) and the same export (`revert_prediction`: target
units, the case's original target grid), into `fold_k/validation/<case><ending>`. The predictions are then
scored against the raw targets with the evaluation package (`score_validation_predictions`), next to the
no-learning baseline fitted on this fold's training cases, into `fold_k/validation/summary.json` and
`cases.csv`. So the cross-validation table is exactly what a user of `autosr predict` would have got.

Predictions already on disk are not recomputed, so a killed validation resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autosr.dataset.spec import load_dataset_spec
from autosr.io import write_image
from autosr.planning.plans import Plans
from autosr.preprocessing.case_store import load_case

SUMMARY_FILE = "summary.json"


def validate_fold(
    network: nn.Module,
    plans: Plans,
    configuration: str,
    fold: int,
    splits: list[dict[str, list[str]]],
    data_folder: Path,
    raw_dataset_dir: Path,
    output_folder: Path,
    device: torch.device,
    mirror_axes: Sequence[int],
    progress: bool = True,
) -> dict[str, Any]:
    """Predict, export and score fold `fold`'s validation cases; returns the summary written."""
    from autosr.evaluation.crossval import fold_baseline_params, score_validation_predictions
    from autosr.inference.predictor import Predictor

    output_folder = Path(output_folder)
    spec = load_dataset_spec(raw_dataset_dir)
    val_cases = list(splits[fold]["val"])
    was_ds = getattr(network, "deep_supervision", False)
    predictor = Predictor([network], plans, configuration, dataset_spec=spec, device=device, mirror_axes=mirror_axes)
    files: dict[str, Path] = {}
    try:
        for case_id in val_cases:
            out = output_folder / f"{case_id}{spec.file_ending}"
            files[case_id] = out
            if out.is_file():
                continue
            case = load_case(data_folder, case_id, mmap=False)
            prediction, _ = predictor.predict_preprocessed(np.asarray(case.input, dtype=np.float32))
            array, geometry, _ = predictor.export(prediction, case.properties)
            write_image(array, geometry, out)
    finally:
        network.deep_supervision = was_ds
    baseline = fold_baseline_params(raw_dataset_dir, spec, [splits[fold]])[0]
    # pad the split list so the fold column of the table says `fold`
    scoring_splits = [{"train": [], "val": []}] * fold + [splits[fold]]
    _, summary = score_validation_predictions(
        files,
        raw_dataset_dir,
        scoring_splits,
        output_folder,
        baseline_params={fold: baseline},
        description={"fold": fold, "configuration": configuration},
    )
    return summary
