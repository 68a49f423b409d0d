"""Building a model folder's quality-control reference (`qc_reference.json`) from its training cases.

Every training case is a cross-validation case (each is held out by exactly one fold), so the reference is
their signals (autosr/inference/qc.py), measured exactly as for a new scan: each case's raw input files
through the prediction preprocessing. Input signals need only the raw dataset; uncertainty signals need the
ensemble's predictions of every training case (`add_uncertainty`), which is a prediction run over the
training set, so it is asked for explicitly (`autosr qc-reference ... --uncertainty`).

Caveat of the uncertainty reference: a training case was seen in training by every fold but one, so the
ensemble agrees with itself more on it than on an unseen scan of the same kind; its thresholds are therefore
lower than an unbiased estimate would give, and err towards flagging. The margin (`qc.SIGNAL_RULES`) was
set so that held-out scans of the benchmark datasets stay unflagged (documentation/benchmark.md, "Quality
flags").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from autosr.errors import AutosrError
from autosr.formats.dataset_spec import CaseFiles, discover_cases, load_dataset_spec
from autosr.formats.plans import Plans
from autosr.inference.model_folder import configuration_of
from autosr.inference.qc import (
    QCReference,
    ScanSignals,
    add_uncertainty_reference,
    input_signals,
    reference_from_cases,
    reference_is_current,
    uncertainty_signals,
)
from autosr.inference.settings import ALL_FOLDS, DEFAULT_CHECKPOINT, PredictionSettings
from autosr.inference.student import with_student_mirroring
from autosr.preprocessing.preprocess import preprocess_for_inference, preprocessing_hash


def training_cases(raw_dataset_dir: str | os.PathLike) -> dict[str, CaseFiles]:
    """The raw dataset's training cases that have a target (the cross-validation cases)."""
    raw_dataset_dir = Path(raw_dataset_dir)
    spec = load_dataset_spec(raw_dataset_dir)
    cases = {c: f for c, f in discover_cases(raw_dataset_dir, spec, "Tr").items() if f.target is not None}
    if not cases:
        raise AutosrError(f"{raw_dataset_dir}: no training cases; the QC reference is measured on them")
    return cases


def _case_signals(job: tuple[str, list[Path], dict, str]) -> tuple[str, ScanSignals]:
    case_id, channels, plans_raw, configuration = job
    scan = preprocess_for_inference(channels, Plans(plans_raw), configuration)
    return case_id, input_signals(scan)


def build_input_reference(
    model_dir: str | os.PathLike, raw_dataset_dir: str | os.PathLike, num_processes: int = 1, progress: bool = True
) -> QCReference:
    """The input-signal reference of a model folder from its raw dataset's training cases."""
    model_dir = Path(model_dir)
    plans = Plans.load(model_dir / "plans.json")
    configuration = configuration_of(model_dir, None, plans.configuration_names)
    cases = training_cases(raw_dataset_dir)
    jobs = [(c, list(f.channels), plans.raw, configuration) for c, f in sorted(cases.items())]
    bar = dict(total=len(jobs), desc="QC reference (inputs)", unit="case", disable=not progress)
    if num_processes > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=get_context("spawn")) as pool:
            signals = dict(tqdm(pool.map(_case_signals, jobs), **bar))
    else:
        signals = dict(_case_signals(j) for j in tqdm(jobs, **bar))
    return reference_from_cases(signals, configuration, preprocessing_hash(plans, configuration))


def add_uncertainty(
    reference: QCReference, predictor, raw_dataset_dir: str | os.PathLike, progress: bool = True
) -> str:
    """Predict every training case with `predictor` (loaded by `Predictor.from_trained`) and store the
    uncertainty signals under the ensemble's key; returns the key."""
    if predictor.folds is None:
        raise AutosrError("the uncertainty reference needs a predictor loaded with Predictor.from_trained")
    if predictor.num_members < 2:
        raise AutosrError(
            "one fold without mirroring has no spread: the uncertainty reference needs several folds or mirroring"
        )
    key = predictor.ensemble_key
    values = {}
    for case_id, files in tqdm(
        sorted(training_cases(raw_dataset_dir).items()), desc="QC reference (uncertainty)", disable=not progress
    ):
        scan = predictor.preprocess(files.channels)
        _, spread = predictor.predict_preprocessed(scan.input, with_uncertainty=True)
        values[case_id] = uncertainty_signals(spread, scan.foreground)
    add_uncertainty_reference(reference, key, values, predictor.num_members)
    return key


def ensure_reference(
    model_dir: str | os.PathLike,
    raw_dataset_dir: str | os.PathLike,
    num_processes: int = 1,
    progress: bool = True,
    rebuild: bool = False,
) -> QCReference:
    """The model folder's reference, built (and saved) when missing, made with other plans, or `rebuild`
    (which measures the inputs again and keeps the uncertainty entries when the plans are the same)."""
    model_dir = Path(model_dir)
    plans = Plans.load(model_dir / "plans.json")
    configuration = configuration_of(model_dir, None, plans.configuration_names)
    existing = QCReference.load(model_dir)
    current = reference_is_current(existing, configuration, preprocessing_hash(plans, configuration))
    if current and not rebuild:
        return existing
    reference = build_input_reference(model_dir, raw_dataset_dir, num_processes, progress)
    if current:  # the same plans: the ensembles' uncertainty entries still hold
        reference.data["uncertainty"] = existing.data.get("uncertainty", {})
    reference.save(model_dir)
    return reference


def qc_reference(
    model_dir: str | os.PathLike,
    raw_dataset_dir: str | os.PathLike,
    uncertainty: bool = False,
    folds: Sequence[int] = ALL_FOLDS,
    checkpoint: str = DEFAULT_CHECKPOINT,
    prediction: PredictionSettings | None = None,
    num_processes: int = 1,
    rebuild: bool = False,
    progress: bool = True,
) -> Path:
    """What `autosr qc-reference` runs: build or update `qc_reference.json` in the model folder; returns it.
    With `uncertainty`, the ensemble of `folds` predicts every training case as `prediction` says (the
    uncertainty key records folds, checkpoint, mirroring and step, so `autosr predict --uncertainty` with the
    same ones finds it)."""
    from autosr.inference.predictor import Predictor

    reference = ensure_reference(model_dir, raw_dataset_dir, num_processes, progress, rebuild)
    if uncertainty:
        prediction = with_student_mirroring(folds, prediction or PredictionSettings(), uncertainty=True)
        predictor = Predictor.from_trained(model_dir, list(folds), checkpoint, prediction)
        add_uncertainty(reference, predictor, raw_dataset_dir, progress)
    return reference.save(model_dir)
