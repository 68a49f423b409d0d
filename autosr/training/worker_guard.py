"""Data-loading worker processes end themselves when the training process that started them dies.

batchgenerators' workers are plain `multiprocessing.Process`es of the training process. A normal exit or
Ctrl-C stops them; `kill -9` of the training process (an out-of-memory kill, a cluster job killed for
its time limit) does not: they are re-parented and keep running until ended by hand, each holding its
share of memory and CPU. A worker cannot be told by its dead parent, so it watches: a daemon thread
started in the worker compares the parent's pid with the one it was started under and ends the process
once they differ. A thread rather than a check in the batch loop, because a worker whose queue is full
never gets back to the loop. (Linux has PR_SET_PDEATHSIG for this, but not macOS; polling works on both.)
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.5  # how long a worker outlives its parent at most, about

_guarded_pid: int | None = None


def exit_when_parent_dies(parent_pid: int, poll_seconds: float = POLL_SECONDS) -> None:
    """In a worker process: end it (immediately, `os._exit`) once `parent_pid` is no longer its parent.

    Call it in the worker with the pid of the process that created it; calling it again in the same
    process does nothing, so it can sit in a loop that runs once per batch.
    """
    global _guarded_pid
    if _guarded_pid == os.getpid():
        return
    _guarded_pid = os.getpid()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="autosr-parent-watch", daemon=True).start()
