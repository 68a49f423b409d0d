"""Run a command as the child of a subreaper and report the processes it leaves behind.

A process whose parent dies is re-parented to the nearest ancestor marked as a "child subreaper" (Linux
prctl PR_SET_CHILD_SUBREAPER), else to init. Run as `python process_tree.py TIMEOUT GRACE -- CMD ...`, this
script marks itself, runs CMD, and then, once CMD has ended, every process CMD started and left behind is
one of its own children: it waits up to GRACE seconds for them to end, reaps them, and prints one JSON
line: CMD's return code, its output, and the leftovers still alive (pid and command line). Tests look for
stray workers by this process tree, never by command line.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def children_of(pid: int) -> list[dict]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != b"Z":
            found.append({"pid": int(entry), "command": command})
    return found


def main() -> int:
    timeout, grace = float(sys.argv[1]), float(sys.argv[2])
    command = sys.argv[sys.argv.index("--") + 1 :]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    started = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if os.environ.get("PROCESS_TREE_KILL_WHEN"):  # kill -9 the command once this file exists
        marker = os.environ["PROCESS_TREE_KILL_WHEN"]
        deadline = time.monotonic() + timeout
        while not os.path.exists(marker) and started.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        started.kill()
    try:
        output, _ = started.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        started.kill()
        output, _ = started.communicate()
    deadline = time.monotonic() + grace
    while True:
        while True:  # reap what ended
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
        left = children_of(os.getpid())
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for process in left:  # do not leave them to the next test
        try:
            os.kill(process["pid"], 9)
        except ProcessLookupError:
            pass
    print(json.dumps({"returncode": started.returncode, "output": output, "leftovers": left}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
