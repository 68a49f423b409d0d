"""End-of-fold validation: predict each validation case from its raw files, export it, score it.

Each validation case's raw input files go through `Predictor.predict_case`, the code `autosr predict` runs
(the same preprocessing of the raw scan, sliding window with Gaussian weighting, test-time mirroring over
the axes the trainer mirrored, export in target units on the planned grid over the input's field of view),
into `fold_k/validation/<case><ending>`: the file `autosr predict` would write for that scan with this fold.
The predictions are then scored against the raw targets (resampled onto the target grid where the grids
differ) with the evaluation package (`score_validation_predictions`), next to the no-learning baseline fitted
on this fold's training cases, into `fold_k/validation/summary.json` and `cases.csv`. So the
cross-validation table is exactly what a user of `autosr predict` would have got.

Predictions already on disk are not recomputed, so a killed validation resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autosr.errors import AutosrError
from autosr.formats.dataset_spec import discover_cases, load_dataset_spec
from autosr.formats.plans import Plans


def validate_fold(
    network: nn.Module,
    plans: Plans,
    configuration: str,
    fold: int,
    splits: list[dict[str, list[str]]],
    raw_dataset_dir: Path,
    output_folder: Path,
    device: torch.device,
    mirror_axes: Sequence[int],
    sampler: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict, export and score fold `fold`'s validation cases; returns the summary written. `sampler`: the
    trainer's `sampler_spec()` for a generative network (sampled as `autosr predict` does by default)."""
    from autosr.evaluation.crossval import fold_baseline_params, score_validation_predictions
    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings

    output_folder = Path(output_folder)
    spec = load_dataset_spec(raw_dataset_dir)
    cases = discover_cases(raw_dataset_dir, spec, "Tr")
    val_cases = list(splits[fold]["val"])
    settings = PredictionSettings(device=str(device))
    predictor = Predictor([network], plans, configuration, spec, settings, mirror_axes=mirror_axes, sampler=sampler)
    files: dict[str, Path] = {}
    for case_id in val_cases:
        if case_id not in cases:
            raise AutosrError(
                f"validation case {case_id} of splits.json has no files in {raw_dataset_dir / 'imagesTr'}"
            )
        out = output_folder / f"{case_id}{spec.file_ending}"
        files[case_id] = out
        if not out.is_file():
            predictor.predict_case(cases[case_id].channels, out)
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
