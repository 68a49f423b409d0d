"""Checkpoints: written atomically and checked, read with `weights_only=True`, contents per documentation/architecture.md.

Shared by training (which writes them) and inference (which reads them), so it lives beside both; where they
lie is `autosr.model_layout`'s business.

RNG states are stored as tensors and plain lists (Python's `random` state as a list of ints, numpy's as
its five-tuple with the key array as a tensor) so nothing needs unpickling.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autosr.errors import AutosrError
from autosr.io.atomic import atomic_path, zip_problem

FORMAT_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": int(py_version), "state": [int(x) for x in py_state], "gauss": py_gauss},
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    if not state:
        return
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """`torch.save` into a temporary sibling, check it, then rename: a kill never leaves a half-written
    checkpoint, and a full disk raises `FileWriteError` with the previous checkpoint of that name intact."""
    save_torch({"format_version": FORMAT_VERSION, **checkpoint}, path)


def save_torch(obj: Any, path: Path) -> None:
    """`torch.save(obj)` to `path` atomically, checked before the rename (a torch file is a zip archive whose
    directory comes last). Written through a Python file object, so a full disk surfaces as its OSError
    (torch's own file writer only says "unexpected pos")."""
    with atomic_path(path, verify=zip_problem) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True`; an unreadable file is a clear AutosrError naming it."""
    path = Path(path)
    if not path.is_file():
        raise AutosrError(f"{path}: no checkpoint here")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... for damaged files
        raise AutosrError(
            f"{path}: the checkpoint is damaged or not an autosr checkpoint and cannot be loaded "
            f"({type(e).__name__}: {e}); delete it to retrain this fold, or restore it from a backup"
        ) from e
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise AutosrError(f"{path}: not an autosr checkpoint (no 'network_weights'); delete it to restart the fold")
    return checkpoint
