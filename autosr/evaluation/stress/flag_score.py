"""The per-scan quality flag of `autosr predict`, and a continuous version of it to rank scans by.

The flag (autosr/inference/qc.py) is yes/no: some signal lies outside the training cases' range widened by a
margin. Its *score* is how far the farthest signal lies outside that range, in units of the margin: 0 inside
the training range, 1 exactly at the flagging limit (so score > 1 is the flag), 3 three margins out. Ranking
scans by it uses everything the flag knows and gives an AUROC that a yes/no flag (one threshold) cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autosr.inference.qc import (
    MARGIN_FRACTION,
    QCReference,
    input_signals,
    rule_of,
    uncertainty_key,
    uncertainty_signals,
)
from autosr.preprocessing.preprocess import PreprocessedScan


def flag_score(values: dict[str, float], bounds: dict[str, dict[str, Any]]) -> float:
    """Largest excess of a signal beyond its training range, in units of its flagging margin (0 inside)."""
    score = 0.0
    for name, b in bounds.items():
        value, rule = values.get(name), rule_of(name)
        if value is None or rule is None or not np.isfinite(value):
            continue
        transform = (lambda v: math.log(max(v, 1e-12))) if rule.log else (lambda v: v)
        lo, hi, v = transform(b["cv_low"]), transform(b["cv_high"]), transform(value)
        margin = max(MARGIN_FRACTION * (hi - lo), rule.floor) or 1.0
        excess = (v - hi) / margin if v > hi else ((lo - v) / margin if rule.sides == "both" and v < lo else 0.0)
        score = max(score, excess)
    return float(score)


@dataclass
class QCScorer:
    """The model folder's quality-control reference (None when it cannot be built) and the ensemble's key."""

    reference: QCReference | None
    key: str

    @classmethod
    def for_predictor(cls, predictor, raw_dataset_dir: Path) -> QCScorer:
        """The reference of the predictor's model folder, measured from the raw training cases when the folder
        has no current one (as `autosr predict` does); the key of its ensemble."""
        from autosr.inference.qc_reference import ensure_reference

        model_dir = predictor.model_dir
        key = uncertainty_key(
            predictor.folds,
            predictor.checkpoint_name,
            predictor.mirror_axes,
            predictor.settings.step_fraction,
            predictor.sampling_key,
        )
        return cls(ensure_reference(model_dir, raw_dataset_dir, progress=False), key)  # the current one, or built

    def assess(self, scan: PreprocessedScan, uncertainty: np.ndarray | None) -> dict[str, Any]:
        """flag, reason and flag_score of one preprocessed scan (with its normalized spread, when given)."""
        if self.reference is None:
            return {"flag": None, "flag_score": None, "reason": "no quality-control reference"}
        spread = uncertainty_signals(uncertainty, scan.foreground) if uncertainty is not None else None
        values, flag, reason = self.reference.assess(input_signals(scan), spread, self.key)
        bounds = dict(self.reference.data["bounds"])
        bounds.update(self.reference.uncertainty_bounds(self.key) or {})
        return {"flag": flag, "flag_score": flag_score(values, bounds), "reason": reason}
