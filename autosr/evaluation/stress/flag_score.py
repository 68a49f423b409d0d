"""The per-scan quality flag of `autosr predict` and its continuous scores, for the stress test.

The flag (autosr/inference/qc.py) is yes/no: some signal lies outside the training cases' range widened by a
margin. Its *score* (`qc.flag_score`) is how far the farthest signal lies outside that range, in units of
the margin (above 1 is the flag); the *input shift* is the same over the signals of what the network sees
(noise level, background, non-uniformity, the normalized intensity distribution and depth profile), leaving
out geometry and the raw intensity scale, which preprocessing resamples and normalizes away. Ranking scans by
them uses everything the flag knows and gives an AUROC that a yes/no flag (one threshold) cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autosr.inference.qc import QCReference, input_signals, uncertainty_signals
from autosr.preprocessing.preprocess import PreprocessedScan


@dataclass
class QCScorer:
    """The model folder's quality-control reference (None when it cannot be built) and the ensemble's key."""

    reference: QCReference | None
    key: str | None

    @classmethod
    def for_predictor(cls, predictor, raw_dataset_dir: Path) -> QCScorer:
        """The reference of the predictor's model folder, measured from the raw training cases when the folder
        has no current one (as `autosr predict` does); the key of its ensemble."""
        from autosr.inference.qc_reference import ensure_reference

        reference = ensure_reference(predictor.model_dir, raw_dataset_dir, progress=False)  # the current one, or built
        return cls(reference, predictor.ensemble_key)

    def assess(self, scan: PreprocessedScan, uncertainty: np.ndarray | None) -> dict[str, Any]:
        """flag, reason, flag_score and input_shift of one preprocessed scan (with its normalized spread, when
        given)."""
        if self.reference is None:
            reason = "no quality-control reference"
            return {"flag": None, "flag_score": None, "input_shift": None, "reason": reason}
        spread = uncertainty_signals(uncertainty, scan.foreground) if uncertainty is not None else None
        values, flag, reason = self.reference.assess(input_signals(scan), spread, self.key)
        return {
            "flag": flag,
            "flag_score": values["flag_score"],
            "input_shift": values["input_shift"],
            "reason": reason,
        }
