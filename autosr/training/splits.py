"""`autosr.training.splits` moved to `autosr.formats.splits` (it sits below its users in the layers of documentation/architecture.md);
this name stays so that code written against it keeps working. New code imports `autosr.formats.splits`."""

from autosr.formats.splits import (  # noqa: F401 - re-exported
    FOLD_ALL,
    SPLITS_FILE,
    cases_of_fold,
    load_or_create_splits,
    make_splits,
    parse_fold,
    read_splits,
    validate_splits,
)

__all__ = [
    "cases_of_fold",
    "FOLD_ALL",
    "load_or_create_splits",
    "make_splits",
    "parse_fold",
    "read_splits",
    "SPLITS_FILE",
    "validate_splits",
]
