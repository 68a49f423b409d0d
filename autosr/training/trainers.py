"""The registry of trainers: name -> class. `autosr train --trainer NAME` looks names up here only.

Each variant changes one part of `Trainer` and says why it exists.
"""

from __future__ import annotations

from autosr.errors import AutosrError
from autosr.training.trainer import Trainer


class TrainerSSIMLoss(Trainer):
    """Masked L1 + 0.5 * (1 - SSIM): favours local structure (edges, texture) over voxel-wise agreement."""

    loss_name = "l1_ssim"


class TrainerNoMirroring(Trainer):
    """No mirroring augmentation: for data whose left-right asymmetry matters (or is consistently oriented)."""

    def mirror_axes(self) -> tuple[int, ...]:
        return ()


class TrainerLosslessAugmentation(Trainer):
    """Spatial augmentation without interpolation: axis permutations among equally spaced axes and
    mirroring, so the target keeps its finest detail (documentation/training.md, "Augmentation")."""

    spatial_augmentation = "lossless"


class TrainerInterpolatingAugmentation(Trainer):
    """Rotation (+-30 deg) and scaling (0.7-1.4) before mirroring: more geometric variety, at the price of a
    target blurred by the interpolation (documentation/training.md, "Augmentation"). For data whose
    subjects lie in the scanner at very different angles or sizes."""

    spatial_augmentation = "interpolating"


class TrainerSGD(Trainer):
    """SGD with Nesterov momentum (LR 0.01) instead of AdamW: the alternative measured in
    documentation/training.md, the usual choice of self-configuring U-Nets on long schedules."""

    optimizer_name = "sgd"


from autosr.training.adversarial.trainer import AdversarialTrainer  # noqa: E402 - after the variants above
from autosr.training.diffusion.trainer import DiffusionTrainer  # noqa: E402

TRAINERS: dict[str, type[Trainer]] = {
    "Trainer": Trainer,
    "AdversarialTrainer": AdversarialTrainer,
    "DiffusionTrainer": DiffusionTrainer,
    "TrainerSSIMLoss": TrainerSSIMLoss,
    "TrainerNoMirroring": TrainerNoMirroring,
    "TrainerLosslessAugmentation": TrainerLosslessAugmentation,
    "TrainerInterpolatingAugmentation": TrainerInterpolatingAugmentation,
    "TrainerSGD": TrainerSGD,
}


def get_trainer_class(name: str) -> type[Trainer]:
    if name not in TRAINERS:
        raise AutosrError(f"unknown trainer '{name}' (valid: {', '.join(TRAINERS)})")
    return TRAINERS[name]
