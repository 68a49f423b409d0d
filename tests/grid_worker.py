"""`GridScanWorker`: the folder pipeline's scan work reduced to "read the channels as they are, write them back
on the input grid", so the folder mechanics (resume, parts, failures, summary rows) are tested whatever the
preprocessing does. A module of its own with light imports: worker processes import it to unpickle the worker.
"""

from __future__ import annotations

import numpy as np

from autosr.errors import AutosrError
from autosr.inference.scan_worker import ScanWorker
from autosr.io import Geometry, read_channels
from autosr.preprocessing.preprocess import PreprocessedScan


class GridScanWorker(ScanWorker):
    """Folder mechanics only: the input grid is the planned grid and intensities are not normalized."""

    def preprocess(self, channel_files):
        if len(channel_files) != self.plans.num_input_channels:
            raise AutosrError(
                f"got {len(channel_files)} channel file(s), the model wants {self.plans.num_input_channels}"
            )
        array, geometry = read_channels(channel_files)
        grid = geometry.to_json()
        identity = [{"scheme": "none"}] * len(array)
        properties = {
            "geometry": grid,
            "input_geometry": grid,
            "planned_geometry": grid,
            "input_normalization": identity,
        }
        return PreprocessedScan(array, np.ones(array.shape[1:], bool), properties)

    def export(self, prediction, properties, on_input_grid=False, uncertainty=None, foreground=None):
        return prediction, Geometry.from_json(properties["geometry"]), uncertainty
