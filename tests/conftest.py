"""Shared fixtures: isolated autosr folders and a small phantom dataset (generated once per session)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_dataset
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
    return make_phantom_dataset(root, 999, "Phantom", PhantomSettings(num_train=6, num_test=2))


@pytest.fixture
def phantom_dataset(autosr_roots: AutosrPaths, phantom_template: Path) -> Path:
    """A private copy of the phantom dataset inside this test's raw folder."""
    destination = autosr_roots.raw / phantom_template.name
    shutil.copytree(phantom_template, destination)
    return destination


TINY_NETWORK_2D = {
    "architecture": "PlainConvUNet",
    "dims": 2,
    "features_per_stage": [4, 8, 16],
    "kernel_sizes": [[3, 3]] * 3,
    "strides": [[1, 1], [2, 2], [2, 2]],
    "n_conv_per_stage": [1, 1, 1],
    "n_conv_per_stage_decoder": [1, 1],
    "upsampling": "interp_conv",
    "deep_supervision": True,
}


@pytest.fixture(scope="session")
def trained_phantom(phantom_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Dataset999_Phantom planned with a tiny 2d network and folds 0 and 1 trained for two iterations, through
    the real CLI, in folders of its own: {"raw", "preprocessed", "results", "model_dir", "flags"}. Shared by
    the tests of packaging, folder prediction and quality flags; they must not change the model folder."""
    from autosr.cli import main
    from autosr.formats.plans import Plans

    root = tmp_path_factory.mktemp("trained_phantom")
    roots = {key: root / key for key in ("raw", "preprocessed", "results")}
    for folder in roots.values():
        folder.mkdir()
    shutil.copytree(phantom_template, roots["raw"] / phantom_template.name)
    flags = [f"--{key}={folder}" for key, folder in roots.items()]
    assert main(["plan", "999", "-c", "2d", "-np", "1", *flags]) == 0
    plans_path = roots["preprocessed"] / phantom_template.name / "plans.json"
    plans = Plans.load(plans_path)
    plans.raw["configurations"]["2d"].update(patch_size=[32, 32], batch_size=4, network=TINY_NETWORK_2D)
    plans.save(plans_path)
    for fold in (0, 1):
        args = ["train", "999", "2d", str(fold), "--epochs", "1", "--iters-per-epoch", "2", "--num-workers", "0"]
        assert main([*args, "--device", "cpu", *flags]) == 0
    model_dir = roots["results"] / phantom_template.name / "Trainer__autosrPlans__2d"
    return {**roots, "model_dir": model_dir, "flags": flags}
