"""Optimizer and learning-rate schedule.

Default: AdamW (LR 1e-3, weight decay 0.01) with polynomial decay (1 - epoch/epochs)^0.9, chosen over SGD
(Nesterov momentum 0.99, LR 0.01, weight decay 3e-5) by the short measurement in documentation/training.md
("Optimizer: SGD vs AdamW"); SGD stays available as `TrainerSGD`.
"""

from __future__ import annotations

import torch

SGD_LR = 0.01
SGD_MOMENTUM = 0.99
WEIGHT_DECAY = 3e-5
ADAMW_LR = 1e-3
ADAMW_WEIGHT_DECAY = 1e-2
POLY_EXPONENT = 0.9
# Global gradient-norm clip: a loose guard against rare spikes (e.g. a patch of pure background), not a
# regularizer; 12 is the usual value for these U-Nets, not tuned here.
GRAD_CLIP_NORM = 12.0


def build_optimizer(name: str, parameters, lr: float | None = None) -> torch.optim.Optimizer:
    """'adamw' (the default, see the module docstring) or 'sgd' (Nesterov)."""
    if name == "sgd":
        return torch.optim.SGD(
            parameters, lr=lr or SGD_LR, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY
        )
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr or ADAMW_LR, weight_decay=ADAMW_WEIGHT_DECAY)
    raise ValueError(f"unknown optimizer '{name}' (valid: sgd, adamw)")


def poly_lr(initial_lr: float, epoch: int, max_epochs: int, exponent: float = POLY_EXPONENT) -> float:
    """Polynomial decay from `initial_lr` at epoch 0 towards 0 at `max_epochs`."""
    return initial_lr * (1 - min(epoch, max_epochs) / max_epochs) ** exponent


class PolyLRSchedule:
    """Sets every param group's LR of one or several optimizers from the epoch, each from its own initial LR;
    stateless apart from those (recomputed on resume). `step` returns the first optimizer's LR."""

    def __init__(
        self,
        optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer],
        max_epochs: int,
        exponent: float = POLY_EXPONENT,
    ):
        self.optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        self.max_epochs = max_epochs
        self.exponent = exponent
        for g in self._groups():
            g.setdefault("initial_lr", g["lr"])

    def _groups(self) -> list[dict]:
        # looked up on every step: `optimizer.load_state_dict` (resuming) replaces the param-group dicts, so
        # groups kept from construction would be orphans and the loaded LR would stay for the rest of training
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self, epoch: int) -> float:
        for g in self._groups():
            g["lr"] = poly_lr(g["initial_lr"], epoch, self.max_epochs, self.exponent)
        return self.optimizers[0].param_groups[0]["lr"]
