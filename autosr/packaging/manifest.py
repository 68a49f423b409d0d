"""`autosr.packaging.manifest` moved to `autosr.formats.package_manifest` (it sits below its users in the layers of documentation/architecture.md);
this name stays so that code written against it keeps working. New code imports `autosr.formats.package_manifest`."""

from autosr.formats.package_manifest import (  # noqa: F401 - re-exported
    FORMAT_VERSION,
    MANIFEST_NAME,
    MODEL_CARD_NAME,
    PACKAGE_FORMAT,
    Manifest,
)

__all__ = [
    "FORMAT_VERSION",
    "Manifest",
    "MANIFEST_NAME",
    "MODEL_CARD_NAME",
    "PACKAGE_FORMAT",
]
