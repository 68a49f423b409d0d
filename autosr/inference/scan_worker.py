"""The work on one scan around the network: read and preprocess it, export and write its prediction.

`ScanWorker` holds only plain data (the plans as JSON, the configuration name, the export switch), so it
pickles into the folder pipeline's worker processes (autosr/inference/pipeline.py) without the networks;
`Predictor.preprocess` and `Predictor.export` call the same object, so a scan is treated identically in a
single `predict_case`, in cross-validation and in a folder run over thousands of scans.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autosr.errors import AutosrError
from autosr.formats.plans import Plans
from autosr.io import Geometry
from autosr.preprocessing.preprocess import PreprocessedScan, preprocess_for_inference


@dataclass
class ScanWorker:
    """Preprocessing and export of one model (plans + configuration), without its networks.

    `background_fill`: outside the subject region exported predictions hold the training targets'
    background level (False keeps the raw network output).
    """

    plans_raw: dict[str, Any]
    configuration: str
    background_fill: bool = True
    _plans: Plans | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def plans(self) -> Plans:
        if self._plans is None:
            self._plans = Plans(self.plans_raw)
        return self._plans

    def __getstate__(self) -> dict[str, Any]:
        return {
            "plans_raw": self.plans_raw,
            "configuration": self.configuration,
            "background_fill": self.background_fill,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def preprocess(self, channel_files: Sequence[str | os.PathLike]) -> PreprocessedScan:
        """Read, resample, crop and normalize one case's channel files exactly as in training."""
        num_channels = self.plans.num_input_channels
        if len(channel_files) != num_channels:
            raise AutosrError(f"got {len(channel_files)} channel file(s) but the model was trained on {num_channels}")
        return preprocess_for_inference([Path(p) for p in channel_files], self.plans, self.configuration)

    def export(
        self,
        prediction: np.ndarray,
        properties: dict[str, Any],
        on_input_grid: bool = False,
        uncertainty: np.ndarray | None = None,
        foreground: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Geometry, np.ndarray | None]:
        """Invert the preprocessing: (array in target units, its Geometry, uncertainty in target units).

        With the scan's input `foreground` (and `background_fill` on) the prediction holds the training
        targets' background level outside the subject region. The uncertainty is exported as
        revert(mean + std) - revert(mean), which carries it through the same resampling and scales it by the
        target normalization's scale (exact for the affine schemes).
        """
        from autosr.preprocessing.inverse import revert_prediction

        subject = foreground if self.background_fill else None
        options = dict(on_input_grid=on_input_grid, foreground=subject)
        array, geometry = revert_prediction(prediction, properties, self.plans, self.configuration, **options)
        spread = None
        if uncertainty is not None:
            upper, _ = revert_prediction(
                prediction + uncertainty, properties, self.plans, self.configuration, **options
            )
            spread = np.abs(upper - array).astype(np.float32)
        return np.asarray(array, dtype=np.float32), geometry, spread
