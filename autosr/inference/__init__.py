"""Prediction with trained models: sliding window, test-time mirroring, fold ensembling, export.

Modules, one job each:

- `sliding_window`: a whole volume through a patch-sized network (Gaussian-weighted, fp32 accumulation).
- `mirroring`: which flips test-time augmentation uses.
- `running_stats`: mean and spread over ensemble members in two volumes of memory (Welford).
- `model_folder`: finding a trained model folder, its checkpoints, and loading them safely.
- `predictor`: `Predictor`, the fold ensemble that predicts arrays, cases and folders.
- `folder`: case discovery, resuming, splitting over machines, the run summary.
- `scan_worker`: a scan's preprocessing and export as plain data (what worker processes run).
- `pipeline`: a folder run with the work around the network in worker processes beside it.
- `qc`, `qc_reference`: per-scan quality signals, the training cases' reference, flags with reasons.
- `scan_summary`: `OUT/summary.csv` from one row file per scan, safe with many writers.
- `api`: `predict` and `ensemble_folders`, what the `autosr predict` / `ensemble` commands run.

Names are exported lazily so that importing this package does not import torch or the preprocessing.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "predict_sliding_window": "autosr.inference.sliding_window",
    "Predictor": "autosr.inference.predictor",
    "FolderSummary": "autosr.inference.folder",
    "ensemble_folders": "autosr.inference.api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autosr.inference' has no attribute {name!r}")
