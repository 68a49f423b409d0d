"""Shared fixtures: isolated autosr folders and a small phantom dataset (generated once per session)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from autosr.dataset_conversion.phantom import make_phantom_dataset
from autosr.paths import AutosrPaths

torch.set_num_threads(1)

# Tests that generate synthetic brains need the MNI152 template shipped with nilearn (the `demo` extra,
# which CI installs); without it they are skipped, all the same way.
needs_nilearn = pytest.mark.skipif(
    importlib.util.find_spec("nilearn") is None, reason="needs nilearn's MNI152 template: pip install autosr[demo]"
)


@pytest.fixture
def autosr_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AutosrPaths:
    """Empty raw/preprocessed/results folders, exported as AUTOSR_* for the duration of the test."""
    roots = {}
    for key, env in (("raw", "AUTOSR_RAW"), ("preprocessed", "AUTOSR_PREPROCESSED"), ("results", "AUTOSR_RESULTS")):
        folder = tmp_path / key
        folder.mkdir()
        monkeypatch.setenv(env, str(folder))
        roots[key] = folder
    return AutosrPaths.resolve(**roots)


@pytest.fixture(scope="session")
def phantom_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset999_Phantom (6 training + 2 test cases, 32^3 target at 1 mm, input at 1.5 mm, masks)."""
    root = tmp_path_factory.mktemp("phantom_template")
    return make_phantom_dataset(root, dataset_id=999, name="Phantom", num_train=6, num_test=2)


@pytest.fixture
def phantom_dataset(autosr_roots: AutosrPaths, phantom_template: Path) -> Path:
    """A private copy of the phantom dataset inside this test's raw folder."""
    destination = autosr_roots.raw / phantom_template.name
    shutil.copytree(phantom_template, destination)
    return destination
