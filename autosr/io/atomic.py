"""Atomic file writes: write to a temporary name beside the destination, then rename.

A killed process leaves either the old file or the new one, never half of one, so a resumed run can trust
every file it finds. Temporary names start with '.' and contain '.tmp-' so they are never mistaken for
outputs: `.<stem>.tmp-<pid>-<random><suffix>`.

A process killed between writing its temporary file and renaming it (kill -9, power loss) leaves that
file behind; the next write of the same target removes such leftovers, so reruns do not pile up hidden
copies of checkpoints and predictions. (A process lists a folder's temporary files at most once a minute:
a leftover that appears while it runs is found by a write after the next listing.) A leftover is one whose writer (the pid in its name) is no longer
running on this machine; one written by a process still alive is left alone, because two writers of one
file at a time do not happen in autosr (checkpoints are written by rank 0 only, each prediction and each
preprocessed case by one process) and, should a user start the same part twice, each writer keeps its
own temporary file and the last rename wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TEMP_MARKER = ".tmp-"
TEMP_WRITER_AND_RANDOM = re.compile(r"(?:(\d+)-)?[0-9a-f]{8}")  # between the marker and the suffix


def _stem_and_suffix(path: Path) -> tuple[str, str]:
    suffix = "".join(path.suffixes) if path.suffixes else ""
    return (path.name[: len(path.name) - len(suffix)] if suffix else path.name), suffix


def temporary_name_for(path: Path) -> Path:
    """A hidden sibling name for `path` that keeps its full extension (SimpleITK picks the format by it)."""
    stem, suffix = _stem_and_suffix(path)
    return path.with_name(f".{stem}{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and TEMP_MARKER in path.name


def stale_temporaries_of(path: Path) -> list[Path]:
    """Temporary files of `path` left by writers that are no longer running (see the module docstring)."""
    names = _temporary_names(path.parent)
    if not names:
        return []
    stem, suffix = _stem_and_suffix(path)
    prefix = f".{stem}{TEMP_MARKER}"
    stale = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix)):
            continue
        if not (match := TEMP_WRITER_AND_RANDOM.fullmatch(name[len(prefix) : len(name) - len(suffix)])):
            continue
        writer = int(match.group(1)) if match.group(1) else None  # older names carry no pid
        if writer is None or writer == os.getpid() or not _is_running(writer):
            stale.append(path.parent / name)
    return stale


# folder -> (when it was listed, the temporary-file names in it). Listing a folder of 10,000 predictions
# for every write would cost more than the write; temporaries are few, so one listing a minute suffices.
_temporary_names_cache: dict[str, tuple[float, list[str]]] = {}
RELIST_SECONDS = 60.0


def _temporary_names(folder: Path) -> list[str]:
    key = os.path.abspath(folder)
    cached = _temporary_names_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < RELIST_SECONDS:
        return cached[1]
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.name.startswith(".") and TEMP_MARKER in entry.name]
    except OSError:
        names = []
    _temporary_names_cache[key] = (time.monotonic(), names)
    return names


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed to `path`, on error removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in stale_temporaries_of(final):
        leftover.unlink(missing_ok=True)
        _temporary_names_cache.get(os.path.abspath(final.parent), (0.0, []))[1].remove(leftover.name)
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
