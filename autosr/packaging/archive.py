"""`autosr.packaging.archive` moved to `autosr.formats.package_archive` (it sits below its users in the layers of documentation/architecture.md);
this name stays so that code written against it keeps working. New code imports `autosr.formats.package_archive`."""

from autosr.formats.package_archive import (  # noqa: F401 - re-exported
    CHUNK_BYTES,
    MAX_COMPRESSION_RATIO,
    MAX_MEMBERS,
    MAX_TOTAL_BYTES,
    RATIO_CHECK_MIN_BYTES,
    Member,
    check_members,
    extract_checked,
    sha256_of,
)

__all__ = [
    "check_members",
    "CHUNK_BYTES",
    "extract_checked",
    "MAX_COMPRESSION_RATIO",
    "MAX_MEMBERS",
    "MAX_TOTAL_BYTES",
    "Member",
    "RATIO_CHECK_MIN_BYTES",
    "sha256_of",
]
