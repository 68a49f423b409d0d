"""How a packaged model was trained: `training_provenance.json`, written into every package's model folder.

A prediction's provenance (autosr/inference/provenance.py) names the package by its SHA-256; this record says
what is behind that package: which dataset (the SHA-256 of its fingerprint.json, so "trained on the same data"
is checkable), which plans and splits (their SHA-256), how long each fold trained, and the software: the
versions of autosr, Python, torch, numpy and SimpleITK at export, and the git commit of the autosr source
when it is a git checkout (None for an installed release). The manifest lists the file with its checksum like
every other, so it is verified on install and travels into an installed model folder.
"""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autosr import __version__
from autosr.formats.package_archive import sha256_of

RECORD_FORMAT = "autosr-training-provenance"


def package_versions() -> dict[str, str]:
    """The versions of the packages a prediction depends on, as imported now."""
    import numpy
    import SimpleITK
    import torch

    return {
        "autosr": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "SimpleITK": SimpleITK.Version_VersionString(),
    }


def source_commit() -> dict[str, Any] | None:
    """The git commit of the autosr source (and whether it had uncommitted changes), or None outside git."""
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "uncommitted_changes": bool(status.strip())} if commit else None


def training_record(
    staged: dict[str, Path], dataset_name: str, model_folder: str, epochs: dict[int, int], trainer: str | None
) -> dict[str, Any]:
    """The record for the files `staged` for the package (name in the model folder -> staged file)."""

    def digest(name: str) -> str | None:
        return sha256_of(staged[name]) if name in staged else None

    git = source_commit()
    return {
        "format": RECORD_FORMAT,
        "format_version": 1,
        "dataset_name": dataset_name,
        "model_folder": model_folder,
        "trainer": trainer,
        "fingerprint_sha256": digest("fingerprint.json"),
        "plans_sha256": digest("plans.json"),
        "dataset_json_sha256": digest("dataset.json"),
        "splits_sha256": digest("splits.json"),
        "epochs_per_fold": {str(fold): epoch for fold, epoch in sorted(epochs.items())},
        "versions_at_export": package_versions(),
        "git_commit": git["commit"] if git else None,
        "git_uncommitted_changes": git["uncommitted_changes"] if git else None,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
