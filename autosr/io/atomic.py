"""Verified atomic file writes: write to a temporary name beside the destination, check, then rename.

Every file a later run trusts (images, JSON, arrays, checkpoints, tables that are read back) is written
through `atomic_path` or the helpers on top of it:

1. the content goes to a hidden temporary sibling `.<stem>.tmp-h<host>-<pid>-<random><suffix>`;
2. it is flushed to the disk (fsync) and checked: a writer that ignores a short write (SimpleITK's NIfTI
   writer does, on a full disk or past a file-size limit) is caught here, by the size that was meant or by a
   cheap integrity check of the format (`verify`);
3. only then is it renamed to its final name (and the folder synced), so a killed or failed run leaves
   either the old file or the new one, never half of one, and a resumed run can trust every file it finds.

A failed write (the disk is full, a file-size limit is set: ENOSPC, EDQUOT, EFBIG, or a check that finds
less than was meant) raises one `FileWriteError` naming the file and the fix; the temporary is removed.

A process killed between writing its temporary file and renaming it (kill -9, power loss) leaves that
file behind; the next write of the same target removes such leftovers, so reruns do not pile up hidden
copies of checkpoints and predictions. (A process lists a folder's temporary files at most once a minute:
a leftover that appears while it runs is found by a write after the next listing.) A leftover is one whose
writer (the pid in its name, see `autosr.io.temporaries`) is no longer running on this machine; one written
by a process still alive, or on another machine, is left alone, because two writers of one file at a time
do not happen in autosr (checkpoints are written by rank 0 only, each prediction and each preprocessed case
by one process) and, should a user start the same part twice, each writer keeps its own temporary file and
the last rename wins. `remove_stale_temporaries(folder)` sweeps a whole folder (a cache whose entries are
skipped once present, so no later write of the same name would find the leftover).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autosr.errors import FileWriteError
from autosr.io.temporaries import owned_name, owner_is_gone

TEMP_MARKER = ".tmp-"
# what a full disk or a file-size limit (`ulimit -f`) looks like to a writer
DISK_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if code is not None
)
# `verify(temporary) -> problem or None`: what a writer checks before the rename
Verify = Callable[[Path], "str | None"]


def _stem_and_suffix(path: Path) -> tuple[str, str]:
    suffix = "".join(path.suffixes) if path.suffixes else ""
    return (path.name[: len(path.name) - len(suffix)] if suffix else path.name), suffix


def temporary_name_for(path: Path) -> Path:
    """A hidden sibling name for `path` that keeps its full extension (SimpleITK picks the format by it)."""
    stem, suffix = _stem_and_suffix(path)
    return path.with_name(owned_name(f".{stem}{TEMP_MARKER}", suffix))


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
        # a leftover of this very process (a write that failed before its clean-up) counts as stale too
        if owner_is_gone(name[len(prefix) : len(name) - len(suffix)], self_is_gone=True):
            stale.append(path.parent / name)
    return stale


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove every temporary file in `folder` whose writer has ended (on this machine); returns them."""
    removed = []
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".") and TEMP_MARKER in e.name]
    except OSError:
        return []
    for entry in entries:
        stem_end = entry.name.rindex(TEMP_MARKER) + len(TEMP_MARKER)
        tag = entry.name[stem_end:].split(".", 1)[0]
        if entry.is_file(follow_symlinks=False) and owner_is_gone(tag):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    _temporary_names_cache.pop(os.path.abspath(folder), None)
    return removed


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


# --- failed writes ----------------------------------------------------------------------------------------


def disk_full_cause(error: BaseException) -> OSError | None:
    """The OSError saying the disk is full or a file-size limit was reached, if `error` is or wraps one
    (torch reports a failed write as a RuntimeError whose context is the OSError)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def named_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk or a file-size limit met while writing `path` into one `FileWriteError` naming it (for
    writes that are not atomic: appending to a log)."""
    try:
        yield
    except FileWriteError:
        raise
    except Exception as e:
        cause = disk_full_cause(e)
        if cause is None:
            raise
        raise FileWriteError(path, cause.strerror or os.strerror(cause.errno)) from e


def _fsync_file(path: Path) -> None:
    """Flush a written file's data to the disk (where a delayed write can still fail: NFS, quotas)."""
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself has happened
    finally:
        os.close(fd)


def size_is(expected: int) -> Verify:
    """A `verify` for a file whose size is known in advance."""

    def check(path: Path) -> str | None:
        found = path.stat().st_size
        return None if found == expected else f"{found} of its {expected} bytes reached the disk"

    return check


def zip_problem(path: Path) -> str | None:
    """A `verify` for a zip archive (a torch checkpoint, a model package): its central directory, which is
    written last, is readable; a file cut short lacks it."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        return f"the archive is incomplete ({e}): only {path.stat().st_size} bytes reached the disk"
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, verify: Verify | None = None) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is synced, checked with `verify` (when given) and
    renamed to `path`; on error removed. A full disk or a file-size limit, and a failed check, raise
    `FileWriteError`; `path` then keeps what it held before."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in stale_temporaries_of(final):
        leftover.unlink(missing_ok=True)
        names = _temporary_names_cache.get(os.path.abspath(final.parent), (0.0, []))[1]
        if leftover.name in names:
            names.remove(leftover.name)
    tmp = temporary_name_for(final)
    try:
        with named_write_errors(final):
            try:
                yield tmp
            except FileWriteError as e:
                if Path(str(e.path)) != tmp:
                    raise
                raise FileWriteError(final, e.problem) from e  # a nested atomic write: name the real file
            _fsync_file(tmp)
            problem = verify(tmp) if verify is not None else None
            if problem is not None:
                raise FileWriteError(final, problem)
            os.replace(tmp, final)
        _fsync_folder(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write `data` atomically, checked by its size."""
    with atomic_path(path, verify=size_is(len(data))) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write UTF-8 text atomically, checked by its size."""
    atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj: Any, path: str | os.PathLike, indent: int = 2) -> None:
    """Write JSON atomically (sorted keys off: the writer's order is the reader's order)."""
    atomic_write_text(json.dumps(obj, indent=indent, allow_nan=False) + "\n", path)


def atomic_save_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    """Save one array as .npy (memory-mappable, no pickle) atomically, checked by its size."""
    written = [0]

    def check(tmp: Path) -> str | None:
        return size_is(written[0])(tmp)

    with atomic_path(path, verify=check) as tmp:
        with open(tmp, "wb") as f:
            try:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            except OSError as e:
                if e.errno is not None:
                    raise
                raise FileWriteError(path, str(e)) from e  # numpy's short write: "N requested and M written"
            written[0] = f.tell()


def atomic_copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy `source` to `destination` atomically, checked by the source's size."""
    size = os.path.getsize(source)
    with atomic_path(destination, verify=size_is(size)) as tmp:
        shutil.copyfile(source, tmp)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
