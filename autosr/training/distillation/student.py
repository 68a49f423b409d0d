"""The student's side of distillation: the default trainer's loop, loss, optimizer and augmentation, fed with
the teacher's cached predictions as targets (teacher.py), written to `fold_distilled/`.

Only these parts differ from `Trainer`, each by one override: the network may be the planned one or a
half-width variant (`STUDENT_PLANS`; the checkpoint records the network it built, so prediction rebuilds it),
and the mirroring augmentation follows the teacher's (a teacher trained without left-right flips must not teach
a student that sees them). The student's patches are augmented like a fold's (intensity transforms on the
input only), so it learns to give the teacher's answer for a range of inputs around each cached one; with
`perturb_inputs` the input is further degraded like another scanner's (a linear bias field and noise, drawn per
patch) while the target stays the teacher's prediction of the clean input (a "noisy student"); with a measured
`scanner_shift` (unpaired scans, scanner_shift.py) half the paired cases' patches are degraded like the unpaired
scans, the unpaired scans' own patches stay as they are. A fresh student
may start from a teacher fold's weights (`init_checkpoint`) instead of a random initialisation.

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
from autosr.training.distillation.scanner_shift import ScannerShift, apply_shift, linear_field, standard_normal_like
from autosr.training.distillation.teacher import UNPAIRED_PREFIX
from autosr.training.fold_setup import FoldWording, check_fold_folder, restore_fold
from autosr.training.trainer import Trainer, TrainingContext

# the student's network: the configuration's, or the same topology with half the features per stage (about a
# quarter of the operations per pass)
STUDENT_PLANS = ("planned", "half-width")


@dataclass(frozen=True)
class StudentSpec:
    """Which student network, and the axes the teacher's training mirrored (the student's augmentation)."""

    plan: str = "planned"
    mirror_axes: tuple[int, ...] | None = None  # None: every spatial axis, like `Trainer`
    init_checkpoint: Path | None = None  # a teacher fold's checkpoint the fresh student's weights start from
    perturb_inputs: bool = False  # the scanner perturbation of `perturb_like_another_scanner` on every patch
    # the unpaired scans' measured shift, applied to a share of the paired cases' patches (scanner_shift.py), and
    # the patch's size over the subjects' extent
    scanner_shift: ScannerShift | None = None
    extent_share: float = 1.0

    def __post_init__(self) -> None:
        if self.plan not in STUDENT_PLANS:
            raise AutosrError(f"--student-plan {self.plan}: unknown (valid: {', '.join(STUDENT_PLANS)})")


# the scanner perturbation: peak slope of the linear bias field per axis, and the largest noise level (a share of
# the patch's standard deviation); each drawn uniformly per patch
BIAS_SLOPE = 0.3
NOISE_SHARE = 0.15


def perturb_like_another_scanner(inputs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """`inputs` (B, C, *spatial) as another scanner might have acquired them: each patch multiplied, above its
    lowest value (the background), by a linear bias field of random slope per axis, plus Gaussian noise of a
    random level. Used for the student's input only, so it learns the teacher's answer for the clean scan."""
    batch, spatial = inputs.shape[0], inputs.shape[2:]
    device, dtype = inputs.device, inputs.dtype

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(device=device, dtype=dtype)

    slopes = torch.stack([(uniform(batch) * 2 - 1) * BIAS_SLOPE for _ in spatial], dim=1)  # drawn axis by axis
    field = linear_field(slopes, spatial)
    dims = tuple(range(1, inputs.dim()))
    low = inputs.amin(dim=dims, keepdim=True)
    sigma = uniform(batch).reshape(batch, *[1] * (inputs.dim() - 1)) * NOISE_SHARE * inputs.std(dim=dims, keepdim=True)
    noise = standard_normal_like(inputs, generator)
    return low + (inputs - low) * field + sigma * noise


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

    def training_step(self, batch: dict[str, Any]) -> dict[str, float]:
        shift = self.spec.scanner_shift
        if shift is not None and not shift.is_null:  # drawn like the perturbation below
            paired = [not str(c).startswith(UNPAIRED_PREFIX) for c in batch["cases"]]
            batch = {
                **batch,
                "input": apply_shift(torch.as_tensor(batch["input"]), shift, self.spec.extent_share, paired),
            }
        if self.spec.perturb_inputs:  # drawn from torch's generator, which the batch stream seeds per batch
            batch = {**batch, "input": perturb_like_another_scanner(torch.as_tensor(batch["input"]))}
        return super().training_step(batch)

    def start_from_teacher(self, checkpoint: Path) -> None:
        """Start from a teacher fold's network weights (the optimizer and schedule start fresh); the fold's
        network must be the student's."""
        stored = load_checkpoint(checkpoint, map_location="cpu")
        if stored.get("network_plan") != self.network_plan():
            raise AutosrError(
                f"{checkpoint}: the fold's network is not the '{self.spec.plan}' student's; a student starts from a "
                "fold's weights only with --student-plan planned"
            )
        self.network.load_state_dict(stored["network_weights"])

    def state_dict(self) -> dict[str, Any]:
        init = self.spec.init_checkpoint  # as fold_k/checkpoint_<name>.pt: a package moves the model folder
        start = None if init is None else f"{Path(init).parent.name}/{Path(init).name}"
        return {
            **super().state_dict(),
            "student_plan": self.spec.plan,
            "student_start": start,
            "student_perturb_inputs": self.spec.perturb_inputs,
            "student_scanner_shift": None if self.spec.scanner_shift is None else self.spec.scanner_shift.as_json(),
        }

    def load(self, path: Path) -> None:
        stored = load_checkpoint(path, map_location="cpu").get("student_plan")
        if stored is not None and stored != self.spec.plan:
            raise AutosrError(
                f"{path} is a '{stored}' student, not '{self.spec.plan}': continue with --student-plan {stored}, or "
                f"delete {Path(path).parent} to distill a '{self.spec.plan}' student"
            )
        super().load(path)


STUDENT = FoldWording(
    done="the student is already distilled",
    redo="distill it again",
    stopped="distillation",
    finished="the student is distilled; nothing left to do",
    fresh="starting the student from scratch",
)


def check_student_folder(fold: FoldFolder, continue_training: bool, teacher: dict[str, Any]) -> None:
    """Refuse to overwrite a student, or to continue one that learned from another teacher."""
    check_fold_folder(fold, continue_training, STUDENT)
    started = fold.checkpoint("final").is_file() or fold.checkpoint("latest").is_file()
    if continue_training and started and fold.teacher_record_file.is_file():
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
) -> DistillationTrainer:
    """The student's trainer, restored from its latest checkpoint with `continue_training` (a finished student
    is the caller's to skip). `budget`: `num_epochs`, `iters_per_epoch`, `num_workers`, `seed` as
    `TrainingContext` takes them."""
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
    if restore_fold(runner, fold, continue_training, STUDENT) is None and spec.init_checkpoint is not None:
        runner.start_from_teacher(spec.init_checkpoint)
    atomic_write_json(teacher, fold.teacher_record_file)
    return runner
