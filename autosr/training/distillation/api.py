"""`distill`: train one student network on the fold ensemble's predictions (`autosr distill`).

    from autosr.training.distillation.api import DistillationRequest, distill

    distill(DistillationRequest(dataset=902, configuration="3d_fullres", unpaired_dir="unpaired_3t/"))
    # then: autosr predict -i scans/ -o out/ -d 902 -c 3d_fullres -f distilled

The teacher (folds 0-4 of the model folder, each with its test-time mirroring) predicts every preprocessed
training case and, with `unpaired_dir`, every scan of that folder (through prediction's preprocessing) once,
into `distillation_cache/` (teacher.py); the student (the planned network or a half-width one) then trains on
(input, teacher prediction) with the default training loop into `fold_distilled/` (student.py). One process
distills a model at a time (the distilled fold's lock covers the cache too); a stopped run resumes with
`continue_training` (cases already cached are not predicted again, the student continues from its latest
checkpoint). Why and when to use the student: documentation/inference.md, "The distilled student".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from autosr.checkpoint import load_checkpoint
from autosr.device import choose_device
from autosr.errors import AutosrError
from autosr.formats.dataset_spec import load_dataset_spec
from autosr.formats.plans import Plans
from autosr.inference.model_folder import locate_model_folder, require_checkpoints
from autosr.inference.settings import ALL_FOLDS, DEFAULT_CHECKPOINT
from autosr.io.locks import HeldLock
from autosr.model_layout import ModelFolder
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER, AutosrPaths, ensure_writable_folder
from autosr.training.data import default_num_workers
from autosr.training.distillation.scanner_shift import measure_cached_shift
from autosr.training.distillation.student import STUDENT, StudentSpec, build_student, check_student_folder
from autosr.training.distillation.teacher import TeacherSpec, fill_cache, teacher_record, training_jobs, unpaired_jobs
from autosr.training.fold_setup import check_budget, preprocessed_cases


@dataclass(frozen=True)
class DistillationRequest:
    """One distillation, as `autosr distill` or a notebook asks for it.

    `folds`/`checkpoint`: the teacher; `trainer`/`plans_name`: which model folder; `unpaired_dir`: a folder of
    `<case>_<XXXX><ending>` scans without targets the teacher also labels; `student_plan`: one of `STUDENT_PLANS`;
    `epochs`/`iters_per_epoch`/`num_workers`/`device`: the student's training budget, as `autosr train` takes them
    (None: the trainer's fixed schedule, the machine's worker count, CUDA/MPS/CPU). `init_fold`: start the student
    from this teacher fold's weights (planned student only; default: the first teacher fold's, `starting_fold`),
    `from_scratch`: from random weights instead; `perturb_inputs`: degrade the student's inputs like
    another scanner's (student.py); `unpaired_share`: the share of patches drawn from unpaired scans (None: every
    cached case equally often); `seed`: of the student's initialisation and batch stream; `match_unpaired`: measure
    how the unpaired scans' inputs differ from the training inputs (blur, noise, bias field) and degrade half the
    paired patches the same way (scanner_shift.py)."""

    dataset: str | int
    configuration: str
    folds: tuple[int, ...] = ALL_FOLDS
    checkpoint: str = DEFAULT_CHECKPOINT
    trainer: str = DEFAULT_TRAINER
    plans_name: str = DEFAULT_PLANS_NAME
    unpaired_dir: str | os.PathLike | None = None
    student_plan: str = "planned"
    epochs: int | None = None
    iters_per_epoch: int | None = None
    num_workers: int | None = None
    device: str | None = None
    continue_training: bool = False
    progress: bool = True
    init_fold: int | None = None
    from_scratch: bool = False
    perturb_inputs: bool = False
    unpaired_share: float | None = None
    seed: int = 0
    match_unpaired: bool = True

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "folds", tuple(int(f) for f in self.folds))
        except (TypeError, ValueError):
            raise AutosrError(f"-f {self.folds}: the teacher's folds are numbers (0-4)") from None
        if not self.folds:
            raise AutosrError("no teacher folds: pass -f 0 1 2 3 4 (or the folds that were trained)")
        StudentSpec(self.student_plan)  # refuses an unknown plan before any work
        check_budget(self.epochs, self.iters_per_epoch, self.num_workers)
        if self.unpaired_share is not None:
            if self.unpaired_dir is None:
                raise AutosrError("--unpaired-share needs --unpaired DIR")
            if not 0 < self.unpaired_share < 1:
                raise AutosrError(f"--unpaired-share must be between 0 and 1 (exclusive), got {self.unpaired_share}")
        if self.init_fold is not None and self.from_scratch:
            raise AutosrError("--init-fold and --from-scratch contradict each other: pass one of them")
        if self.init_fold is not None and self.student_plan != "planned":
            raise AutosrError("--init-fold: a student starts from a fold's weights only with --student-plan planned")


def starting_fold(request: DistillationRequest) -> int | None:
    """The teacher fold whose weights a fresh student starts from: `init_fold`, else the first teacher fold for
    the planned student (measured: the only start that kept the student within 0.2 dB and 0.005 SSIM of the
    ensemble on both benchmark kinds, documentation/benchmark.md), None (random weights) with `from_scratch` or
    a half-width student."""
    if request.from_scratch:
        return None
    if request.init_fold is not None:
        return request.init_fold
    return request.folds[0] if request.student_plan == "planned" else None


def draw_list(case_ids: list[str], unpaired_ids: list[str], unpaired_share: float | None) -> list[str]:
    """The cases the student's batches are drawn from, uniformly: each case once (`unpaired_share` None), or
    each case repeated so that unpaired scans make up about `unpaired_share` of the draws (repetition keeps the
    trainer's uniform sampler and its batch stream)."""
    if unpaired_share is None or not unpaired_ids:
        return [*case_ids, *unpaired_ids]
    # n_u * b / (n_t * a + n_u * b) = share, with small whole repeat counts a, b
    ratio = unpaired_share * len(case_ids) / ((1 - unpaired_share) * len(unpaired_ids))  # b / a
    paired_repeats, unpaired_repeats = (1, max(1, round(ratio))) if ratio >= 1 else (max(1, round(1 / ratio)), 1)
    return case_ids * paired_repeats + unpaired_ids * unpaired_repeats


def distill(request: DistillationRequest, paths: AutosrPaths | None = None) -> Path:
    """Fill the teacher cache and train (or resume) the student; returns `fold_distilled/`."""
    paths = paths or AutosrPaths.resolve()
    model_dir = locate_model_folder(paths, request.dataset, request.configuration, request.trainer, request.plans_name)
    model = ModelFolder.at(model_dir)
    files = require_checkpoints(model_dir, list(request.folds), request.checkpoint)
    init = starting_fold(request)
    init_file = None if init is None else require_checkpoints(model_dir, [init], request.checkpoint)[init]
    plans = Plans.load(model.plans_file)
    configuration = request.configuration
    # the teacher's training cases: the student learns from its predictions of them
    data_folder, case_ids = preprocessed_cases(paths.preprocessed_dataset(model_dir.parent.name), plans, configuration)
    jobs = training_jobs(data_folder, case_ids)
    if request.unpaired_dir is not None:
        spec = load_dataset_spec(model_dir)
        jobs += unpaired_jobs(Path(request.unpaired_dir), plans, configuration, spec.file_ending)
    fold = model.distilled
    ensure_writable_folder(fold.path, "AUTOSR_RESULTS", create=False)
    lock = HeldLock(fold.lock_file, f"the distilled student of {model.path}")
    try:
        teacher = TeacherSpec(model_dir, request.folds, request.checkpoint)
        record = teacher_record(teacher)
        check_student_folder(fold, request.continue_training, record)
        if request.continue_training and fold.checkpoint("final").is_file():
            print(f"autosr distill: {fold.checkpoint('final')} exists: {STUDENT.finished}")
            return fold.path  # before the teacher cache: a finished student needs none of it
        device = choose_device(request.device)
        cache_dir = fill_cache(teacher, jobs, request.device, request.progress, record)
        teacher_mirror = load_checkpoint(next(iter(files.values()))).get("mirror_axes")
        training_ids = [j.case_id for j in jobs if j.source == "training"]
        unpaired_ids = [j.case_id for j in jobs if j.source == "unpaired"]
        shift, extent_share = None, 1.0
        if request.match_unpaired and unpaired_ids:
            patch = plans.configuration(configuration).patch_size
            shift, extent_share = measure_cached_shift(cache_dir, training_ids, unpaired_ids, patch)
            print(f"autosr distill: the unpaired scans against the training inputs: {shift.describe()}")
        student = StudentSpec(
            request.student_plan,
            None if teacher_mirror is None else tuple(teacher_mirror),
            init_checkpoint=init_file,
            perturb_inputs=request.perturb_inputs,
            scanner_shift=shift,
            extent_share=extent_share,
        )
        budget = {
            "num_epochs": request.epochs,
            "iters_per_epoch": request.iters_per_epoch,
            "num_workers": default_num_workers() if request.num_workers is None else request.num_workers,
            "seed": request.seed,
        }
        draws = draw_list(training_ids, unpaired_ids, request.unpaired_share)
        runner = build_student(
            plans, configuration, fold, cache_dir, draws, student, device, budget, request.continue_training, record
        )
        runner.fit()
    finally:
        lock.release()
    return fold.path
