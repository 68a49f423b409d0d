"""How much GPU memory a planned U-Net needs for one training step, from its topology alone.

    bytes = batch * sum_over_feature_maps(voxels * features) * BYTES_PER_ACTIVATION
          + parameters * BYTES_PER_PARAMETER
          + FIXED_OVERHEAD_BYTES

The feature maps counted are the outputs of every convolution of the encoder and decoder plus the
upsampled and concatenated maps of each decoder stage. `BYTES_PER_ACTIVATION` folds in everything autograd
keeps per counted value (convolution inputs, normalization and activation outputs); it was calibrated
against `autosr.network.memory.activation_memory` (tensors saved for backward, fp32, CPU) on the topologies
of tests/test_planner.py::test_memory_model_matches_the_real_network — see documentation/planning.md,
"Memory model". Under mixed precision on a GPU the saved convolution inputs are half precision, so the
fp32 calibration is conservative; a calibration against measured CUDA peak memory is still to be done.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Saved-for-backward bytes per counted voxel-feature, fp32: measured 6.86-6.87 (interp_conv decoder) and
# 5.72-5.75 (transposed) on three topologies (documentation/planning.md, "Memory model"); 8.0 adds ~15% for
# the gradient temporaries alive at the peak of the backward pass.
BYTES_PER_ACTIVATION = 8.0
# weights + gradients + optimizer momentum + an fp16/bf16 copy under autocast, 4 bytes each
BYTES_PER_PARAMETER = 16.0
# CUDA context, cuDNN workspaces and the allocator's slack (assumed; to be checked on a GPU)
FIXED_OVERHEAD_BYTES = 1.0 * 1024**3


def stage_shapes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Spatial shape of the feature maps of each stage."""
    shapes, current = [], list(patch_size)
    for stride in strides:
        current = [c // s for c, s in zip(current, stride)]
        shapes.append(list(current))
    return shapes


def counted_activations(
    patch_size: Sequence[int],
    features_per_stage: Sequence[int],
    strides: Sequence[Sequence[int]],
    n_conv_per_stage: Sequence[int],
    n_conv_per_stage_decoder: Sequence[int],
) -> int:
    """voxels x features summed over the feature maps the model counts, for a batch of one."""
    shapes = stage_shapes(patch_size, strides)
    total = 0
    for shape, features, n_conv in zip(shapes, features_per_stage, n_conv_per_stage):
        total += int(np.prod(shape)) * features * n_conv
    for stage, n_conv in enumerate(n_conv_per_stage_decoder):
        voxels = int(np.prod(shapes[stage])) * features_per_stage[stage]
        total += voxels * (n_conv + 3)  # upsampled map, concatenation (2x), convolutions
    return total


def parameter_count(
    features_per_stage: Sequence[int],
    kernel_sizes: Sequence[Sequence[int]],
    n_conv_per_stage: Sequence[int],
    n_conv_per_stage_decoder: Sequence[int],
    in_channels: int,
) -> int:
    """Approximate convolution weights of the U-Net (biases and norms are negligible)."""
    total, previous = 0, in_channels
    for features, kernel, n_conv in zip(features_per_stage, kernel_sizes, n_conv_per_stage):
        k = int(np.prod(kernel))
        total += previous * features * k + (n_conv - 1) * features * features * k
        previous = features
    for stage, n_conv in enumerate(n_conv_per_stage_decoder):
        f, f_below = features_per_stage[stage], features_per_stage[stage + 1]
        k = int(np.prod(kernel_sizes[stage]))
        total += f_below * f * 8 + 2 * f * f * k + (n_conv - 1) * f * f * k
    return total


def estimate_training_bytes(network_plan: dict, patch_size: Sequence[int], batch_size: int, in_channels: int) -> float:
    """Estimated peak bytes of one training step of `network_plan` at `patch_size` x `batch_size`."""
    activations = counted_activations(
        patch_size,
        network_plan["features_per_stage"],
        network_plan["strides"],
        network_plan["n_conv_per_stage"],
        network_plan["n_conv_per_stage_decoder"],
    )
    parameters = parameter_count(
        network_plan["features_per_stage"],
        network_plan["kernel_sizes"],
        network_plan["n_conv_per_stage"],
        network_plan["n_conv_per_stage_decoder"],
        in_channels,
    )
    return batch_size * activations * BYTES_PER_ACTIVATION + parameters * BYTES_PER_PARAMETER + FIXED_OVERHEAD_BYTES
