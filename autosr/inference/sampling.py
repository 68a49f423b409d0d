"""Sampling whole volumes from a conditional flow-matching network, seamlessly, with the sliding window.

A generative trainer (`DiffusionTrainer`) learns the velocity of a straight path from noise to the target
given the input (conditional flow matching / rectified flow; Lipman et al., 2023; Liu et al., 2023):

    x_t = (1 - t) * noise + t * goal,   velocity = goal - noise,   t in [0, 1]

where `goal` is the normalized target, or with `residual` the target minus input channel 0 (the scan on the
target grid, normalized). The network sees `cat(input channels, x_t)` and t. Sampling integrates
dx/dt = velocity(x, t) from pure noise at t = 0 to t = 1 with Euler steps; one step gives the network's
estimate of the conditional mean (the velocity at t = 0 is E[goal | input] - noise), more steps add the
detail a mean averages away.

Seams: a sampler that draws noise per tile gives every tile its own sample, and tile borders show. Here
one noise volume is drawn per case (from a seed, on the CPU, so it does not depend on the device) and every
step runs over the whole current state with the sliding window (Gaussian-weighted, batched tiles), so
overlapping tiles predict the velocity of the same state and are blended like any prediction.

The checkpoint of a generative trainer carries a `sampler` entry (`SamplerSpec.to_json`); a checkpoint
without one is a regression model and is predicted directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autosr.errors import AutosrError

# Euler steps per sample when neither the checkpoint nor the user says. Measured (documentation/diffusion.md,
# "Measured", 300-iteration CPU models): PSNR and SSIM peak at 2 steps on the synthetic brains and at 2-4 on
# the phantoms, then fall as steps are added (more steps: sharper, noisier samples); 2 also costs least.
DEFAULT_SAMPLING_STEPS = 2
SAMPLER_KINDS = ("flow_matching",)

# velocity(state (C + 1, Z, Y, X): input channels then x_t, t) -> (1, Z, Y, X) velocity
VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class SamplerSpec:
    """How a generative network is sampled: the checkpoint's `sampler` entry.

    `kind`: one of `SAMPLER_KINDS`; `residual`: the sampled quantity is target - input channel 0;
    `steps`: the default number of sampling steps.
    """

    kind: str = "flow_matching"
    residual: bool = False
    steps: int = DEFAULT_SAMPLING_STEPS

    state_channels = 1  # the network's input is the C input channels plus this many state channels

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "residual": self.residual, "steps": self.steps}

    @classmethod
    def from_json(cls, entry: dict[str, Any], source: str = "the checkpoint") -> SamplerSpec:
        kind = entry.get("kind")
        if kind not in SAMPLER_KINDS:
            raise AutosrError(
                f"{source}: unknown sampler '{kind}' (this autosr knows {', '.join(SAMPLER_KINDS)}); "
                "update autosr or retrain the model"
            )
        return cls(
            kind=kind,
            residual=bool(entry.get("residual", False)),
            steps=max(1, int(entry.get("steps", DEFAULT_SAMPLING_STEPS))),
        )


def flow_path(noise: torch.Tensor, goal: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, velocity) of the straight path from `noise` (t = 0) to `goal` (t = 1); `t` broadcasts (B, 1, ...)."""
    return (1 - t) * noise + t * goal, goal - noise


def sample_seed(seed: int, member: int, sample: int) -> int:
    """The noise seed of sample `sample` of ensemble member (fold) `member`: distinct for every triple."""
    return int(np.random.SeedSequence([int(seed), int(member), int(sample)]).generate_state(1)[0])


def draw_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Standard normal float32 noise of `shape`, drawn on the CPU from `seed` (the same on every device)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def minimum_volume_shape(patch_size: Sequence[int], planes: Sequence[int]) -> tuple[int, int, int]:
    """The smallest (Z, Y, X) that every sliding window of the prediction fits without padding.

    3D: the patch. 2D (patch (y, x)) along slice axes `planes`: each plane's two in-plane axes (the others, in
    order) must hold the patch.
    """
    if len(patch_size) == 3:
        return tuple(int(p) for p in patch_size)
    shape = [1, 1, 1]
    for plane in planes:
        for axis, size in zip([a for a in range(3) if a != plane], patch_size):
            shape[axis] = max(shape[axis], int(size))
    return tuple(shape)


def sample_volume(
    velocity: VelocityFn,
    condition: torch.Tensor,
    steps: int,
    seed: int,
    minimum_shape: Sequence[int],
    residual: bool = False,
) -> torch.Tensor:
    """One sample (1, Z, Y, X) float32 for the preprocessed input `condition` (C, Z, Y, X).

    The volume is first padded to `minimum_shape` with each channel's background level (the sliding window
    would pad each step's state with its border median; training patches past a volume hold noise over a
    background target, so the padded state gets noise too); the noise volume is drawn for the padded shape
    from `seed`. `steps` Euler steps of `velocity` from t = 0 to 1; the result is cropped back.
    """
    from autosr.inference.sliding_window import _pad_to_window

    if steps < 1:
        raise AutosrError(f"--sampling-steps must be at least 1, got {steps}")
    padded, crop = _pad_to_window(condition.float(), minimum_shape)
    state = draw_noise((1, *padded.shape[1:]), seed).to(padded.device)
    for i in range(steps):
        t = i / steps
        v = velocity(torch.cat([padded, state]), t).to(state.device)
        state.add_(v, alpha=1.0 / steps)
    if residual:
        state.add_(padded[:1])
    return state[(slice(None), *crop)]
