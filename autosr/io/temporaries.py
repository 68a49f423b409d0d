"""Temporary files and folders named after their owner, so a later run can tell a leftover from work in progress.

A process killed with kill -9 (or by the out-of-memory killer, or a power cut) runs no clean-up: whatever
temporary file or folder it had open stays. Every temporary that autosr leaves beside real outputs, or in
the system's temporary folder, therefore carries its owner in its name, `h<host>-<pid>`: `<host>` is a short
hash of the machine's name, `<pid>` the writer's process id. A later run removes the ones whose owner is a
process of this machine that no longer runs; one of a running process, or of another machine (a shared
results folder on a cluster: its processes cannot be seen from here), is left alone.

A recycled pid can make a dead owner look alive: its leftover then stays until that pid is gone too. That
errs on the safe side (a leftover costs disk space; removing a live writer's file would break its run).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import uuid
from pathlib import Path

HOST_TAG = "h" + hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:6]
# `h<host>-<pid>-<random>`; names written before owners carried a host have `<pid>-<random>` or `<random>`
OWNED_NAME = re.compile(r"(?:(h[0-9a-f]{6})-)?(?:(\d+)-)?[0-9a-f]{8,12}")


def owner_tag() -> str:
    """This process's part of a temporary name: `h<host>-<pid>`."""
    return f"{HOST_TAG}-{os.getpid()}"


def owned_name(prefix: str, suffix: str = "") -> str:
    """A fresh name `<prefix>h<host>-<pid>-<random><suffix>` for a temporary of this process."""
    return f"{prefix}{owner_tag()}-{uuid.uuid4().hex[:8]}{suffix}"


def is_running(pid: int) -> bool:
    """Whether a process with this id runs on this machine (someone else's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_is_gone(tag: str, *, unowned_is_gone: bool = True, self_is_gone: bool = False) -> bool:
    """Whether the owner of a temporary named with `tag` (the part between its prefix and suffix) is a process
    of this machine that has ended. Names without a pid are from older autosr versions: gone when
    `unowned_is_gone` (they were only ever left by killed writers). This process counts as gone with
    `self_is_gone` (for a file only this process could be writing now). Not a name of ours: False."""
    match = OWNED_NAME.fullmatch(tag)
    if match is None:
        return False
    host, pid = match.group(1), match.group(2)
    if host is not None and host != HOST_TAG:
        return False  # another machine's: it cannot be checked from here
    if pid is None:
        return unowned_is_gone
    if int(pid) == os.getpid():
        return self_is_gone
    return not is_running(int(pid))


def stale_folders(parent: str | os.PathLike, prefix: str) -> list[Path]:
    """Folders `<prefix><owner>-<random>` in `parent` whose owner has ended."""
    parent = Path(parent)
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    return [
        parent / entry.name
        for entry in entries
        if entry.name.startswith(prefix)
        and entry.is_dir(follow_symlinks=False)
        and owner_is_gone(entry.name[len(prefix) :], unowned_is_gone=False)
    ]


def private_folder(parent: str | os.PathLike, prefix: str) -> Path:
    """Create and return a new folder `parent/<prefix>h<host>-<pid>-<random>`, after removing the folders of
    that prefix whose owners have ended (left by a killed run)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for leftover in stale_folders(parent, prefix):
        shutil.rmtree(leftover, ignore_errors=True)
    folder = parent / owned_name(prefix)
    folder.mkdir()
    return folder
