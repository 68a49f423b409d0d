"""The experiment planner: from a fingerprint to plans.json, by explicit rules (documentation/planning.md).

1. Target spacing: the median of the training targets' spacings per axis. Anisotropy rule: when the
   coarsest median axis is more than `ANISOTROPY_THRESHOLD` times the finest, that axis takes the
   `ANISOTROPIC_PERCENTILE`th percentile of its spacings instead, so a few thick-slice scans do not make
   everyone's grid coarser.
2. Topology for a patch: stages pool an axis (stride 2) while its feature map stays at least
   2 x `MIN_FEATURE_MAP` voxels and its current spacing is at most twice the finest current spacing; so a
   thick-slice axis is pooled only once the in-plane axes have caught up. Kernels are 3 along an axis,
   1 where its current spacing is more than twice the finest (convolve in-plane first). Features start at
   `BASE_FEATURES` and double per stage up to `MAX_FEATURES[dims]`. At most `MAX_STAGES[dims]` stages.
3. Patch and batch: the patch starts at the median (cropped, resampled) shape, rounded up to the network's
   total stride; while the memory model says a batch of 2 exceeds the budget, the axis whose patch is
   largest relative to the median shape shrinks by one stride unit (topology recomputed each time). When
   the patch is the whole median shape, the batch grows while it fits, but a batch never covers more than
   `MAX_BATCH_COVERAGE` of all training voxels (2d: of all training planes along its slicing axes);
   at least `MIN_BATCH_SIZE`.
4. Configurations: `3d_fullres`, `2d` (patches are slices of the same preprocessed data, along the axes
   in `slice_axes`: `two_d_slice_axes`) and `3d_lowres` when the full-resolution patch covers less than
   `LOWRES_TRIGGER_COVERAGE` of the median volume: its spacing grows by `LOWRES_SPACING_STEP` until the
   patch covers at least that fraction. `3d_lowres` is never planned for resolution enhancement (the target
   finer than the input on some axis): without a cascade it would predict coarser than the input it was
   given (documentation/planning.md).
5. Normalization per input channel and for the target from the modality/channel names, with dataset.json
   `normalization` overrides ({"0": "zscore", "target": "ct"}). Resolution enhancement of one contrast
   exports each z-scored prediction at its own input's intensity level (`export_from_input`).
6. Network: batch normalization (tile-invariant predictions, `DEFAULT_NORM`); residual learning (the
   network predicts the correction to its resampled input) for the `2d` configuration of a resolution
   enhancement task, where it measured level or better.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from autosr import __version__
from autosr.errors import AutosrError
from autosr.formats.dataset_spec import DatasetSpec
from autosr.formats.plans import CONFIGURATION_NAMES, Plans, validate_plans_dict
from autosr.network.build import DEFAULT_UPSAMPLING, total_stride
from autosr.paths import DEFAULT_PLANS_NAME
from autosr.planning.memory_model import estimate_training_bytes
from autosr.preprocessing.normalization import (
    NORMALIZATION_SCHEMES,
    exports_with_dataset_scale,
    input_scheme_names,
    target_scheme_name,
)

PLANS_NAME = DEFAULT_PLANS_NAME
ANISOTROPY_THRESHOLD = 3.0
ANISOTROPIC_PERCENTILE = 10
MIN_FEATURE_MAP = 4
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
MAX_STAGES = {2: 7, 3: 6}
MIN_BATCH_SIZE = 2
MAX_BATCH_COVERAGE = 0.05
LOWRES_TRIGGER_COVERAGE = 0.25
LOWRES_SPACING_STEP = 1.5
LOWRES_MAX_STEPS = 6
DEFAULT_GPU_MEMORY_GB = 8.0
# An input axis counts as the coarse axis of a resolution-enhancement task when its input/target spacing
# ratio is this many times the smallest ratio (a 3 mm -> 1 mm axis beside 1 mm -> 1 mm in-plane axes).
SR_ANISOTROPY_RATIO = 1.5
# Input spacing at most this fraction coarser than the target's on every axis: not resolution enhancement.
SR_MIN_RATIO = 1.2
# Network normalization written into new plans: batch norm, whose fixed statistics at inference make the
# prediction independent of the tiling. Measured against instance, group and no normalization at equal
# budget on synthetic brains (2d) and phantoms (3d): documentation/benchmark.md, "Network normalization".
DEFAULT_NORM = "batch"


def planned_spacing(fingerprint: dict) -> tuple[list[float], bool]:
    """Full-resolution target spacing (z, y, x) and whether the anisotropy rule was applied."""
    spacings = np.array([c["target_spacing_zyx"] for c in fingerprint["cases"]], dtype=np.float64)
    spacing = np.median(spacings, axis=0)
    anisotropic = spacing.max() / spacing.min() > ANISOTROPY_THRESHOLD
    if anisotropic:
        axis = int(np.argmax(spacing))
        spacing[axis] = np.percentile(spacings[:, axis], ANISOTROPIC_PERCENTILE)
    return [float(s) for s in spacing], bool(anisotropic)


def input_target_ratios(fingerprint: dict, spacing_zyx: list[float]) -> list[float]:
    """Median input spacing / planned spacing per (canonical) axis: how much finer the output must be."""
    inputs = np.median(np.array([c["input_spacing_zyx"] for c in fingerprint["cases"]], dtype=np.float64), axis=0)
    return [float(i / s) for i, s in zip(inputs, spacing_zyx)]


def is_resolution_enhancement(fingerprint: dict, spacing_zyx: list[float]) -> bool:
    """The target is planned finer than the input on some axis."""
    return max(input_target_ratios(fingerprint, spacing_zyx)) >= SR_MIN_RATIO


def two_d_slice_axes(fingerprint: dict, spacing_zyx: list[float]) -> list[int]:
    """Axes the `2d` configuration slices along (canonical axis order).

    A 2D network can only learn what its slices show. When one input axis is much coarser than the others
    relative to the target (thick slices to be resolved), the slices must contain that axis: they are taken
    along the other axes, both of them when their planned spacings are equal (two planes, averaged at
    prediction). Otherwise the slices are taken along the planned grid's coarsest axis (the in-plane view of
    thick-slice data, as for any 2D network), or along z for isotropic grids.
    """
    ratios = input_target_ratios(fingerprint, spacing_zyx)
    coarse = int(np.argmax(ratios))
    if ratios[coarse] >= SR_MIN_RATIO and ratios[coarse] >= SR_ANISOTROPY_RATIO * min(ratios):
        others = [a for a in range(3) if a != coarse]
        a, b = others
        if abs(spacing_zyx[a] - spacing_zyx[b]) <= 1e-3 * max(spacing_zyx[a], spacing_zyx[b]):
            return others
        return [a if spacing_zyx[a] < spacing_zyx[b] else b]
    if max(spacing_zyx) > 1.0001 * min(spacing_zyx):
        return [int(np.argmax(spacing_zyx))]
    return [0]


def median_shape_at(fingerprint: dict, spacing_zyx: list[float]) -> list[int]:
    """Median cropped shape of the cases once resampled to `spacing_zyx`."""
    shapes = []
    for c in fingerprint["cases"]:
        extent = np.array(c["cropped_shape_zyx"]) * np.array(c["target_spacing_zyx"])
        shapes.append(np.maximum(1, np.round(extent / np.array(spacing_zyx))))
    return [int(v) for v in np.median(np.array(shapes), axis=0)]


def topology(patch_size: list[int], spacing: list[float], dims: int) -> dict[str, Any]:
    """Strides, kernels and features for a patch at a spacing, by the rules in the module docstring."""
    current_spacing, current_size = list(spacing), list(patch_size)

    def kernel() -> list[int]:
        finest = min(current_spacing)
        return [3 if s <= 2 * finest else 1 for s in current_spacing]

    strides, kernels = [[1] * dims], [kernel()]
    while len(strides) < MAX_STAGES[dims]:
        finest = min(current_spacing)
        stride = [
            2 if (size >= 2 * MIN_FEATURE_MAP and s <= 2 * finest) else 1
            for size, s in zip(current_size, current_spacing)
        ]
        if all(s == 1 for s in stride):
            break
        current_size = [size // st for size, st in zip(current_size, stride)]
        current_spacing = [s * st for s, st in zip(current_spacing, stride)]
        strides.append(stride)
        kernels.append(kernel())
    n = len(strides)
    features = [min(BASE_FEATURES * 2**i, MAX_FEATURES[dims]) for i in range(n)]
    return {
        "architecture": "PlainConvUNet",
        "dims": dims,
        "features_per_stage": features,
        "kernel_sizes": kernels,
        "strides": strides,
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "upsampling": DEFAULT_UPSAMPLING,
        "deep_supervision": True,
        "norm": DEFAULT_NORM,
    }


def _round_up(patch: list[int], stride: list[int]) -> list[int]:
    return [int(np.ceil(p / s) * s) for p, s in zip(patch, stride)]


def fit_patch_and_network(
    median_shape: list[int], spacing: list[float], dims: int, budget_bytes: float, in_channels: int
) -> tuple[list[int], dict[str, Any]]:
    """The largest patch (from the median shape down) whose network fits the budget at batch 2."""
    patch = [max(1, s) for s in median_shape]
    while True:
        network = topology(patch, spacing, dims)
        rounded = _round_up(patch, total_stride(network))
        network = topology(rounded, spacing, dims)
        rounded = _round_up(rounded, total_stride(network))
        if estimate_training_bytes(network, rounded, MIN_BATCH_SIZE, in_channels) <= budget_bytes:
            return rounded, network
        stride = total_stride(network)
        ratios = [p / m for p, m in zip(patch, median_shape)]
        order = sorted(range(dims), key=lambda a: (ratios[a], patch[a]), reverse=True)
        for axis in order:
            step = max(stride[axis], 1)
            if patch[axis] - step >= 2 * MIN_FEATURE_MAP:
                patch[axis] -= step
                break
        else:
            raise AutosrError(
                f"no patch of at least {2 * MIN_FEATURE_MAP} voxels per axis fits {budget_bytes / 1024**3:.1f} GB "
                "by the memory model; raise --gpu-memory-gb"
            )


def choose_batch_size(
    network: dict[str, Any],
    patch: list[int],
    median_shape: list[int],
    num_cases: int,
    budget_bytes: float,
    in_channels: int,
    dims: int,
    slice_axes: list[int] | None = None,
) -> int:
    """Batch 2, grown while it fits when the patch spans the whole median shape, capped by dataset coverage."""
    cap = batch_coverage_cap(patch, median_shape, num_cases, slice_axes if dims == 2 else None)
    median_plane = median_shape[-dims:]
    whole = all(p >= m for p, m in zip(patch, median_plane))
    batch = MIN_BATCH_SIZE
    if whole or dims == 2:
        while batch < cap and estimate_training_bytes(network, patch, batch + 1, in_channels) <= budget_bytes:
            batch += 1
    return batch


def batch_coverage_cap(
    patch: list[int], median_shape: list[int], num_cases: int, slice_axes: list[int] | None = None
) -> int:
    """The most patches a batch may hold: `MAX_BATCH_COVERAGE` of what the training data offers.

    3D: the data's voxels over the patch's. 2D (`slice_axes` given): the data offers its planes, along every
    slicing axis, each worth as many patches as fit in it but at least one: a patch larger than the plane
    (padded) still draws one whole plane. Dividing 3D voxels by a padded 2D patch, as before, counted planes
    along one axis only and shrank them by the padding: batch 2 on small real datasets (documentation/
    planning.md, "Batch size")."""
    if slice_axes is None:
        volume_voxels = float(np.prod(median_shape)) * max(num_cases, 1)
        return max(MIN_BATCH_SIZE, int(MAX_BATCH_COVERAGE * volume_voxels / float(np.prod(patch))))
    patches = 0.0
    for axis in slice_axes:
        plane = [median_shape[a] for a in range(3) if a != axis]
        per_plane = max(1.0, float(np.prod(plane)) / float(np.prod(patch)))
        patches += median_shape[axis] * max(num_cases, 1) * per_plane
    return max(MIN_BATCH_SIZE, int(MAX_BATCH_COVERAGE * patches))


def plan_configuration(
    name: str, fingerprint: dict, spacing: list[float], budget_bytes: float, in_channels: int, anisotropic: bool
) -> dict[str, Any]:
    dims = 2 if name == "2d" else 3
    median_shape = median_shape_at(fingerprint, spacing)
    slice_axes = two_d_slice_axes(fingerprint, spacing) if dims == 2 else []
    if dims == 2:
        # the patch is planned on the first slicing axis's plane; a second plane has the same spacings
        in_plane = [a for a in range(3) if a != slice_axes[0]]
        shape_for_patch = [median_shape[a] for a in in_plane]
        spacing_for_topology = [spacing[a] for a in in_plane]
    else:
        shape_for_patch, spacing_for_topology = median_shape, spacing
    patch, network = fit_patch_and_network(shape_for_patch, spacing_for_topology, dims, budget_bytes, in_channels)
    # residual learning for 2D resolution enhancement only, by measurement (documentation/benchmark.md,
    # "Super-resolution"): 2D on thick slices level or better (+0.01 to +0.13 dB) and sharper through-plane;
    # 3D on thick slices 0.6 dB worse; contrast synthesis 0.3 dB worse
    network["residual"] = dims == 2 and is_resolution_enhancement(fingerprint, spacing)
    batch = choose_batch_size(
        network, patch, median_shape, fingerprint["num_training_cases"], budget_bytes, in_channels, dims, slice_axes
    )
    order = 1 if anisotropic else 3
    data_name = "3d_lowres" if name == "3d_lowres" else "3d_fullres"
    planned: dict[str, Any] = {
        "data_identifier": f"{PLANS_NAME}_{data_name}",
        "spacing_zyx": spacing,
        "patch_size": patch,
        "batch_size": batch,
        "median_shape_zyx": median_shape,
        "resampling": {"input_order": order, "target_order": order, "mask_order": 0},
        "network": network,
        "estimated_vram_gb": round(estimate_training_bytes(network, patch, batch, in_channels) / 1024**3, 2),
    }
    if dims == 2:
        planned["slice_axes"] = slice_axes
    return planned


def _patch_coverage(config: dict[str, Any]) -> float:
    patch = config["patch_size"]
    shape = config["median_shape_zyx"]
    return float(np.prod([min(p, s) for p, s in zip(patch, shape)]) / np.prod(shape))


def normalization_entries(fingerprint: dict, spec: DatasetSpec, resolution_enhancement: bool = False) -> dict[str, Any]:
    """Scheme and dataset-level parameters per input channel and for the target.

    `resolution_enhancement` of one contrast (input channel 0 named like the target, both z-scored): the
    target entry says `export_from_input`, so each prediction is exported at its own input's intensity level
    rather than the dataset's typical one. Held-out real anatomy measured -11 (brain slabs) and -20 (spine)
    intensity units of bias without it (documentation/benchmark.md, "Super-resolution on real anatomy").
    The training target is then normalized in its input's units (`normalize_target`); for CT of one
    contrast the target entry takes the input's mean/std for the same reason (its own clip range kept)."""
    stats = fingerprint["intensity_statistics"]
    target_scheme = target_scheme_name(spec)
    same_contrast = (
        resolution_enhancement
        and input_scheme_names(spec)[0] == target_scheme
        and spec.channel_names[str(spec.channel_indices[0])] == spec.target_name
    )
    export_from_input = same_contrast and exports_with_dataset_scale(target_scheme)

    def entry(scheme_name: str, channel_stats: dict[str, float], is_target: bool) -> dict[str, Any]:
        if scheme_name not in NORMALIZATION_SCHEMES:
            raise AutosrError(
                f"dataset.json 'normalization' names unknown scheme '{scheme_name}' "
                f"(valid: {', '.join(NORMALIZATION_SCHEMES)})"
            )
        e: dict[str, Any] = {"scheme": scheme_name}
        if scheme_name == "ct":
            e.update(
                clip_low=channel_stats["p00_5"],
                clip_high=channel_stats["p99_5"],
                mean=channel_stats["mean"],
                std=max(channel_stats["std"], 1e-8),
            )
        if is_target:
            if exports_with_dataset_scale(scheme_name):
                e.update(
                    export_mean=fingerprint["median_target_mean_in_mask"],
                    export_std=fingerprint["median_target_std_in_mask"],
                )
            if export_from_input:
                e["export_from_input"] = True
            measured = fingerprint.get("median_target_background")
            if measured is None:  # fingerprints from before the measurement, or targets without background
                measured = channel_stats["p00_5"] if scheme_name == "ct" else 0.0
            e["background"] = float(measured)
        return e

    inputs = [
        entry(name, stats["input_channels"][str(i)], is_target=False)
        for i, name in zip(spec.channel_indices, input_scheme_names(spec))
    ]
    target = entry(target_scheme, stats["target"], is_target=True)
    if same_contrast and target_scheme == "ct":
        # the target in its input's units (its own clip range kept), as `normalize_target` does per scan for
        # z-scores: a sharp CT spreads wider than its thick-slice input (std 181 against 144 HU on a spine)
        target.update(mean=inputs[0]["mean"], std=inputs[0]["std"])
    return {"input": inputs, "target": target}


def plan_experiment(
    fingerprint: dict,
    spec: DatasetSpec,
    gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB,
    configurations: list[str] | None = None,
) -> Plans:
    """Plans for a fingerprinted dataset. `configurations` None plans 2d, 3d_fullres and (if needed) 3d_lowres."""
    if gpu_memory_gb <= 0:
        raise AutosrError(f"--gpu-memory-gb must be positive, got {gpu_memory_gb}")
    unknown = [c for c in configurations or [] if c not in CONFIGURATION_NAMES]
    if unknown:
        raise AutosrError(f"unknown configuration(s) {', '.join(unknown)} (valid: {', '.join(CONFIGURATION_NAMES)})")
    budget = gpu_memory_gb * 1024**3
    in_channels = spec.num_channels
    spacing, anisotropic = planned_spacing(fingerprint)
    planned: dict[str, Any] = {}
    wanted = configurations or ["2d", "3d_fullres", "3d_lowres"]
    fullres = plan_configuration("3d_fullres", fingerprint, spacing, budget, in_channels, anisotropic)
    if "2d" in wanted:
        planned["2d"] = plan_configuration("2d", fingerprint, spacing, budget, in_channels, anisotropic)
    if "3d_fullres" in wanted:
        planned["3d_fullres"] = fullres
    if "3d_lowres" in wanted:
        lowres_needed = _patch_coverage(fullres) < LOWRES_TRIGGER_COVERAGE
        if is_resolution_enhancement(fingerprint, spacing):
            lowres_needed = False  # it would predict coarser than its input: see the module docstring
        if lowres_needed or (configurations and "3d_lowres" in configurations):
            low_spacing, config = list(spacing), fullres
            for _ in range(LOWRES_MAX_STEPS):
                finest = min(low_spacing)
                low_spacing = [s * LOWRES_SPACING_STEP if s < 2 * finest else s for s in low_spacing]
                config = plan_configuration("3d_lowres", fingerprint, low_spacing, budget, in_channels, anisotropic)
                if _patch_coverage(config) >= LOWRES_TRIGGER_COVERAGE:
                    break
            planned["3d_lowres"] = config
    raw = {
        "plans_name": PLANS_NAME,
        "dataset_name": fingerprint["dataset_name"],
        "autosr_version": __version__,
        "gpu_memory_gb": float(gpu_memory_gb),
        "num_input_channels": in_channels,
        "input_channel_names": [spec.channel_names[str(i)] for i in spec.channel_indices],
        "target_name": spec.target_name,
        "target_modality": spec.target_modality,
        "anisotropy_rule_applied": anisotropic,
        "normalization": normalization_entries(fingerprint, spec, is_resolution_enhancement(fingerprint, spacing)),
        "configurations": planned,
    }
    problems = validate_plans_dict(copy.deepcopy(raw))
    if problems:  # a planner bug, not a user error
        raise RuntimeError("the planner produced invalid plans: " + "; ".join(problems))
    return Plans(raw)
