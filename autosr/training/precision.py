"""Mixed precision: autocast on CUDA (bfloat16 where supported, else float16 with a GradScaler), full
precision elsewhere. One object owns the autocast context, the scaler and the backward/clip/step order."""

from __future__ import annotations

import torch
from torch import nn

from autosr.device import autocast, autocast_dtype


class MixedPrecision:
    def __init__(self, device: torch.device):
        self.device = device
        self.dtype = autocast_dtype(device)
        self.enabled = self.dtype is not None
        # bfloat16 has float32's exponent range: no loss scaling needed
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self):
        return autocast(self.device, self.dtype)

    def step(
        self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters, max_grad_norm: float | None
    ) -> None:
        """backward -> unscale -> clip -> optimizer step -> scaler update."""
        self.scaler.scale(loss).backward()
        if max_grad_norm is not None:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(list(parameters), max_grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler.is_enabled() else {}

    def load_state_dict(self, state: dict) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)
