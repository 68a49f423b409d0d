"""On-disk format of one preprocessed case: memory-mappable .npy arrays plus a properties JSON.

    <folder>/<case>_input.npy    float32 (C, Z, Y, X), normalized input channels on the planned grid
    <folder>/<case>_target.npy   float32 (1, Z, Y, X), normalized target (training cases only)
    <folder>/<case>_mask.npy     uint8   (1, Z, Y, X), region that counts (the mask, else the foreground)
    <folder>/<case>.json         properties: everything needed to invert the preprocessing

The properties JSON is written last, so its presence marks a complete case: a run killed half way leaves
arrays without a JSON, which `is_complete` treats as absent. No pickle anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autosr.errors import AutosrError
from autosr.io.atomic import atomic_save_npy, atomic_write_json, read_json

ARRAY_KEYS = ("input", "target", "mask")


@dataclass
class PreprocessedCase:
    """One case's arrays (possibly memory-mapped) and properties."""

    case_id: str
    input: np.ndarray
    target: np.ndarray | None
    mask: np.ndarray | None
    properties: dict[str, Any]


def case_paths(folder: str | os.PathLike, case_id: str) -> dict[str, Path]:
    folder = Path(folder)
    paths = {k: folder / f"{case_id}_{k}.npy" for k in ARRAY_KEYS}
    paths["properties"] = folder / f"{case_id}.json"
    return paths


def save_case(
    folder: str | os.PathLike,
    case_id: str,
    input_array: np.ndarray,
    properties: dict[str, Any],
    target_array: np.ndarray | None = None,
    mask_array: np.ndarray | None = None,
) -> None:
    """Write a case atomically: arrays first, properties JSON last (the completion marker)."""
    paths = case_paths(folder, case_id)
    if paths["properties"].exists():
        paths["properties"].unlink()  # invalidate first: a crash below must not leave a stale marker
    atomic_save_npy(np.asarray(input_array, dtype=np.float32), paths["input"])
    if target_array is not None:
        atomic_save_npy(np.asarray(target_array, dtype=np.float32), paths["target"])
    if mask_array is not None:
        atomic_save_npy(np.asarray(mask_array, dtype=np.uint8), paths["mask"])
    atomic_write_json(properties, paths["properties"])


def is_complete(folder: str | os.PathLike, case_id: str, require_target: bool = True) -> bool:
    paths = case_paths(folder, case_id)
    if not (paths["properties"].is_file() and paths["input"].is_file()):
        return False
    return paths["target"].is_file() or not require_target


def load_case(folder: str | os.PathLike, case_id: str, mmap: bool = True) -> PreprocessedCase:
    """Load a case; arrays are memory-mapped read-only when `mmap` (the data loader's default)."""
    paths = case_paths(folder, case_id)
    if not paths["properties"].is_file():
        raise AutosrError(
            f"{paths['properties']}: preprocessed case '{case_id}' is missing or incomplete; "
            "re-run `autosr plan DATASET` to (re)preprocess"
        )
    mode = "r" if mmap else None
    arrays = {}
    for key in ARRAY_KEYS:
        p = paths[key]
        arrays[key] = np.load(p, mmap_mode=mode, allow_pickle=False) if p.is_file() else None
    if arrays["input"] is None:
        raise AutosrError(f"{paths['input']}: missing; re-run `autosr plan DATASET`")
    return PreprocessedCase(case_id, arrays["input"], arrays["target"], arrays["mask"], read_json(paths["properties"]))


def list_cases(folder: str | os.PathLike) -> list[str]:
    """Case ids with a properties JSON (complete cases) in `folder`, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))
