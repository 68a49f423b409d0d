"""Worker processes end themselves when the process they work for dies.

Training's data workers (batchgenerators) are children of the training process; prediction's folder
workers are children of a fork server, itself a child of the `autosr predict` process. A normal exit or
Ctrl-C stops them; `kill -9` of the main process (an out-of-memory kill, a cluster job killed for its time
limit) does not: they are re-parented and keep running until ended by hand, each holding its share of
memory and CPU (and a prediction's fork server and resource tracker live as long as its workers do). A
worker cannot be told by its dead master, so it watches: a daemon thread started in the worker polls the
master and ends the process once it is gone. A thread rather than a check in the work loop, because a
worker whose queue is full, or that waits for work, never gets back to the loop. (Linux has
PR_SET_PDEATHSIG, but only for the direct parent and not on macOS; polling works on both.)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

POLL_SECONDS = 0.5  # how long a worker outlives its master at most, about

_guarded_pid: int | None = None


def exit_when_parent_dies(parent_pid: int, poll_seconds: float = POLL_SECONDS) -> None:
    """In a worker process: end it (immediately, `os._exit`) once `parent_pid` is no longer its parent.

    Call it in the worker with the pid of the process that created it; calling it again in the same
    process does nothing, so it can sit in a loop that runs once per batch.
    """
    _watch(lambda: os.getppid() == parent_pid, poll_seconds)


def exit_when_process_ends(pid: int, poll_seconds: float = POLL_SECONDS) -> None:
    """In a worker process: end it once process `pid` (an ancestor, not necessarily the parent: a fork
    server's workers watch the process that started the fork server) has ended. The process is recognised
    by its pid and its start time, so a new process that reuses the pid does not keep the worker alive."""
    started = _start_time(pid)
    _watch(lambda: _start_time(pid) == started and _alive(pid), poll_seconds)


def _watch(alive: Callable[[], bool], poll_seconds: float) -> None:
    global _guarded_pid
    if _guarded_pid == os.getpid():
        return
    _guarded_pid = os.getpid()

    def watch() -> None:
        while alive():
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="autosr-master-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux: /proc/<pid>/stat field 22); None where there
    is no /proc, and "ended" for a process that has exited but not been reaped yet (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if fields[:1] in ([b"Z"], [b"X"]):
        return "ended"
    return fields[19].decode() if len(fields) > 19 else None
