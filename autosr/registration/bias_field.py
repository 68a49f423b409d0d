"""`autosr.registration.bias_field` moved to `autosr.imaging.bias_field` (it sits below its users in the layers of documentation/architecture.md);
this name stays so that code written against it keeps working. New code imports `autosr.imaging.bias_field`."""

from autosr.imaging.bias_field import (  # noqa: F401 - re-exported
    N4_CONVERGENCE_THRESHOLD,
    N4_ITERATIONS_PER_LEVEL,
    SHRUNK_VOXELS_PER_AXIS,
    correct_bias_field,
    correct_bias_field_array,
    estimate_log_bias_field,
    foreground_mask,
    shrink_factors,
)

__all__ = [
    "correct_bias_field",
    "correct_bias_field_array",
    "estimate_log_bias_field",
    "foreground_mask",
    "N4_CONVERGENCE_THRESHOLD",
    "N4_ITERATIONS_PER_LEVEL",
    "shrink_factors",
    "SHRUNK_VOXELS_PER_AXIS",
]
