"""Starting or resuming a trained fold folder: what `autosr train` (run.py, `fold_k/`) and `autosr distill` (the
student, `fold_distilled/`) check and restore alike, so that the two refuse, resume and word things the same way.

Nothing trained is overwritten without `--continue`; with it, a run continues from `checkpoint_latest.pt` (or
is finished when `checkpoint_final.pt` is there). The training budget is checked before anything is written, and
the preprocessed cases a fold learns from are found in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autosr.errors import AutosrError
from autosr.formats.plans import Plans
from autosr.model_layout import FoldFolder
from autosr.paths import path_under
from autosr.preprocessing.case_store import list_cases
from autosr.training.trainer import Trainer


@dataclass(frozen=True)
class FoldWording:
    """How messages name a run of this kind of fold."""

    done: str  # after "<final checkpoint> exists: "
    redo: str  # after "Delete <fold folder> to "
    stopped: str  # "an earlier <stopped> stopped part way"
    finished: str  # logged when continuing a finished run
    fresh: str  # logged when continuing finds nothing to resume


TRAINING = FoldWording(
    done="this fold is already trained",
    redo="train it again, or pass --continue to (re)run its final validation",
    stopped="run of this fold",
    finished="training is complete; running the final validation only",
    fresh="starting this fold from scratch",
)


def check_budget(epochs: int | None, iters_per_epoch: int | None, num_workers: int | None) -> None:
    """Refuse a budget no run can have (None: the trainer's fixed schedule, the machine's worker count)."""
    for flag, value in (("--epochs", epochs), ("--iters-per-epoch", iters_per_epoch)):
        if value is not None and value < 1:
            raise AutosrError(f"{flag} must be at least 1, got {value}")
    if num_workers is not None and num_workers < 0:
        raise AutosrError(f"--num-workers must be 0 or more, got {num_workers}")


def preprocessed_cases(preprocessed_dir: Path, plans: Plans, configuration: str) -> tuple[Path, list[str]]:
    """The preprocessed folder of `configuration` and its cases; none is one message saying to preprocess."""
    data_folder = path_under(preprocessed_dir, plans.configuration(configuration).data_identifier)
    case_ids = list_cases(data_folder)
    if not case_ids:
        raise AutosrError(
            f"{data_folder}: no preprocessed cases for configuration '{configuration}'; "
            f"run `autosr plan {preprocessed_dir.name}` (with preprocessing) first"
        )
    return data_folder, case_ids


def check_fold_folder(fold: FoldFolder, continue_training: bool, wording: FoldWording) -> None:
    """Without `continue_training`, refuse a folder that holds a final or latest checkpoint."""
    if continue_training:
        return
    final, latest = fold.checkpoint("final"), fold.checkpoint("latest")
    if final.is_file():
        raise AutosrError(f"{final} exists: {wording.done}. Delete {fold.path} to {wording.redo}")
    if latest.is_file():
        raise AutosrError(
            f"{latest} exists: an earlier {wording.stopped} stopped part way. Pass --continue to resume it, or "
            f"delete {fold.path} to start over"
        )


def restore_fold(runner: Trainer, fold: FoldFolder, continue_training: bool, wording: FoldWording) -> str | None:
    """With `continue_training`, load the final (the run is finished) or else the latest checkpoint into
    `runner`; returns which one it loaded ("final", "latest"), None when the run starts afresh."""
    if not continue_training:
        return None
    final, latest = fold.checkpoint("final"), fold.checkpoint("latest")
    if final.is_file():
        runner.load(final)
        runner.logger.print(f"{final} exists: {wording.finished}")
        return "final"
    if latest.is_file():
        runner.load(latest)
        return "latest"
    runner.logger.print(f"--continue: no {latest.name} in {fold.path}, {wording.fresh}")
    return None
