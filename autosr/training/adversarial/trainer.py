"""`AdversarialTrainer`: the default trainer plus a conditional patch discriminator.

Everything but the step is inherited: plans, data and augmentation, schedule, checkpoints (the
discriminator and its optimizer travel in `extra_networks`/`extra_optimizers`, so `--continue` restores
them), logging, validation and prediction (the predictor loads `network_weights`, the generator, and
never needs the discriminator).

Each step: the generator minimises the reconstruction loss (masked L1 with deep supervision, as `Trainer`)
plus `weight(epoch) x` the least-squares adversarial loss on its full-resolution output; then the
discriminator learns to tell (input, target) from (input, output). The weight is 0 for the first
`WARMUP_FRACTION` of training (the generator first learns the mapping; an adversary on a random generator
only adds noise), then ramps linearly to `ADVERSARIAL_WEIGHT` over the next `RAMP_FRACTION`. The
discriminator's learning rate follows the generator's poly schedule.
"""

from __future__ import annotations

from typing import Any

import torch

from autosr.training.adversarial.discriminator import discriminator_for_plan
from autosr.training.adversarial.losses import discriminator_loss, generator_loss
from autosr.training.optim import GRAD_CLIP_NORM
from autosr.training.trainer import Trainer

# Weight of the LSGAN term relative to L1, chosen among 0.01/0.05/0.2 at equal budget in
# documentation/adversarial.md ("Choosing the weight"): 0.2 was the sharpest in both CPU runs (80 and 250
# steps) at no PSNR cost; CPU-scale measurements, to be redone on a GPU schedule.
ADVERSARIAL_WEIGHT = 0.2
# Warm-up and ramp (fractions of the epochs): not measured; long enough for the generator to learn the
# mapping before the adversary counts, short enough to leave most of the schedule adversarial.
WARMUP_FRACTION = 0.2
RAMP_FRACTION = 0.2
# The usual GAN discriminator settings (lower beta1 keeps Adam's momentum from chasing a moving target).
DISCRIMINATOR_LR = 2e-4
DISCRIMINATOR_BETAS = (0.5, 0.999)


class AdversarialTrainer(Trainer):
    """U-Net generator (the planned network) + conditional PatchGAN discriminator, LSGAN loss."""

    adversarial_weight = ADVERSARIAL_WEIGHT

    def build_extras(self) -> None:
        discriminator = discriminator_for_plan(
            self.config.network, self.config.patch_size, self.ctx.plans.num_input_channels
        )
        self.extra_networks["discriminator"] = discriminator
        self.extra_optimizers["discriminator"] = torch.optim.Adam(
            discriminator.parameters(), lr=DISCRIMINATOR_LR, betas=DISCRIMINATOR_BETAS
        )
        self.extra_precisions["discriminator"] = self.build_precision()

    def weight_at(self, epoch: int) -> float:
        """Adversarial weight at `epoch`: 0 during warm-up, then a linear ramp to the full weight."""
        start = WARMUP_FRACTION * self.num_epochs
        ramp = max(RAMP_FRACTION * self.num_epochs, 1.0)
        return float(self.adversarial_weight * min(max((epoch - start) / ramp, 0.0), 1.0))

    def training_step(self, batch: dict[str, Any]) -> dict[str, float]:
        inputs, target, mask = self.batch_to_device(batch)
        discriminator = self.extra_networks["discriminator"]
        d_optimizer = self.extra_optimizers["discriminator"]
        weight = self.weight_at(self.current_epoch)

        # generator step (the discriminator is frozen so its gradients are not computed for nothing)
        discriminator.requires_grad_(False)
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            outputs = self.train_module(inputs)
            full = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
            adversarial = generator_loss(discriminator(inputs, full)) if weight > 0 else full.new_zeros(())
        reconstruction = self.loss(outputs, target, mask)
        self.precision.step(
            reconstruction + weight * adversarial, self.optimizer, self.network.parameters(), GRAD_CLIP_NORM
        )

        # discriminator step (its learning rate follows the same schedule as the generator's: build_schedule)
        discriminator.requires_grad_(True)
        d_precision = self.extra_precisions["discriminator"]
        d_optimizer.zero_grad(set_to_none=True)
        with d_precision.autocast():
            fake_scores = discriminator(inputs, full.detach())
            d_loss = discriminator_loss(discriminator(inputs, target), fake_scores)
        d_precision.step(d_loss, d_optimizer, discriminator.parameters(), GRAD_CLIP_NORM)
        if weight == 0:  # warm-up: log what the generator's term would be (same D, same output), not a fake 0
            adversarial = generator_loss(fake_scores.detach())
        return {
            "train_loss": float(reconstruction.detach()),
            "g_adv_loss": float(adversarial.detach()),
            "d_loss": float(d_loss.detach()),
            "adv_weight": weight,
        }
