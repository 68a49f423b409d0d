"""The worker processes of a folder run, and what happens when one of them dies.

Workers are forked from a fork server (a clean process with autosr imported once; workers start in
milliseconds), or spawned where there is none; never forked from the main process, which holds CUDA and
OpenMP threads. Each worker watches the main process and ends itself when it is gone (`kill -9`, an
out-of-memory kill), so no worker, fork server or resource tracker outlives a killed run.

A worker that dies (killed by the system for memory, a crash in a library) takes the whole
`ProcessPoolExecutor` with it: every scan in flight gets `BrokenProcessPool`, the guilty one and the
innocent ones alike. `WorkerPool.replace` starts a fresh executor, and the folder run gives each scan that
was in flight another try alone (pipeline.py), so the scan that kills a worker again is the one recorded as
failed and the others are written. A fresh executor first runs an empty step: should fresh workers die
even then (`MAX_START_ATTEMPTS` times; workers cannot run here at all, not one scan's fault), the run goes
on in the main process, and says so.

`num_workers=0` runs every step in the main process when it is submitted (for debugging, and as the
benchmark's reference).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_all_start_methods, get_context
from typing import Any

# Fresh executors tried after a worker died, each checked with an empty step, before the run stops using
# worker processes: a fresh worker that cannot even run an empty step means workers cannot run here (no
# memory left for one more process, a broken installation), which is no scan's fault.
MAX_START_ATTEMPTS = 3


def run_now(fn: Callable[..., Any], *args: Any) -> Future:
    """`fn(*args)` in this thread, its result (or exception) in a completed Future."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as e:  # noqa: BLE001 - delivered through the future
        future.set_exception(e)
    return future


def failed_future(error: BaseException) -> Future:
    future: Future = Future()
    future.set_exception(error)
    return future


def is_broken_pool(error: BaseException | None) -> bool:
    """True for the error every step in flight gets when a worker process died."""
    return isinstance(error, BrokenProcessPool)


def start_context(preload: list[str]):
    """forkserver where it exists (with `preload` imported once in the server), else spawn."""
    if "forkserver" in get_all_start_methods():
        context = get_context("forkserver")
        context.set_forkserver_preload(preload)
        return context
    return get_context("spawn")


class WorkerPool:
    """`num_workers` worker processes (0: the main process), replaceable when one dies.

    `initializer(*initargs, main_pid)` runs in each new worker (it should start the watch on `main_pid`,
    `autosr.worker_guard.exit_when_process_ends`); `inline_setup()` runs in the main process when steps run
    there (from the start with `num_workers=0`, or after the fallback).
    """

    def __init__(
        self,
        num_workers: int,
        initializer: Callable[..., None],
        initargs: tuple,
        inline_setup: Callable[[], None],
        preload: list[str],
    ):
        self.num_workers = num_workers
        self._initializer, self._initargs, self._inline_setup = initializer, initargs, inline_setup
        self._preload = preload
        self._executor: Executor | None = None
        self.replacements = 0
        self.inline = num_workers == 0
        if self.inline:
            inline_setup()
        else:
            self._start()

    def _start(self) -> None:
        self._executor = ProcessPoolExecutor(
            max_workers=self.num_workers,
            mp_context=start_context(self._preload),
            initializer=self._initializer,
            initargs=(*self._initargs, os.getpid()),
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn(*args)` in a worker (or here, inline); a pool that is already broken gives a Future
        holding `BrokenProcessPool`, like the steps that were in flight when it broke."""
        if self.inline or self._executor is None:
            return run_now(fn, *args)
        try:
            return self._executor.submit(fn, *args)
        except (BrokenProcessPool, RuntimeError) as e:  # RuntimeError: submitted after a shutdown
            return failed_future(e if isinstance(e, BrokenProcessPool) else BrokenProcessPool(str(e)))

    def replace(self) -> str:
        """Give up the broken executor and start a fresh one that runs an empty step (or, when `MAX_START_ATTEMPTS`
        fresh ones die even then, go on in the main process); returns what to tell the user."""
        self._shutdown(wait=False)
        self.replacements += 1
        for _ in range(MAX_START_ATTEMPTS):
            self._start()
            if not is_broken_pool(self.submit(os.getpid).exception()):
                return f"a worker process died; started fresh ones ({self.replacements} so far in this run)"
            self._shutdown(wait=False)
        self.inline = True
        self._inline_setup()
        return (
            f"fresh worker processes died {MAX_START_ATTEMPTS} times before running anything; the rest of this run "
            "goes on in the main process (slower: --num-workers 0 does the same from the start)"
        )

    def _shutdown(self, wait: bool) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None

    def shutdown(self) -> None:
        self._shutdown(wait=True)
