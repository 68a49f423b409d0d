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
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from autosr.device import num_workers_from_environment
from autosr.errors import AutosrError
from autosr.inference.calibration import Calibration, load_calibration, write_interval
from autosr.inference.folder import FolderSummary, InputCase, output_file, sample_file, uncertainty_file
from autosr.inference.provenance import model_record, scan_record, write_sidecar
from autosr.inference.qc import QCReference, ScanSignals, input_signals, uncertainty_signals
from autosr.inference.scan_summary import THRESHOLDS_NAME, write_row
from autosr.inference.scan_worker import ScanWorker
from autosr.inference.settings import FolderSettings
from autosr.inference.worker_pool import WorkerPool, failed_future, is_broken_pool, run_now
from autosr.io import write_image
from autosr.io.atomic import atomic_path, atomic_write_json
from autosr.preprocessing.preprocess import PreprocessedScan
from autosr.worker_guard import exit_when_process_ends

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
    # the run's provenance record (inference/provenance.py: model_record); each prediction gets its sidecar
    provenance: dict[str, Any] | None = None
    # the ensemble's calibration (calibration.json) when the run writes the uncertainty and one exists
    calibration: Calibration | None = None


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
    input_files: list[str]  # what the provenance names as the inputs (FolderSettings.inputs_of)
    samples: list[np.ndarray] = field(default_factory=list)  # a generative model's samples (--save-samples)
    sample_paths: list[Path] = field(default_factory=list)


@dataclass
class Finished:
    case_id: str
    seconds: float
    flag: bool | None


# --- the steps that run in worker processes ------------------------------------------------------------------

_STATE: dict[str, Any] = {}  # per worker process: the ScanWorker and QCSettings, set once by `_init_worker`


def _init_worker(worker: ScanWorker, qc: QCSettings, threads: int, main_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides what an interrupt stops
    import SimpleITK as sitk
    import torch

    exit_when_process_ends(main_pid)  # no worker outlives a killed run
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
    calibrated = None
    if job.uncertainty_path is not None and spread is not None:
        write_image(spread, geometry, job.uncertainty_path)
        if qc.calibration is not None:
            calibrated = write_interval(qc.calibration, array, spread, geometry, job.output_path)
            values.update(calibrated)
    if qc.provenance is not None:  # before the prediction: a present prediction always has its record
        write_scan_sidecar(qc.provenance, job, flag, reason, calibrated)
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
            "input": job.input_files[0],
            **values,
        }
        write_row(job.output_path.parent, row)
    return Finished(job.case_id, seconds, flag)


def write_scan_sidecar(
    model: dict[str, Any], job: FinishJob, flag: bool | None, reason: str, calibrated: dict[str, float] | None = None
) -> None:
    """The scan's provenance record (`<case>.json` beside the prediction), with this scan's calibrated expected
    error and interval (inference/calibration.py) when the run wrote them."""
    uncertainty = job.uncertainty_path if job.uncertainty is not None else None
    record = scan_record(
        model,
        job.case_id,
        job.output_path,
        job.input_files,
        uncertainty,
        job.on_input_grid,
        flag,
        reason,
        calibrated,
    )
    write_sidecar(job.output_path, record)


class StepFailed(AutosrError):
    """A scan's step failed in a worker process: the failure as one message (any exception a library raises
    is turned into this before it crosses to the main process, so an exception that cannot be pickled never
    breaks the pool)."""

    def __reduce__(self):
        return (type(self), (str(self),))


def _in_worker(step: Callable[..., Any], *args: Any) -> Any:
    try:
        return step(*args)
    except Exception as e:  # noqa: BLE001 - becomes the scan's failure, named in its summary row
        raise StepFailed(describe_failure(e)) from None


def _prepare_in_worker(case: InputCase) -> Prepared:
    return _in_worker(prepare_scan, _STATE["worker"], case)


def _finish_in_worker(job: FinishJob) -> Finished:
    return _in_worker(finish_scan, _STATE["worker"], _STATE["qc"], job)


def describe_failure(error: BaseException) -> str:
    if isinstance(error, AutosrError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def worker_died(step: str) -> StepFailed:
    """The failure of the scan whose step killed a worker process even when it ran alone."""
    return StepFailed(
        f"the worker process {step} this scan died (killed by the system: out of memory? or a crash in a "
        "library), also when the scan was tried again alone; the other scans went on. Check this scan (its "
        "size, its file), then run the same command again to retry it (with fewer --num-workers if memory is "
        "short)"
    )


# --- the main loop -------------------------------------------------------------------------------------------


@dataclass
class _Step:
    """One scan's prepare or finish step in flight: what to run again should its worker die."""

    case_id: str
    kind: str  # "preparing" or "writing"
    function: Callable[[Any], Any]
    argument: Any
    future: Future
    case: InputCase | None = None  # prepare steps


class _PoolStarter:
    """Submits the first scans to a fresh pool from a thread.

    Starting worker processes takes seconds (an interpreter importing numpy, SimpleITK and torch; much more on
    a busy machine), and the first `submit` waits for it. Meanwhile the main process prepares and predicts the
    first scan itself, so the start-up is hidden behind real work instead of added to the run.
    """

    def __init__(self, pool: WorkerPool, cases: list[InputCase]):
        self.steps = [_Step(c.case_id, "preparing", _prepare_in_worker, c, Future(), c) for c in cases]
        self._pool = pool
        self._thread = threading.Thread(target=self._submit, name="autosr-pool-start", daemon=True)
        self._thread.start()

    def _submit(self) -> None:
        for step in self.steps:
            step.future = self._pool.submit(step.function, step.argument)

    def join(self) -> list[_Step]:
        self._thread.join()
        return self.steps


class _FolderRun:
    """The bookkeeping of one folder run: scans waiting, preparing (in workers), on the network (here), and
    writing (in workers); failures recorded per scan; a dead worker's scans tried again alone."""

    def __init__(self, todo: list[InputCase], output_dir: Path, file_ending: str, pool: WorkerPool, job: _RunJob):
        from tqdm import tqdm

        self.cases = deque(todo)
        self.output_dir, self.file_ending, self.pool, self.job = output_dir, file_ending, pool, job
        self.depth = max(1, pool.num_workers)
        self.preparing: deque[_Step] = deque()
        self.writing: deque[_Step] = deque()
        self.starter: _PoolStarter | None = None
        self.bar = tqdm(
            total=len(todo), desc="predict", unit="case", disable=not job.settings.progress, file=sys.stderr
        )
        self.timings = {"preprocess_s": 0.0, "network_s": 0.0, "export_s": 0.0}

    # --- failures -----------------------------------------------------------------------------------------
    def fail(self, case_id: str, error: BaseException) -> None:
        reason = describe_failure(error)
        self.job.summary.failed[case_id] = reason
        row = {"case": case_id, "status": "failed", "flag": True, "reason": reason, "part": self.job.qc.part}
        write_row(self.output_dir, row)
        self.bar.write(f"autosr predict: {case_id} failed: {reason}")
        self.bar.update(1)

    def result(self, step: _Step) -> Any:
        """The step's result, or its own failure; a dead worker is handled first (`recover`)."""
        if is_broken_pool(_error_of(step.future, wait=True)):
            self.recover()
        return step.future.result()

    def recover(self) -> None:
        """A worker died, and with it every step in flight. Start fresh workers and run each of those steps
        again alone, oldest first: a step that kills a worker again is its scan's failure; the others go on."""
        if self.starter is not None:
            self.preparing.extend(self.starter.join())
            self.starter = None
        self.bar.write(f"autosr predict: {self.pool.replace()}")
        for step in (*self.preparing, *self.writing):
            if not step.future.done():
                step.future.cancel()
            if step.future.done() and not step.future.cancelled() and not is_broken_pool(_error_of(step.future)):
                continue  # finished before the worker died
            step.future = self.pool.submit(step.function, step.argument)
            if is_broken_pool(_error_of(step.future, wait=True)):
                step.future = failed_future(worker_died(step.kind))
                self.bar.write(f"autosr predict: {self.pool.replace()}")

    # --- the steps ----------------------------------------------------------------------------------------
    def submit_prepare(self, case: InputCase) -> None:
        self.preparing.append(
            _Step(case.case_id, "preparing", _prepare_in_worker, case, self.pool.submit(_prepare_in_worker, case), case)
        )

    def collect(self, pending_limit: int | None) -> None:
        """Record finished writes, oldest first; with a `pending_limit`, wait until fewer are pending."""
        while self.writing and (
            self.writing[0].future.done() or (pending_limit is not None and len(self.writing) >= pending_limit)
        ):
            step = self.writing[0]
            try:
                done: Finished = self.result(step)
            except Exception as e:  # noqa: BLE001 - one bad scan must not stop a run over thousands
                self.writing.popleft()
                self.fail(step.case_id, e)
                continue
            self.writing.popleft()
            self.job.summary.predicted.append(step.case_id)
            self.timings["export_s"] += done.seconds
            if done.flag:
                self.job.summary.flagged.append(step.case_id)
            self.bar.update(1)

    def run(self) -> None:
        if self.pool.num_workers > 0 and self.cases:  # the first scan here while the workers start
            first = self.cases.popleft()
            self.starter = _PoolStarter(
                self.pool, [self.cases.popleft() for _ in range(min(self.depth, len(self.cases)))]
            )
            self.preparing.append(
                _Step(first.case_id, "preparing", _prepare_in_worker, first, run_now(_prepare_scan_here, first), first)
            )
        while self.cases or self.preparing or self.starter is not None:
            if self.starter is not None and not self.preparing:
                self.preparing.extend(self.starter.join())
                self.starter = None
            while self.starter is None and self.cases and len(self.preparing) <= self.depth:
                self.submit_prepare(self.cases.popleft())  # the next scans prepare meanwhile
            if not self.preparing:
                continue
            self.predict_next()
        self.collect(1)

    def predict_next(self) -> None:
        """The oldest prepared scan through the network, then to a worker for writing."""
        step = self.preparing[0]
        try:
            prepared: Prepared = self.result(step)
            self.timings["preprocess_s"] += prepared.seconds
            began = time.perf_counter()
            samples: list[np.ndarray] = []
            extra = {"samples": samples} if self.job.settings.save_samples else {}
            prediction, spread = self.job.network_step(prepared.scan.input, self.job.settings.uncertainty, **extra)
            network_s = time.perf_counter() - began
            self.timings["network_s"] += network_s
        except Exception as e:  # noqa: BLE001 - recorded, the run goes on
            self.preparing.popleft()
            self.fail(step.case_id, e)
            self.collect(None)
            return
        self.preparing.popleft()
        case, ending, out = step.case, self.file_ending, self.output_dir
        job = FinishJob(
            case.case_id,
            prediction,
            spread,
            prepared.scan,
            prepared.signals,
            output_file(out, case.case_id, ending),
            uncertainty_file(out, case.case_id, ending) if self.job.settings.uncertainty else None,
            self.job.settings.on_input_grid,
            prepared.seconds,
            network_s,
            self.job.settings.inputs_of(case.case_id, case.channel_files),
            samples,
            [sample_file(out, case.case_id, i, ending) for i in range(len(samples))],
        )
        del prepared, prediction, spread, samples
        if self.starter is not None:  # after the first scan's network step: the workers have had their time
            self.preparing.extend(self.starter.join())
            self.starter = None
        self.collect(self.depth)
        self.writing.append(
            _Step(case.case_id, "writing", _finish_in_worker, job, self.pool.submit(_finish_in_worker, job))
        )
        self.bar.set_postfix_str(f"{case.case_id} network {network_s:.1f}s", refresh=False)
        self.collect(None)

    def interrupted(self) -> None:
        """Ctrl-C (or a bug): stop preparing, let what went through the network be written, then stop."""
        if self.starter is not None:
            self.preparing.extend(self.starter.join())
        for step in self.preparing:
            step.future.cancel()
        for step in self.writing:
            try:
                step.future.result()
                self.job.summary.predicted.append(step.case_id)
            except Exception:  # noqa: BLE001, S112 - the case stays unfinished and is redone next time
                continue


def _prepare_scan_here(case: InputCase) -> Prepared:
    return prepare_scan(_STATE["worker"], case)


def _error_of(future: Future, wait: bool = False) -> BaseException | None:
    """The future's exception once it is done (waiting for it with `wait`), else None."""
    if not wait and not future.done():
        return None
    if future.cancelled():
        return None
    return future.exception()


@dataclass
class _RunJob:
    """What every step of a folder run shares: its settings, the network step, the QC settings, the summary."""

    settings: FolderSettings
    network_step: NetworkStep
    qc: QCSettings
    summary: FolderSummary


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
    num_workers = resolve_num_workers(settings.num_workers)
    threads = max(1, (os.cpu_count() or 1) // (num_workers + 1))
    pool = WorkerPool(
        num_workers, _init_worker, (worker, qc, threads), lambda: _STATE.update(worker=worker, qc=qc), [__name__]
    )
    _STATE.update(worker=worker, qc=qc)  # the first scan is prepared here while the workers start
    run = _FolderRun(todo, Path(output_dir), file_ending, pool, _RunJob(settings, network_step, qc, summary))
    start = time.perf_counter()
    try:
        run.run()
    except BaseException:
        run.interrupted()
        raise
    finally:
        pool.shutdown()
        run.bar.close()
    summary.timings = {**run.timings, "wall_s": time.perf_counter() - start}
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
    from autosr.inference.qc import reference_is_current
    from autosr.inference.scan_summary import refuse_foreign_images, write_summary
    from autosr.preprocessing.preprocess import preprocessing_hash

    if settings.save_samples and getattr(predictor, "sampler", None) is None:
        raise AutosrError("--save-samples is for generative models (e.g. DiffusionTrainer); this is a regression model")
    ending = predictor.file_ending
    cases = discover_prediction_cases(input_dir, ending, predictor.num_input_channels)
    refuse_foreign_images(output_dir, ending)
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
    key = predictor.ensemble_key if settings.uncertainty else None
    qc = QCSettings(qc_reference.data if qc_reference else None, key, settings.part, reason, model_record(predictor))
    if key is not None and model_dir is not None:
        qc.calibration = load_calibration(model_dir, key)
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
