"""How unpaired scans differ from the training inputs, measured, and the training inputs degraded to match.

Teaching the student the teacher's predictions of unpaired scans from another scanner helps little where the
teacher is itself no better on that scanner than the student (documentation/benchmark.md, "Distillation"). What
the unpaired scans do show is *how* that scanner's inputs differ: smoother (a coarser voxel size interpolated
onto the planned grid), noisier, a stronger bias field. `measure_shift` estimates these three differences in the
student's normalized input space from the cached inputs, and `apply_shift` degrades paired training patches by
them while their target stays the teacher's prediction of the clean input: the student learns to give the clean
answer for a scan of the other scanner's kind. Where the unpaired scans are like the training inputs, the
measured shift is about zero and nothing changes.

The model of a scanner's input: y = blur(low + (x - low) * field + noise), with an isotropic Gaussian `blur`
(sigma in voxels; acquisition noise is interpolated with the anatomy, so noise is added before the blur), white
Gaussian `noise` and a linear bias `field` (1 + slope * ramp per axis, ramp in [-1, 1]). Measured per volume
(at most `MAX_CASES` of each kind, a central crop of at most `MAX_CROP` voxels per axis):

- *detail*: the robust standard deviation (median absolute deviation x 1.4826) of the second difference
  (1, -2, 1) along each axis, at step 1 and at step 2 (coarser detail), averaged over the axes, inside the
  mask. Blur lowers step 1 more than step 2; noise raises both. For each blur of `BLUR_GRID`, the training
  volumes are blurred, the noise that best raises their detail to the unpaired scans' follows from the
  filters' gain on white noise, and the blur with the smallest remaining (log) misfit is kept;
- *bias*: the slope per axis of the least-squares fit of (x - low) / mean(x - low) inside the mask against the
  ramps; the shift is the root-mean-square slope the unpaired scans have beyond the training inputs'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

BLUR_GRID = tuple(float(s) for s in np.arange(0.0, 2.01, 0.25))  # voxels
MAX_CASES = 8
MAX_CROP = 96
STEPS = (1, 2, 4)
MISFIT_TOLERANCE = 0.01  # of the summed squared log misfit: within it, the weaker shift is kept
# per paired patch: the chance it is degraded, and the range of strengths drawn (x the measured shift)
SHIFT_SHARE = 0.5
STRENGTH_RANGE = (0.5, 1.5)


@dataclass(frozen=True)
class ScannerShift:
    """The unpaired scans' inputs against the training inputs, in normalized input units (module docstring)."""

    blur_sigma: float = 0.0  # voxels
    noise_sigma: float = 0.0  # normalized input units, before the blur
    bias_slope: float = 0.0  # root-mean-square slope per axis over the subject's extent

    @property
    def is_null(self) -> bool:
        return self.blur_sigma == 0 and self.noise_sigma == 0 and self.bias_slope == 0

    def as_json(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in asdict(self).items()}

    def describe(self) -> str:
        return (
            f"blur sigma {self.blur_sigma:.2f} voxels, noise {self.noise_sigma:.3f} (normalized), "
            f"bias slope {self.bias_slope:.3f}"
        )


def _crop(volume: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A central crop of at most MAX_CROP voxels per axis around the mask's centre (the whole volume if smaller)."""
    points = np.argwhere(mask)
    centre = points.mean(axis=0).round().astype(int) if len(points) else np.array(volume.shape) // 2
    index = []
    for c, n in zip(centre, volume.shape):
        size = min(n, MAX_CROP)
        start = int(np.clip(c - size // 2, 0, n - size))
        index.append(slice(start, start + size))
    return volume[tuple(index)], mask[tuple(index)]


def _second_difference_kernel(step: int) -> np.ndarray:
    kernel = np.zeros(2 * step + 1)
    kernel[[0, step, 2 * step]] = (1.0, -2.0, 1.0)
    return kernel


def _gaussian_kernel(sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.ones(1)
    radius = max(1, int(math.ceil(4 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def detail(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Robust standard deviation of the second difference at each of `STEPS`, averaged over the axes of at
    least 5 voxels, over the mask's voxels whose neighbourhood lies inside it (module docstring)."""
    from scipy import ndimage

    volume = np.asarray(volume, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    values = []
    for step in STEPS:
        per_axis = []
        for axis, n in enumerate(volume.shape):
            if n < 2 * step + 1:
                continue
            residual = ndimage.correlate1d(volume, _second_difference_kernel(step), axis=axis, mode="nearest")
            structure = np.ones([2 * step + 1 if a == axis else 1 for a in range(volume.ndim)], dtype=bool)
            inside = ndimage.binary_erosion(mask, structure, border_value=0)
            if inside.any():
                per_axis.append(float(np.std(residual[inside])))
        values.append(float(np.mean(per_axis)) if per_axis else 0.0)
    return np.array(values)


def noise_gain(blur_sigma: float, ndim: int = 3) -> np.ndarray:
    """Per step of `STEPS`: the squared detail white noise of unit variance has after a Gaussian blur of
    `blur_sigma` (the second difference along one axis, the blur along every axis)."""
    gaussian = _gaussian_kernel(blur_sigma)
    across = float(np.sum(gaussian**2)) ** (ndim - 1)
    return np.array([float(np.sum(np.convolve(_second_difference_kernel(s), gaussian) ** 2)) * across for s in STEPS])


def bias_slopes(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per axis: the slope of the least-squares linear fit of (x - low) / mean(x - low) inside the mask
    against a ramp from -1 to 1 over the mask's extent along that axis (low: the volume's 1st percentile)."""
    volume = np.asarray(volume, dtype=np.float64)
    points = np.argwhere(mask)
    if len(points) < 10:
        return np.zeros(volume.ndim)
    low = float(np.percentile(volume, 1))
    values = volume[tuple(points.T)] - low
    scale = float(values.mean())
    if scale <= 0:
        return np.zeros(volume.ndim)
    lo, hi = points.min(axis=0), points.max(axis=0)
    ramps = [(2.0 * (points[:, a] - lo[a]) / max(1, hi[a] - lo[a])) - 1.0 for a in range(volume.ndim)]
    design = np.column_stack([np.ones(len(points)), *ramps])
    coefficients, *_ = np.linalg.lstsq(design, values / scale, rcond=None)
    return coefficients[1:]


def measure_shift(
    training: Sequence[tuple[np.ndarray, np.ndarray]], unpaired: Sequence[tuple[np.ndarray, np.ndarray]]
) -> ScannerShift:
    """The shift from the training inputs to the unpaired ones; each a sequence of (volume (Z, Y, X) of the
    first input channel, mask). Null when either is empty."""
    from scipy import ndimage

    if not training or not unpaired:
        return ScannerShift()
    train = [_crop(np.asarray(v, dtype=np.float64), np.asarray(m, dtype=bool)) for v, m in training[:MAX_CASES]]
    other = [_crop(np.asarray(v, dtype=np.float64), np.asarray(m, dtype=bool)) for v, m in unpaired[:MAX_CASES]]
    wanted = np.median([detail(v, m) for v, m in other], axis=0)
    fits: list[tuple[float, float, float]] = []  # (misfit, blur, noise) per blur of the grid
    for blur in BLUR_GRID:
        blurred = [(ndimage.gaussian_filter(v, blur, mode="nearest") if blur > 0 else v, m) for v, m in train]
        have = np.median([detail(v, m) for v, m in blurred], axis=0)
        gain = noise_gain(blur, train[0][0].ndim)
        rise = wanted**2 - have**2
        variance = max(0.0, float(np.sum(gain * rise) / np.sum(gain**2)))
        model = np.sqrt(have**2 + variance * gain)
        misfit = float(np.sum((np.log(np.maximum(model, 1e-12)) - np.log(np.maximum(wanted, 1e-12))) ** 2))
        fits.append((misfit, blur, math.sqrt(variance)))
    least = min(f[0] for f in fits)
    best = next(f for f in fits if f[0] <= least + MISFIT_TOLERANCE)  # the weakest blur that fits about as well
    rms = [float(np.sqrt(np.mean([bias_slopes(v, m) ** 2 for v, m in group]))) for group in (train, other)]
    slope = math.sqrt(max(0.0, rms[1] ** 2 - rms[0] ** 2))
    return ScannerShift(blur_sigma=best[1], noise_sigma=best[2], bias_slope=slope)


def _blur(patch: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of `patch` (C, *spatial; 2 or 3 spatial axes) along every spatial axis, the border
    replicated."""
    import torch.nn.functional as F

    kernel = torch.as_tensor(_gaussian_kernel(sigma), dtype=patch.dtype, device=patch.device)
    radius = (kernel.numel() - 1) // 2
    spatial = patch.dim() - 1
    conv = F.conv3d if spatial == 3 else F.conv2d
    x, channels = patch.unsqueeze(0), patch.shape[0]
    for axis in range(spatial):
        pad = [0, 0] * spatial  # F.pad lists the last axis first
        pad[2 * (spatial - 1 - axis)] = pad[2 * (spatial - 1 - axis) + 1] = radius
        shape = [1] * spatial
        shape[axis] = kernel.numel()
        weight = kernel.reshape(1, 1, *shape).expand(channels, 1, *shape)
        x = conv(F.pad(x, pad, mode="replicate"), weight, groups=channels)
    return x[0]


def standard_normal_like(inputs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise of `inputs`' shape, dtype and device: drawn on the device itself (no host-to-device copy of
    a whole batch per step) unless a (CPU) `generator` is given, as tests do for exact draws."""
    if generator is None:
        return torch.randn(inputs.shape, device=inputs.device, dtype=inputs.dtype)
    return torch.randn(inputs.shape, generator=generator).to(device=inputs.device, dtype=inputs.dtype)


def apply_shift(
    inputs: torch.Tensor,
    shift: ScannerShift,
    extent_share: float,
    eligible: Sequence[bool],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`inputs` (B, C, *spatial) with each `eligible` patch (a paired case's) degraded like the unpaired
    scanner's with probability `SHIFT_SHARE`, at a strength drawn from `STRENGTH_RANGE` times the measured shift.
    `extent_share`: the patch's share of the subject's extent (the bias slope is measured over the subject).
    Every patch takes the same number of draws, so the stream does not depend on which patches are eligible."""
    if shift.is_null or not any(eligible):
        return inputs
    out = inputs.clone()
    spatial = inputs.shape[2:]
    lo, hi = STRENGTH_RANGE
    draws_all = torch.rand(inputs.shape[0], 3 + len(spatial), generator=generator).tolist()
    noises = standard_normal_like(inputs, generator)
    for b, (allowed, draws, noise) in enumerate(zip(eligible, draws_all, noises)):
        if not allowed or draws[0] >= SHIFT_SHARE:
            continue
        strength = lo + (hi - lo) * draws[1]
        patch = inputs[b]
        low = patch.amin()
        field = torch.ones_like(patch[:1])
        for axis, size in enumerate(spatial):
            shape = [1] * len(spatial)
            shape[axis] = size
            ramp = torch.linspace(-1.0, 1.0, size, dtype=patch.dtype, device=patch.device).reshape(1, *shape)
            # uniform in +-sqrt(3) x the measured root-mean-square slope
            slope = (2 * draws[3 + axis] - 1) * math.sqrt(3) * shift.bias_slope * strength * extent_share
            field = field + slope * ramp
        patch = low + (patch - low) * field + shift.noise_sigma * strength * noise
        if shift.blur_sigma > 0:
            patch = _blur(patch, shift.blur_sigma * (lo + (hi - lo) * draws[2]))
        out[b] = patch
    return out


def measure_cached_shift(
    cases_dir: Path, training_ids: Sequence[str], unpaired_ids: Sequence[str], patch_size: Sequence[int]
) -> tuple[ScannerShift, float]:
    """(the shift from the cached training inputs to the cached unpaired ones, the patch's share of the
    training subjects' extent); the first input channel, each case's mask (its foreground where it has none)."""
    from autosr.preprocessing.case_store import load_case

    def volumes(ids: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        chosen = list(ids)[:: max(1, len(ids) // MAX_CASES)][:MAX_CASES]  # spread over the list, not its start
        out = []
        for case_id in chosen:
            case = load_case(cases_dir, case_id, mmap=True)
            volume = np.asarray(case.input[0], dtype=np.float64)
            mask = np.asarray(case.mask[0]) > 0 if case.mask is not None else np.ones(volume.shape, dtype=bool)
            out.append((volume, mask))
        return out

    training = volumes(training_ids)
    shift = measure_shift(training, volumes(unpaired_ids))
    extents = [np.ptp(np.argwhere(m), axis=0) + 1 for _, m in training if m.any()]
    extent = float(np.mean(np.median(extents, axis=0))) if extents else 1.0
    return shift, float(min(1.0, np.mean(patch_size) / max(extent, 1.0)))
