"""A whole volume through a patch-sized network: overlapping tiles, Gaussian weighting, fp32 accumulation.

Networks are trained on patches, and a patch is what fits in GPU memory, so a volume is predicted tile by
tile. Regression shows tile seams that segmentation hides behind an argmax, hence:

- tiles overlap (a step of `step_fraction` x patch) and are blended with a Gaussian importance map
  (sigma = 1/8 of the patch), which trusts tile centres, where the network saw context on every side,
  over tile borders, where it saw zero padding;
- accumulation (weighted sum and weight sum) is float32 even when the network runs in bfloat16/float16 autocast,
  so many small contributions do not round away;
- tiles (and their mirrored copies for test-time augmentation) are batched into one forward pass, which
  is most of the speed on a GPU.

2D configurations (patch of 2 numbers, (y, x)) use the same machinery with a window of one slice in z:
each tile is a (C, 1, y, x) block, squeezed to (C, y, x) for the network and unsqueezed on the way back.

`network` is any callable from a (B, C, *patch) tensor to a (B, out_channels, *patch) tensor (or a list of
them, deep supervision, of which the first, full-resolution one is used). Put modules in eval mode first.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from autosr.device import autocast, autocast_dtype
from autosr.imaging.foreground import border_values
from autosr.inference.mirroring import mirror_combinations, normalize_mirror_axes, volume_flip_dims

# Step between tiles as a fraction of the patch. With batch-normalized (tile-invariant) networks, step 0.5
# scores within 0.01 dB PSNR of step 0.25 on held-out phantoms, at a third of the forward passes
# (benchmarks/bench_variants.py; documentation/benchmark.md, "Network normalization and tiling"). Plans
# from before that change (instance norm) lose 0.5 dB at 0.5: pass --step-size 0.25 for them.
DEFAULT_STEP_FRACTION = 0.5
# Gaussian sigma as a fraction of the patch edge (the usual choice in nnU-Net and MONAI).
GAUSSIAN_SIGMA_FRACTION = 1.0 / 8.0
# Floor of the importance map relative to its centre. The corner of a sigma = p/8 Gaussian is e^-24
# (~4e-11) in 3D; without a floor, voxels at the volume's corners (seen by one tile corner only) divide
# two near-denormal numbers. 1e-4 is the weight at 3.4 sigma on one axis, so any voxel that some tile sees
# nearer its centre is still dominated by that tile.
GAUSSIAN_MIN_WEIGHT = 1e-4
# Network inputs per forward pass (mirrored copies count) when a caller gives none. Not a measured
# optimum: the Predictor passes the configuration's training batch size, which the planner sized for the GPU.
DEFAULT_TILE_BATCH_SIZE = 4

NetworkFn = Callable[[torch.Tensor], "torch.Tensor | Sequence[torch.Tensor]"]
Window = tuple[slice, slice, slice]


@functools.lru_cache(maxsize=8)
def _gaussian_cpu(patch_size: tuple[int, ...], sigma_fraction: float, min_weight: float) -> torch.Tensor:
    axes = []
    for p in patch_size:
        centre = (p - 1) / 2.0
        sigma = max(p * sigma_fraction, 1e-6)
        coords = torch.arange(p, dtype=torch.float64)
        axes.append(torch.exp(-((coords - centre) ** 2) / (2.0 * sigma**2)))
    weight = functools.reduce(lambda a, b: a[..., None] * b, axes)
    weight = weight / weight.max()
    return torch.clamp(weight, min=min_weight).to(torch.float32)


def gaussian_importance_map(
    patch_size: Sequence[int],
    sigma_fraction: float = GAUSSIAN_SIGMA_FRACTION,
    min_weight: float = GAUSSIAN_MIN_WEIGHT,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Separable Gaussian over a patch, 1 at the centre, never below `min_weight`. Shape `patch_size`."""
    return _gaussian_cpu(tuple(int(p) for p in patch_size), float(sigma_fraction), float(min_weight)).to(device)


def tile_starts(size: int, patch: int, step_fraction: float) -> list[int]:
    """Start indices along one axis: the first tile at 0, the last flush with the end, evenly in between.

    The number of tiles is the smallest that keeps the step at most `step_fraction` x patch (at least one
    voxel), so the actual overlap is never less than asked for.
    """
    if size <= patch:
        return [0]
    step = max(1.0, patch * step_fraction)
    n = math.ceil((size - patch) / step) + 1
    return sorted({int(round(s)) for s in np.linspace(0, size - patch, n)})


def tile_windows(shape_zyx: Sequence[int], window_zyx: Sequence[int], step_fraction: float) -> list[Window]:
    """Every tile's (z, y, x) slices over a volume at least as large as the window."""
    starts = [tile_starts(s, w, step_fraction) for s, w in zip(shape_zyx, window_zyx)]
    return [
        (slice(z, z + window_zyx[0]), slice(y, y + window_zyx[1]), slice(x, x + window_zyx[2]))
        for z in starts[0]
        for y in starts[1]
        for x in starts[2]
    ]


def _pad_to_window(image: torch.Tensor, window_zyx: Sequence[int]) -> tuple[torch.Tensor, Window]:
    """Pad (C, Z, Y, X) symmetrically up to the window where it is smaller; return the crop back.

    The padding is each channel's background level (the median of the volume's faces), the value training
    patches are filled with where they reach past a volume, so the network meets no edge it never saw.
    """
    shape = image.shape[1:]
    before = [max(0, w - s) // 2 for s, w in zip(shape, window_zyx)]
    after = [max(0, w - s) - b for s, w, b in zip(shape, window_zyx, before)]
    crop = tuple(slice(b, b + s) for b, s in zip(before, shape))
    if not any(before) and not any(after):
        return image, crop
    fill = border_values(image).to(image.dtype)
    padded = fill.reshape(-1, 1, 1, 1).expand(image.shape[0], *(s + b + a for s, b, a in zip(shape, before, after)))
    padded = padded.clone()
    padded[(slice(None), *crop)] = image
    return padded, crop


def _allocate(shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """float32 zeros on `device`, or on the CPU when the device is out of memory."""
    try:
        return torch.zeros(tuple(shape), dtype=torch.float32, device=device)
    except torch.cuda.OutOfMemoryError:
        warnings.warn(
            f"accumulator of shape {tuple(shape)} does not fit on {device}; accumulating on the CPU (slower)",
            stacklevel=3,
        )
        torch.cuda.empty_cache()
        return torch.zeros(tuple(shape), dtype=torch.float32, device="cpu")


def _to_device_or_stay(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move the input volume to the device if it fits (from pinned memory: one fast copy); otherwise tiles
    are moved one batch at a time."""
    if tensor.device == device:
        return tensor
    try:
        if device.type == "cuda" and tensor.device.type == "cpu":
            return tensor.pin_memory().to(device, non_blocking=True)
        return tensor.to(device)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return tensor


def _first_output(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(output, (list, tuple)):
        return output[0]
    return output


def predict_sliding_window(
    network: NetworkFn,
    image: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    step_fraction: float = DEFAULT_STEP_FRACTION,
    tile_batch_size: int = DEFAULT_TILE_BATCH_SIZE,
    mirror_axes: Sequence[int] = (),
    device: torch.device | str | None = None,
    precision: torch.dtype | str | None = "auto",
    sigma_fraction: float = GAUSSIAN_SIGMA_FRACTION,
    fixed_batch: bool = False,
) -> torch.Tensor:
    """Predict a (C, Z, Y, X) volume tile by tile; returns (out_channels, Z, Y, X) float32.

    - `patch_size`: 3 numbers (z, y, x) for a 3D network, 2 numbers (y, x) for a 2D network (every z slice
      is predicted; tiles are (C, y, x) slices).
    - `step_fraction`: step between tile starts as a fraction of the patch (0.5 = half-patch overlap).
    - `tile_batch_size`: network inputs per forward pass; mirrored copies are batched with tiles.
    - `mirror_axes`: spatial axes of the patch to mirror for test-time augmentation (all 2**n flips are
      predicted and averaged, each flipped back); () for none.
    - `device`: where the network runs (default: the image's device). Accumulation happens there too,
      and falls back to the CPU when the volume's accumulators do not fit.
    - `precision`: the autocast dtype of the network: "auto" = `autosr.device.autocast_dtype` (bfloat16 on
      CUDA GPUs that have it, float16 on older ones, full precision elsewhere, as in training), a dtype, or
      None for full precision.
    - `fixed_batch`: pad the last forward pass to `tile_batch_size` inputs (a compiled network then sees
      one shape only).

    The result lives on the accumulation device. Volumes smaller than the patch are padded (with each
    channel's background level, as training patches are) and cropped back.
    """
    dims = len(patch_size)
    if dims not in (2, 3):
        raise ValueError(f"patch_size must have 2 (y, x) or 3 (z, y, x) numbers, got {tuple(patch_size)}")
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction must be in (0, 1], got {step_fraction}")
    if tile_batch_size < 1:
        raise ValueError(f"tile_batch_size must be at least 1, got {tile_batch_size}")
    image = torch.as_tensor(image)
    if image.ndim != 4:
        raise ValueError(f"image must be (C, Z, Y, X), got shape {tuple(image.shape)}")
    device = torch.device(device) if device is not None else image.device
    dtype = autocast_dtype(device) if precision == "auto" else precision
    mirrors = mirror_combinations(normalize_mirror_axes(mirror_axes, dims))

    window = tuple(int(p) for p in patch_size) if dims == 3 else (1, *(int(p) for p in patch_size))
    padded, crop = _pad_to_window(image.float(), window)
    padded = _to_device_or_stay(padded, device)
    windows = tile_windows(padded.shape[1:], window, step_fraction)
    weight = gaussian_importance_map(patch_size, sigma_fraction, device=device).reshape(window)

    work = [(w, volume_flip_dims(m, dims)) for w in windows for m in mirrors]
    numerator: torch.Tensor | None = None
    denominator = _allocate(padded.shape[1:], device)
    acc_device = denominator.device
    weight_acc = weight.to(acc_device)

    with torch.no_grad():  # not inference_mode: callers update the result in place (ensemble statistics)
        for start in range(0, len(work), tile_batch_size):
            chunk = work[start : start + tile_batch_size]
            tiles = [padded[(slice(None), *w)] for w, _ in chunk]
            batch = torch.stack([torch.flip(t, f) if f else t for t, (_, f) in zip(tiles, chunk)]).to(device)
            if dims == 2:
                batch = batch[:, :, 0]
            if fixed_batch and len(chunk) < tile_batch_size:
                batch = torch.cat([batch, batch[-1:].expand(tile_batch_size - len(chunk), *batch.shape[1:])])
            with autocast(device, dtype) if dtype is not None else contextlib.nullcontext():
                output = _first_output(network(batch))[: len(chunk)]
            output = output.float()
            if dims == 2:
                output = output[:, :, None]
            output = output.to(acc_device)
            if numerator is None:
                numerator = _allocate((output.shape[1], *padded.shape[1:]), acc_device)
                if numerator.device != acc_device:  # the second volume did not fit: both on the CPU
                    acc_device, denominator = numerator.device, denominator.cpu()
                    weight_acc, output = weight_acc.cpu(), output.cpu()
            for prediction, (w, flip_dims) in zip(output, chunk):
                if flip_dims:
                    prediction = torch.flip(prediction, flip_dims)
                numerator[(slice(None), *w)] += prediction * weight_acc
                denominator[w] += weight_acc
    numerator /= denominator
    return numerator[(slice(None), *crop)]
