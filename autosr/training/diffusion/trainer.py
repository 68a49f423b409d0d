"""`DiffusionTrainer`: a conditional generative model of the target given the input (flow matching).

The planned U-Net gets a timestep input (`network.time_embedding`, autosr/network/time_embedding.py) and one
more input channel: it sees `cat(input channels, x_t)` and t, and predicts the velocity of the straight path
from a start state to the target (`autosr.inference.sampling.flow_path`; rectified flow). The start is the
configuration's `diffusion.source` in plans.json: `noise`, or `input` (input channel 0 plus Gaussian noise of
standard deviation `diffusion.source_noise`); absent, `DEFAULT_SOURCE` (`SamplerSpec.start`). Everything but the step is
inherited from `Trainer`: plans, patches, augmentation, schedule, optimizer, checkpoints, resume, logging
and the end-of-fold validation, which samples each validation case through the predictor like
`autosr predict` does. Why flow matching rather than DDPM/DDIM, and what it costs and gains:
documentation/diffusion.md.

Each step: for every patch of the batch a time t ~ U(0, 1) and standard normal noise (the start made from
it); the loss is the
squared error of the predicted velocity, weighted like every autosr loss (1 inside the mask,
`OUTSIDE_MASK_WEIGHT` outside). The network plan's `residual` key keeps its meaning: with it the generated
quantity is the target minus input channel 0 (the network itself then adds nothing). Deep supervision is
off (velocities at coarse scales add little to a generative objective).

Every checkpoint carries `sampler` (`SamplerSpec.to_json()`), from which the predictor knows to sample,
how (source included), and its default number of steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autosr.errors import AutosrError
from autosr.inference.sampling import (
    DEFAULT_SAMPLING_STEPS,
    DEFAULT_SOURCE,
    DEFAULT_SOURCE_NOISE,
    SamplerSpec,
    check_source,
    flow_path,
)
from autosr.network import build_network
from autosr.training.loss import masked_l1, voxel_weights
from autosr.training.optim import GRAD_CLIP_NORM
from autosr.training.trainer import Trainer


def velocity_loss(prediction: torch.Tensor, velocity: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted mean squared error of the velocity (weights of `autosr.training.loss.voxel_weights`), fp32.

    Squared error, not L1: the flow-matching objective needs the conditional *mean* velocity, which is what
    squared error estimates (L1 would give the median and bend the sampling paths)."""
    weight = voxel_weights(mask)
    return ((prediction.float() - velocity.float()) ** 2 * weight).sum() / weight.sum().clamp_min(1e-6)


class DiffusionTrainer(Trainer):
    """Conditional flow matching on the planned U-Net with a timestep embedding; see the module docstring."""

    sampling_steps = DEFAULT_SAMPLING_STEPS

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.diffusion_settings()  # a bad `diffusion` entry in plans.json fails here, not after training

    @property
    def sampler(self) -> SamplerSpec:
        """How this model is sampled (source and residual included): what the checkpoints record."""
        return SamplerSpec.from_json(self.sampler_spec())

    def network_plan(self) -> dict[str, Any]:
        plan = dict(self.config.network)
        plan.update(time_embedding=True, deep_supervision=False, residual=False)
        return plan

    def build_network(self) -> nn.Module:
        in_channels = self.ctx.plans.num_input_channels + SamplerSpec.state_channels
        return build_network(self.network_plan(), in_channels, 1)

    @property
    def residual(self) -> bool:
        """Generate the target's difference to input channel 0 (the plan's `network.residual`)."""
        return bool(self.config.network.get("residual", False))

    def diffusion_settings(self) -> tuple[str, float]:
        """(source, source_noise) from the configuration's optional `diffusion` entry in plans.json."""
        where = f"plans.json, configurations.{self.ctx.configuration}.diffusion"
        entry = self.config.raw.get("diffusion", {})
        if not isinstance(entry, dict) or set(entry) - {"source", "source_noise"}:
            raise AutosrError(f"{where}: expected an object with 'source' and/or 'source_noise', got {entry!r}")
        source, noise = entry.get("source", DEFAULT_SOURCE), entry.get("source_noise", DEFAULT_SOURCE_NOISE)
        check_source(source, noise, where)
        return source, float(noise)

    def sampler_spec(self) -> dict[str, Any]:
        source, noise = self.diffusion_settings()
        return SamplerSpec(
            kind="flow_matching", residual=self.residual, steps=self.sampling_steps, source=source, source_noise=noise
        ).to_json()

    def goal(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What the flow generates: the target, or with `residual` the target minus input channel 0."""
        return target - inputs[:, :1] if self.residual else target

    def _velocity(self, module: nn.Module, inputs: torch.Tensor, state: torch.Tensor, t: torch.Tensor):
        with self.precision.autocast():
            return module(torch.cat([inputs, state], dim=1), t)

    def training_step(self, batch: dict[str, Any]) -> dict[str, float]:
        inputs, target, mask = self.batch_to_device(batch)
        goal = self.goal(inputs, target)
        start = self.sampler.start(torch.randn_like(goal), inputs[:, :1])
        t = torch.rand(goal.shape[0], device=goal.device)
        state, velocity = flow_path(start, goal, t.view(-1, *[1] * (goal.ndim - 1)))
        self.optimizer.zero_grad(set_to_none=True)
        loss = velocity_loss(self._velocity(self.train_module, inputs, state, t), velocity, mask)
        self.precision.step(loss, self.optimizer, self.network.parameters(), GRAD_CLIP_NORM)
        return {"train_loss": float(loss.detach())}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """`val_loss`: the flow-matching loss on un-augmented validation patches, with the batch's times evenly
        spread over [0, 1] (less noisy than random times). `val_mean_l1_loss`: masked L1 of the one-step
        sample (the network's estimate of the conditional mean), comparable with `Trainer`'s val_loss."""
        inputs, target, mask = self.batch_to_device(batch)
        goal = self.goal(inputs, target)
        start = self.sampler.start(torch.randn_like(goal), inputs[:, :1])
        count = goal.shape[0]
        t = (torch.arange(count, device=goal.device, dtype=torch.float32) + 0.5) / count
        state, velocity = flow_path(start, goal, t.view(-1, *[1] * (goal.ndim - 1)))
        loss = velocity_loss(self._velocity(self.network, inputs, state, t), velocity, mask)
        one_step = start + self._velocity(self.network, inputs, start, torch.zeros_like(t)).float()
        return {"val_loss": float(loss), "val_mean_l1_loss": float(masked_l1(one_step, goal, mask))}
