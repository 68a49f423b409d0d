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
    """Sets each param group's LR from the epoch; stateless apart from the initial LR (recomputed on resume)."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_epochs: int, exponent: float = POLY_EXPONENT):
        self.optimizer = optimizer
        self.max_epochs = max_epochs
        self.exponent = exponent
        self.initial_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, self.initial_lrs):
            g["initial_lr"] = lr

    def step(self, epoch: int) -> float:
        for g, lr in zip(self.optimizer.param_groups, self.initial_lrs):
            g["lr"] = poly_lr(lr, epoch, self.max_epochs, self.exponent)
        return self.optimizer.param_groups[0]["lr"]
