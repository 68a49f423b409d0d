"""Predicting a folder of scans with the network as the bottleneck: the work around it runs beside it.

Per scan, three steps: *prepare* (read the channel files, resample, crop, normalize, measure the quality
signals), *network* (the fold ensemble's sliding windows) and *finish* (invert the preprocessing, resample,
write the prediction, its uncertainty map and its summary row). Only the network needs the GPU (or, on a CPU,
the torch threads); prepare and finish are numpy/SimpleITK work. So they run in `num_workers` worker
processes (a `ProcessPoolExecutor` started from a fork server, or spawned: never a fork of a process that
holds CUDA or OpenMP threads) while the main process keeps the network busy:

    workers:  prepare 2 | prepare 3 | finish 1 | prepare 4 | finish 2 ...
    main:         network 1      |      network 2      |  network 3 ...

Memory is bounded whatever the number of scans: at most `num_workers` prepared scans wait for the network
(plus the one on it), and at most `num_workers` finished predictions wait for export; the main process blocks
instead of queueing more. Scans come out in the sorted case order. Workers ignore Ctrl-C: an interrupted run
stops preparing, lets the scans already through the network be written, then stops (finished scans are
skipped when the same command is run again). `num_workers=0` does everything in the main process, one step
after the other (no overlap): for debugging, and the benchmark's reference.

What a run costs is recorded per scan (`preprocess_s`, `network_s`, `export_s` in summary.csv) and in total
(`FolderSummary.timings`), so "is the network the bottleneck" is a number: network seconds / wall seconds.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np

from autosr.device import num_workers_from_environment
from autosr.errors import AutosrError
from autosr.inference.folder import FolderSummary, InputCase, output_file, sample_file, uncertainty_file
from autosr.inference.qc import QCReference, ScanSignals, input_signals, uncertainty_signals
from autosr.inference.scan_summary import THRESHOLDS_NAME, write_row
from autosr.inference.scan_worker import ScanWorker
from autosr.inference.settings import FolderSettings
from autosr.io import write_image
from autosr.io.atomic import atomic_path, atomic_write_json
from autosr.preprocessing.preprocess import PreprocessedScan

NetworkStep = Callable[[np.ndarray, bool], tuple[np.ndarray, "np.ndarray | None"]]
NO_REFERENCE = "not checked: the model folder has no qc_reference.json (create it with `autosr qc-reference`)"


def default_num_workers() -> int:
    """Worker processes for a folder run: $AUTOSR_NUM_WORKERS, else one fewer than the CPUs, at most 4."""
    from_environment = num_workers_from_environment()
    if from_environment is not None:
        return from_environment
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def resolve_num_workers(num_workers: int | None) -> int:
    """`FolderSettings.num_workers` as a number: None means `default_num_workers()`."""
    return default_num_workers() if num_workers is None else num_workers


@dataclass
class QCSettings:
    """What the finish step needs to flag a scan: the reference (as JSON), the uncertainty key, the part."""

    reference: dict[str, Any] | None
    uncertainty_key: str | None
    part: str
    no_reference_reason: str = NO_REFERENCE


@dataclass
class Prepared:
    scan: PreprocessedScan
    signals: ScanSignals
    seconds: float


@dataclass
class FinishJob:
    case_id: str
    prediction: np.ndarray
    uncertainty: np.ndarray | None
    scan: PreprocessedScan
    signals: ScanSignals
    output_path: Path
    uncertainty_path: Path | None
    on_input_grid: bool
    preprocess_s: float
    network_s: float
    input_file: str
    samples: list[np.ndarray] = field(default_factory=list)  # a generative model's samples (--save-samples)
    sample_paths: list[Path] = field(default_factory=list)


@dataclass
class Finished:
    case_id: str
    seconds: float
    flag: bool | None


# --- the steps that run in worker processes ------------------------------------------------------------------

_STATE: dict[str, Any] = {}  # per worker process: the ScanWorker and QCSettings, set once by `_init_worker`


def _init_worker(worker: ScanWorker, qc: QCSettings, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides what an interrupt stops
    import SimpleITK as sitk
    import torch

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    torch.set_num_threads(1)
    _STATE.update(worker=worker, qc=qc)


def prepare_scan(worker: ScanWorker, case: InputCase) -> Prepared:
    """Read and preprocess one case and measure its input signals."""
    start = time.perf_counter()
    if case.problem is not None:
        raise AutosrError(case.problem)
    scan = worker.preprocess(case.channel_files)
    return Prepared(scan, input_signals(scan), time.perf_counter() - start)


def finish_scan(worker: ScanWorker, qc: QCSettings, job: FinishJob) -> Finished:
    """Export one prediction and write its uncertainty map, its summary row, then the prediction (last: a
    present prediction marks the case finished, so everything else about it is on disk already)."""
    start = time.perf_counter()
    scan = job.scan
    array, geometry, spread = worker.export(
        job.prediction, scan.properties, job.on_input_grid, job.uncertainty, scan.foreground
    )
    spread_signals = uncertainty_signals(job.uncertainty, scan.foreground) if job.uncertainty is not None else None
    if qc.reference is None:
        values = {**job.signals.values, **(spread_signals or {})}
        flag, reason = None, qc.no_reference_reason
    else:
        values, flag, reason = QCReference(qc.reference).assess(job.signals, spread_signals, qc.uncertainty_key)
    for sample, path in zip(job.samples, job.sample_paths):
        exported, sample_geometry, _ = worker.export(sample, scan.properties, job.on_input_grid, None, scan.foreground)
        write_image(exported, sample_geometry, path)
    if job.uncertainty_path is not None and spread is not None:
        write_image(spread, geometry, job.uncertainty_path)
    with atomic_path(job.output_path) as tmp:
        write_image(array, geometry, tmp)
        seconds = time.perf_counter() - start
        row = {
            "case": job.case_id,
            "status": "predicted",
            "flag": flag,
            "reason": reason,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "part": qc.part,
            "preprocess_s": job.preprocess_s,
            "network_s": job.network_s,
            "export_s": seconds,
            "input": job.input_file,
            **values,
        }
        write_row(job.output_path.parent, row)
    return Finished(job.case_id, seconds, flag)


def _prepare_in_worker(case: InputCase) -> Prepared:
    return prepare_scan(_STATE["worker"], case)


def _finish_in_worker(job: FinishJob) -> Finished:
    return finish_scan(_STATE["worker"], _STATE["qc"], job)


class _InlineExecutor(Executor):
    """`num_workers=0`: every step runs in the main process when submitted."""

    def __init__(self, worker: ScanWorker, qc: QCSettings):
        _STATE.update(worker=worker, qc=qc)

    def submit(self, fn, /, *args) -> Future:
        return _run_now(fn, *args)


def _start_context():
    """forkserver where it exists (a clean server process with autosr imported once; workers fork from it in
    milliseconds), else spawn. Never plain fork: the main process holds CUDA and OpenMP threads."""
    if "forkserver" in get_all_start_methods():
        context = get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return get_context("spawn")


def _executor(worker: ScanWorker, qc: QCSettings, num_workers: int) -> Executor:
    if num_workers == 0:
        return _InlineExecutor(worker, qc)
    threads = max(1, (os.cpu_count() or 1) // (num_workers + 1))
    return ProcessPoolExecutor(
        max_workers=num_workers,
        mp_context=_start_context(),
        initializer=_init_worker,
        initargs=(worker, qc, threads),
    )


def _run_now(fn, *args) -> Future:
    """`fn(*args)` in this thread, its result (or exception) in a completed Future."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as e:  # noqa: BLE001 - delivered through the future
        future.set_exception(e)
    return future


class _PoolStarter:
    """Submits the first scans to a fresh pool from a thread.

    Starting worker processes takes seconds (an interpreter importing numpy, SimpleITK and torch; much more on
    a busy machine), and the first `submit` waits for it. Meanwhile the main process prepares and predicts the
    first scan itself, so the start-up is hidden behind real work instead of added to the run.
    """

    def __init__(self, pool: Executor, cases: list[InputCase]):
        self.cases = cases
        self.futures: list[Future] = []
        self._pool = pool
        self._thread = threading.Thread(target=self._submit, name="autosr-pool-start", daemon=True)
        self._thread.start()

    def _submit(self) -> None:
        for case in self.cases:
            try:
                self.futures.append(self._pool.submit(_prepare_in_worker, case))
            except Exception as e:  # noqa: BLE001 - a pool that cannot start fails these cases, reported per case
                failed: Future = Future()
                failed.set_exception(e)
                self.futures.append(failed)

    def join(self) -> list[tuple[InputCase, Future]]:
        self._thread.join()
        return list(zip(self.cases, self.futures))


def describe_failure(error: BaseException) -> str:
    if isinstance(error, AutosrError):
        return str(error)
    if type(error).__name__ == "BrokenProcessPool":
        return (
            "a worker process died (out of memory?); run the same command again to resume, with fewer "
            "--num-workers if it happens again"
        )
    return f"{type(error).__name__}: {error}"


# --- the main loop -------------------------------------------------------------------------------------------


def run_folder(
    todo: list[InputCase],
    output_dir: str | os.PathLike,
    file_ending: str,
    worker: ScanWorker,
    network_step: NetworkStep,
    qc: QCSettings,
    summary: FolderSummary,
    settings: FolderSettings,
) -> FolderSummary:
    """Predict `todo` into `output_dir` (see the module docstring); failures are recorded per case.

    `network_step(input (C, Z, Y, X), with_uncertainty) -> (prediction, uncertainty or None)` in normalized
    space: `Predictor.predict_preprocessed`. With `settings.save_samples` it is also given `samples=[]` to
    fill (a generative model's samples), and they are written to `output_dir/samples/` beside the prediction.
    Of `settings`, this uses what is written per scan and how (uncertainty, samples, grid, workers, progress).
    """
    from tqdm import tqdm

    uncertainty, on_input_grid, save_samples = settings.uncertainty, settings.on_input_grid, settings.save_samples
    num_workers, progress = resolve_num_workers(settings.num_workers), settings.progress
    output_dir = Path(output_dir)
    depth = max(1, num_workers)
    cases = deque(todo)
    preparing: deque[tuple[InputCase, Future]] = deque()
    finishing: deque[tuple[str, Future]] = deque()
    bar = tqdm(total=len(todo), desc="predict", unit="case", disable=not progress, file=sys.stderr)
    timings = {"preprocess_s": 0.0, "network_s": 0.0, "export_s": 0.0}
    start = time.perf_counter()

    def fail(case_id: str, error: BaseException) -> None:
        reason = describe_failure(error)
        summary.failed[case_id] = reason
        write_row(output_dir, {"case": case_id, "status": "failed", "flag": True, "reason": reason, "part": qc.part})
        bar.write(f"autosr predict: {case_id} failed: {reason}")

    def collect(pending_limit: int | None) -> None:
        """Record finished exports, oldest first; with a `pending_limit`, wait until fewer are pending."""
        while finishing and (finishing[0][1].done() or (pending_limit is not None and len(finishing) >= pending_limit)):
            case_id, future = finishing.popleft()
            try:
                done = future.result()
                summary.predicted.append(case_id)
                timings["export_s"] += done.seconds
                if done.flag:
                    summary.flagged.append(case_id)
            except Exception as e:  # noqa: BLE001 - one bad scan must not stop a run over thousands
                fail(case_id, e)
            bar.update(1)

    pool = _executor(worker, qc, num_workers)
    starter: _PoolStarter | None = None
    if num_workers > 0 and cases:  # the first scan here while the workers start (see _PoolStarter)
        first = cases.popleft()
        starter = _PoolStarter(pool, [cases.popleft() for _ in range(min(depth, len(cases)))])
        preparing.append((first, _run_now(prepare_scan, worker, first)))
    try:
        while cases or preparing or starter is not None:
            if starter is not None and not preparing:
                preparing.extend(starter.join())
                starter = None
            while starter is None and cases and len(preparing) <= depth:  # the next scans prepare meanwhile
                case = cases.popleft()
                preparing.append((case, pool.submit(_prepare_in_worker, case)))
            case, future = preparing.popleft()
            try:
                prepared: Prepared = future.result()
                timings["preprocess_s"] += prepared.seconds
                began = time.perf_counter()
                samples: list[np.ndarray] = []
                extra = {"samples": samples} if save_samples else {}
                prediction, spread = network_step(prepared.scan.input, uncertainty, **extra)
                network_s = time.perf_counter() - began
                timings["network_s"] += network_s
            except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                fail(case.case_id, e)
                bar.update(1)
                collect(None)
                continue
            job = FinishJob(
                case.case_id,
                prediction,
                spread,
                prepared.scan,
                prepared.signals,
                output_file(output_dir, case.case_id, file_ending),
                uncertainty_file(output_dir, case.case_id, file_ending) if uncertainty else None,
                on_input_grid,
                prepared.seconds,
                network_s,
                str(case.channel_files[0]),
                samples,
                [sample_file(output_dir, case.case_id, i, file_ending) for i in range(len(samples))],
            )
            del prepared, prediction, spread, samples
            if starter is not None:  # after the first scan's network step: the workers have had their time
                preparing.extend(starter.join())
                starter = None
            collect(depth)
            finishing.append((case.case_id, pool.submit(_finish_in_worker, job)))
            bar.set_postfix_str(f"{case.case_id} network {network_s:.1f}s", refresh=False)
            collect(None)
        collect(1)
    except BaseException:
        # interrupted (or a bug): stop preparing, write what went through the network, then stop
        if starter is not None:
            preparing.extend(starter.join())
        for _, future in preparing:
            future.cancel()
        for case_id, future in finishing:
            try:
                future.result()
                summary.predicted.append(case_id)
            except Exception:  # noqa: BLE001, S112 - the case stays unfinished and is redone next time
                continue
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    timings["wall_s"] = time.perf_counter() - start
    summary.timings = timings
    return summary


def predict_folder(
    predictor: Any,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: FolderSettings,
    qc_reference: QCReference | None = None,
) -> FolderSummary:
    """What `Predictor.predict_folder` runs: this part's unfinished cases through `run_folder`, then summary.csv.

    `qc_reference`: the thresholds to flag scans against (default: the model folder's `qc_reference.json`
    when the predictor was loaded with `Predictor.from_trained` and the file matches its plans).
    """
    from autosr.inference.folder import discover_prediction_cases, ignored_input_files, is_finished, select_part
    from autosr.inference.qc import reference_is_current, uncertainty_key
    from autosr.inference.scan_summary import write_summary
    from autosr.preprocessing.preprocess import preprocessing_hash

    if settings.save_samples and getattr(predictor, "sampler", None) is None:
        raise AutosrError("--save-samples is for generative models (e.g. DiffusionTrainer); this is a regression model")
    ending = predictor.file_ending
    cases = discover_prediction_cases(input_dir, ending, predictor.num_input_channels)
    mine = set(select_part([c.case_id for c in cases], settings.num_parts, settings.part_id))
    summary = FolderSummary(ignored=ignored_input_files(input_dir, ending))
    todo: list[InputCase] = []
    for case in cases:
        if case.case_id not in mine:
            continue
        if not settings.overwrite and is_finished(output_dir, case.case_id, ending):
            summary.skipped.append(case.case_id)
        else:
            todo.append(case)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    model_dir = getattr(predictor, "model_dir", None)
    if qc_reference is None and model_dir is not None:
        qc_reference = QCReference.load(model_dir)
    reason = NO_REFERENCE
    expected_hash = preprocessing_hash(predictor.plans, predictor.configuration_name)
    if qc_reference is not None and not reference_is_current(qc_reference, predictor.configuration_name, expected_hash):
        qc_reference = None
        reason = "not checked: qc_reference.json was made with other plans; run `autosr qc-reference` again"
    key = None
    folds = getattr(predictor, "folds", None)
    if settings.uncertainty and folds is not None:
        key = uncertainty_key(
            folds, predictor.checkpoint_name, predictor.mirror_axes, predictor.settings.step_fraction,
            getattr(predictor, "sampling_key", None),
        )  # fmt: skip
    qc = QCSettings(qc_reference.data if qc_reference else None, key, settings.part, reason)
    if qc_reference is not None:  # what the flags were measured against, for the report (same for every part)
        atomic_write_json(
            {
                "bounds": qc_reference.data["bounds"],
                "uncertainty_key": key,
                "uncertainty_bounds": qc_reference.uncertainty_bounds(key),
            },
            Path(output_dir) / THRESHOLDS_NAME,
        )
    try:
        run_folder(
            todo, output_dir, ending, predictor.scan_worker(), predictor.predict_preprocessed, qc, summary, settings
        )
    finally:
        write_summary(output_dir)
    return summary
