"""Training end to end on tiny preprocessed cases: files, checkpoints, resume after a real kill, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from autosr.checkpoint import load_checkpoint
from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_dataset
from autosr.errors import AutosrError
from autosr.formats.plans import Plans
from autosr.paths import AutosrPaths
from autosr.planning.api import plan_dataset
from autosr.preprocessing.preprocess import preprocess_dataset
from autosr.training.run import FoldRequest, prepare_fold, train_fold

DATASET = "Dataset901_Tiny"
NET_3D = {
    "architecture": "PlainConvUNet",
    "dims": 3,
    "features_per_stage": [4, 8, 16],
    "kernel_sizes": [[3, 3, 3]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [1, 1, 1],
    "n_conv_per_stage_decoder": [1, 1],
    "upsampling": "interp_conv",
    "deep_supervision": True,
}
NET_2D = {**NET_3D, "dims": 2, "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]]}


def make_tiny_dataset(paths: AutosrPaths, n_cases: int = 5, shape=(20, 24, 24)) -> Path:
    """A small phantom dataset planned and preprocessed by the real planner, with tiny networks and patches
    written into plans.json (as a user's edit would), so training runs in seconds."""
    make_phantom_dataset(paths.raw, 901, "Tiny", PhantomSettings(num_train=n_cases, num_test=0, shape_zyx=shape))
    plans = plan_dataset(DATASET, paths, configurations=["2d", "3d_fullres"], preprocess=False, progress=False)
    for name, patch, batch, network in (("3d_fullres", [16, 16, 16], 2, NET_3D), ("2d", [16, 16], 3, NET_2D)):
        config = plans.raw["configurations"][name]
        config.update(patch_size=patch, batch_size=batch, network=network)
    pre = paths.preprocessed / DATASET
    plans.save(pre / "plans.json")
    preprocess_dataset(paths.raw / DATASET, pre, Plans.load(pre / "plans.json"), ["3d_fullres"], progress=False)
    return pre


@pytest.fixture
def tiny(autosr_roots: AutosrPaths) -> AutosrPaths:
    make_tiny_dataset(autosr_roots)
    return autosr_roots


def test_end_to_end_writes_everything(tiny: AutosrPaths) -> None:
    fold_dir = train_fold(901, "3d_fullres", 0, paths=tiny, device="cpu", epochs=2, iters_per_epoch=2, num_workers=0)
    model_dir = fold_dir.parent
    assert fold_dir == tiny.results / DATASET / "Trainer__autosrPlans__3d_fullres" / "fold_0"
    for name in ("plans.json", "dataset.json", "fingerprint.json"):
        assert (model_dir / name).is_file()
    for name in ("checkpoint_latest.pt", "checkpoint_best.pt", "checkpoint_final.pt", "training_log.txt"):
        assert (fold_dir / name).is_file(), name
    assert (fold_dir / "progress.png").read_bytes()[:4] == b"\x89PNG"
    assert (tiny.preprocessed / DATASET / "splits.json").is_file()
    summary = json.loads((fold_dir / "validation" / "summary.json").read_text())
    assert summary["num_cases"] == 1 and summary["fold"] == 0
    assert np.isfinite(summary["metrics"]["model"]["mae"]["mean"])
    assert "baseline" in summary["metrics"]  # the no-learning row, fitted on this fold's training cases
    (case,) = [p for p in (fold_dir / "validation").glob("*.nii.gz")]
    from autosr.io import read_image

    _, geometry = read_image(case)
    assert geometry == read_image(tiny.raw / DATASET / "targetsTr" / case.name)[1]  # on the target grid
    ckpt = torch.load(fold_dir / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    for key in (
        "format_version",
        "trainer",
        "configuration",
        "epoch",
        "network_weights",
        "optimizer_state",
        "grad_scaler_state",
        "rng_state",
        "logger_state",
        "extra_networks",
        "extra_optimizers",
        "mirror_axes",
    ):
        assert key in ckpt, key
    assert ckpt["epoch"] == 2 and ckpt["trainer"] == "Trainer" and ckpt["configuration"] == "3d_fullres"
    assert len(ckpt["logger_state"]["curves"]["train_loss"]) == 2
    log = (fold_dir / "training_log.txt").read_text()
    assert "epoch 1:" in log and "validation of 1 cases" in log

    # nothing trained is overwritten silently
    with pytest.raises(AutosrError, match="checkpoint_final.pt exists.*--continue"):
        train_fold(901, "3d_fullres", 0, paths=tiny, device="cpu", epochs=2, iters_per_epoch=2, num_workers=0)


def test_2d_fold_all_with_worker_processes(tiny: AutosrPaths) -> None:
    """2D slices, fold 'all' (no validation cases), and the multi-process loader with 2 workers."""
    fold_dir = train_fold(
        DATASET, "2d", "all", trainer="TrainerSSIMLoss", paths=tiny, device="cpu", epochs=1, iters_per_epoch=2,
        num_workers=2,
    )  # fmt: skip
    assert fold_dir.name == "fold_all" and fold_dir.parent.name == "TrainerSSIMLoss__autosrPlans__2d"
    assert (fold_dir / "checkpoint_final.pt").is_file()
    assert not (fold_dir / "validation").exists()


def test_bad_requests_are_clear_errors(tiny: AutosrPaths) -> None:
    kwargs = dict(paths=tiny, device="cpu", epochs=1, iters_per_epoch=1, num_workers=0)
    with pytest.raises(AutosrError, match="fold must be 0..4 or 'all'"):
        train_fold(901, "3d_fullres", 5, **kwargs)
    with pytest.raises(AutosrError, match="configuration '3d_lowres' is not in the plans"):
        train_fold(901, "3d_lowres", 0, **kwargs)
    with pytest.raises(AutosrError, match="unknown trainer 'Nope'.*Trainer, TrainerSSIMLoss"):
        train_fold(901, "3d_fullres", 0, trainer="Nope", **kwargs)
    (tiny.raw / "Dataset902_NeverPlanned").mkdir()
    (tiny.preprocessed / "Dataset902_NeverPlanned").mkdir()
    with pytest.raises(AutosrError, match="no plans here; run `autosr plan"):
        train_fold(902, "3d_fullres", 0, **kwargs)
    with pytest.raises(AutosrError, match="no dataset '903'"):
        train_fold(903, "3d_fullres", 0, **kwargs)


def test_corrupt_checkpoint_on_continue(tiny: AutosrPaths) -> None:
    fold_dir = tiny.results / DATASET / "Trainer__autosrPlans__3d_fullres" / "fold_1"
    fold_dir.mkdir(parents=True)
    (fold_dir / "checkpoint_latest.pt").write_bytes(b"not a checkpoint at all")
    kwargs = dict(paths=tiny, device="cpu", epochs=1, iters_per_epoch=1, num_workers=0)
    with pytest.raises(AutosrError, match="checkpoint_latest.pt exists.*--continue"):
        train_fold(901, "3d_fullres", 1, **kwargs)
    with pytest.raises(AutosrError, match="checkpoint_latest.pt: the checkpoint is damaged"):
        train_fold(901, "3d_fullres", 1, continue_training=True, **kwargs)
    assert (fold_dir / "checkpoint_latest.pt").read_bytes() == b"not a checkpoint at all"


def _optimizer_tensors(state: dict) -> list[torch.Tensor]:
    return [v for s in state["state"].values() for v in s.values() if isinstance(v, torch.Tensor)]


def test_continue_after_kill_resumes_epoch_and_optimizer(tiny: AutosrPaths) -> None:
    """Kill a real `autosr train` process mid-run, then resume from checkpoint_latest.pt."""
    fold_dir = tiny.results / DATASET / "Trainer__autosrPlans__3d_fullres" / "fold_2"
    latest = fold_dir / "checkpoint_latest.pt"
    kill_training_after_first_checkpoint(["901", "3d_fullres", "2", "--epochs", "40", "--iters-per-epoch", "3"], latest)
    assert not (fold_dir / "checkpoint_final.pt").exists()
    saved = load_checkpoint(latest)
    epoch = saved["epoch"]
    assert 1 <= epoch < 40

    run = prepare_fold(FoldRequest(901, "3d_fullres", 2, device="cpu", continue_training=True, num_workers=0), tiny)
    runner = run.runner
    assert runner.current_epoch == epoch
    assert runner.num_epochs == 40 and runner.iters_per_epoch == 3  # the killed run's schedule
    restored = runner.optimizer.state_dict()
    assert restored["param_groups"][0]["lr"] == saved["optimizer_state"]["param_groups"][0]["lr"]
    expected, actual = _optimizer_tensors(saved["optimizer_state"]), _optimizer_tensors(restored)
    assert len(expected) == len(actual) > 0
    assert all(torch.equal(a, b) for a, b in zip(expected, actual))
    for name, value in runner.network.state_dict().items():
        assert torch.equal(value, saved["network_weights"][name])

    runner.num_epochs = epoch + 1  # finish quickly: one more epoch
    runner.schedule.max_epochs = runner.num_epochs
    runner.fit()
    final = load_checkpoint(fold_dir / "checkpoint_final.pt")
    assert final["epoch"] == epoch + 1
    assert len(final["logger_state"]["curves"]["train_loss"]) == epoch + 1
    assert f"resuming at epoch {epoch}" in (fold_dir / "training_log.txt").read_text()


def kill_training_after_first_checkpoint(train_args: list[str], latest: Path, command: str = "train") -> None:
    """Start a real `autosr train` (or another training `command`, e.g. distill) process, SIGKILL it once
    `latest` exists (a little into the next epoch)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUTOSR_NUM_WORKERS": "0"}
    cmd = [sys.executable, "-m", "autosr.cli", command, *train_args, "--device", "cpu"]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not latest.is_file():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.time() < deadline, f"no {latest.name} within 120 s"
            time.sleep(0.05)
        time.sleep(0.3)  # into the next epoch
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_replanned_plans_refused_only_once_a_fold_was_trained(tiny: AutosrPaths) -> None:
    """The model folder's plans.json is the contract of its trained folds: a changed plan is refused once a
    checkpoint exists, and simply replaces the copy while nothing was trained (a first try that stopped)."""
    request = FoldRequest(901, "3d_fullres", 0, device="cpu", epochs=1, iters_per_epoch=1, num_workers=0)
    model_dir = prepare_fold(request, tiny).fold_dir.parent
    plans_path = tiny.preprocessed / DATASET / "plans.json"
    plans = json.loads(plans_path.read_text())
    plans["configurations"]["3d_fullres"]["batch_size"] = 3
    plans_path.write_text(json.dumps(plans))
    prepare_fold(request, tiny)  # nothing trained yet: the copy follows the new plans
    assert json.loads((model_dir / "plans.json").read_text()) == plans
    train_fold(901, "3d_fullres", 0, paths=tiny, device="cpu", epochs=1, iters_per_epoch=1, num_workers=0)
    plans["configurations"]["3d_fullres"]["batch_size"] = 2
    plans_path.write_text(json.dumps(plans))
    with pytest.raises(AutosrError, match="re-planned after folds of this model were trained"):
        prepare_fold(FoldRequest(901, "3d_fullres", 1, device="cpu", num_workers=0), tiny)
