"""Tissue-segmentation agreement: the EM mixture, Dice, CT thresholds and user label maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_case
from autosr.evaluation import tissue


def test_em_recovers_three_classes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(100, 10, 3000), rng.normal(400, 20, 5000), rng.normal(800, 15, 2000)])
    model = tissue.fit_gaussian_mixture(values)
    assert np.allclose(model.means, (100, 400, 800), atol=5)
    assert np.allclose(model.weights, (0.3, 0.5, 0.2), atol=0.02)
    assert np.allclose(model.stds, (10, 20, 15), rtol=0.15)


def test_dice_and_volume_difference() -> None:
    a = np.zeros(10, dtype=bool)
    a[:4] = True
    b = np.zeros(10, dtype=bool)
    b[2:8] = True
    assert tissue.dice(a, b) == pytest.approx(2 * 2 / 10)
    assert tissue.relative_volume_difference(a, b) == pytest.approx((6 - 4) / 4)
    assert tissue.dice(np.zeros(3, bool), np.zeros(3, bool)) is None


def test_self_agreement_is_one_and_blur_lowers_it() -> None:
    _, _, target, _, mask = make_phantom_case(case_seed=4)
    region = mask > 0
    same = tissue.tissue_agreement(target, target, region, "MR")
    assert all(same[f"tissue_dice_{c}"] == 1.0 for c in tissue.MR_CLASS_NAMES)
    assert all(same[f"tissue_rvd_{c}"] == 0.0 for c in tissue.MR_CLASS_NAMES)
    blurred = ndimage.gaussian_filter(target, 1.5)
    worse = tissue.tissue_agreement(blurred, target, region, "MR")
    assert all(worse[f"tissue_dice_{c}"] < 0.99 for c in tissue.MR_CLASS_NAMES)


def test_ct_thresholds() -> None:
    image = np.array([-1000.0, -600.0, -400.0, 0.0, 299.0, 300.0, 1500.0]).reshape(1, 1, 7)
    labels = tissue.segment_ct(image, np.ones(image.shape, bool))
    assert labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    _, _, ct, _, mask = make_phantom_case(PhantomSettings(modality="CT"), case_seed=1)
    result = tissue.tissue_agreement(ct, ct, mask > 0, "CT")
    assert result["tissue_dice_bone"] == 1.0 and result["tissue_dice_soft"] == 1.0


def test_user_label_maps() -> None:
    a = np.zeros((4, 4, 4))
    a[:2] = 1
    a[2:, :2] = 3
    b = a.copy()
    b[2:, 2:] = 3
    result = tissue.label_agreement(a, b)
    assert set(result) == {"seg_dice_1", "seg_dice_3"}
    assert result["seg_dice_1"] == 1.0
    assert result["seg_dice_3"] == pytest.approx(2 * 8 / (8 + 16))
