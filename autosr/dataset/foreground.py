"""The region of a target that counts when a case has no mask: its foreground.

One rule, used by verification (is anything inside it?), the fingerprint (statistics inside it) and
preprocessing (the training mask): above -500 HU for CT (air is about -1000 HU, soft tissue about 0),
non-zero elsewhere (MR background is 0 after the usual skull-stripping or masking at export).
"""

from __future__ import annotations

import numpy as np

CT_FOREGROUND_HU = -500.0


def foreground_of(target: np.ndarray, modality: str) -> np.ndarray:
    """Where the target has signal, used when a dataset has no masks: above -500 HU for CT, non-zero else."""
    if modality.upper() == "CT":
        return target > CT_FOREGROUND_HU
    return target > 0


def describe_foreground(modality: str) -> str:
    """The foreground rule in words, for messages."""
    return "voxels above -500 HU" if modality.upper() == "CT" else "voxels above 0"
