"""The trust metrics and the calibration against brute-force definitions on small arrays."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from autosr.evaluation.stress.trust_metrics import (
    auroc,
    calibration_table,
    interval_coverage,
    sparsification,
    sparsification_curve,
    spearman,
)
from autosr.inference.calibration import (
    Calibration,
    CalibrationVoxels,
    ErrorTable,
    conformal_quantile,
    fit_calibration,
    load_calibration,
    residual,
    save_calibration,
)

RNG = np.random.default_rng(7)


def test_spearman_matches_scipy_with_ties_and_is_none_when_constant():
    u = RNG.integers(0, 5, 40).astype(float)  # many ties
    e = u + RNG.normal(0, 2, 40)
    assert spearman(u, e) == pytest.approx(spearmanr(u, e).statistic, abs=1e-12)
    assert spearman(np.ones(5), np.arange(5)) is None


def test_calibration_table_is_the_mean_error_of_each_decile_by_brute_force():
    u = RNG.permutation(20).astype(float)
    e = RNG.normal(size=20)
    rows = calibration_table(u, e, bins=4)
    order = sorted(range(20), key=lambda i: u[i])
    for k, row in enumerate(rows):
        members = order[5 * k : 5 * k + 5]
        assert row["voxels"] == 5
        assert row["mean_abs_error"] == pytest.approx(np.mean([abs(e[i]) for i in members]))
        assert row["mean_uncertainty"] == pytest.approx(np.mean([u[i] for i in members]))


def test_sparsification_curve_removes_the_most_uncertain_voxels_first():
    u = RNG.permutation(10).astype(float)
    e = RNG.uniform(0, 3, 10)
    fractions, curve = sparsification_curve(u, e, steps=5)
    for f, value in zip(fractions, curve):
        removed = round(f * 10)
        kept = sorted(range(10), key=lambda i: u[i])[: 10 - removed]
        assert value == pytest.approx(np.mean(e[kept]))
    result = sparsification(e, e, steps=5)  # the error ranks itself: the oracle
    assert result["area"] == pytest.approx(result["oracle_area"])
    assert result["random_area"] == pytest.approx(e.mean())
    assert result["ratio"] == pytest.approx(result["area"] / e.mean())
    assert sparsification(-e, e, steps=5)["ratio"] > 1  # the worst ordering is worse than random


def test_sparsification_error_ratio_is_the_area_to_the_oracle_over_random_by_brute_force():
    u = RNG.permutation(12).astype(float)
    e = RNG.uniform(0, 3, 12)
    steps = 4  # remove 0, 3, 6, 9 of the 12 voxels

    def kept_mean(score, removed):  # the voxels with the smallest score kept
        return np.mean(e[sorted(range(12), key=lambda i: score[i])[: 12 - removed]])

    area = np.mean([kept_mean(u, 3 * k) for k in range(steps)])
    oracle = np.mean([kept_mean(e, 3 * k) for k in range(steps)])
    result = sparsification(u, e, steps=steps)
    assert result["error_ratio"] == pytest.approx((area - oracle) / (e.mean() - oracle))
    assert result["error_ratio"] == pytest.approx(
        (result["ratio"] - result["oracle_ratio"]) / (1 - result["oracle_ratio"])
    )
    assert sparsification(e, e, steps=steps)["error_ratio"] == pytest.approx(0.0)  # the oracle itself
    assert sparsification(-e, e, steps=steps)["error_ratio"] > 1  # worse than chance
    assert sparsification(u, np.ones(12), steps=steps)["error_ratio"] is None  # equal errors: undefined


def test_auroc_is_the_fraction_of_correctly_ordered_pairs_ties_half():
    scores = [0.1, 0.4, 0.4, 0.8, 0.3, 0.9]
    positive = [False, True, False, True, False, True]
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(
            [s for s, y in zip(scores, positive) if y], [s for s, y in zip(scores, positive) if not y]
        )
    ]
    assert auroc(scores, positive) == pytest.approx(np.mean(pairs))
    assert auroc([1, 2], [True, True]) is None


def test_interval_coverage_counts_voxels_inside_the_interval():
    prediction, truth = np.zeros(4), np.array([0.5, -1.0, 2.0, 1.0])
    assert interval_coverage(prediction, truth, np.array([1.0, 1.0, 1.0, 0.5])) == pytest.approx(0.5)


def test_conformal_quantile_is_the_ceil_n_plus_1_rank():
    scores = np.arange(1, 20, dtype=float)  # n = 19: rank ceil(20 * 0.9) = 18
    assert conformal_quantile(scores, 0.9) == 18.0
    assert conformal_quantile(np.arange(5.0), 0.99) == 4.0  # rank beyond n: the largest


def test_error_table_holds_the_mean_error_of_each_cell():
    a, b = RNG.uniform(0, 1, 4000), RNG.uniform(0, 1, 4000)
    error = RNG.uniform(0, 1, 4000) + 2 * a
    table = ErrorTable.fit([a, b], error, bins=2)
    cut_a, cut_b = np.median(a), np.median(b)
    for point_a, point_b in ((0.9, 0.1), (0.1, 0.9), (0.2, 0.2)):
        same_cell = ((a > cut_a) == (point_a > cut_a)) & ((b > cut_b) == (point_b > cut_b))
        value = table.lookup([np.array([point_a]), np.array([point_b])])[0]
        assert value == pytest.approx(error[same_cell].mean(), rel=1e-5)
    uneven = ErrorTable.fit([a, b], error, bins=(4, 1))  # one bin count per feature: b is not split
    cuts_a = np.quantile(a, [0.25, 0.5, 0.75])
    assert len(uneven.means) == 4 and uneven.cuts[1] == ()
    for quarter in range(4):
        members = np.searchsorted(cuts_a, a) == quarter
        assert uneven.means[quarter] == pytest.approx(error[members].mean(), rel=1e-5)
    with pytest.raises(ValueError):
        ErrorTable.fit([a, b], error, bins=(4, 2, 2))


def test_fit_calibration_covers_the_nominal_fraction_and_round_trips(tmp_path):
    cases = []
    for _ in range(3):  # 24000 voxels: about 47 per cell of the 32 x 4 x 4 table
        prediction = RNG.uniform(0, 100, 8000)
        error = RNG.normal(0, 1 + prediction / 20)  # the error grows with the intensity
        edges, local_residual = RNG.uniform(0, 1, 8000), RNG.uniform(-1, 1, 8000)
        cases.append(CalibrationVoxels(prediction, edges, local_residual, RNG.uniform(0, 1, 8000), error))
    calibration = fit_calibration(cases)
    covered = [
        np.abs(c.error) <= calibration.half_width(calibration.expected_error(c.prediction, c.edges, c.residual))
        for c in cases
    ]
    assert np.mean(np.concatenate(covered)) >= 0.9
    expected = calibration.expected_error(np.array([5.0, 95.0]), np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    assert expected[1] > 2 * expected[0]  # the table learned that bright voxels err more
    save_calibration(tmp_path, "folds=0", calibration, "test")
    assert load_calibration(tmp_path, "folds=0") == Calibration.from_json(calibration.to_json())
    assert load_calibration(tmp_path, "folds=1") is None
    assert math.isclose(calibration.scan_expected_error(np.ones(3), 2 * np.full(3, calibration.spread_mean)), 2.0)


def test_residual_is_the_signed_difference_from_the_neighbourhood_mean_by_brute_force():
    image = RNG.normal(0.0, 1.0, (4, 5, 6))
    padded = np.pad(image, 1, mode="symmetric")  # scipy's "reflect": the edge voxel repeated
    expected = np.empty_like(image)
    for z, y, x in itertools.product(*(range(n) for n in image.shape)):
        expected[z, y, x] = image[z, y, x] - padded[z : z + 3, y : y + 3, x : x + 3].mean()
    assert np.allclose(residual(image), expected, atol=1e-6)
    assert np.allclose(residual(np.fromfunction(lambda z, y, x: 2 * z + y - x, (5, 5, 5)))[1:-1, 1:-1, 1:-1], 0.0)
