"""`autosr.planning.plans` moved to `autosr.formats.plans` (it sits below its users in the layers of documentation/architecture.md);
this name stays so that code written against it keeps working. New code imports `autosr.formats.plans`."""

from autosr.formats.plans import (  # noqa: F401 - re-exported
    ARCHITECTURES,
    CONFIGURATION_NAMES,
    UPSAMPLING_MODES,
    ConfigurationPlan,
    Plans,
    validate_plans_dict,
)

__all__ = [
    "ARCHITECTURES",
    "CONFIGURATION_NAMES",
    "ConfigurationPlan",
    "Plans",
    "UPSAMPLING_MODES",
    "validate_plans_dict",
]
