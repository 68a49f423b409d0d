"""The raw paired dataset: dataset.json, case discovery and validation."""

from autosr.dataset.spec import CaseFiles, DatasetSpec, discover_cases, load_dataset_spec

__all__ = ["CaseFiles", "DatasetSpec", "discover_cases", "load_dataset_spec"]
