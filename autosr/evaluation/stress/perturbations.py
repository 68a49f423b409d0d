"""Acquisition changes applied to an input scan: seeded, exact, documented. What `autosr stress-test` feeds
the model to see how its error grows and whether the per-scan flag rises with it.

Each perturbation is a small frozen object with a `name` and `apply(array, geometry, foreground, seed)`
returning the new (array, geometry); the same seed always gives the same scan. Levels are relative to the
scan itself (its intensity range inside the foreground, its voxel size), so one set fits MR in any units:

- `GaussianNoise(level)`: additive Gaussian noise, sd = level x (99th - 1st percentile inside the subject).
- `BiasField(amplitude)`: multiplication by exp(a smooth field): a random second-order polynomial in the
  normalized coordinates scaled so the field spans `amplitude` (0.3: about -26% .. +35% across the subject).
- `Ghosting(phase_error_rad, axis)`: motion-like N/2 ghosts: every other k-space line along `axis` gets a
  phase error (the magnitude image is kept), as an inconsistency between odd and even echoes does.
- `Gamma(gamma)`: a contrast change: intensities mapped through ((v - lo)/(hi - lo))^gamma on the subject's
  1st-99th percentile range (monotonic, so the anatomy stays, only the contrast between tissues moves).
- `IntensityScale(factor)`: every intensity multiplied (a scan exported in other units).
- `VoxelSize(factor)`: the input resampled (B-spline) to `factor` x its voxel size over the same field of
  view: a coarser acquisition of the same subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autosr.io import Geometry
from autosr.io.geometry import grid_covering
from autosr.io.resampling import resample_to_geometry


def _intensity_range(array: np.ndarray, foreground: np.ndarray) -> tuple[float, float]:
    values = array[foreground] if foreground.any() else array.ravel()
    lo, hi = np.percentile(values, (1.0, 99.0))
    return float(lo), float(hi)


@dataclass(frozen=True)
class GaussianNoise:
    level: float

    @property
    def name(self) -> str:
        return f"noise_{self.level:g}"

    def apply(self, array: np.ndarray, geometry: Geometry, foreground: np.ndarray, seed: int):
        lo, hi = _intensity_range(array, foreground)
        noise = np.random.default_rng(seed).normal(0.0, self.level * (hi - lo), array.shape)
        return (array + noise).astype(np.float32), geometry


@dataclass(frozen=True)
class BiasField:
    amplitude: float

    @property
    def name(self) -> str:
        return f"bias_{self.amplitude:g}"

    def apply(self, array: np.ndarray, geometry: Geometry, foreground: np.ndarray, seed: int):
        rng = np.random.default_rng(seed)
        axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in array.shape], indexing="ij")
        terms = [*axes] + [a * b for i, a in enumerate(axes) for b in axes[i:]]
        field = sum(rng.normal() * t for t in terms)
        inside = field[foreground] if foreground.any() else field.ravel()
        span = float(inside.max() - inside.min()) or 1.0
        field = self.amplitude * (field - float(inside.mean())) / span
        return (array * np.exp(field)).astype(np.float32), geometry


@dataclass(frozen=True)
class Ghosting:
    phase_error_rad: float
    axis: int = 1

    @property
    def name(self) -> str:
        return f"ghosting_{self.phase_error_rad:g}"

    def apply(self, array: np.ndarray, geometry: Geometry, foreground: np.ndarray, seed: int):
        kspace = np.fft.fft(array.astype(np.float64), axis=self.axis)
        phase = np.ones(array.shape[self.axis], dtype=np.complex128)
        phase[1::2] = np.exp(1j * self.phase_error_rad)
        shape = [1, 1, 1]
        shape[self.axis] = -1
        ghosted = np.abs(np.fft.ifft(kspace * phase.reshape(shape), axis=self.axis))
        return ghosted.astype(np.float32), geometry


@dataclass(frozen=True)
class Gamma:
    gamma: float

    @property
    def name(self) -> str:
        return f"gamma_{self.gamma:g}"

    def apply(self, array: np.ndarray, geometry: Geometry, foreground: np.ndarray, seed: int):
        lo, hi = _intensity_range(array, foreground)
        unit = np.clip((array - lo) / max(hi - lo, 1e-12), 0.0, None)
        return (lo + (hi - lo) * unit**self.gamma).astype(np.float32), geometry


@dataclass(frozen=True)
class IntensityScale:
    factor: float

    @property
    def name(self) -> str:
        return f"scale_{self.factor:g}"

    def apply(self, array: np.ndarray, geometry: Geometry, foreground: np.ndarray, seed: int):
        return (array * self.factor).astype(np.float32), geometry


@dataclass(frozen=True)
class VoxelSize:
    factor: float

    @property
    def name(self) -> str:
        return f"voxel_size_{self.factor:g}x"

    def apply(self, array: np.ndarray, geometry: Geometry, foreground: np.ndarray, seed: int):
        coarser = grid_covering(geometry, tuple(s * self.factor for s in geometry.spacing_zyx))
        return resample_to_geometry(array, geometry, coarser, order=3), coarser


Perturbation = GaussianNoise | BiasField | Ghosting | Gamma | IntensityScale | VoxelSize

# The fixed set `autosr stress-test` runs, mildest first per kind (documentation/trust.md lists them).
ACQUISITION_CHANGES: tuple[Perturbation, ...] = (
    GaussianNoise(0.03),
    GaussianNoise(0.1),
    BiasField(0.4),
    Ghosting(0.5),
    Gamma(0.6),
    IntensityScale(3.0),
    VoxelSize(1.5),
)


def perturbation_seed(seed: int, case_index: int, perturbation_index: int) -> int:
    """One seed per (run seed, case, perturbation): the same triple always draws the same noise."""
    return int(np.random.SeedSequence([seed, case_index, perturbation_index]).generate_state(1)[0])
