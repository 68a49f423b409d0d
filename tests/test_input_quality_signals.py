"""The acquisition-quality signals of the per-scan flag (noise level, background, non-uniformity) against
brute-force definitions on small arrays."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from autosr.inference.qc import SIGNAL_RULES, flag_score, noise_level, octant_medians, quality_signals, rule_of

RNG = np.random.default_rng(3)


def _noise_level_by_brute_force(image: np.ndarray, inside: np.ndarray) -> float:
    """The definition, voxel by voxel: the 27-point product of (1, -2, 1) along z, y, x at every voxel whose
    3 x 3 x 3 neighbourhood lies inside; 1.4826 x MAD / sqrt(6^3)."""
    weights = (1.0, -2.0, 1.0)
    residuals = []
    for z, y, x in itertools.product(*(range(1, n - 1) for n in image.shape)):
        if not inside[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2].all():
            continue
        residuals.append(
            sum(
                weights[a] * weights[b] * weights[c] * image[z + a - 1, y + b - 1, x + c - 1]
                for a, b, c in itertools.product(range(3), repeat=3)
            )
        )
    r = np.array(residuals)
    return 1.4826 * float(np.median(np.abs(r - np.median(r)))) / math.sqrt(216.0)


def test_noise_level_matches_the_brute_force_definition():
    image = RNG.normal(0.0, 1.0, (7, 8, 9))
    inside = np.zeros(image.shape, dtype=bool)
    inside[1:7, 0:7, 2:9] = True
    assert noise_level(image, inside) == pytest.approx(_noise_level_by_brute_force(image, inside), rel=1e-12)


@pytest.mark.parametrize(
    ("name", "image", "expected"),
    [
        # the second differences remove anything linear along one axis: ramps, planes, a constant
        ("ramp", np.fromfunction(lambda z, y, x: 3 * z - 2 * y + x, (6, 6, 6)), 0.0),
        ("constant", np.full((5, 5, 5), 7.0), 0.0),
        ("product of ramps", np.fromfunction(lambda z, y, x: z * y + 5 * x, (6, 6, 6)), 0.0),
    ],
)
def test_noise_level_ignores_smooth_intensity(name, image, expected):
    assert noise_level(image, np.ones(image.shape, dtype=bool)) == pytest.approx(expected, abs=1e-9)


def test_noise_level_estimates_the_sd_of_white_noise_and_skips_flat_axes():
    sigma = 0.2
    ramp = np.fromfunction(lambda z, y, x: 0.5 * z + 0.1 * x, (40, 40, 40))
    assert noise_level(ramp + RNG.normal(0.0, sigma, ramp.shape), np.ones(ramp.shape, bool)) == pytest.approx(
        sigma, rel=0.03
    )
    flat = RNG.normal(0.0, sigma, (1, 200, 200))  # one slice: the filter runs along y and x only
    assert noise_level(flat, np.ones(flat.shape, bool)) == pytest.approx(sigma, rel=0.03)
    assert noise_level(flat, np.zeros(flat.shape, bool)) == 0.0


def test_octant_medians_split_the_mask_at_its_centroid():
    image = RNG.normal(0.0, 1.0, (4, 6, 5))
    inside = RNG.uniform(size=image.shape) > 0.3
    index = np.nonzero(inside)
    centroid = [i.mean() for i in index]
    expected = []
    for code in range(8):
        upper = [(code >> axis) & 1 for axis in range(3)]
        chosen = np.all([(index[a] >= centroid[a]) == bool(upper[a]) for a in range(3)], axis=0)
        expected.append(np.median(image[inside][chosen]))
    assert np.allclose(octant_medians(image, inside), expected, rtol=0, atol=0)


def test_quality_signals_background_and_nonuniformity():
    raw = np.zeros((12, 12, 12))
    foreground = np.zeros(raw.shape, dtype=bool)
    foreground[4:8, 4:8, 4:8] = True
    raw[foreground] = 100.0
    raw[0, :, :] = 50.0  # a ghost in the first slice, outside the subject region (2 voxels around it)
    normalized = (raw - 100.0) / 10.0
    values = quality_signals(normalized, raw, foreground, 0)
    gap = [np.maximum(np.maximum(4 - i, i - 7), 0) for i in np.indices(raw.shape)]  # voxels to the cube per axis
    outside = np.sqrt(sum(g * g for g in gap)) > 2  # beyond the subject region (the cube grown by 2, Euclidean)
    assert values["background_c0"] == pytest.approx(np.abs(raw[outside]).mean() / 100.0)
    assert values["background_c0"] > 0  # the ghost slice lies outside
    assert values["nonuniformity_c0"] == 0.0 and values["noise_level_c0"] == 0.0
    biased = normalized + np.where(np.arange(12) >= 6, 1.0, 0.0)[None, None, :]  # one half brighter by 1 SD
    assert quality_signals(biased, raw, foreground, 0)["nonuniformity_c0"] == pytest.approx(0.5)
    tight = quality_signals(normalized[4:8, 4:8, 4:8], raw[4:8, 4:8, 4:8], foreground[4:8, 4:8, 4:8], 0)
    assert "background_c0" not in tight  # no voxel outside the subject: nothing to measure


def test_quality_signals_have_rules():
    assert rule_of("noise_level_c0") is SIGNAL_RULES["noise_level"] and SIGNAL_RULES["noise_level"].sides == "both"
    assert rule_of("background_c2") is SIGNAL_RULES["background"]
    assert rule_of("nonuniformity_c0") is SIGNAL_RULES["nonuniformity"]


BOUNDS = {  # training ranges (cv_low, cv_high); flag_score needs no more
    "noise_level_c0": {"cv_low": 1.0, "cv_high": 2.0},  # log rule, margin max(0.5 log 2, log 1.5) = log 1.5
    "intensity_scale_c0": {"cv_low": 10.0, "cv_high": 10.0},  # log rule, margin log 3; not the network's input
    "intensity_distance_c0": {"cv_low": 0.0, "cv_high": 0.1},  # linear, margin max(0.05, 0.15) = 0.15
}


@pytest.mark.parametrize(
    ("values", "score", "shift"),
    [
        ({"noise_level_c0": 1.5, "intensity_scale_c0": 10.0, "intensity_distance_c0": 0.05}, 0.0, 0.0),
        ({"noise_level_c0": 2.0 * 1.5**2}, 2.0, 2.0),  # two margins above
        ({"noise_level_c0": 0.5}, math.log(2) / math.log(1.5), math.log(2) / math.log(1.5)),  # both sides
        ({"intensity_scale_c0": 10.0 * 3**3}, 3.0, 0.0),  # x27 units: the network sees the same input
        ({"intensity_distance_c0": 0.4, "noise_level_c0": 2.0 * 1.5}, 2.0, 2.0),  # the farthest signal counts
        ({"intensity_distance_c0": -5.0}, 0.0, 0.0),  # a one-sided signal below its range
    ],
)
def test_flag_score_and_input_shift_in_margins(values, score, shift):
    assert flag_score(values, BOUNDS) == pytest.approx(score, rel=1e-12, abs=1e-12)
    assert flag_score(values, BOUNDS, network_input_only=True) == pytest.approx(shift, rel=1e-12, abs=1e-12)
