"""On-disk format of one preprocessed case: memory-mappable .npy arrays plus a properties JSON.

    <folder>/<case>_input.npy    float32 (C, Z, Y, X), normalized input channels on the planned grid
    <folder>/<case>_target.npy   float32 (1, Z, Y, X), normalized target (training cases only)
    <folder>/<case>_mask.npy     uint8   (1, Z, Y, X), region that counts (the mask, else the foreground)
    <folder>/<case>.json         properties: everything needed to invert the preprocessing

The properties JSON is written last, so its presence marks a complete case: a run killed half way leaves
arrays without a JSON, which `is_complete` treats as absent. No pickle anywhere: arrays load with
`allow_pickle=False`, and `array_problems` reads each .npy header (dtype, shape) and compares the file size with
it before any array is mapped, so a truncated file, an object-dtype file or one of the wrong type or shape
is one message ("run `autosr plan`"), never a traceback from deep inside numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autosr.errors import AutosrError
from autosr.formats.source_files import content_identity
from autosr.io.atomic import atomic_save_npy, atomic_write_json
from autosr.io.json_file import read_json_file

ARRAY_KEYS = ("input", "target", "mask")
ARRAY_DTYPES = {"input": np.dtype(np.float32), "target": np.dtype(np.float32), "mask": np.dtype(np.uint8)}


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


def npy_problem(path: Path, dtype: np.dtype) -> tuple[str | None, tuple[int, ...] | None]:
    """(what is wrong with the .npy file at `path`, or None; its shape when the header could be read).

    Only the header is read (no array is loaded or unpickled): the dtype must be `dtype`, the file exactly as
    long as its header announces."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran_order, found = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran_order, found = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        return f"is not a readable .npy file ({e})", None
    if found.hasobject:
        return "holds Python objects (dtype object), which autosr never unpickles", None
    if found != dtype:
        return f"holds {found} values, not {dtype}", None
    expected = offset + int(np.prod(shape, dtype=np.int64)) * found.itemsize
    if size != expected:
        cut = "truncated" if size < expected else "longer than its header says"
        return f"is {cut}: {size} bytes where its header announces {expected}", tuple(shape)
    return None, tuple(shape)


def array_problems(folder: str | os.PathLike, case_id: str) -> list[str]:
    """What is wrong with a complete case's arrays ("<file> <problem>"), empty when they are sound: every .npy
    file by `npy_problem`, and the input, target and mask on one grid (target and mask one channel)."""
    paths = case_paths(folder, case_id)
    problems, shapes = [], {}
    for key in ARRAY_KEYS:
        if not paths[key].is_file():
            if key == "input":
                problems.append(f"{paths[key]} is missing")
            continue
        problem, shapes[key] = npy_problem(paths[key], ARRAY_DTYPES[key])
        if problem is not None:
            problems.append(f"{paths[key]} {problem}")
    if problems:
        return problems
    input_shape = shapes["input"]
    if len(input_shape) != 4:
        return [f"{paths['input']} has shape {input_shape}, not (channels, z, y, x)"]
    for key in ("target", "mask"):
        if key in shapes and shapes[key] != (1, *input_shape[1:]):
            problems.append(
                f"{paths[key]} has shape {shapes[key]}, not {(1, *input_shape[1:])} like {paths['input'].name}"
            )
    return problems


def load_case(folder: str | os.PathLike, case_id: str, mmap: bool = True) -> PreprocessedCase:
    """Load a case; arrays are memory-mapped read-only when `mmap` (the data loader's default).

    A damaged case (see `array_problems`) is one `AutosrError` naming the file and the command that redoes it."""
    paths = case_paths(folder, case_id)
    if not paths["properties"].is_file():
        raise AutosrError(
            f"{paths['properties']}: preprocessed case '{case_id}' is missing or incomplete; "
            "re-run `autosr plan DATASET` to (re)preprocess"
        )
    problems = array_problems(folder, case_id)
    if problems:
        raise AutosrError(f"{problems[0]}: the preprocessed case '{case_id}' is damaged; {REDO}")
    mode = "r" if mmap else None
    arrays = {}
    for key in ARRAY_KEYS:
        p = paths[key]
        arrays[key] = np.load(p, mmap_mode=mode, allow_pickle=False) if p.is_file() else None
    properties = read_json_file(paths["properties"], REDO)
    return PreprocessedCase(case_id, arrays["input"], arrays["target"], arrays["mask"], properties)


REDO = "run `autosr plan DATASET` again: it checks every preprocessed case and redoes the damaged ones"


def case_identities(folder: str | os.PathLike, case_ids: list[str]) -> dict[str, str | None]:
    """{case: identity} of preprocessed cases: a hash of the raw files' contents and of the plans that made
    the arrays (`content_identity`); it changes exactly when a case is preprocessed from other raw files or
    with other plans. None for a case without a record of its raw files (preprocessed by an older autosr)."""
    identities = {}
    for case_id in case_ids:
        try:
            properties = read_json_file(case_paths(folder, case_id)["properties"], REDO)
        except AutosrError:
            properties = None
        if not isinstance(properties, dict):
            identities[case_id] = None
            continue
        identities[case_id] = content_identity(
            properties.get("source_files"), str(properties.get("preprocessing_hash"))
        )
    return identities


def list_cases(folder: str | os.PathLike) -> list[str]:
    """Case ids with a properties JSON (complete cases) in `folder`, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))
