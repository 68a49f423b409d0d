"""Five-fold cross-validation splits, written once to `splits.json` and reused by every configuration.

The file is a JSON list of `{"train": [...], "val": [...]}`, one per fold, so a user can replace it with
their own (patient-level grouping, site stratification). A user-provided file wins; its cases are checked
against the preprocessed data. Fold "all" is not stored: it trains on every case.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autosr.errors import AutosrError
from autosr.io.atomic import atomic_write_json
from autosr.io.json_file import read_json_file
from autosr.paths import ensure_writable_folder

SPLITS_FILE = "splits.json"
FOLD_ALL = "all"


def make_splits(case_ids: Sequence[str], num_folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """Shuffle the sorted case ids with `seed` and deal them into `num_folds` validation sets."""
    cases = sorted(case_ids)
    if len(cases) < num_folds:
        raise AutosrError(
            f"{len(cases)} training cases cannot make {num_folds} cross-validation folds; "
            f"add cases (at least {num_folds}) or train with fold 'all'"
        )
    order = np.random.RandomState(seed).permutation(len(cases))
    folds = [sorted(cases[i] for i in order[f::num_folds]) for f in range(num_folds)]
    return [{"train": sorted(c for c in cases if c not in set(val)), "val": val} for val in folds]


def validate_splits(splits: object, case_ids: Sequence[str] | None, path: Path) -> list[dict[str, list[str]]]:
    """Check a (possibly hand-written) splits file, and its cases against the available ones when given."""
    if not isinstance(splits, list) or not splits or not all(isinstance(f, dict) for f in splits):
        raise AutosrError(f"{path}: must be a JSON list of {{'train': [...], 'val': [...]}} (one per fold)")
    known = set(case_ids) if case_ids is not None else None
    for k, fold in enumerate(splits):
        for key in ("train", "val"):
            if not isinstance(fold.get(key), list) or not all(isinstance(c, str) for c in fold[key]):
                raise AutosrError(f"{path}: fold {k} needs a list of case ids under '{key}'")
            missing = sorted(set(fold[key]) - known) if known is not None else []
            if missing:
                raise AutosrError(
                    f"{path}: fold {k} '{key}' names cases that are not preprocessed: {', '.join(missing[:10])}"
                    f"{' ...' if len(missing) > 10 else ''}; fix the file or delete it to regenerate"
                )
        if not fold["train"]:
            raise AutosrError(f"{path}: fold {k} has no training cases")
    return splits


def read_splits(preprocessed_dataset_dir: str | os.PathLike) -> list[dict[str, list[str]]]:
    """The folds of an existing `splits.json` (structure checked; cases are checked against preprocessed data
    by `load_or_create_splits`, which training uses)."""
    path = Path(preprocessed_dataset_dir) / SPLITS_FILE
    if not path.is_file():
        raise AutosrError(f"{path}: not found; the folds are written when training starts (`autosr train`)")
    splits = read_json_file(path, "fix it or delete it to regenerate")
    return validate_splits(splits, None, path)


def load_or_create_splits(
    preprocessed_dataset_dir: str | os.PathLike,
    case_ids: Sequence[str],
    num_folds: int = 5,
    seed: int = 12345,
) -> list[dict[str, list[str]]]:
    """The splits of `preprocessed_dataset_dir/splits.json`; created (atomically) when absent."""
    path = Path(preprocessed_dataset_dir) / SPLITS_FILE
    if path.is_file():
        splits = read_json_file(path, "fix it or delete it to regenerate")
        return validate_splits(splits, case_ids, path)
    splits = make_splits(case_ids, num_folds, seed)
    ensure_writable_folder(
        path.parent,
        fix=f"{SPLITS_FILE} (the cross-validation folds) is written there once: make the folder writable, point "
        f"AUTOSR_PREPROCESSED elsewhere, or put a {SPLITS_FILE} there yourself",
    )
    atomic_write_json(splits, path)
    return splits


def parse_fold(fold: str | int, num_folds: int = 5) -> int | str:
    """0..num_folds-1 or 'all'; anything else is a clear error."""
    text = str(fold).strip().lower()
    if text == FOLD_ALL:
        return FOLD_ALL
    if text.isdigit() and 0 <= int(text) < num_folds:
        return int(text)
    raise AutosrError(f"fold must be 0..{num_folds - 1} or 'all', got '{fold}'")


def cases_of_fold(
    splits: list[dict[str, list[str]]], fold: int | str, case_ids: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(training cases, validation cases). Fold 'all' trains on everything and validates on nothing."""
    if fold == FOLD_ALL:
        return sorted(case_ids), []
    if fold >= len(splits):
        raise AutosrError(f"fold {fold} is not in splits.json, which has {len(splits)} folds (0..{len(splits) - 1})")
    return list(splits[fold]["train"]), list(splits[fold]["val"])
