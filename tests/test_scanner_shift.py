"""The unpaired scanner's shift: measured where it is known (noise and a bias field applied to the same volumes,
the blur from voxel sizes), and applied only to the paired patches, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from autosr.training.distillation.scanner_shift import (
    ScannerShift,
    apply_shift,
    bias_slopes,
    blur,
    measure_shift,
    widening_blur,
)


def _volumes(count: int = 4, size: int = 40) -> list[tuple[np.ndarray, np.ndarray]]:
    """Piecewise-smooth volumes (blobs of two tissues, fine texture, mild noise) inside a cubic mask, 0 outside."""
    out = []
    mask = np.zeros((size,) * 3, dtype=bool)
    mask[4:-4, 4:-4, 4:-4] = True
    for seed in range(count):
        rng = np.random.default_rng(seed)
        blobs = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 3) > 0
        texture = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 1.5)
        subject = 5.0 + 2.0 * blobs + 3.0 * texture + 0.1 * rng.normal(size=(size,) * 3)
        out.append((np.where(mask, subject, 0.0), mask))  # the background at 0, as after normalization
    return out


def _ramp_field(shape: tuple[int, ...], slopes: tuple[float, ...]) -> np.ndarray:
    field = np.ones(shape)
    for axis, slope in enumerate(slopes):
        view = [1] * len(shape)
        view[axis] = shape[axis]
        field = field + slope * np.linspace(-1, 1, shape[axis]).reshape(view)
    return field


def test_widening_blur_adds_widths_in_quadrature():
    # a 1.5 mm voxel widened to 2 mm on a 1 mm grid: FWHM sqrt(4 - 2.25) mm; none where the voxel is not larger
    sigma = widening_blur([1.5, 1.5, 3.0], [2.0, 1.0, 3.0], [1.0, 0.5, 1.0])
    assert sigma[0] == pytest.approx(np.sqrt(1.75) / (2 * np.sqrt(2 * np.log(2))))
    assert sigma[1:] == (0.0, 0.0)


def test_measure_shift_null_for_the_same_scanner_and_noise_afterblur():
    training = _volumes()
    assert measure_shift(training, training) == ScannerShift()
    assert measure_shift(training, []) == ScannerShift() == measure_shift([], training)
    rng = np.random.default_rng(7)
    # white noise of 0.5, then a blur of 0.5 voxels: the blur is the voxel sizes' to give, the noise is measured
    unpaired = [
        (ndimage.gaussian_filter(v + 0.5 * rng.normal(size=v.shape), 0.5, mode="nearest"), m) for v, m in training
    ]
    shift = measure_shift(training, unpaired, (0.5, 0.5, 0.5))
    assert shift.blur_sigma == (0.5, 0.5, 0.5) and shift.noise_sigma == pytest.approx(0.5, rel=0.1)
    assert shift.bias_slope == pytest.approx(0.0, abs=0.02)


def test_measure_shift_recovers_a_bias_field():
    training = _volumes()
    biased = [(np.where(m, v * _ramp_field(v.shape, (0.2, -0.2, 0.2)), 0.0), m) for v, m in training]
    # the mask spans 31 of the ramp's 39 steps; the training volumes' own slopes are about 0
    assert measure_shift(training, biased).bias_slope == pytest.approx(0.2 * 31 / 39, rel=0.1)


def test_bias_slopes_brute_force():
    mask = np.zeros((12, 12, 12), dtype=bool)
    mask[2:-2, 2:-2, 2:-2] = True  # the background (0, the low level) around it
    volume = np.where(mask, 2.0 * _ramp_field((12, 12, 12), (0.3, 0.0, -0.1)), 0.0)
    # the ramp spans the volume (11 steps), the fit the mask (7 steps): its slope is 7/11 of the field's
    assert bias_slopes(volume, mask) == pytest.approx(np.array([0.3, 0.0, -0.1]) * 7 / 11, abs=1e-6)


def test_blur_matches_scipy():
    patch = torch.rand(1, 9, 10, 11, dtype=torch.float64)
    expected = ndimage.gaussian_filter(patch[0].numpy(), 1.0, mode="nearest", truncate=4.0)
    assert np.allclose(blur(patch, [1.0])[0].numpy(), expected, atol=1e-10)
    along_z = ndimage.gaussian_filter(patch[0].numpy(), (1.5, 0, 0), mode="nearest", truncate=4.0)
    assert np.allclose(blur(patch, [1.5, 0.0, 0.0])[0].numpy(), along_z, atol=1e-10)
    flat = torch.full((2, 6, 7), 3.0)
    assert torch.allclose(blur(flat, [1.5]), flat)  # 2D patches, a constant stays constant


@pytest.mark.parametrize("spatial", [(8, 8), (8, 8, 8)])
def test_apply_shift_touches_only_eligible_patches_and_is_seeded(spatial):
    inputs = torch.rand(16, 1, *spatial) + 1.0
    shift = ScannerShift(blur_sigma=(0.5, 0.5, 1.0), noise_sigma=0.1, bias_slope=0.2)
    eligible = [i % 2 == 0 for i in range(16)]
    first = apply_shift(inputs, shift, 1.0, eligible, torch.Generator().manual_seed(1))
    again = apply_shift(inputs, shift, 1.0, eligible, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and first.shape == inputs.shape
    changed = [not torch.equal(first[i], inputs[i]) for i in range(16)]
    assert not any(c for c, e in zip(changed, eligible) if not e)
    assert 0 < sum(changed) < sum(eligible)  # about half of the eligible ones (SHIFT_SHARE), seeded: 1 to 7 of 8
    assert torch.equal(apply_shift(inputs, ScannerShift(), 1.0, [True] * 16), inputs)
