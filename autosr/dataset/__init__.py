"""Verifying a raw paired dataset (`verify`). The format itself (dataset.json, case discovery) is
`autosr.formats.dataset_spec`, below registration; `autosr.dataset.spec` and the names here re-export it."""

from autosr.formats.dataset_spec import CaseFiles, DatasetSpec, discover_cases, load_dataset_spec

__all__ = ["CaseFiles", "DatasetSpec", "discover_cases", "load_dataset_spec"]
