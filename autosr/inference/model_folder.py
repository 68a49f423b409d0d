"""Finding a trained model folder and its checkpoints for prediction.

The layout itself (`<Trainer>__<plans>__<configuration>/fold_k/checkpoint_<name>.pt`) is
`autosr.model_layout`'s. Everything that can be wrong here is the user's to fix (a fold not trained yet, a
typo in a trainer name), so every problem is an `AutosrError` that names the missing file and the command
that makes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autosr.errors import AutosrError
from autosr.model_layout import CHECKPOINT_NAMES, DISTILLED_FOLD, ModelFolder
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER, AutosrPaths


def locate_model_folder(
    paths: AutosrPaths,
    dataset: str | int,
    configuration: str,
    trainer: str = DEFAULT_TRAINER,
    plans_name: str = DEFAULT_PLANS_NAME,
) -> Path:
    """The model folder of a dataset and configuration, or an error saying what was trained instead."""
    results = paths.require("results")
    try:
        dataset_name = paths.dataset_name(dataset)
    except AutosrError as e:
        raise AutosrError(f"{e}; a dataset must be planned and trained before it can predict") from e
    dataset_dir = results / dataset_name
    folder = ModelFolder.create(dataset_dir, trainer, plans_name, configuration).path
    if folder.is_dir():
        return folder
    trained = sorted(p.name for p in dataset_dir.iterdir() if p.is_dir()) if dataset_dir.is_dir() else []
    if not trained:
        raise AutosrError(
            f"{dataset_name} was never trained: {dataset_dir} holds no model folders; train it first "
            f"(`autosr train {dataset_name} {configuration} FOLD` for folds 0-4)"
        )
    raise AutosrError(
        f"{folder}: no such model folder; trained models of {dataset_name}: {', '.join(trained)} "
        "(pick one with -c/--trainer/--plans, or give the folder with -m)"
    )


def require_checkpoints(
    model_dir: str | os.PathLike, folds: Sequence[int | str], checkpoint: str
) -> dict[int | str, Path]:
    """The checkpoint file of every requested fold; all missing ones are named in one error."""
    if checkpoint not in CHECKPOINT_NAMES:
        raise AutosrError(f"unknown checkpoint '{checkpoint}' (choose one of {', '.join(CHECKPOINT_NAMES)})")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise AutosrError(f"{model_dir}: model folder not found")
    if not folds:
        raise AutosrError("no folds requested; pass -f 0 1 2 3 4 (or the folds that were trained)")
    model = ModelFolder.at(model_dir)
    found = {fold: model.fold(fold).checkpoint(checkpoint) for fold in folds}
    missing = [fold for fold, p in found.items() if not p.is_file()]
    if missing:
        available = model.folds_with_checkpoint(checkpoint)
        names = ", ".join(str(found[f]) for f in missing)
        hint = (
            f"train the missing folds (`autosr train DATASET CONFIG FOLD`), or predict with the folds that have "
            f"one (-f {' '.join(map(str, available))})"
            if available
            else "train the folds first (`autosr train DATASET CONFIG FOLD`)"
        )
        if DISTILLED_FOLD in missing:
            hint = "distill the student first (`autosr distill DATASET -c CONFIG`), or predict with the folds (-f 0 1 2 3 4)"
        if checkpoint == "final":
            hint += "; an unfinished training has checkpoint_best.pt/checkpoint_latest.pt (--checkpoint best)"
        raise AutosrError(f"missing checkpoint{'s' if len(missing) > 1 else ''} {names}: {hint}")
    return found


def configuration_of(model_dir: Path, checkpoint: dict[str, Any] | None, available: Sequence[str]) -> str:
    """The configuration a model folder holds: from its name, else the checkpoint, else the only one."""
    parsed = ModelFolder.parse(model_dir)
    if parsed is not None and parsed.configuration in available:
        return parsed.configuration
    stored = (checkpoint or {}).get("configuration")
    if isinstance(stored, str) and stored in available:
        return stored
    if len(available) == 1:
        return available[0]
    raise AutosrError(
        f"{model_dir}: cannot tell which configuration this model folder holds (the name is not "
        f"<Trainer>__<plans>__<configuration> and the checkpoints do not say); rename the folder"
    )
