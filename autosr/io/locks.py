"""One writer at a time: an exclusive lock file that names its holder.

`exclusive_lock(path, what)` holds an advisory lock (`fcntl.flock`) on `path` for the duration of a `with`
block, and writes into the file who holds it: host, pid, command line, start time (JSON). A second process
asking for the same lock does not wait: it gets one `LockHeld` error naming the holder and the fix. The
operating system drops a lock when its holder ends, however it ends (kill -9 included), so a lock file left
behind by a dead process is simply taken over; there is nothing to delete by hand.

Used where two processes would silently ruin each other's work: training one fold (`autosr train`), and
writing one registered copy of a dataset (`autosr register`). Locks need a local or a lock-aware network
file system (NFSv4, Lustre, GPFS and CephFS honour flock); where `fcntl` does not exist (Windows) the
block runs without one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from autosr.errors import AutosrError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class LockHeld(AutosrError):
    """Another process holds the lock: `holder` is what its lock file says about it (may be empty)."""

    def __init__(self, path: object, what: str, holder: dict[str, Any]):
        self.path, self.what, self.holder = path, what, holder
        super().__init__(
            f"{what} is in use by another process ({describe_holder(holder)}; lock file {path}); wait for it to "
            "finish or stop it, then run the same command again"
        )

    def __reduce__(self):
        return (type(self), (self.path, self.what, self.holder))


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "it is just starting"
    parts = [f"pid {holder['pid']} on {holder.get('host', '?')}"]
    if holder.get("started"):
        parts.append(f"since {holder['started']}")
    if holder.get("command"):
        parts.append(f"running `{holder['command']}`")
    return ", ".join(parts)


def holder_record() -> dict[str, Any]:
    """What this process writes into a lock file it holds."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": _command_line(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _command_line() -> str:
    """How this process was started, as typed (`autosr train ...`, `python -m autosr.cli train ...`)."""
    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    if not argv:
        return "python"
    if len(argv) > 1 and Path(argv[1]).name == Path(sys.argv[0]).name:  # a console script run by its interpreter
        argv = argv[1:]
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def read_holder(path: str | os.PathLike) -> dict[str, Any]:
    """What a lock file says about its holder; {} when it is empty, missing or not ours."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _open_locked(path: Path) -> IO[str] | None:
    """The lock file opened and locked by this process, or None when another process holds it.

    The file is removed when its lock is released; a process that opened it just before that would lock a
    file no longer in the folder, so the lock counts only when the file locked is still the one at `path`."""
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        except BaseException:
            handle.close()
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(handle.fileno())
        if current is not None and (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev):
            return handle
        handle.close()  # removed by its last holder meanwhile: try the file now at `path`


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold the lock file `path` for the `with` block; `LockHeld` (an `AutosrError`) when another process holds
    it. `what` names the thing guarded, for the message ("fold 0 of .../Trainer__autosrPlans__2d")."""
    path = Path(path)
    if fcntl is None:  # pragma: no cover - Windows
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _open_locked(path)
    if handle is None:
        raise LockHeld(path, what, read_holder(path))
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder_record()) + "\n")
        handle.flush()
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: the next holder starts from a fresh file
        handle.close()


class HeldLock:
    """A lock held beyond one `with` block (an object that owns it releases it with `release()`; the lock also
    goes when the process ends)."""

    def __init__(self, path: str | os.PathLike, what: str):
        self._context = exclusive_lock(path, what)
        self.path = self._context.__enter__()

    def release(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)
