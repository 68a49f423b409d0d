"""The planner's decision rules, on fingerprints written by hand (no data, no GPU)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from autosr.errors import AutosrError
from autosr.formats.dataset_spec import parse_dataset_spec
from autosr.network import build_network
from autosr.network.memory import activation_memory
from autosr.planning.memory_model import BYTES_PER_ACTIVATION, counted_activations, estimate_training_bytes
from autosr.planning.planner import plan_experiment

SPEC = parse_dataset_spec(
    {
        "name": "X",
        "channel_names": {"0": "T1w_3T"},
        "target_name": "T1w_7T",
        "target_modality": "MR",
        "file_ending": ".nii.gz",
    }
)


def fingerprint(spacing_zyx, shape_zyx, num_cases=20, jitter=0.0, seed=0, input_spacing_zyx=None):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(num_cases):
        spacing = [s * (1 + rng.uniform(-jitter, jitter)) for s in spacing_zyx]
        cases.append(
            {
                "case_id": f"c{i}",
                "input_spacing_zyx": list(input_spacing_zyx or spacing),
                "target_spacing_zyx": spacing,
                "target_shape_zyx": list(shape_zyx),
                "cropped_shape_zyx": list(shape_zyx),
            }
        )
    stats = {"p00_5": 0.0, "p99_5": 1000.0, "mean": 500.0, "std": 200.0, "median": 500.0}
    return {
        "dataset_name": "Dataset900_X",
        "num_training_cases": num_cases,
        "cases": cases,
        "intensity_statistics": {"input_channels": {"0": stats}, "target": stats},
        "median_target_mean_in_mask": 500.0,
        "median_target_std_in_mask": 200.0,
    }


def test_isotropic_and_thick_slice_get_different_plans():
    iso = plan_experiment(fingerprint((1.0, 1.0, 1.0), (160, 192, 160)), SPEC).configuration("3d_fullres")
    thick = plan_experiment(fingerprint((4.0, 1.0, 1.0), (40, 192, 160)), SPEC).configuration("3d_fullres")
    assert iso.spacing_zyx == (1.0, 1.0, 1.0)
    assert thick.spacing_zyx == (4.0, 1.0, 1.0)
    assert iso.network["strides"][1] == [2, 2, 2]
    assert iso.network["kernel_sizes"][0] == [3, 3, 3]
    # thick slices: convolve and pool in-plane first
    assert thick.network["kernel_sizes"][0] == [1, 3, 3]
    assert thick.network["strides"][1] == [1, 2, 2]
    assert thick.resampling["input_order"] == 1  # no B-spline ringing across thick slices


def test_anisotropy_rule_takes_a_finer_percentile_on_the_coarse_axis():
    fp = fingerprint((4.0, 1.0, 1.0), (40, 192, 160))
    for i, case in enumerate(fp["cases"]):
        case["target_spacing_zyx"][0] = 3.0 if i < 5 else 5.0  # median 5, 10th percentile 3
    plans = plan_experiment(fp, SPEC)
    assert plans.raw["anisotropy_rule_applied"]
    assert plans.configuration("3d_fullres").spacing_zyx[0] == pytest.approx(3.0)


@pytest.mark.parametrize(
    "spacing,shape",
    [((1.0, 1.0, 1.0), (160, 192, 160)), ((4.0, 0.8, 0.8), (40, 256, 256)), ((2.0, 2.0, 2.0), (80, 96, 80))],
)
def test_more_memory_never_shrinks_patch_or_batch_and_plans_fit(spacing, shape):
    fp = fingerprint(spacing, shape)
    previous = None
    for budget in (2, 4, 8, 16, 32):
        plans = plan_experiment(fp, SPEC, gpu_memory_gb=budget, configurations=["2d", "3d_fullres"])
        current = {}
        for name in ("2d", "3d_fullres"):
            c = plans.configuration(name)
            estimate = estimate_training_bytes(c.network, c.patch_size, c.batch_size, 1)
            assert estimate <= budget * 1024**3, (name, budget)
            total = np.prod([s for s in np.prod(c.network["strides"], axis=0)])
            assert all(p % s == 0 for p, s in zip(c.patch_size, np.prod(c.network["strides"], axis=0))), total
            current[name] = (c.patch_size, c.batch_size)
        if previous is not None:
            for name in current:
                assert all(a >= b for a, b in zip(current[name][0], previous[name][0])), (name, budget)
                assert current[name][1] >= previous[name][1], (name, budget)
        previous = current


def test_lowres_configuration_appears_only_when_the_patch_covers_little():
    small = plan_experiment(fingerprint((1.0, 1.0, 1.0), (64, 64, 64)), SPEC, gpu_memory_gb=8)
    large = plan_experiment(fingerprint((0.5, 0.5, 0.5), (400, 480, 400)), SPEC, gpu_memory_gb=8)
    assert "3d_lowres" not in small.configuration_names
    assert "3d_lowres" in large.configuration_names
    low, full = large.configuration("3d_lowres"), large.configuration("3d_fullres")
    assert all(a > b for a, b in zip(low.spacing_zyx, full.spacing_zyx))
    assert low.data_identifier != full.data_identifier


def test_unknown_configuration_and_bad_budget_are_clear():
    with pytest.raises(AutosrError, match="unknown configuration.*3d_huge"):
        plan_experiment(fingerprint((1, 1, 1), (32, 32, 32)), SPEC, configurations=["3d_huge"])
    with pytest.raises(AutosrError, match="gpu-memory-gb"):
        plan_experiment(fingerprint((1, 1, 1), (32, 32, 32)), SPEC, gpu_memory_gb=0)


def test_normalization_follows_modality_and_overrides():
    ct_spec = parse_dataset_spec(
        {
            "name": "X",
            "channel_names": {"0": "MR", "1": "CT_prior"},
            "target_name": "CT",
            "target_modality": "CT",
            "file_ending": ".nii.gz",
            "normalization": {"0": "none"},
        }
    )
    fp = fingerprint((1, 1, 1), (32, 32, 32))
    fp["intensity_statistics"]["input_channels"]["1"] = fp["intensity_statistics"]["input_channels"]["0"]
    norm = plan_experiment(fp, ct_spec).raw["normalization"]
    assert [e["scheme"] for e in norm["input"]] == ["none", "ct"]
    assert norm["target"]["scheme"] == "ct" and norm["target"]["clip_low"] == 0.0
    mr = plan_experiment(fp, SPEC).raw["normalization"]["target"]
    assert mr["scheme"] == "zscore" and mr["export_mean"] == 500.0


@pytest.mark.parametrize("upsampling", ["interp_conv", "transposed"])
def test_memory_model_matches_the_real_network(upsampling):
    """The counted activations times BYTES_PER_ACTIVATION bound the bytes autograd really saves (fp32, CPU)."""
    torch.set_num_threads(1)
    for features, strides, patch in itertools.islice(
        [
            ([8, 16, 32], [[1, 1, 1], [2, 2, 2], [2, 2, 2]], [32, 32, 32]),
            ([8, 16, 32, 64], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], [16, 32, 32]),
        ],
        None,
    ):
        n = len(features)
        plan = {
            "architecture": "PlainConvUNet",
            "dims": 3,
            "features_per_stage": features,
            "kernel_sizes": [[3, 3, 3]] * n,
            "strides": strides,
            "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1),
            "upsampling": upsampling,
            "deep_supervision": True,
        }
        measured = activation_memory(build_network(plan, 1, 1), [1, 1, *patch])["saved_for_backward_bytes"]
        modelled = counted_activations(patch, features, strides, [2] * n, [2] * (n - 1)) * BYTES_PER_ACTIVATION
        assert 0.6 * modelled <= measured <= modelled


@pytest.mark.parametrize(
    "target,input_spacing,expected",
    [
        ((1.0, 1.0, 1.0), (4.0, 1.0, 1.0), [1, 2]),  # thick axial input: coronal and sagittal planes hold z
        ((1.0, 1.0, 1.0), (1.0, 1.0, 5.0), [0, 1]),  # thick sagittal input: the planes must hold x
        ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), [0]),  # contrast synthesis on isotropic grids: axial
        ((4.0, 1.0, 1.0), (4.0, 1.0, 1.0), [0]),  # both thick alike: slice along the thick axis
        ((1.0, 0.7, 1.0), (4.0, 0.7, 1.0), [1]),  # unequal in-plane spacings: the finer plane axis only
    ],
)
def test_2d_slices_contain_the_axis_to_be_resolved(target, input_spacing, expected):
    plans = plan_experiment(fingerprint(target, (96, 128, 96), input_spacing_zyx=input_spacing), SPEC)
    config = plans.configuration("2d")
    assert list(config.slice_axes) == expected
    in_plane = config.in_plane_axes(expected[0])
    assert config.patch_spacing == tuple(config.spacing_zyx[a] for a in in_plane)


def test_no_low_resolution_configuration_for_resolution_enhancement():
    big = (320, 384, 320)  # a full-resolution patch covers far less than a quarter of this volume
    contrast = plan_experiment(fingerprint((0.7, 0.7, 0.7), big), SPEC, gpu_memory_gb=4)
    enhance = plan_experiment(
        fingerprint((0.7, 0.7, 0.7), big, input_spacing_zyx=(2.1, 0.7, 0.7)), SPEC, gpu_memory_gb=4
    )
    assert "3d_lowres" in contrast.configuration_names
    assert "3d_lowres" not in enhance.configuration_names


def test_residual_learning_is_planned_for_2d_resolution_enhancement_only():
    enhance = plan_experiment(fingerprint((1.0, 1.0, 1.0), (96, 128, 96), input_spacing_zyx=(4.0, 1.0, 1.0)), SPEC)
    contrast = plan_experiment(fingerprint((1.0, 1.0, 1.0), (96, 128, 96)), SPEC)
    assert enhance.configuration("2d").network["residual"] is True
    assert enhance.configuration("3d_fullres").network["residual"] is False  # measured worse in 3D
    for name in ("2d", "3d_fullres"):
        assert contrast.configuration(name).network["residual"] is False
        assert contrast.configuration(name).network["norm"] == "batch"


def test_2d_batch_cap_counts_the_planes_of_a_small_dataset():
    """Six real thick-slice slabs (116 x 41 x 81 at 2 mm, 6 mm slices along z): 2d slices along y and x.
    The cap is 5% of the training planes (6 x (41 + 81) = 732, so 36), not 3D voxels over a padded plane."""
    from autosr.planning.planner import MAX_BATCH_COVERAGE, batch_coverage_cap

    shape, patch = [116, 41, 81], [128, 96]  # the patch is larger than either plane (padded)
    assert batch_coverage_cap(patch, shape, 6, [1, 2]) == int(MAX_BATCH_COVERAGE * 6 * (41 + 81)) == 36
    assert batch_coverage_cap([64, 64], [10, 256, 256], 4, [0]) == int(MAX_BATCH_COVERAGE * 4 * 10 * 16)  # 16 tiles
    assert batch_coverage_cap([8, 8, 8], [16, 16, 16], 1, None) == 2  # 3D unchanged: voxels over patch voxels
    plans = plan_experiment(
        fingerprint((2.0, 2.0, 2.0), shape, num_cases=6, input_spacing_zyx=(6.0, 2.0, 2.0)), SPEC, gpu_memory_gb=8
    )
    configuration = plans.configuration("2d")
    assert (configuration.patch_size, configuration.raw["slice_axes"]) == ((128, 96), [1, 2])
    # 8 GB hold more: the cap decides (the old rule, 3D voxels over the padded patch, planned 9)
    assert configuration.batch_size == 36


def test_resolution_enhancement_of_one_contrast_exports_at_the_input_level():
    """Thick-slice MR -> MR: the target entry says `export_from_input`; a prediction is exported with its own
    input's mean/std. Another contrast (3T -> 7T names), or the same names without enhancement: the dataset's."""
    from autosr.preprocessing.normalization import target_export_parameters

    same = parse_dataset_spec(
        {
            "name": "X",
            "channel_names": {"0": "MR"},
            "target_name": "MR",
            "target_modality": "MR",
            "file_ending": ".nii.gz",
        }
    )
    thick = fingerprint((1.0, 1.0, 1.0), (40, 64, 64), num_cases=6, input_spacing_zyx=(3.0, 1.0, 1.0))
    iso = fingerprint((1.0, 1.0, 1.0), (40, 64, 64), num_cases=6)
    target = plan_experiment(thick, same, configurations=["2d"]).raw["normalization"]["target"]
    assert target["export_from_input"] is True
    assert "export_from_input" not in plan_experiment(thick, SPEC, configurations=["2d"]).raw["normalization"]["target"]
    assert "export_from_input" not in plan_experiment(iso, same, configurations=["2d"]).raw["normalization"]["target"]
    scan = [{"scheme": "zscore", "mean": 71.0, "std": 20.0}]
    assert target_export_parameters(target, scan) == {"scheme": "zscore", "mean": 71.0, "std": 20.0}
    dataset_level = {"scheme": "zscore", "mean": 500.0, "std": 200.0}
    assert target_export_parameters({**target, "export_from_input": False}, scan) == dataset_level


def test_resolution_enhancement_target_is_normalized_in_its_inputs_units():
    """With `export_from_input` the training target is z-scored with its input's mean/std, so normalizing and
    exporting are exact inverses (the sharper target keeps its larger spread); without it, its own."""
    from autosr.preprocessing.normalization import invert_image, normalize_target, target_export_parameters

    rng = np.random.default_rng(0)
    target = rng.normal(100.0, 30.0, (4, 5, 6)).astype(np.float32)
    inputs = [{"scheme": "zscore", "mean": 98.0, "std": 24.0}]
    entry = {"scheme": "zscore", "export_mean": 500.0, "export_std": 200.0, "export_from_input": True}
    normalized, params = normalize_target(target, entry, None, inputs)
    np.testing.assert_allclose(normalized, (target - 98.0) / 24.0, rtol=1e-6)
    assert normalized.std() > 1.1  # the target's own spread, not rescaled to 1
    back = invert_image(normalized, target_export_parameters(entry, inputs))
    np.testing.assert_allclose(back, target, rtol=1e-5)
    own, own_params = normalize_target(target, {**entry, "export_from_input": False}, None, inputs)
    assert abs(own_params["mean"] - float(target.mean())) < 1e-3 and abs(float(own.std()) - 1.0) < 1e-3


def test_ct_resolution_enhancement_puts_the_target_in_its_inputs_units():
    """Thick-slice CT -> CT: the target entry takes the input's mean/std (its own clip range stays), so a
    residual network starts from the identity; CT -> CT at the same resolution keeps the target's own."""
    ct = {
        "name": "X",
        "channel_names": {"0": "CT"},
        "target_name": "CT",
        "target_modality": "CT",
        "file_ending": ".nii.gz",
    }
    thick = fingerprint((1.0, 1.0, 1.0), (40, 64, 64), num_cases=6, input_spacing_zyx=(3.0, 1.0, 1.0))
    thick["intensity_statistics"]["target"] = {"p00_5": -200.0, "p99_5": 1100.0, "mean": 50.0, "std": 180.0}
    thick["intensity_statistics"]["input_channels"]["0"] = {"p00_5": -150.0, "p99_5": 830.0, "mean": 51.0, "std": 144.0}
    plans = plan_experiment(thick, parse_dataset_spec(ct), configurations=["2d"]).raw["normalization"]
    assert (plans["target"]["mean"], plans["target"]["std"]) == (51.0, 144.0)
    assert (plans["target"]["clip_low"], plans["target"]["clip_high"]) == (-200.0, 1100.0)
    iso = fingerprint((1.0, 1.0, 1.0), (40, 64, 64), num_cases=6)
    iso["intensity_statistics"] = thick["intensity_statistics"]
    own = plan_experiment(iso, parse_dataset_spec(ct), configurations=["2d"]).raw["normalization"]["target"]
    assert (own["mean"], own["std"]) == (50.0, 180.0)
