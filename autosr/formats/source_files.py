"""Which raw files something derived from a dataset was made from, and whether they changed since.

The fingerprint (one record per case) and every preprocessed case (its properties JSON) carry a record of
the raw files they were computed from: per file, its path relative to the dataset folder, its size, its
modification time (ns) and the SHA-256 of its content. A later `autosr plan` compares the record with the
files as they are now:

- same size and modification time: unchanged (no file is read; the usual case, so re-planning stays fast);
- otherwise the content is hashed: the same content (a copy that lost its times, a `touch`) is unchanged,
  other content (a replaced or re-exported scan) is a change, and so is a file added to or gone from the case.

Content decides, not times, so a dataset copied to another disk is not preprocessed again, and the identity
of a preprocessed case (`content_identity`) only changes when what went into it changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHUNK_BYTES = 1024**2


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _key(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows): the absolute path names it
        return Path(path).as_posix()


def record_source_files(files: Iterable[Path | None], root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """{path relative to `root`: {"bytes", "mtime_ns", "sha256"}} of the files (None entries are skipped)."""
    record = {}
    for path in files:
        if path is None:
            continue
        stat = Path(path).stat()
        record[_key(Path(path), Path(root))] = {
            "bytes": int(stat.st_size),
            "mtime_ns": int(stat.st_mtime_ns),
            "sha256": file_sha256(path),
        }
    return record


def changed_source_files(recorded: Any, files: Iterable[Path | None], root: str | os.PathLike) -> list[str] | None:
    """The files (relative paths) whose content differs from `recorded`, or that were added or removed;
    an empty list when nothing changed; None when there is no usable record (made by an older autosr)."""
    if not isinstance(recorded, dict) or not recorded:
        return None
    root = Path(root)
    current = {_key(Path(p), root): Path(p) for p in files if p is not None}
    changed = sorted(set(current) ^ set(recorded))
    for key in sorted(set(current) & set(recorded)):
        entry, path = recorded[key], current[key]
        if not isinstance(entry, dict):
            changed.append(key)
            continue
        try:
            stat = path.stat()
        except OSError:
            changed.append(key)
            continue
        if stat.st_size == entry.get("bytes") and stat.st_mtime_ns == entry.get("mtime_ns"):
            continue
        if stat.st_size != entry.get("bytes") or file_sha256(path) != entry.get("sha256"):
            changed.append(key)
    return sorted(changed)


def content_identity(record: Any, *extra: str) -> str | None:
    """A short hash of what a record's files hold (their contents, not their times) and of `extra` (e.g. the
    preprocessing hash): equal exactly when the same contents went in the same way. None without a record."""
    if not isinstance(record, dict) or not record:
        return None
    parts = [
        f"{key}={entry.get('sha256') if isinstance(entry, dict) else None}" for key, entry in sorted(record.items())
    ]
    return hashlib.sha256("\n".join([*extra, *parts]).encode()).hexdigest()[:16]
