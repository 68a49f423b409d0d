"""Parts of training on their own: splits, losses, sampling, logger, RNG state, variants, DDP."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from autosr.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from autosr.errors import AutosrError
from autosr.formats.splits import cases_of_fold, load_or_create_splits
from autosr.inference.pipeline import default_num_workers as prediction_workers
from autosr.paths import AutosrPaths
from autosr.preprocessing.case_store import save_case
from autosr.training import trainers
from autosr.training.data import PatchLoader, PatchSampling, default_num_workers
from autosr.training.logger import TrainingLogger
from autosr.training.loss import OUTSIDE_MASK_WEIGHT, DeepSupervisionLoss, L1Loss, masked_l1, masked_ssim
from autosr.training.run import train_fold
from autosr.training.trainer import Trainer
from tests.test_training import DATASET, make_tiny_dataset

CASES = [f"c{i}" for i in range(12)]


def test_splits_written_once_and_reused(tmp_path) -> None:
    splits = load_or_create_splits(tmp_path, CASES)
    assert len(splits) == 5
    vals = [c for f in splits for c in f["val"]]
    assert sorted(vals) == sorted(CASES)  # every case validated exactly once
    for f in splits:
        assert not set(f["train"]) & set(f["val"])
    first = (tmp_path / "splits.json").read_text()
    assert load_or_create_splits(tmp_path, CASES, seed=999) == splits  # file wins over a new seed
    assert (tmp_path / "splits.json").read_text() == first
    assert cases_of_fold(splits, "all", CASES) == (sorted(CASES), [])


def test_user_splits_win_and_are_checked(tmp_path) -> None:
    custom = [{"train": CASES[2:], "val": CASES[:2]}] * 5
    (tmp_path / "splits.json").write_text(json.dumps(custom))
    assert load_or_create_splits(tmp_path, CASES) == custom
    (tmp_path / "splits.json").write_text(json.dumps([{"train": ["ghost"], "val": CASES[:2]}]))
    with pytest.raises(AutosrError, match="ghost"):
        load_or_create_splits(tmp_path, CASES)


def test_too_few_cases_for_five_folds(tmp_path) -> None:
    with pytest.raises(AutosrError, match="3 training cases cannot make 5 cross-validation folds"):
        load_or_create_splits(tmp_path, CASES[:3])
    assert not (tmp_path / "splits.json").exists()


def test_masked_l1_and_deep_supervision_average_pooling() -> None:
    pred, target = torch.zeros(1, 1, 4, 4, 4), torch.ones(1, 1, 4, 4, 4)
    mask = torch.zeros_like(pred)
    mask[..., :2] = 1
    target[..., 2:] = 100.0  # outside the mask: counts with OUTSIDE_MASK_WEIGHT only
    w = OUTSIDE_MASK_WEIGHT
    assert masked_l1(pred, target, mask).item() == pytest.approx((1.0 + w * 100.0) / (1.0 + w))
    # a checkerboard target: average pooling gives 0.5 at half resolution (nearest would give 0 or 1)
    checker = (torch.arange(4)[:, None, None] + torch.arange(4)[None, :, None] + torch.arange(4)[None, None, :]) % 2
    checker = checker.float()[None, None]
    loss = DeepSupervisionLoss(L1Loss())
    outputs = [checker.clone(), torch.full((1, 1, 2, 2, 2), 0.5)]
    assert loss(outputs, checker, torch.ones_like(checker)).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_ssim(checker, checker, None).item() == pytest.approx(1.0, abs=1e-4)


def test_foreground_oversampling(tmp_path) -> None:
    shape = (40, 40, 40)
    mask = np.zeros((1, *shape), dtype=np.uint8)
    mask[0, 30:34, 30:34, 30:34] = 1
    image = np.random.RandomState(0).rand(1, *shape).astype(np.float32)
    save_case(tmp_path, "c0", image, {}, image, mask)
    loader = PatchLoader(tmp_path, ["c0"], PatchSampling((8, 8, 8), batch_size=3, augment=False), seed=0)
    hits = [loader.generate_train_batch()["mask"].reshape(3, -1).max(1) for _ in range(20)]
    hits = np.array(hits)
    assert hits[:, 0].all()  # the first third of each batch is centred inside the mask
    assert hits[:, 1:].mean() < 0.5  # the rest is uniform over the volume


def test_num_workers_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("AUTOSR_NUM_WORKERS", "3")
    assert default_num_workers() == 3
    assert prediction_workers() == 3
    for bad in ("many", "-3", "1.5"):  # refused the same way by training and prediction
        monkeypatch.setenv("AUTOSR_NUM_WORKERS", bad)
        for default in (default_num_workers, prediction_workers):
            with pytest.raises(AutosrError, match="AUTOSR_NUM_WORKERS must be a whole number, 0 or more"):
                default()
    monkeypatch.delenv("AUTOSR_NUM_WORKERS")
    assert default_num_workers() == max(0, min(12, (os.cpu_count() or 1) - 1))


def test_logger_ema_and_state(tmp_path) -> None:
    logger = TrainingLogger(tmp_path / "log.txt", echo=False)
    for epoch, value in enumerate([1.0, 0.0, 0.0]):
        logger.log("val_loss", value, epoch)
        logger.update_ema("val_loss", value, epoch)
    assert logger.curves["ema_val_loss"] == pytest.approx([1.0, 0.9, 0.81])
    clone = TrainingLogger(None, echo=False)
    clone.load_state_dict(logger.state_dict())
    clone.truncate(2)
    assert clone.curves["val_loss"] == [1.0, 0.0]
    logger.plot(tmp_path / "progress.png")
    assert (tmp_path / "progress.png").stat().st_size > 1000


def test_rng_state_round_trip_through_weights_only_checkpoint(tmp_path) -> None:
    state = capture_rng_state()
    torch.save({"network_weights": {}, "rng_state": state}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng_state"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class _ToyAdversarialTrainer(Trainer):
    """What a GAN variant needs: a second network and optimizer, extra loss terms, extra curves."""

    def build_extras(self) -> None:
        self.extra_networks["discriminator"] = nn.Sequential(nn.Conv3d(1, 2, 3), nn.AdaptiveAvgPool3d(1))
        self.extra_optimizers["discriminator"] = torch.optim.Adam(self.extra_networks["discriminator"].parameters())

    def training_step(self, batch):
        inputs, target, mask = self.batch_to_device(batch)
        disc, d_opt = self.extra_networks["discriminator"], self.extra_optimizers["discriminator"]
        fake = self.network(inputs)[0]
        d_loss = disc(fake.detach()).mean() - disc(target).mean()
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        self.optimizer.zero_grad()
        g_loss = -disc(fake).mean()
        l1 = self.loss([fake], target, mask)
        (l1 + 0.01 * g_loss).backward()
        l1, g_loss, d_loss = l1.detach(), g_loss.detach(), d_loss.detach()
        self.optimizer.step()
        return {"train_loss": l1.item(), "g_loss": g_loss.item(), "d_loss": d_loss.item()}


def test_variant_adds_network_optimizer_and_curves(autosr_roots: AutosrPaths, monkeypatch) -> None:
    make_tiny_dataset(autosr_roots)
    monkeypatch.setitem(trainers.TRAINERS, "ToyAdversarial", _ToyAdversarialTrainer)
    fold_dir = train_fold(
        DATASET, "3d_fullres", "all", trainer="ToyAdversarial", paths=autosr_roots, device="cpu", epochs=1,
        iters_per_epoch=2, num_workers=0,
    )  # fmt: skip
    ckpt = load_checkpoint(fold_dir / "checkpoint_final.pt")
    assert set(ckpt["extra_networks"]) == {"discriminator"} and set(ckpt["extra_optimizers"]) == {"discriminator"}
    assert {"g_loss", "d_loss", "train_loss"} <= set(ckpt["logger_state"]["curves"])


def test_ddp_two_processes_on_cpu(autosr_roots: AutosrPaths) -> None:
    """`--num-gpus 2 --device cpu` launches torchrun with 2 gloo processes; rank 0 writes the fold."""
    make_tiny_dataset(autosr_roots)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "autosr.cli", "train", "901", "2d", "3", "--device", "cpu", "--num-gpus", "2"]
    cmd += ["--epochs", "1", "--iters-per-epoch", "2", "--num-workers", "0"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    fold_dir = autosr_roots.results / DATASET / "Trainer__autosrPlans__2d" / "fold_3"
    assert (fold_dir / "checkpoint_final.pt").is_file()
    assert "x 2 rank(s)" in (fold_dir / "training_log.txt").read_text()


def test_schedule_sets_the_lr_of_a_resumed_optimizer() -> None:
    """Resuming loads the optimizer state, which replaces its param-group dicts: the schedule must still set
    the LR the optimizer uses (it once kept the orphaned groups, and a resumed run trained at the saved LR)."""
    from autosr.training.optim import PolyLRSchedule, poly_lr

    net = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    before_the_kill = torch.optim.SGD(net.parameters(), lr=0.01)
    PolyLRSchedule(before_the_kill, max_epochs=10).step(1)
    saved = before_the_kill.state_dict()
    schedule = PolyLRSchedule(optimizer, max_epochs=10)
    optimizer.load_state_dict(saved)
    assert schedule.step(5) == pytest.approx(poly_lr(0.01, 5, 10))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(poly_lr(0.01, 5, 10))
