"""The GPU fast path of prediction: how many tiles go through the network at once, and compilation.

- **Tiles per forward pass from free memory** (`measured_tile_batch_size`): prediction keeps no gradients,
  so a GPU holds many more tiles than the training batch. One forward pass of a single tile measures the
  memory a tile needs; the batch is what fits in `FREE_MEMORY_FRACTION` of the free memory, at most
  `MAX_TILE_BATCH` (beyond which a GPU is saturated anyway; documentation/benchmark.md, "GPU").
- **Compilation** (`compile_network`): `torch.compile` of the network for prediction, with one input
  shape (the sliding window pads its last batch), so it compiles once per tile shape and batch. It pays
  when many scans are predicted with one model; the measured gain is in documentation/benchmark.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from autosr.device import autocast

FREE_MEMORY_FRACTION = 0.6
MAX_TILE_BATCH = 16


def measured_tile_batch_size(network: nn.Module, tile_shape: Sequence[int], device: torch.device, fallback: int) -> int:
    """Tiles of `tile_shape` (C, *patch) per forward pass that fit the free memory of CUDA `device`;
    `fallback` on other devices."""
    device = torch.device(device)
    if device.type != "cuda":
        return int(fallback)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.no_grad(), autocast(device):
        network(torch.zeros((1, *tile_shape), device=device))
    torch.cuda.synchronize(device)
    per_tile = max(torch.cuda.max_memory_allocated(device) - before, 1)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(MAX_TILE_BATCH, FREE_MEMORY_FRACTION * free // per_tile)))


def compile_network(network: nn.Module) -> nn.Module:
    """`torch.compile` for prediction: static shapes (the sliding window keeps its batch shape fixed)."""
    return torch.compile(network, dynamic=False)
