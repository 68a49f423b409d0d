"""The student's side of distillation: the default trainer's loop, loss, optimizer and augmentation, fed with
the teacher's cached predictions as targets (teacher.py), written to `fold_distilled/`.

Only two parts differ from `Trainer`, each by one override: the network may be the planned one or a
half-width variant (`STUDENT_PLANS`; the checkpoint records the network it built, so prediction rebuilds it),
and the mirroring augmentation follows the teacher's (a teacher trained without left-right flips must not teach
a student that sees them). The student's patches are augmented like a fold's (intensity transforms on the
input only), so it learns to give the teacher's answer for a range of inputs around each cached one.

Like a fold, one process writes `fold_distilled/` (its `.training.lock`), nothing trained is overwritten without
`--continue`, and a run resumes from `checkpoint_latest.pt` on the same batch stream. `teacher.json` in the
fold records the teacher the student started from: continuing after the teacher changed is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autosr.checkpoint import load_checkpoint
from autosr.errors import AutosrError
from autosr.formats.plans import Plans
from autosr.io.atomic import atomic_write_json
from autosr.io.json_file import read_json_file
from autosr.model_layout import DISTILLED_FOLD, FoldFolder
from autosr.training.trainer import Trainer, TrainingContext

# the student's network: the configuration's, or the same topology with half the features per stage (about a
# quarter of the operations per pass)
STUDENT_PLANS = ("planned", "half-width")


@dataclass(frozen=True)
class StudentSpec:
    """Which student network, and the axes the teacher's training mirrored (the student's augmentation)."""

    plan: str = "planned"
    mirror_axes: tuple[int, ...] | None = None  # None: every spatial axis, like `Trainer`

    def __post_init__(self) -> None:
        if self.plan not in STUDENT_PLANS:
            raise AutosrError(f"--student-plan {self.plan}: unknown (valid: {', '.join(STUDENT_PLANS)})")


class DistillationTrainer(Trainer):
    """`Trainer` on (input, teacher prediction) cases with the student network of `spec`."""

    def __init__(self, ctx: TrainingContext, spec: StudentSpec | None = None):
        self.spec = spec or StudentSpec()  # before Trainer builds the network from network_plan()
        super().__init__(ctx)

    def network_plan(self) -> dict[str, Any]:
        plan = dict(self.config.network)
        if self.spec.plan == "half-width":
            plan["features_per_stage"] = [max(2, int(f) // 2) for f in plan["features_per_stage"]]
        return plan

    def mirror_axes(self) -> tuple[int, ...]:
        return super().mirror_axes() if self.spec.mirror_axes is None else tuple(self.spec.mirror_axes)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "student_plan": self.spec.plan}

    def load(self, path: Path) -> None:
        stored = load_checkpoint(path, map_location="cpu").get("student_plan")
        if stored is not None and stored != self.spec.plan:
            raise AutosrError(
                f"{path} is a '{stored}' student, not '{self.spec.plan}': continue with --student-plan {stored}, or "
                f"delete {Path(path).parent} to distill a '{self.spec.plan}' student"
            )
        super().load(path)


def check_student_folder(fold: FoldFolder, continue_training: bool, teacher: dict[str, Any]) -> None:
    """Refuse to overwrite a student, or to continue one that learned from another teacher."""
    final, latest = fold.checkpoint("final"), fold.checkpoint("latest")
    if not continue_training:
        if final.is_file():
            raise AutosrError(
                f"{final} exists: the student is already distilled. Delete {fold.path} to distill it again"
            )
        if latest.is_file():
            raise AutosrError(
                f"{latest} exists: an earlier distillation stopped part way. Pass --continue to resume it, or delete "
                f"{fold.path} to start over"
            )
        return
    started = final.is_file() or latest.is_file()
    if started and fold.teacher_record_file.is_file():
        recorded = read_json_file(fold.teacher_record_file, "")
        if recorded != teacher:
            raise AutosrError(
                f"{fold.teacher_record_file}: the student was started from other teacher checkpoints than the current "
                f"ones (folds {recorded.get('folds') if isinstance(recorded, dict) else '?'}, retrained or replaced "
                f"since); delete {fold.path} to distill the current teacher"
            )


def build_student(
    plans: Plans,
    configuration: str,
    fold: FoldFolder,
    cache_dir: Path,
    case_ids: Sequence[str],
    spec: StudentSpec,
    device: torch.device,
    budget: dict[str, int | None],
    continue_training: bool,
    teacher: dict[str, Any],
) -> tuple[DistillationTrainer, bool]:
    """(the student's trainer, restored from its checkpoint with `continue_training`; whether it is finished).
    `budget`: `num_epochs`, `iters_per_epoch`, `num_workers` as `TrainingContext` takes them."""
    ctx = TrainingContext(
        plans=plans,
        configuration=configuration,
        fold=DISTILLED_FOLD,
        output_folder=fold.path,
        data_folder=cache_dir,
        train_cases=list(case_ids),
        val_cases=[],  # every case is the teacher's: the validation curve follows un-augmented patches of them
        device=device,
        **budget,
    )
    fold.path.mkdir(parents=True, exist_ok=True)
    runner = DistillationTrainer(ctx, spec)
    final, latest = fold.checkpoint("final"), fold.checkpoint("latest")
    if continue_training and final.is_file():
        runner.load(final)
        runner.logger.print(f"{final} exists: the student is distilled; nothing left to do")
        return runner, True
    if continue_training and latest.is_file():
        runner.load(latest)
    elif continue_training:
        runner.logger.print(f"--continue: no {latest.name} in {fold.path}, starting the student from scratch")
    atomic_write_json(teacher, fold.teacher_record_file)
    return runner, False
