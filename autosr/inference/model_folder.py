"""Finding a trained model folder and its checkpoints, and loading them without unpickling anything.

A model folder is `$AUTOSR_RESULTS/DatasetXXX_Name/<Trainer>__<plans>__<configuration>/` with copies of
plans.json and dataset.json and one `fold_k/checkpoint_<name>.pt` per trained fold. Everything that can be
wrong here is the user's to fix (a fold not trained yet, a typo in a trainer name), so every problem is an
`AutosrError` that names the missing file and the command that makes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autosr.errors import AutosrError
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER, AutosrPaths, model_folder_name

CHECKPOINT_NAMES = ("final", "best", "latest")
NAME_SEPARATOR = "__"


@dataclass(frozen=True)
class ModelFolderName:
    """The three parts of a model folder's name."""

    trainer: str
    plans_name: str
    configuration: str

    def __str__(self) -> str:
        return model_folder_name(self.trainer, self.plans_name, self.configuration)


def parse_model_folder_name(name: str) -> ModelFolderName | None:
    """`Trainer__autosrPlans__3d_fullres` -> its parts; None when the name does not have that shape."""
    parts = name.split(NAME_SEPARATOR)
    if len(parts) != 3 or not all(parts):
        return None
    return ModelFolderName(*parts)


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
    folder = dataset_dir / str(ModelFolderName(trainer, plans_name, configuration))
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


def checkpoint_file(model_dir: Path, fold: int, checkpoint: str) -> Path:
    return Path(model_dir) / f"fold_{fold}" / f"checkpoint_{checkpoint}.pt"


def require_checkpoints(model_dir: str | os.PathLike, folds: Sequence[int], checkpoint: str) -> dict[int, Path]:
    """The checkpoint file of every requested fold; all missing ones are named in one error."""
    if checkpoint not in CHECKPOINT_NAMES:
        raise AutosrError(f"unknown checkpoint '{checkpoint}' (choose one of {', '.join(CHECKPOINT_NAMES)})")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise AutosrError(f"{model_dir}: model folder not found")
    if not folds:
        raise AutosrError("no folds requested; pass -f 0 1 2 3 4 (or the folds that were trained)")
    found = {fold: checkpoint_file(model_dir, fold, checkpoint) for fold in folds}
    missing = [fold for fold, p in found.items() if not p.is_file()]
    if missing:
        available = sorted(
            int(p.parent.name.split("_")[1])
            for p in model_dir.glob(f"fold_*/checkpoint_{checkpoint}.pt")
            if p.parent.name.split("_")[1].isdigit()
        )
        names = ", ".join(str(checkpoint_file(model_dir, f, checkpoint)) for f in missing)
        hint = (
            f"train the missing folds (`autosr train DATASET CONFIG FOLD`), or predict with the folds that have "
            f"one (-f {' '.join(map(str, available))})"
            if available
            else "train the folds first (`autosr train DATASET CONFIG FOLD`)"
        )
        if checkpoint == "final":
            hint += "; an unfinished training has checkpoint_best.pt/checkpoint_latest.pt (--checkpoint best)"
        raise AutosrError(f"missing checkpoint{'s' if len(missing) > 1 else ''} {names}: {hint}")
    return found


def configuration_of(model_dir: Path, checkpoint: dict[str, Any] | None, available: Sequence[str]) -> str:
    """The configuration a model folder holds: from its name, else the checkpoint, else the only one."""
    parsed = parse_model_folder_name(Path(model_dir).name)
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
