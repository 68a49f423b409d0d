"""The optional timestep input of the U-Net (plan key `network.time_embedding`), for generative trainers.

A diffusion or flow-matching network is asked a different question at every sampling step: how to move a
state that is part noise, part image, at time t in [0, 1]. The U-Net learns that from t in the usual way of
the image generators: sinusoidal features of t (Vaswani et al., 2017; Ho et al., 2020), a two-layer MLP,
and per stage a FiLM modulation (Perez et al., 2018) of the stage's output, `x * (1 + scale) + shift`,
with scale and shift per channel from a linear map of the embedding. The maps start at zero, so a freshly
built network is exactly the U-Net without the embedding and learns how much t matters.

Scale and shift are constant over space, so the modulated network is as tile-invariant as the plain one
(batch normalization in eval mode and FiLM are both per-channel affine maps).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Width of the timestep embedding. Sinusoidal features at 64 frequencies resolve t to well below a
# sampling step; the MLP keeps that width. Not tuned: the embedding is <2% of a planned network's weights.
TIME_EMBEDDING_FEATURES = 128
# t in [0, 1] is scaled to [0, 1000] before the sinusoids, the range the usual frequency ladder is made for.
TIME_SCALE = 1000.0


def sinusoidal_features(t: torch.Tensor, features: int) -> torch.Tensor:
    """(B,) times -> (B, features): sin and cos of `TIME_SCALE * t` at geometrically spaced frequencies."""
    half = features // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = TIME_SCALE * t.float()[:, None] * frequencies[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class TimestepEmbedding(nn.Module):
    """(B,) times in [0, 1] -> (B, features) embedding: sinusoidal features, Linear, SiLU, Linear."""

    def __init__(self, features: int = TIME_EMBEDDING_FEATURES):
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, features), nn.SiLU(), nn.Linear(features, features), nn.SiLU())

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_features(t, self.features))


class StageModulation(nn.Module):
    """FiLM of a stage's (B, C, *spatial) output by the embedding: `x * (1 + scale) + shift`, zero at start."""

    def __init__(self, embedding_features: int, channels: int):
        super().__init__()
        self.linear = nn.Linear(embedding_features, 2 * channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(embedding).to(x.dtype).chunk(2, dim=1)
        shape = (*scale.shape, *([1] * (x.ndim - 2)))
        return x * (1 + scale.reshape(shape)) + shift.reshape(shape)


def times_for_batch(t: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """`t` as a (batch,) float32 tensor on `device`: a number or a 0-d tensor is repeated, (batch,) kept."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"times must be a number or one per batch item ({batch}), got shape {tuple(t.shape)}")
    return t
