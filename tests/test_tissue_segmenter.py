"""The built-in tissue segmenter (bias field + MRF prior) against known truth, beside the quick
intensity-only mixture; and the true tissue label maps of the synthetic brain generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autosr.cli import main
from autosr.evaluation.tissue_segmenter import kmeans_1d, segment_tissue, segment_tissue_intensity_only
from autosr.io import Geometry, read_image, write_image


def nested_shells(shape: tuple[int, int, int] = (36, 40, 34)) -> tuple[np.ndarray, np.ndarray]:
    """(truth labels 0-3, region): a 'brain' of three nested ellipsoidal classes with a wavy boundary."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids)) * (1 + 0.08 * np.sin(5 * grids[0]) * np.cos(4 * grids[2]))
    truth = np.zeros(shape, np.uint8)
    truth[r < 0.95] = 1
    truth[r < 0.8] = 2
    truth[r < 0.5] = 3
    return truth, truth > 0


def mean_dice(truth: np.ndarray, labels: np.ndarray) -> float:
    return float(
        np.mean(
            [2 * ((truth == k) & (labels == k)).sum() / ((truth == k).sum() + (labels == k).sum()) for k in (1, 2, 3)]
        )
    )


def test_bias_and_noise_robustness_beats_intensity_only() -> None:
    truth, region = nested_shells()
    rng = np.random.default_rng(0)
    clean = np.choose(truth, [0.0, 150.0, 550.0, 1000.0])
    z = np.linspace(-1, 1, truth.shape[0])[:, None, None]
    biased = clean * (1 + 0.4 * z) + rng.normal(0, 150, truth.shape) * region  # +-40% bias, strong noise
    spacing = (1.0, 1.0, 1.0)
    new = segment_tissue(biased, spacing, region)
    old = segment_tissue_intensity_only(biased, region)
    assert mean_dice(truth, new) > 0.93 and mean_dice(truth, new) > mean_dice(truth, old) + 0.1
    without_prior = segment_tissue(biased, spacing, region, beta=0.0)
    without_bias = segment_tissue(biased, spacing, region, bias_degree=0)
    assert mean_dice(truth, new) > max(mean_dice(truth, without_prior), mean_dice(truth, without_bias)) + 0.03
    assert mean_dice(truth, segment_tissue(clean, spacing, region)) > 0.99
    assert set(np.unique(new[~region])) == {0}


def test_otsu_region_anisotropic_grid_and_tiny_inputs() -> None:
    truth, region = nested_shells((20, 40, 40))
    image = np.choose(truth, [0.0, 150.0, 550.0, 1000.0]) + np.random.default_rng(1).normal(0, 20, truth.shape) * region
    labels = segment_tissue(image, (2.0, 1.0, 1.0))  # no mask: the foreground by Otsu
    assert mean_dice(truth, labels) > 0.9
    assert not segment_tissue(np.zeros((4, 4, 4)), (1, 1, 1), np.zeros((4, 4, 4), bool)).any()
    assert kmeans_1d(np.array([1.0, 1.1, 5.0, 5.2, 9.0, 9.1]), 3) == pytest.approx([1.05, 5.1, 9.05])


def test_segment_tissue_command_keeps_geometry(tmp_path: Path) -> None:
    truth, region = nested_shells((16, 18, 20))
    geometry = Geometry((1.5, 1.0, 0.8), (3.0, -2.0, 7.0), (0, 1, 0, 1, 0, 0, 0, 0, -1), truth.shape)
    write_image(np.choose(truth, [0.0, 150.0, 550.0, 1000.0]), geometry, tmp_path / "image one.nii.gz")
    write_image(region, geometry, tmp_path / "mask.nii.gz", dtype=np.uint8)
    code = main(["segment-tissue", str(tmp_path / "image one.nii.gz"), str(tmp_path / "out.nii.gz"),
                 "--mask", str(tmp_path / "mask.nii.gz")])  # fmt: skip
    labels, written = read_image(tmp_path / "out.nii.gz")
    assert code == 0 and written == read_image(tmp_path / "image one.nii.gz")[1] and np.array_equal(labels, truth)
    write_image(np.zeros(truth.shape), geometry, tmp_path / "empty.nii.gz", dtype=np.uint8)
    args = ["segment-tissue", str(tmp_path / "image one.nii.gz"), str(tmp_path / "x.nii.gz")]
    assert main([*args, "--mask", str(tmp_path / "empty.nii.gz")]) == 2


def test_synthetic_brain_writes_true_tissue_labels(tmp_path: Path) -> None:
    from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset

    settings = SyntheticBrainSettings(num_train=1, num_test=1, target_spacing_mm=6.0, seed=2, tissue_labels=True)
    folder = make_synthetic_brain_dataset(tmp_path, 951, settings=settings, num_processes=1)
    for split, case in (("Tr", "brain_000"), ("Ts", "brain_001")):
        labels, geometry = read_image(folder / f"labels{split}" / f"{case}.nii.gz")
        mask, mask_geometry = read_image(folder / f"masks{split}" / f"{case}.nii.gz")
        target, _ = read_image(folder / f"targets{split}" / f"{case}.nii.gz")
        assert geometry == mask_geometry and np.array_equal(labels > 0, mask > 0)  # the same deformation
        assert set(np.unique(labels)) == {0, 1, 2, 3}
        # the classes are ordered like the target's tissue intensities (csf < gm < wm)
        medians = [np.median(target[labels == k]) for k in (1, 2, 3)]
        assert medians == sorted(medians)
