"""End-of-fold validation: predict each validation case as a whole volume and score it.

Today this scores in the **normalized** space of the preprocessed data (cropped, planned spacing), with the
trained network in memory, the project's sliding window (`autosr.inference.sliding_window`, Gaussian
weighting, mirroring off) and the project's metrics (`autosr.evaluation.metrics.image_metrics`) inside the
case mask. `data_range` for PSNR/SSIM is the reference's range inside the mask (normalized units) and is
written per case. Exporting predictions in target units on the original grid (via
`autosr.preprocessing.inverse.revert_prediction` and the fold's `Predictor`) is the next step: see
documentation/training.md, "End-of-fold validation".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autosr.io.atomic import atomic_write_json
from autosr.preprocessing.case_store import load_case

SUMMARY_FILE = "summary.json"


def _score(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None) -> dict[str, Any]:
    from autosr.evaluation.metrics import image_metrics

    inside = reference[mask > 0] if mask is not None and mask.any() else reference
    data_range = float(inside.max() - inside.min()) or 1.0
    scores = image_metrics(prediction, reference, mask, data_range=data_range, with_ms_ssim=False)
    scores["data_range"] = data_range
    return scores


def validate_fold(
    network: nn.Module,
    patch_size: Sequence[int],
    data_folder: Path,
    case_ids: Sequence[str],
    output_folder: Path,
    device: torch.device,
) -> dict[str, Any]:
    """Predict `case_ids` from `data_folder` with `network`, write `output_folder/summary.json`, return it."""
    from autosr.inference.sliding_window import predict_sliding_window

    output_folder = Path(output_folder)
    was_ds = getattr(network, "deep_supervision", False)
    network.deep_supervision = False
    network.eval()
    per_case: dict[str, dict[str, Any]] = {}
    try:
        for case_id in case_ids:
            case = load_case(data_folder, case_id, mmap=False)
            image = torch.from_numpy(np.ascontiguousarray(case.input, dtype=np.float32))
            with torch.no_grad():
                pred = predict_sliding_window(network, image, list(patch_size), device=device)
            prediction = pred[0].float().cpu().numpy()
            mask = case.mask[0] > 0 if case.mask is not None else None
            per_case[case_id] = _score(prediction, np.asarray(case.target[0], dtype=np.float32), mask)
    finally:
        network.deep_supervision = was_ds
    keys = [k for k, v in next(iter(per_case.values()), {}).items() if isinstance(v, float)]
    mean = {k: float(np.mean([c[k] for c in per_case.values()])) for k in keys}
    summary = {
        "space": "normalized (preprocessed grid, inside the mask)",
        "num_cases": len(per_case),
        "mean": {k: v for k, v in mean.items() if math.isfinite(v)},
        "per_case": per_case,
    }
    atomic_write_json(summary, output_folder / SUMMARY_FILE)
    return summary
