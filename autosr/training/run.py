"""`train_fold`: resolve folders, plans, splits and device for one fold, then run its trainer.

Model folder: `$AUTOSR_RESULTS/DatasetXXX_Name/<Trainer>__<plans_name>__<configuration>/fold_<k>/`, with
copies of plans.json, dataset.json and fingerprint.json one level up so the model folder predicts on its
own. Nothing already trained is overwritten: a fold with a checkpoint refuses to start again unless
`continue_training` is set. One fold has one writer: the process training it holds `fold_<k>/.training.lock`
(`autosr.io.locks`) from before its first check to its last write, so a second `autosr train` of the same fold
stops at once with a message naming the first (a lock of a process that died is taken over).

Before anything starts, every preprocessed case's arrays are checked (a truncated or foreign .npy is one
message saying to run `autosr plan`), and each fold records the identity of the preprocessed cases it trains
on (`preprocessed_data.json`: raw file contents and plans, see `case_store.case_identities`). Continuing a
fold whose cases were preprocessed again since (their raw files replaced) is refused: its weights were
fitted to data that no longer exists; starting a fold while other folds were trained on other data says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from autosr.device import choose_device
from autosr.errors import AutosrError
from autosr.formats.plans import Plans
from autosr.formats.splits import cases_of_fold, load_or_create_splits, parse_fold
from autosr.io.atomic import atomic_copy, atomic_write_json, read_json
from autosr.io.json_file import read_json_file
from autosr.io.locks import HeldLock
from autosr.model_layout import PLANNING_FILES, FoldFolder, ModelFolder
from autosr.paths import AutosrPaths, ensure_writable_folder, path_under
from autosr.preprocessing.case_store import array_problems, case_identities
from autosr.training.data import default_num_workers
from autosr.training.device import init_distributed
from autosr.training.fold_setup import TRAINING, check_budget, check_fold_folder, preprocessed_cases, restore_fold
from autosr.training.trainer import Trainer, TrainingContext
from autosr.training.trainers import get_trainer_class
from autosr.training.validation import validate_fold


def _copy_planning_files(preprocessed_dir: Path, model_dir: Path) -> None:
    """Copy plans/dataset/fingerprint JSON into the model folder; refuse if plans changed under trained folds.

    While no fold has a checkpoint the copies are simply replaced: nothing was trained with the old plans (a
    first try stopped by a bad plans entry must not force the user to delete the model folder)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    trained = ModelFolder.at(model_dir).has_checkpoints()
    for name in PLANNING_FILES:
        source, dest = preprocessed_dir / name, model_dir / name
        if not source.is_file():
            continue
        if trained and dest.is_file():
            if name == "plans.json" and read_json(dest) != read_json(source):
                raise AutosrError(
                    f"{dest} differs from {source}: the dataset was re-planned after folds of this model were "
                    "trained; delete the model folder to retrain all folds with the new plans, or restore the old plans.json"
                )
            continue
        atomic_copy(source, dest)


def _check_arrays(data_folder: Path, case_ids: list[str], dataset_name: str) -> None:
    """Refuse to train on damaged preprocessed cases (truncated, foreign dtype, mismatched shapes)."""
    damaged = {case_id: found for case_id in case_ids if (found := array_problems(data_folder, case_id))}
    if damaged:
        first = next(iter(damaged.values()))[0]
        raise AutosrError(
            f"{first}: {len(damaged)} preprocessed case(s) are damaged ({', '.join(sorted(damaged)[:5])}); run "
            f"`autosr plan {dataset_name}` again: it checks every preprocessed case and redoes the damaged ones"
        )


def _recorded_identities(fold: FoldFolder) -> dict[str, str | None]:
    """The case identities a fold recorded when it started ({} for a fold without a readable record)."""
    if not fold.data_record_file.is_file():
        return {}
    try:
        record = read_json_file(fold.data_record_file, "")
    except AutosrError:
        return {}
    cases = record.get("cases") if isinstance(record, dict) else None
    return cases if isinstance(cases, dict) else {}


def _changed_cases(recorded: dict[str, str | None], current: dict[str, str | None]) -> list[str]:
    """Cases whose identity is known on both sides and differs."""
    return sorted(c for c, identity in recorded.items() if identity and current.get(c) and current[c] != identity)


def _check_data_unchanged(
    model: ModelFolder, fold: FoldFolder, current: dict[str, str | None], continue_training: bool, dataset_name: str
) -> list[str]:
    """Refuse to continue `fold` on preprocessed cases that changed since it started; warnings for other
    trained folds whose cases changed (the folds of one model then disagree on the data)."""
    if continue_training and any(fold.checkpoint(w).is_file() for w in ("latest", "final")):
        changed = _changed_cases(_recorded_identities(fold), current)
        if changed:
            raise AutosrError(
                f"{fold.path}: this fold was trained on preprocessed cases that have been preprocessed again since "
                f"(from changed raw files, or with other plans): {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}; its weights "
                f"fit data that no longer exists: delete {fold.path} to train it again on the new data (and the "
                f"model's other trained folds too, so that they agree), or restore the old raw files and run "
                f"`autosr plan {dataset_name}`"
            )
    warnings = []
    for number in model.folds_with_checkpoint("latest") + model.folds_with_checkpoint("final"):
        other = model.fold(number)
        if other.path == fold.path:
            continue
        changed = _changed_cases(_recorded_identities(other), current)
        if changed and not any(other.path.name in w for w in warnings):
            warnings.append(
                f"warning: {other.path.name} was trained on cases preprocessed again since "
                f"({', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}): retrain it so that the folds agree"
            )
    return warnings


@dataclass(frozen=True)
class FoldRequest:
    """One fold to train, as `autosr train` or `train_fold` was asked (see `train_fold` for the fields)."""

    dataset: str | int
    configuration: str
    fold: int | str
    trainer: str = "Trainer"
    device: str | None = None
    continue_training: bool = False
    epochs: int | None = None
    iters_per_epoch: int | None = None
    num_workers: int | None = None


@dataclass
class FoldRun:
    """A trainer ready to fit (or already restored from a checkpoint), and where its fold lives."""

    runner: Trainer
    fold_dir: Path
    val_cases: list[str]
    finished: bool
    fold: int | str
    splits: list[dict[str, list[str]]]
    raw_dataset_dir: Path
    lock: HeldLock | None = None  # the fold's lock (rank 0); `release()` when done, else it goes with the object

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def prepare_fold(request: FoldRequest, paths: AutosrPaths | None = None) -> FoldRun:
    """Resolve everything for one fold, take its lock and build its trainer; with `continue_training`, restore
    the latest (or final) checkpoint. The returned run holds the lock until `run.release()` (or until it is
    garbage collected, or the process ends)."""
    paths = paths or AutosrPaths.resolve()
    configuration = request.configuration
    fold = parse_fold(request.fold)
    get_trainer_class(request.trainer)  # an unknown trainer is refused before anything else
    check_budget(request.epochs, request.iters_per_epoch, request.num_workers)
    preprocessed_dir = paths.preprocessed_dataset(request.dataset)
    plans = Plans.load(preprocessed_dir / "plans.json")
    data_folder, case_ids = preprocessed_cases(preprocessed_dir, plans, configuration)
    model = ModelFolder.create(
        path_under(paths.require("results"), preprocessed_dir.name), request.trainer, plans.plans_name, configuration
    )
    fold_folder = model.fold(fold)
    _check_arrays(data_folder, case_ids, preprocessed_dir.name)  # read only: before the lock makes the folder
    # before anything is written: a read-only results folder is one message now, not a traceback later
    ensure_writable_folder(fold_folder.path, "AUTOSR_RESULTS", create=False)
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 holds the lock for all ranks
        lock = HeldLock(fold_folder.lock_file, f"fold {fold} of {model.path}")
    try:
        run = _build_run(request, paths, fold, fold_folder, plans, preprocessed_dir, data_folder, case_ids)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    run.lock = lock
    return run


def _build_run(
    request: FoldRequest,
    paths: AutosrPaths,
    fold: int | str,
    fold_folder: FoldFolder,
    plans: Plans,
    preprocessed_dir: Path,
    data_folder: Path,
    case_ids: list[str],
) -> FoldRun:
    """What `prepare_fold` does once it holds the fold's lock."""
    configuration, continue_training = request.configuration, request.continue_training
    fold_dir, model_dir = fold_folder.path, fold_folder.path.parent
    check_fold_folder(fold_folder, continue_training, TRAINING)
    identities = case_identities(data_folder, case_ids)
    data_warnings = _check_data_unchanged(
        ModelFolder.at(model_dir), fold_folder, identities, continue_training, preprocessed_dir.name
    )
    splits = load_or_create_splits(preprocessed_dir, case_ids)
    train_cases, val_cases = cases_of_fold(splits, fold, case_ids)

    rank, world_size, device_obj = init_distributed(choose_device(request.device))
    if rank == 0:
        _copy_planning_files(preprocessed_dir, model_dir)
        started = any(fold_folder.checkpoint(w).is_file() for w in ("latest", "final"))
        if not (continue_training and started and fold_folder.data_record_file.is_file()):
            cases = {c: identities[c] for c in [*train_cases, *val_cases]}
            atomic_write_json({"data_folder": data_folder.name, "cases": cases}, fold_folder.data_record_file)
        for warning in data_warnings:
            print(warning)
    ctx = TrainingContext(
        plans=plans,
        configuration=configuration,
        fold=fold,
        output_folder=fold_dir,
        data_folder=data_folder,
        train_cases=train_cases,
        val_cases=val_cases,
        device=device_obj,
        num_workers=default_num_workers() if request.num_workers is None else request.num_workers,
        num_epochs=request.epochs,
        iters_per_epoch=request.iters_per_epoch,
        rank=rank,
        world_size=world_size,
    )
    runner = get_trainer_class(request.trainer)(ctx)
    finished = restore_fold(runner, fold_folder, continue_training, TRAINING) == "final"
    raw_dataset_dir = paths.raw_dataset(preprocessed_dir.name) if paths.raw else None
    if val_cases and raw_dataset_dir is None:
        raise AutosrError(
            "the raw folder is not set: validation scores predictions against the raw targets; "
            "export AUTOSR_RAW or pass --raw"
        )
    return FoldRun(runner, fold_dir, val_cases, finished, fold, splits, raw_dataset_dir)


def train_fold(
    dataset: str | int,
    configuration: str,
    fold: int | str,
    trainer: str = "Trainer",
    paths: AutosrPaths | None = None,
    device: str | None = None,
    continue_training: bool = False,
    epochs: int | None = None,
    iters_per_epoch: int | None = None,
    num_workers: int | None = None,
) -> Path:
    """Train (or resume) one fold, then predict and score its validation cases; returns the fold folder.

    `dataset`: id, name or path; `fold`: 0-4 or 'all'; `trainer`: a name in `TRAINERS`; `device`: None
    picks CUDA, else MPS, else CPU; `epochs`/`iters_per_epoch` override the fixed schedule (quick runs);
    `num_workers`: data loading processes (None: $AUTOSR_NUM_WORKERS, else from the CPU count).
    """
    request = FoldRequest(
        dataset, configuration, fold, trainer, device, continue_training, epochs, iters_per_epoch, num_workers
    )
    run = prepare_fold(request, paths)
    try:
        _train_and_validate(run, configuration)
    finally:
        run.release()
    return run.fold_dir


def _train_and_validate(run: FoldRun, configuration: str) -> None:
    runner = run.runner
    if not run.finished:
        runner.fit()
    if runner.is_main and run.val_cases:
        summary = validate_fold(
            runner.network,
            runner.ctx.plans,
            configuration,
            run.fold,
            run.splits,
            run.raw_dataset_dir,
            FoldFolder(run.fold_dir).validation_dir,
            runner.device,
            runner.mirror_axes(),
            sampler=runner.sampler_spec(),
        )
        model = summary.get("metrics", {}).get("model", {})
        baseline = summary.get("metrics", {}).get("baseline", {})
        shown = ", ".join(
            f"{k} {model[k]['mean']:.4f} (baseline {baseline[k]['mean']:.4f})"
            for k in ("mae", "psnr", "ssim")
            if k in model and k in baseline
        )
        runner.logger.print(f"validation of {len(run.val_cases)} cases (target units, target grid): {shown}")
    if runner.ctx.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def spawn_torchrun(num_gpus: int, argv: list[str]) -> int:
    """Re-launch `autosr train ...` under torchrun with `num_gpus` processes on this machine."""
    import subprocess
    import sys

    if os.environ.get("WORLD_SIZE"):
        raise AutosrError("--num-gpus is for launching; under torchrun already, leave it out")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_gpus}"]
    cmd += ["-m", "autosr.cli", "train", *argv]
    print("launching:", " ".join(cmd), flush=True)
    return subprocess.call(cmd)
