"""`autosr.packaging.install` moved to `autosr.formats.package_reader` (it sits below its users in the layers of documentation/architecture.md);
this name stays so that code written against it keeps working. New code imports `autosr.formats.package_reader`."""

from autosr.formats.package_reader import (  # noqa: F401 - re-exported
    MAX_MANIFEST_BYTES,
    UnpackedModel,
    differing_files,
    inspect_package,
    install_model,
    open_model_package,
    unpack_package,
)

__all__ = [
    "differing_files",
    "inspect_package",
    "install_model",
    "MAX_MANIFEST_BYTES",
    "open_model_package",
    "unpack_package",
    "UnpackedModel",
]
