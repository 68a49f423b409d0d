"""Atomic file writes: write to a temporary name beside the destination, then rename.

A killed process leaves either the old file or the new one, never half of one, so a resumed run can trust
every file it finds. Temporary names start with '.' and contain '.tmp-' so they are never mistaken for
outputs (and can be cleaned up).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TEMP_MARKER = ".tmp-"


def temporary_name_for(path: Path) -> Path:
    """A hidden sibling name for `path` that keeps its full extension (SimpleITK picks the format by it)."""
    name = path.name
    suffix = "".join(path.suffixes) if path.suffixes else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    return path.with_name(f".{stem}{TEMP_MARKER}{uuid.uuid4().hex[:8]}{suffix}")


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and TEMP_MARKER in path.name


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed to `path`, on error removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name_for(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_json(obj: Any, path: str | os.PathLike, indent: int = 2) -> None:
    """Write JSON atomically (sorted keys off: the writer's order is the reader's order)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, allow_nan=False)
            f.write("\n")


def atomic_save_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    """Save one array as .npy (memory-mappable, no pickle) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
