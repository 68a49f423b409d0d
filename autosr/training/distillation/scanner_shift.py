"""How unpaired scans differ from the training inputs, measured, and the training inputs degraded to match.

Teaching the student the teacher's predictions of unpaired scans from another scanner helps little where the
teacher is itself no better on that scanner than the student (documentation/benchmark.md, "Distillation"). What
the unpaired scans do show is *how* that scanner's inputs differ: coarser voxels (interpolated onto the planned
grid, so smoother there), more noise, a stronger bias field. `measure_shift` estimates these three differences
in the student's normalized input space, and `apply_shift` degrades paired training patches by them while their
target stays the teacher's prediction of the clean input: the student learns to give the clean answer for a scan
of the other scanner's kind. Where the unpaired scans are like the training inputs the measured shift is about
zero and nothing changes.

The model of the other scanner's input: y = blur(low + (x - low) * field + noise), each measured from the
scans (at most `MAX_CASES` of each kind, a central crop of at most `MAX_CROP` voxels per axis):

- *blur*, per axis of the planned grid: a Gaussian whose full width at half maximum widens the training
  inputs' voxel size (median, from their headers, per world axis) to the unpaired scans': sqrt(u^2 - t^2) mm,
  in planned voxels; none along an axis where the unpaired voxels are not larger. The voxel sizes are read,
  not estimated: the image statistics that could estimate them cannot tell blur from anatomy on small data;
- *noise*: white Gaussian noise, added before the blur as a scanner's noise is before interpolation, of the
  level that raises the blurred training inputs' noise level (`qc.noise_level`, a robust second-difference
  estimate) to the unpaired scans' (medians; noise levels add in quadrature, and the blur keeps a measured
  share of white noise's level; where it keeps under `MIN_KEPT_NOISE` of it, no noise is added);
- *bias*: per axis, the slope of the least-squares fit of (x - low) / mean(x - low) inside the mask (low: the
  level outside it) against a ramp from -1 to 1 over the mask's extent; the shift is the root-mean-square slope the unpaired scans have
  beyond the training inputs' (a linear field 1 + slope * ramp per axis, of random sign and size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from autosr.training.gaussian_blur import gaussian_kernel, separable_blur

MAX_CASES = 8
MAX_CROP = 96
# below this share of white noise's level left by the blur, the noise before it cannot be told from anatomy
MIN_KEPT_NOISE = 0.05
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
# per paired patch: the chance it is degraded, and the range of strengths drawn (x the measured shift)
SHIFT_SHARE = 0.5
STRENGTH_RANGE = (0.5, 1.5)


@dataclass(frozen=True)
class ScannerShift:
    """The unpaired scans' inputs against the training inputs, in normalized input units (module docstring)."""

    blur_sigma: tuple[float, ...] = field(default=(0.0, 0.0, 0.0))  # planned voxels, per planned array axis
    noise_sigma: float = 0.0  # normalized input units, added before the blur
    bias_slope: float = 0.0  # root-mean-square slope per axis over the subject's extent

    @property
    def is_null(self) -> bool:
        return not any(self.blur_sigma) and self.noise_sigma == 0 and self.bias_slope == 0

    def as_json(self) -> dict[str, object]:
        return {
            "blur_sigma": [round(float(v), 6) for v in self.blur_sigma],
            "noise_sigma": round(float(self.noise_sigma), 6),
            "bias_slope": round(float(self.bias_slope), 6),
        }

    def describe(self) -> str:
        blur = " x ".join(f"{v:.2f}" for v in self.blur_sigma)
        return f"blur sigma {blur} voxels, noise {self.noise_sigma:.3f} (normalized), bias slope {self.bias_slope:.3f}"


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


def widening_blur(
    training_mm: Sequence[float], unpaired_mm: Sequence[float], grid_mm: Sequence[float]
) -> tuple[float, ...]:
    """Per axis: the Gaussian sigma (in grid voxels) whose FWHM widens a `training_mm` voxel to an `unpaired_mm`
    one (FWHMs add in quadrature); 0 where the unpaired voxel is not larger."""
    return tuple(
        math.sqrt(max(0.0, u * u - t * t)) / FWHM_PER_SIGMA / g for t, u, g in zip(training_mm, unpaired_mm, grid_mm)
    )


def bias_slopes(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per axis: the slope of the least-squares linear fit of (x - low) / mean(x - low) inside the mask
    against a ramp from -1 to 1 over the mask's extent along that axis (low: the median outside the mask, the
    level without signal; the 1st percentile where the mask covers everything)."""
    volume = np.asarray(volume, dtype=np.float64)
    points = np.argwhere(mask)
    if len(points) < 10:
        return np.zeros(volume.ndim)
    outside = ~np.asarray(mask, dtype=bool)
    low = float(np.median(volume[outside])) if outside.any() else float(np.percentile(volume, 1))
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
    training: Sequence[tuple[np.ndarray, np.ndarray]],
    unpaired: Sequence[tuple[np.ndarray, np.ndarray]],
    blur_sigma: Sequence[float] = (0.0, 0.0, 0.0),
) -> ScannerShift:
    """The shift from the training inputs to the unpaired ones, each a sequence of (volume (Z, Y, X) of the first
    input channel, mask), given the blur the voxel sizes call for (`widening_blur`, grid voxels per array axis).
    Null when either sequence is empty."""
    from scipy import ndimage

    from autosr.inference.qc import noise_level

    if not training or not unpaired:
        return ScannerShift()
    train = [_crop(np.asarray(v, dtype=np.float64), np.asarray(m, dtype=bool)) for v, m in training[:MAX_CASES]]
    other = [_crop(np.asarray(v, dtype=np.float64), np.asarray(m, dtype=bool)) for v, m in unpaired[:MAX_CASES]]
    blur = tuple(float(b) for b in blur_sigma)
    kept = 1.0  # the share of white noise's level the blur leaves, measured on the training crops' masks
    if any(blur):
        train_blurred = [(ndimage.gaussian_filter(v, blur, mode="nearest"), m) for v, m in train]
        rng = np.random.default_rng(0)
        unit = [ndimage.gaussian_filter(rng.standard_normal(v.shape), blur, mode="nearest") for v, _ in train]
        kept = float(np.median([noise_level(u, m) for u, (_, m) in zip(unit, train)]))
    else:
        train_blurred = train
    have = float(np.median([noise_level(v, m) for v, m in train_blurred]))
    wanted = float(np.median([noise_level(v, m) for v, m in other]))
    rms = [float(np.sqrt(np.mean([bias_slopes(v, m) ** 2 for v, m in group]))) for group in (train, other)]
    return ScannerShift(
        blur_sigma=blur,
        noise_sigma=math.sqrt(max(0.0, wanted**2 - have**2)) / kept if kept >= MIN_KEPT_NOISE else 0.0,
        bias_slope=math.sqrt(max(0.0, rms[1] ** 2 - rms[0] ** 2)),
    )


def blur(patch: torch.Tensor, sigma: Sequence[float]) -> torch.Tensor:
    """Gaussian blur of `patch` (C, *spatial), `sigma` voxels per spatial axis (one value: every axis), the
    border replicated."""
    sigmas = list(sigma) * (patch.dim() - 1) if len(sigma) == 1 else list(sigma)
    kernels = [gaussian_kernel(s, dtype=patch.dtype) if s > 0 else None for s in sigmas]
    return separable_blur(patch.unsqueeze(0), kernels, mode="replicate")[0]


def linear_field(slopes: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """(B, 1, *spatial): 1 + sum over axes a of slopes[:, a] x a ramp from -1 to 1 along spatial axis a (a linear
    bias field per patch), on the slopes' device and dtype."""
    batch, ones = slopes.shape[0], [1] * len(spatial)
    field = torch.ones((batch, 1, *spatial), device=slopes.device, dtype=slopes.dtype)
    for axis, size in enumerate(spatial):
        shape = list(ones)
        shape[axis] = size
        ramp = torch.linspace(-1.0, 1.0, size, device=slopes.device, dtype=slopes.dtype).reshape(1, 1, *shape)
        field = field + slopes[:, axis].reshape(batch, 1, *ones) * ramp
    return field


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
    `extent_share`: the patch's size over the subject's extent (the bias slope is measured over the subject, the
    field is drawn over the patch: its slope there is the measured one times this ratio).
    Every patch takes the same number of draws, so the stream does not depend on which patches are eligible."""
    if shift.is_null or not any(eligible):
        return inputs
    spatial = inputs.shape[2:]
    lo, hi = STRENGTH_RANGE
    draws = torch.rand(inputs.shape[0], 3 + len(spatial), generator=generator)
    noise = standard_normal_like(inputs, generator)
    chosen = [b for b, allowed in enumerate(eligible) if allowed and float(draws[b, 0]) < SHIFT_SHARE]
    if not chosen:
        return inputs
    index = torch.tensor(chosen, device=inputs.device)
    drawn = draws[chosen].to(device=inputs.device, dtype=inputs.dtype)
    strength = lo + (hi - lo) * drawn[:, 1]
    # per axis uniform in +-sqrt(3) x the measured root-mean-square slope
    slopes = (2 * drawn[:, 3:] - 1) * math.sqrt(3) * shift.bias_slope * strength[:, None] * extent_share
    patches = inputs[index]
    low = patches.amin(dim=tuple(range(1, inputs.dim())), keepdim=True)
    per_patch = strength.reshape(-1, *[1] * (inputs.dim() - 1))
    patches = low + (patches - low) * linear_field(slopes, spatial) + shift.noise_sigma * per_patch * noise[index]
    if any(shift.blur_sigma):
        widths = shift.blur_sigma if len(spatial) == len(shift.blur_sigma) else [float(np.mean(shift.blur_sigma))]
        patches = torch.stack(
            [blur(patch, [w * float(lo + (hi - lo) * d[2]) for w in widths]) for patch, d in zip(patches, drawn)]
        )
    out = inputs.clone()
    out[index] = patches
    return out


def measure_cached_shift(
    cases_dir: Path, training_ids: Sequence[str], unpaired_ids: Sequence[str], patch_size: Sequence[int]
) -> tuple[ScannerShift, float]:
    """(the shift from the cached training inputs to the cached unpaired ones, the patch's size over the training
    subjects' extent: a patch larger than the subject spreads the measured slope over more voxels); the first
    input channel, each case's mask (its foreground where it has none), the voxel sizes from each case's
    recorded input geometry."""
    from autosr.io import Geometry
    from autosr.io.orientation import from_world_axes, to_world_axes
    from autosr.preprocessing.case_store import load_case

    def read(ids: Sequence[str]) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[list[float]], Geometry]:
        chosen = list(ids)[:: max(1, len(ids) // MAX_CASES)][:MAX_CASES]  # spread over the list, not its start
        volumes, spacings, planned = [], [], None
        for case_id in chosen:
            case = load_case(cases_dir, case_id, mmap=True)
            volume = np.asarray(case.input[0], dtype=np.float64)
            mask = np.asarray(case.mask[0]) > 0 if case.mask is not None else np.ones(volume.shape, dtype=bool)
            volumes.append((volume, mask))
            geometry = Geometry.from_json(case.properties["input_geometry"])
            spacings.append(to_world_axes(list(geometry.spacing_zyx), geometry))
            planned = Geometry.from_json(case.properties["planned_geometry"])
        return volumes, spacings, planned

    training, training_mm, planned = read(training_ids)
    unpaired, unpaired_mm, _ = read(unpaired_ids)
    if not training or not unpaired:
        return ScannerShift(), 1.0
    grid_mm = to_world_axes(list(planned.spacing_zyx), planned)
    blur_world = widening_blur(np.median(training_mm, axis=0), np.median(unpaired_mm, axis=0), grid_mm)
    shift = measure_shift(training, unpaired, from_world_axes(list(blur_world), planned))
    extents = [np.ptp(np.argwhere(m), axis=0) + 1 for _, m in training if m.any()]
    extent = float(np.mean(np.median(extents, axis=0))) if extents else 1.0
    return shift, float(np.mean(patch_size) / max(extent, 1.0))
