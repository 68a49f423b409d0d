"""Fault injection for tests/test_folder_faults.py: put on PYTHONPATH, it makes the worker process that
writes a scan named in $AUTOSR_TEST_KILL_CASES kill itself with SIGKILL, as the system's out-of-memory killer
would. Only in worker processes: the process whose parent is $AUTOSR_TEST_RUNNER_PID (the `autosr predict`
process itself) is never killed. It patches `autosr.inference.pipeline.finish_scan` when that module is first
imported, in every process of the run (the fork server imports it for its workers)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import signal
import sys

_TARGET = "autosr.inference.pipeline"


def _patch(module) -> None:
    original = module.finish_scan
    doomed = set(filter(None, os.environ.get("AUTOSR_TEST_KILL_CASES", "").split(",")))
    runner = int(os.environ.get("AUTOSR_TEST_RUNNER_PID", "0"))

    def finish_scan(worker, qc, job):
        if job.case_id in doomed and os.getppid() != runner:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(worker, qc, job)

    module.finish_scan = finish_scan


class _Loader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if os.environ.get("AUTOSR_TEST_KILL_CASES"):
    sys.meta_path.insert(0, _Finder())
