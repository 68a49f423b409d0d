"""The teacher's side of distillation: the fold ensemble (with its test-time mirroring) predicts every training
case and every unpaired scan once, and each prediction is stored as a preprocessed case (the format of
autosr/preprocessing/case_store.py) whose target is the ensemble's output in normalized target space, so the
student trains with the ordinary patch loader and its augmentation.

    <model folder>/distillation_cache/
        teacher.json                   the teacher: folds, checkpoint, SHA-256 of each checkpoint
        cases/                         <case>_input.npy, <case>_target.npy (the teacher's prediction),
                                       <case>_mask.npy, <case>.json

Training cases are taken from the preprocessed folder as they are; unpaired scans (`<case>_<XXXX><ending>`)
go through the one preprocessing path of prediction (`Predictor.preprocess`) and are stored as
`unpaired__<case>`, with their input foreground as mask. A case is written atomically (arrays first, its
properties JSON last, the completion marker), so a run stopped half way resumes with the cases already done.
Nothing stale is trusted: when a teacher checkpoint's SHA-256 differs from teacher.json every cached case is
deleted before anything is predicted, and a case whose input changed since it was cached (a training case
preprocessed again, an unpaired file replaced) is predicted again (its properties record its input's identity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from autosr.errors import AutosrError
from autosr.formats.plans import Plans
from autosr.formats.source_files import content_identity, file_sha256, record_source_files
from autosr.inference.folder import discover_prediction_cases
from autosr.inference.model_folder import require_checkpoints
from autosr.inference.settings import PredictionSettings
from autosr.io.atomic import atomic_write_json
from autosr.io.json_file import read_json_file
from autosr.model_layout import ModelFolder
from autosr.preprocessing.case_store import case_identities, case_paths, is_complete, load_case, save_case
from autosr.preprocessing.preprocess import preprocessing_hash

UNPAIRED_PREFIX = "unpaired__"
RECORD_NAME = "teacher.json"
CASES_FOLDER = "cases"


@dataclass(frozen=True)
class TeacherSpec:
    """The teacher: the folds of a model folder and which checkpoint of each."""

    model_dir: Path
    folds: tuple[int, ...]
    checkpoint: str = "final"


def teacher_record(spec: TeacherSpec) -> dict[str, Any]:
    """What identifies the teacher: its folds, checkpoint name and each checkpoint's SHA-256."""
    files = require_checkpoints(spec.model_dir, list(spec.folds), spec.checkpoint)
    return {
        "folds": [int(f) for f in spec.folds],
        "checkpoint": spec.checkpoint,
        "sha256": {str(fold): file_sha256(path) for fold, path in sorted(files.items())},
    }


@dataclass(frozen=True)
class CacheJob:
    """One case the teacher predicts: a preprocessed training case (`data_folder`) or an unpaired scan
    (`channel_files`); `identity` changes exactly when its input does."""

    case_id: str
    identity: str
    data_folder: Path | None = None
    channel_files: tuple[Path, ...] = ()

    @property
    def source(self) -> str:
        return "training" if self.data_folder is not None else "unpaired"


def training_jobs(data_folder: Path, case_ids: Sequence[str]) -> list[CacheJob]:
    """Every preprocessed training case (its identity: raw file contents and plans, `case_identities`)."""
    identities = case_identities(data_folder, list(case_ids))
    return [CacheJob(c, str(identities[c]), data_folder=Path(data_folder)) for c in case_ids]


def unpaired_jobs(unpaired_dir: Path, plans: Plans, configuration: str, file_ending: str) -> list[CacheJob]:
    """Every `<case>_<XXXX><ending>` scan of `unpaired_dir`; a scan that cannot be used is one error naming it."""
    cases = discover_prediction_cases(unpaired_dir, file_ending, plans.num_input_channels)
    bad = [f"{c.case_id}: {c.problem}" for c in cases if c.problem]
    if bad:
        raise AutosrError(
            f"{unpaired_dir}: {len(bad)} unpaired scan(s) cannot be used ({'; '.join(bad[:3])}); fix or remove them"
        )
    expected = preprocessing_hash(plans, configuration)
    jobs = []
    for case in cases:
        files = tuple(Path(p) for p in case.channel_files)
        identity = content_identity(record_source_files(files, unpaired_dir), expected)
        jobs.append(CacheJob(UNPAIRED_PREFIX + case.case_id, str(identity), channel_files=files))
    return jobs


def _discard_cases(cases_dir: Path) -> int:
    """Delete every cached case (completion markers first, so a stop half way leaves nothing trusted)."""
    markers = list(cases_dir.glob("*.json"))
    for marker in markers:
        marker.unlink()
    for array in cases_dir.glob("*.npy"):
        array.unlink()
    return len(markers)


def _use_teacher(cache_dir: Path, record: dict[str, Any]) -> None:
    """Make the cache this teacher's: when teacher.json names another one (or is missing while cases are
    there), every cached case is deleted first."""
    cases_dir = cache_dir / CASES_FOLDER
    cases_dir.mkdir(parents=True, exist_ok=True)
    record_file = cache_dir / RECORD_NAME
    try:
        previous = read_json_file(record_file, "") if record_file.is_file() else None
    except AutosrError:
        previous = None
    if previous == record:
        return
    discarded = _discard_cases(cases_dir)
    if discarded:
        print(
            f"autosr distill: the teacher changed since {cache_dir} was filled; {discarded} cached predictions discarded"
        )
    atomic_write_json(record, record_file)


def is_cached(cases_dir: Path, job: CacheJob) -> bool:
    """Whether the teacher's prediction of `job` is complete in the cache and made from the same input."""
    if not is_complete(cases_dir, job.case_id):
        return False
    try:
        properties = read_json_file(case_paths(cases_dir, job.case_id)["properties"], "")
    except AutosrError:
        return False
    return isinstance(properties, dict) and properties.get("teacher_input_identity") == job.identity


def _predict_one(predictor, job: CacheJob) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """(input, the teacher's prediction (1, Z, Y, X), mask, properties) of the job's case."""
    if job.data_folder is not None:
        case = load_case(job.data_folder, job.case_id, mmap=True)
        inputs, mask, properties = np.array(case.input), case.mask, dict(case.properties)
    else:
        scan = predictor.preprocess(job.channel_files)
        inputs, mask, properties = scan.input, scan.foreground[None].astype(np.uint8), dict(scan.properties)
    prediction, _ = predictor.predict_preprocessed(inputs)
    properties.update(teacher_input_identity=job.identity, teacher_source=job.source, case_id=job.case_id)
    return inputs, prediction[None], (None if mask is None else np.asarray(mask)), properties


def fill_cache(
    spec: TeacherSpec,
    jobs: Sequence[CacheJob],
    device: str | None = None,
    progress: bool = True,
    record: dict[str, Any] | None = None,
) -> Path:
    """Predict every job not yet cached with the teacher ensemble (mirroring as its checkpoints say) and store it;
    returns the folder of the cached cases. The ensemble is loaded only when something is left to predict.
    `record`: the spec's `teacher_record` when the caller has it (it reads every checkpoint through SHA-256)."""
    from autosr.inference.predictor import Predictor

    cache_dir = ModelFolder.at(spec.model_dir).teacher_cache_dir
    _use_teacher(cache_dir, record or teacher_record(spec))
    cases_dir = cache_dir / CASES_FOLDER
    todo = [job for job in jobs if not is_cached(cases_dir, job)]
    if not todo:
        return cases_dir
    predictor = Predictor.from_trained(spec.model_dir, spec.folds, spec.checkpoint, PredictionSettings(device=device))
    bar = tqdm(todo, desc=f"teacher predictions ({predictor.num_members} members)", unit="case", disable=not progress)
    for job in bar:
        inputs, prediction, mask, properties = _predict_one(predictor, job)
        save_case(cases_dir, job.case_id, inputs, properties, prediction, mask)
    return cases_dir
