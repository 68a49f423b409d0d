"""The training loop, composed of small parts: data (data.py), loss (loss.py), optimizer and schedule
(optim.py), mixed precision (precision.py), logging (logger.py) and checkpoints (checkpoint.py).

`Trainer` wires the parts and runs epochs. A variant changes one part by overriding one factory method
(`build_loss`, `build_optimizer`, `mirror_axes`, ...) or one hook:

- `build_extras()` registers additional networks/optimizers in `self.extra_networks` /
  `self.extra_optimizers`; they are moved to the device and saved in and restored from checkpoints
  (`extra_networks`, `extra_optimizers`) without further code;
- `training_step(batch) -> dict[str, float]` does one optimization step and returns named numbers; the loop
  averages every name over the epoch and logs it as a curve (names ending in `_loss` are plotted), so a
  GAN variant returns {"train_loss": ..., "g_loss": ..., "d_loss": ...} and gets its curves for free;
- `validation_step(batch) -> dict[str, float]` likewise; `val_loss` drives the best checkpoint.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from autosr.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from autosr.device import prefer_fixed_shape_kernels
from autosr.errors import AutosrError
from autosr.formats.plans import Plans
from autosr.model_layout import FoldFolder
from autosr.network import build_network
from autosr.training.augmentation import interchangeable_axes
from autosr.training.data import DevicePrefetcher, PatchSampling, make_batch_iterator
from autosr.training.device import barrier, mean_across_ranks
from autosr.training.logger import TrainingLogger
from autosr.training.loss import LOSSES, DeepSupervisionLoss, masked_l1
from autosr.training.optim import GRAD_CLIP_NORM, PolyLRSchedule, build_optimizer
from autosr.training.precision import MixedPrecision


@dataclass
class TrainingContext:
    """Everything a trainer needs to know about its run, resolved by `autosr.training.run`."""

    plans: Plans
    configuration: str
    fold: int | str
    output_folder: Path
    data_folder: Path
    train_cases: list[str]
    val_cases: list[str]
    device: torch.device
    num_workers: int = 0
    num_epochs: int | None = None
    iters_per_epoch: int | None = None
    rank: int = 0
    world_size: int = 1
    seed: int = 0


class Trainer:
    """Default trainer: masked L1 with deep supervision, AdamW + poly LR, mirroring and intensity augmentation.

    Schedule: 1000 epochs x 250 iterations, fixed (no user tuning); `num_epochs`/`iters_per_epoch` in the
    context override it for quick runs.
    """

    num_epochs = 1000
    iters_per_epoch = 250
    val_iters_per_epoch = 50
    loss_name = "l1"
    optimizer_name = "adamw"  # measured: documentation/training.md, "Optimizer: SGD vs AdamW"
    augment = True
    # mirroring only (autosr.training.augmentation.SPATIAL_POLICIES): measured better than rotation/scaling, which
    # blurs the target, on three datasets (documentation/benchmark.md, "Augmentation")
    spatial_augmentation = "mirror"

    def __init__(self, ctx: TrainingContext):
        self.ctx = ctx
        self.name = type(self).__name__
        self.seed_everything()  # before building networks, so their initialization is reproducible
        self.config = ctx.plans.configuration(ctx.configuration)
        self.device = ctx.device
        prefer_fixed_shape_kernels(self.device)
        self.is_main = ctx.rank == 0
        self.num_epochs = int(ctx.num_epochs or type(self).num_epochs)
        self.iters_per_epoch = int(ctx.iters_per_epoch or type(self).iters_per_epoch)
        # validation batches keep the default schedule's ratio (50 per 250) when the schedule is shortened
        ratio = type(self).val_iters_per_epoch / type(self).iters_per_epoch
        self.val_iters_per_epoch = max(1, round(ratio * self.iters_per_epoch))
        self.batch_size = max(1, math.ceil(self.config.batch_size / ctx.world_size))
        self.network = self.build_network().to(self.device)
        self.loss = self.build_loss()
        self.optimizer = self.build_optimizer(self.network)
        self.precision = self.build_precision()
        self.logger = TrainingLogger(
            ctx.output_folder / "training_log.txt" if self.is_main else None, echo=self.is_main
        )
        self.extra_networks: dict[str, nn.Module] = {}
        self.extra_optimizers: dict[str, torch.optim.Optimizer] = {}
        self.extra_precisions: dict[str, MixedPrecision] = {}
        self.build_extras()
        for net in self.extra_networks.values():
            net.to(self.device)
        self.schedule = self.build_schedule()
        self.train_module = self.wrap_distributed(self.network)
        self.current_epoch = 0

    # ---- parts a variant may replace -------------------------------------------------------------------
    def network_plan(self) -> dict[str, Any]:
        """The `network` dict the network is built from (the configuration's; a variant may change it). It is
        saved in every checkpoint, so the predictor rebuilds exactly this network."""
        return dict(self.config.network)

    def build_network(self) -> nn.Module:
        return build_network(self.network_plan(), self.ctx.plans.num_input_channels, 1)

    def build_loss(self) -> nn.Module:
        return DeepSupervisionLoss(LOSSES[self.loss_name]())

    def build_optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(self.optimizer_name, network.parameters())

    def build_precision(self) -> MixedPrecision:
        """Autocast dtype and gradient scaler of one optimizer's steps (one per optimizer)."""
        return MixedPrecision(self.device)

    def build_schedule(self) -> PolyLRSchedule:
        """The learning-rate schedule of every optimizer, extras included (each from its own initial LR)."""
        return PolyLRSchedule([self.optimizer, *self.extra_optimizers.values()], self.num_epochs)

    def build_extras(self) -> None:
        """Register extra networks, optimizers and their precisions (e.g. a discriminator) in
        self.extra_networks / extra_optimizers / extra_precisions: they are moved to the device, scheduled,
        checkpointed and restored without further code."""

    def sampler_spec(self) -> dict[str, Any] | None:
        """How the predictor samples a generative trainer's network (`autosr.inference.sampling.SamplerSpec`
        as JSON), saved in every checkpoint as `sampler`; None for a regression trainer."""
        return None

    def mirror_axes(self) -> tuple[int, ...]:
        """Axes of the patch that augmentation may mirror (all of them by default)."""
        return tuple(range(len(self.config.patch_size)))

    def wrap_distributed(self, network: nn.Module) -> nn.Module:
        if self.ctx.world_size <= 1:
            return network
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        if self.device.type == "cuda":  # batch norm statistics over the global batch (SyncBatchNorm is CUDA-only)
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        # without deep supervision the lower heads get no gradient; DDP must be told to expect that
        unused = not getattr(network, "deep_supervision", True)
        return DistributedDataParallel(network, device_ids=ids, find_unused_parameters=unused)

    # ---- one step ------------------------------------------------------------------------------------
    def batch_to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input, target, mask as float) on the device (a no-op copy for batches the prefetcher moved)."""
        nb = self.device.type == "cuda"
        inputs, target, mask = (
            torch.as_tensor(batch[k]).to(self.device, non_blocking=nb) for k in DevicePrefetcher.KEYS
        )
        return inputs, target, mask.float()

    def training_step(self, batch: dict[str, Any]) -> dict[str, float]:
        inputs, target, mask = self.batch_to_device(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            outputs = self.train_module(inputs)
        loss = self.loss(outputs, target, mask)
        self.precision.step(loss, self.optimizer, self.network.parameters(), GRAD_CLIP_NORM)
        return {"train_loss": float(loss.detach())}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """Full-resolution masked L1 on un-augmented validation patches (the quantity that matters)."""
        inputs, target, mask = self.batch_to_device(batch)
        with self.precision.autocast():
            outputs = self.network(inputs)
        full = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        return {"val_loss": float(masked_l1(full, target, mask))}

    # ---- checkpoints ---------------------------------------------------------------------------------
    def checkpoint_path(self, which: str) -> Path:
        return FoldFolder(self.ctx.output_folder).checkpoint(which)

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler_spec()
        return {
            **({"sampler": sampler} if sampler is not None else {}),
            "trainer": self.name,
            "configuration": self.ctx.configuration,
            "fold": str(self.ctx.fold),
            "plans_name": self.ctx.plans.plans_name,
            "epoch": self.current_epoch,
            "num_epochs": self.num_epochs,
            "iters_per_epoch": self.iters_per_epoch,
            "mirror_axes": list(self.mirror_axes()),
            "network_plan": self.network_plan(),
            "network_weights": self.network.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.precision.state_dict(),
            "rng_state": capture_rng_state(),
            "logger_state": self.logger.state_dict(),
            "extra_networks": {k: v.state_dict() for k, v in self.extra_networks.items()},
            "extra_optimizers": {k: v.state_dict() for k, v in self.extra_optimizers.items()},
            "extra_grad_scalers": {k: v.state_dict() for k, v in self.extra_precisions.items()},
        }

    def save(self, which: str) -> None:
        if self.is_main:
            save_checkpoint(self.state_dict(), self.checkpoint_path(which))

    def load(self, path: Path) -> None:
        """Restore everything needed to continue exactly where `path` left off."""
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.get("trainer", self.name) != self.name or ckpt.get("configuration") != self.ctx.configuration:
            raise AutosrError(
                f"{path} was written by {ckpt.get('trainer')} for configuration {ckpt.get('configuration')}, "
                f"not {self.name} / {self.ctx.configuration}; it does not belong in this folder"
            )
        try:
            self.network.load_state_dict(ckpt["network_weights"])
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
            self.precision.load_state_dict(ckpt.get("grad_scaler_state", {}))
            for name, state in ckpt.get("extra_networks", {}).items():
                self.extra_networks[name].load_state_dict(state)
            for name, state in ckpt.get("extra_optimizers", {}).items():
                self.extra_optimizers[name].load_state_dict(state)
            for name, state in ckpt.get("extra_grad_scalers", {}).items():
                self.extra_precisions[name].load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as e:
            raise AutosrError(
                f"{path} does not fit the network of the current plans ({e}); the plans changed since this "
                "fold was trained: restore the old plans.json or delete the fold folder to retrain"
            ) from e
        self.current_epoch = int(ckpt["epoch"])
        if self.ctx.num_epochs is None and "num_epochs" in ckpt:
            self.num_epochs = int(ckpt["num_epochs"])
            self.schedule.max_epochs = self.num_epochs
        if self.ctx.iters_per_epoch is None and "iters_per_epoch" in ckpt:
            self.iters_per_epoch = int(ckpt["iters_per_epoch"])
        self.logger.load_state_dict(ckpt.get("logger_state", {}))
        self.logger.truncate(self.current_epoch)
        self.logger.replay_epoch_line()
        restore_rng_state(ckpt.get("rng_state", {}))

    # ---- the loop ------------------------------------------------------------------------------------
    def make_iterators(self):
        """Train and validation batch streams, positioned at `current_epoch`: batch k of a stream depends on
        the seed and k alone (`PatchLoader._seed_batch`), so a resumed run continues the very stream the
        uninterrupted run would have seen (bit for bit without data workers; documentation/training.md)."""
        seed = self.ctx.seed + 7919 * self.ctx.rank
        sampling = PatchSampling(
            self.config.patch_size,
            self.batch_size,
            augment=self.augment,
            mirror_axes=self.mirror_axes(),
            spatial_policy=self.spatial_augmentation,
            axis_groups=interchangeable_axes(self.config.patch_spacing),
            slice_axes=self.config.slice_axes,
        )
        train = make_batch_iterator(
            self.ctx.data_folder, self.ctx.train_cases, sampling, self.ctx.num_workers, seed,
            first_batch=self.current_epoch * self.iters_per_epoch,
        )  # fmt: skip
        # fold 'all' has no validation cases: the val curve then tracks un-augmented training patches
        val_cases = self.ctx.val_cases or self.ctx.train_cases
        val = make_batch_iterator(
            self.ctx.data_folder, val_cases, replace(sampling, augment=False), max(0, self.ctx.num_workers // 2),
            seed + 1, first_batch=self.current_epoch * self.val_iters_per_epoch,
        )  # fmt: skip
        return DevicePrefetcher(train, self.device), DevicePrefetcher(val, self.device)

    def run_epoch(self, iterator, steps: int, step_fn, train: bool, desc: str) -> dict[str, float]:
        for net in [self.network, *self.extra_networks.values()]:
            net.train(train)
        sums: dict[str, float] = defaultdict(float)
        for _ in tqdm(range(steps), desc=desc, disable=None if self.is_main else True, leave=False):
            for k, v in step_fn(next(iterator)).items():
                sums[k] += v
        return {k: mean_across_ranks(v / steps, self.device) for k, v in sums.items()}

    def fit(self) -> None:
        """Train from `self.current_epoch` to `self.num_epochs`, saving latest/best/final checkpoints."""
        self.ctx.output_folder.mkdir(parents=True, exist_ok=True)
        if self.current_epoch == 0:
            self.logger.print(
                f"{self.name}: {self.ctx.configuration} fold {self.ctx.fold}, {len(self.ctx.train_cases)} training / "
                f"{len(self.ctx.val_cases)} validation cases, patch {list(self.config.patch_size)}, batch "
                f"{self.batch_size} x {self.ctx.world_size} rank(s), {self.num_epochs} epochs x "
                f"{self.iters_per_epoch} iterations, device {self.device}, {self.ctx.num_workers} data workers"
            )
        else:
            self.logger.print(f"resuming at epoch {self.current_epoch} of {self.num_epochs}")
        train_iter, val_iter = self.make_iterators()
        try:
            for epoch in range(self.current_epoch, self.num_epochs):
                start = time.time()
                lr = self.schedule.step(epoch)
                self.logger.log("lr", lr, epoch)
                desc = f"epoch {epoch}"
                metrics = self.run_epoch(train_iter, self.iters_per_epoch, self.training_step, True, desc)
                metrics.update(
                    self.run_epoch(val_iter, self.val_iters_per_epoch, self.validation_step, False, desc + " val")
                )
                for k, v in metrics.items():
                    self.logger.log(k, v, epoch)
                ema = self.logger.update_ema("val_loss", metrics["val_loss"], epoch)
                self.current_epoch = epoch + 1
                is_best = ema < self.logger.best_ema_val_loss
                if is_best:
                    self.logger.best_ema_val_loss = ema
                shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
                # stamped before the checkpoints, which carry it: a run stopped before the line is written
                # gets it written on resuming (TrainingLogger.replay_epoch_line)
                line = self.logger.epoch_line(
                    f"epoch {epoch}: {shown}, ema_val_loss {ema:.4f}{' (best)' if is_best else ''}, "
                    f"lr {lr:.2e}, {time.time() - start:.1f} s"
                )
                if is_best:
                    self.save("best")
                self.save("latest")
                if self.is_main:
                    self.logger.plot(self.ctx.output_folder / "progress.png")
                self.logger.write_line(line)
                barrier()
        finally:
            for it in (train_iter, val_iter):
                if hasattr(it, "_finish"):
                    it._finish()
        self.save("final")
        self.logger.print(f"training done: {self.checkpoint_path('final')}")

    def seed_everything(self) -> None:
        seed = self.ctx.seed + self.ctx.rank
        np.random.seed(seed)
        torch.manual_seed(seed)
