"""`autosr.dataset.spec` moved to `autosr.formats.dataset_spec` (it sits below its users in the layers of documentation/architecture.md);
this name stays so that code written against it keeps working. New code imports `autosr.formats.dataset_spec`."""

from autosr.formats.dataset_spec import (  # noqa: F401 - re-exported
    CHANNEL_SUFFIX,
    COUNT_KEYS,
    REQUIRED_KEYS,
    TEXT_KEYS,
    CaseFiles,
    DatasetSpec,
    discover_cases,
    discover_input_cases,
    load_dataset_spec,
    parse_dataset_spec,
)

__all__ = [
    "CaseFiles",
    "CHANNEL_SUFFIX",
    "COUNT_KEYS",
    "DatasetSpec",
    "discover_cases",
    "discover_input_cases",
    "load_dataset_spec",
    "parse_dataset_spec",
    "REQUIRED_KEYS",
    "TEXT_KEYS",
]
