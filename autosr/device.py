"""Which torch device to run on: one rule for training, prediction and evaluation."""

from __future__ import annotations

import torch

from autosr.errors import AutosrError


def choose_device(requested: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else Apple MPS, else CPU; `requested` ('cuda', 'cuda:1', 'mps', 'cpu') overrides."""
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as e:
            raise AutosrError(f"--device '{requested}' is not a device name (use cuda, cuda:N, mps or cpu)") from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise AutosrError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise AutosrError("--device mps was asked for but MPS is not available; use --device cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
