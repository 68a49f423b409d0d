"""The manifest of a model package (`autosr_model.json`): what the zip holds and the checksum of every file.

Layout of a package (documentation/model_packages.md):

    autosr_model.json                              this manifest
    README.md                                      the model card
    DatasetXXX_Name/<Trainer>__<plans>__<config>/  the model folder, exactly the files the manifest lists

Installing or unpacking compares each file with its SHA-256 here, so a damaged download is caught, and two
packages (or a package and an installed model) are the same model exactly when their file lists and
checksums agree.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from autosr.errors import AutosrError
from autosr.io.outputs import OutputKind
from autosr.model_layout import ModelFolder
from autosr.paths import DATASET_NAME_RULE, SAFE_NAME_RULE, is_dataset_name, name_problem

MANIFEST_NAME = "autosr_model.json"
MODEL_CARD_NAME = "README.md"
PACKAGE_FORMAT = "autosr-model-package"
FORMAT_VERSION = 1


def is_model_package(path: Path) -> bool:
    """A zip holding a package manifest: a package autosr wrote (checked no further: this only decides what an
    `-o` may replace)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return MANIFEST_NAME in archive.namelist()


# A package is an artefact handed to others: an existing one is replaced only with --overwrite.
PACKAGE_OUTPUT = OutputKind("model package", is_model_package, regenerated=False)


@dataclass
class Manifest:
    """What `autosr export-model` wrote: the model's names, its folds and checkpoint, and its files."""

    dataset_name: str
    model_folder: str
    folds: list[int]
    checkpoint: str
    autosr_version: str
    created: str
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # path in the model folder -> sha256, bytes

    @property
    def model_path(self) -> str:
        """`DatasetXXX_Name/<Trainer>__<plans>__<config>`: where the model folder lies in the zip and under results."""
        return f"{self.dataset_name}/{self.model_folder}"

    @property
    def layout(self) -> ModelFolder:
        """The model folder's name parts (checked in from_json)."""
        parsed = ModelFolder.parse(self.model_folder)
        assert parsed is not None
        return parsed

    @property
    def configuration(self) -> str:
        return self.layout.configuration

    @property
    def trainer(self) -> str:
        return self.layout.trainer

    def member_names(self) -> list[str]:
        """Every member the zip must hold, no more, no less."""
        return [MANIFEST_NAME, MODEL_CARD_NAME, *(f"{self.model_path}/{name}" for name in self.files)]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PACKAGE_FORMAT,
            "format_version": FORMAT_VERSION,
            "autosr_version": self.autosr_version,
            "created": self.created,
            "dataset_name": self.dataset_name,
            "model_folder": self.model_folder,
            "folds": list(self.folds),
            "checkpoint": self.checkpoint,
            "files": self.files,
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> Manifest:
        """Parse and check a manifest; every problem names `source` (the package or folder it came from)."""
        if not isinstance(data, dict) or data.get("format") != PACKAGE_FORMAT:
            raise AutosrError(f"{source}: {MANIFEST_NAME} is not an autosr model package manifest")
        if data.get("format_version") != FORMAT_VERSION:
            raise AutosrError(
                f"{source}: package format version {data.get('format_version')} (this autosr reads version "
                f"{FORMAT_VERSION}); install the autosr version that wrote it ({data.get('autosr_version')})"
            )
        dataset_name, model_folder = data.get("dataset_name"), data.get("model_folder")
        if not is_dataset_name(dataset_name):
            raise AutosrError(
                f"{source}: {MANIFEST_NAME} names the dataset {dataset_name!r}, which is not one folder name: "
                f"{DATASET_NAME_RULE}; refusing the package (ask for a fresh export)"
            )
        parts = ModelFolder.parse(model_folder) if isinstance(model_folder, str) else None
        problem = name_problem(model_folder)
        if parts is None or problem is not None:
            why = f"it {problem}" if problem is not None else "it lacks the three parts"
            raise AutosrError(
                f"{source}: {MANIFEST_NAME} names the model folder {model_folder!r}, which is not one folder name "
                f"<Trainer>__<plans>__<configuration> ({why}; {SAFE_NAME_RULE}); refusing the package (ask for a "
                "fresh export)"
            )
        files = data.get("files")
        if not isinstance(files, dict) or not files:
            raise AutosrError(f"{source}: {MANIFEST_NAME} lists no files")
        for name, entry in files.items():
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or "\\" in name or not isinstance(entry, dict):
                raise AutosrError(f"{source}: {MANIFEST_NAME} lists a bad file entry '{name}'")
            if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
                raise AutosrError(f"{source}: {MANIFEST_NAME} entry '{name}' lacks sha256/bytes")
        folds = data.get("folds")
        if not isinstance(folds, list) or not folds or not all(isinstance(f, int) for f in folds):
            raise AutosrError(f"{source}: {MANIFEST_NAME} lists no folds")
        return cls(
            dataset_name=dataset_name,
            model_folder=model_folder,
            folds=[int(f) for f in folds],
            checkpoint=str(data.get("checkpoint")),
            autosr_version=str(data.get("autosr_version")),
            created=str(data.get("created")),
            files=files,
        )
