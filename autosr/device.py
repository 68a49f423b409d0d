"""Which torch device to run on, in which precision, and how many worker processes beside it: one rule for
training, prediction and evaluation."""

from __future__ import annotations

import contextlib
import os

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


def prefer_fixed_shape_kernels(device: torch.device | str) -> None:
    """Let cuDNN time its convolution algorithms once per shape and keep the fastest: training patches and
    prediction tiles have one shape each, so the search pays for itself within a few steps."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The mixed-precision dtype on `device`: bfloat16 on CUDA GPUs that support it (float32's exponent
    range: no loss scaling, no overflow in large activations), float16 on older CUDA GPUs, None (full
    precision) elsewhere. Training and prediction use the same one (documentation/benchmark.md, "GPU")."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device | str, dtype: torch.dtype | None = None):
    """The autocast context for `device` (`dtype` default: `autocast_dtype`); a no-op without one."""
    device = torch.device(device)
    dtype = dtype or autocast_dtype(device)
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


NUM_WORKERS_ENV = "AUTOSR_NUM_WORKERS"


def num_workers_from_environment() -> int | None:
    """$AUTOSR_NUM_WORKERS as a number of worker processes (0 or more), or None when it is not set. Training's
    data workers and prediction's folder workers read it here, each with its own fallback when unset."""
    value = os.environ.get(NUM_WORKERS_ENV, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise AutosrError(
            f"{NUM_WORKERS_ENV} must be a whole number, 0 or more, got '{value}'; unset it or set 0 (no workers)"
        )
    return number
