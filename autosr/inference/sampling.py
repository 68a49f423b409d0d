"""Sampling whole volumes from a conditional flow-matching network, seamlessly, with the sliding window.

A generative trainer (`DiffusionTrainer`) learns the velocity of a straight path from a start state x_0 to
the target given the input (conditional flow matching / rectified flow; Lipman et al., 2023; Liu et al., 2023;
with the input as the start, a stochastic-interpolant bridge: Albergo et al., 2023; Delbracio & Milanfar,
2023, "inversion by direct iteration"):

    x_t = (1 - t) * x_0 + t * goal,   velocity = goal - x_0,   t in [0, 1]

where `goal` is the normalized target, or with `residual` the target minus input channel 0 (the scan on the
target grid, normalized). The start x_0 is the sampler's `source`: `noise` (standard normal noise) or
`input` (input channel 0 plus Gaussian noise of standard deviation `source_noise`, so samples still differ;
with `residual` just that noise). The network sees `cat(input channels, x_t)` and t. Sampling integrates
dx/dt = velocity(x, t) from x_0 at t = 0 to t = 1 with Euler steps; one step gives the network's estimate of
the conditional mean (the velocity at t = 0 is E[goal | input, x_0] - x_0), more steps add the detail a mean
averages away.

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
# Started from the input ("Source" there) the curve is flat (1-16 steps within 0.015 SSIM) and 2 is kept.
DEFAULT_SAMPLING_STEPS = 2
SAMPLER_KINDS = ("flow_matching",)
# Where the flow starts (`SamplerSpec.source`). A checkpoint without the entry was trained from noise.
SOURCES = ("noise", "input")
# The default for models trained now and the standard deviation of the noise added to the input when the
# flow starts from it, in normalized units. Chosen by measurement: documentation/diffusion.md, "Source".
DEFAULT_SOURCE = "input"
DEFAULT_SOURCE_NOISE = 0.1

# velocity(state (C + 1, Z, Y, X): input channels then x_t, t) -> (1, Z, Y, X) velocity
VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class SamplerSpec:
    """How a generative network is sampled: the checkpoint's `sampler` entry.

    `kind`: one of `SAMPLER_KINDS`; `residual`: the sampled quantity is target - input channel 0;
    `steps`: the default number of sampling steps; `source`: where the flow starts (one of `SOURCES`);
    `source_noise`: the standard deviation of the noise added to the input when `source` is `input`.
    """

    kind: str = "flow_matching"
    residual: bool = False
    steps: int = DEFAULT_SAMPLING_STEPS
    source: str = "noise"
    source_noise: float = DEFAULT_SOURCE_NOISE

    state_channels = 1  # the network's input is the C input channels plus this many state channels

    def __post_init__(self) -> None:
        check_source(self.source, self.source_noise, "the sampler")

    def to_json(self) -> dict[str, Any]:
        entry = {"kind": self.kind, "residual": self.residual, "steps": self.steps, "source": self.source}
        if self.source == "input":
            entry["source_noise"] = self.source_noise
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any], source: str = "the checkpoint") -> SamplerSpec:
        kind = entry.get("kind")
        if kind not in SAMPLER_KINDS:
            raise AutosrError(
                f"{source}: unknown sampler '{kind}' (this autosr knows {', '.join(SAMPLER_KINDS)}); "
                "update autosr or retrain the model"
            )
        check_source(entry.get("source", "noise"), entry.get("source_noise", DEFAULT_SOURCE_NOISE), source)
        return cls(
            kind=kind,
            residual=bool(entry.get("residual", False)),
            steps=max(1, int(entry.get("steps", DEFAULT_SAMPLING_STEPS))),
            source=entry.get("source", "noise"),
            source_noise=float(entry.get("source_noise", DEFAULT_SOURCE_NOISE)),
        )

    def start(self, noise: torch.Tensor, scan: torch.Tensor) -> torch.Tensor:
        """The flow's start x_0 for standard normal `noise` and `scan` (input channel 0, shaped like `noise`):
        the noise, or (source `input`) the scan plus `source_noise` x noise; with `residual` the generated
        quantity is the difference to the scan, so the scan drops out."""
        if self.source == "noise":
            return noise
        start = noise * self.source_noise
        return start if self.residual else start + scan


def check_source(source: Any, source_noise: Any, where: str) -> None:
    """Raise a clear error for a `source` outside `SOURCES` or a `source_noise` that is not a positive number."""
    if source not in SOURCES:
        raise AutosrError(f"{where}: unknown flow source {source!r}; use one of {', '.join(SOURCES)}")
    if isinstance(source_noise, bool) or not isinstance(source_noise, (int, float)) or not source_noise > 0:
        raise AutosrError(
            f"{where}: source_noise must be a positive number (the noise added to the input), got {source_noise!r}"
        )


def flow_path(start: torch.Tensor, goal: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, velocity) of the straight path from `start` (t = 0) to `goal` (t = 1); `t` broadcasts (B, 1, ...)."""
    return (1 - t) * start + t * goal, goal - start


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
    sampler: SamplerSpec | None = None,
) -> torch.Tensor:
    """One sample (1, Z, Y, X) float32 for the preprocessed input `condition` (C, Z, Y, X).

    The volume is first padded to `minimum_shape` with each channel's background level (the sliding window
    would pad each step's state with its border median; training patches past a volume hold noise over a
    background target, so the padded state gets noise too); the noise volume is drawn for the padded shape
    from `seed` and the start made from it as `sampler` says (`SamplerSpec.start`; default: from noise).
    `steps` Euler steps of `velocity` from t = 0 to 1; the result is cropped back.
    """
    from autosr.inference.sliding_window import _pad_to_window

    if steps < 1:
        raise AutosrError(f"--sampling-steps must be at least 1, got {steps}")
    padded, crop = _pad_to_window(condition.float(), minimum_shape)
    sampler = sampler or SamplerSpec()
    state = sampler.start(draw_noise((1, *padded.shape[1:]), seed).to(padded.device), padded[:1])
    for i in range(steps):
        t = i / steps
        v = velocity(torch.cat([padded, state]), t).to(state.device)
        state.add_(v, alpha=1.0 / steps)
    if sampler.residual:
        state.add_(padded[:1])
    return state[(slice(None), *crop)]
