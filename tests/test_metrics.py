"""Image metrics: exact values on known pairs, and agreement with scikit-image on random 3D arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from autosr.evaluation import metrics


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    reference = rng.random((18, 22, 26))
    prediction = np.clip(reference + 0.15 * rng.standard_normal(reference.shape), 0, 1)
    return prediction, reference


def interior(shape: tuple[int, ...], margin: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(margin, n - margin) for n in shape)] = True
    return mask


def test_identical_images() -> None:
    image = np.random.default_rng(0).random((22, 22, 22)).astype(np.float32)
    assert metrics.mae(image, image) == 0.0
    assert metrics.mse(image, image) == 0.0
    assert metrics.nmse(image, image) == 0.0
    assert metrics.psnr(image, image, 1.0) == math.inf
    result = metrics.image_metrics(image, image, None, 1.0)
    assert result["psnr"] == metrics.PSNR_CAP_DB
    for key in ("ssim", "ssim_luminance", "ssim_contrast", "ssim_structure", "ms_ssim"):
        assert result[key] == pytest.approx(1.0, abs=1e-9), key


def test_ssim_map_matches_scikit_image(pair) -> None:
    prediction, reference = pair
    expected_mean, expected_map = structural_similarity(
        prediction, reference, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, full=True
    )
    maps = metrics.ssim_maps(prediction, reference, 1.0)
    assert np.abs(maps.ssim - expected_map).max() < 1e-4
    # scikit-image averages away from a window-radius strip; the same region as a mask gives the same mean
    result = metrics.ssim_3d(prediction, reference, 1.0, interior(reference.shape, 5))
    assert result["ssim"] == pytest.approx(expected_mean, abs=1e-4)


def test_ssim_with_other_range_and_offset_matches(pair) -> None:
    prediction, reference = (a * 800 + 100 for a in pair)
    expected = structural_similarity(
        prediction, reference, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=900.0
    )
    assert metrics.ssim_3d(prediction, reference, 900.0, interior(reference.shape, 5))["ssim"] == pytest.approx(
        expected, abs=1e-4
    )


def test_torch_backend_matches_scipy(pair) -> None:
    prediction, reference = pair
    cpu = metrics.ssim_maps(prediction, reference, 1.0, backend="scipy")
    torch_maps = metrics.ssim_maps(prediction, reference, 1.0, backend="torch:cpu")
    for name in ("ssim", "luminance", "contrast", "structure"):
        assert np.abs(getattr(cpu, name) - getattr(torch_maps, name)).max() < 1e-4, name


def test_components_multiply_to_ssim(pair) -> None:
    maps = metrics.ssim_maps(*pair, 1.0)
    assert np.allclose(maps.luminance * maps.contrast * maps.structure, maps.ssim, atol=1e-10)


def test_psnr_matches_scikit_image(pair) -> None:
    prediction, reference = pair
    expected = peak_signal_noise_ratio(reference, prediction, data_range=1.0)
    assert metrics.psnr(prediction, reference, 1.0) == pytest.approx(expected, abs=1e-4)


def test_errors_by_hand_inside_mask() -> None:
    reference = np.zeros((4, 4, 4))
    reference[0] = 2.0
    prediction = reference.copy()
    prediction[0, 0, 0] = 4.0  # inside the mask
    prediction[3, 3, 3] = 100.0  # outside: must not count
    mask = np.zeros(reference.shape, dtype=bool)
    mask[0] = True
    assert metrics.mae(prediction, reference, mask) == pytest.approx(2.0 / 16)
    assert metrics.mse(prediction, reference, mask) == pytest.approx(4.0 / 16)
    assert metrics.nmse(prediction, reference, mask) == pytest.approx(4.0 / (16 * 4.0))
    assert metrics.psnr(prediction, reference, 2.0, mask) == pytest.approx(10 * math.log10(4.0 / 0.25))


def test_mask_restricted_ssim_ignores_outside_errors() -> None:
    rng = np.random.default_rng(1)
    reference = rng.random((24, 24, 24))
    prediction = reference.copy()
    prediction[:, :, 18:] = rng.random((24, 24, 6))  # damage far from the mask
    mask = np.zeros(reference.shape, dtype=bool)
    mask[4:10, 4:10, 4:10] = True
    assert metrics.ssim_3d(prediction, reference, 1.0, mask)["ssim"] == pytest.approx(1.0)
    assert metrics.ssim_3d(prediction, reference, 1.0)["ssim"] < 0.95


def test_bad_arguments() -> None:
    a = np.zeros((8, 8, 8))
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(a, a + 1, 0.0)
    with pytest.raises(ValueError, match="empty"):
        metrics.mae(a, a, np.zeros(a.shape, dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        metrics.mae(a, np.zeros((8, 8, 7)))


def test_ms_ssim_scales_follow_size() -> None:
    rng = np.random.default_rng(2)
    small = rng.random((16, 16, 16))
    value, scales = metrics.ms_ssim_3d(small, small, 1.0)
    assert (value, scales) == (None, 1)
    big = rng.random((24, 48, 48))
    noisy = big + 0.1 * rng.standard_normal(big.shape)
    value, scales = metrics.ms_ssim_3d(noisy, big, 1.0)
    assert scales == 2 and 0 < value < 1
