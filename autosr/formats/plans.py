"""The plans: what the planner decided, as an editable JSON file (`plans.json`).

Every later stage reads its decisions from here and nothing else, so a user can open plans.json, change a
patch size or a normalization scheme, and re-run. `Plans.load` checks the file and names the field that
is wrong when an edit broke it. Field-by-field documentation: documentation/plans.md.

Layout (abridged):

    {
      "plans_name": "autosrPlans",
      "dataset_name": "Dataset901_Brain",
      "autosr_version": "0.1.0",
      "gpu_memory_gb": 8.0,
      "num_input_channels": 1,
      "input_channel_names": ["T1w_3T"],
      "target_name": "T1w_7T",
      "target_modality": "MR",
      "normalization": {
        "input": [{"scheme": "zscore_mask", ...params}],           # one per input channel
        "target": {"scheme": "zscore_mask", "export_mean": ..., "export_std": ...}
      },
      "configurations": {
        "3d_fullres": {
          "data_identifier": "autosrPlans_3d_fullres",   # preprocessed folder name
          "spacing_zyx": [1.0, 1.0, 1.0],
          "patch_size": [128, 128, 128],                 # 2 numbers for "2d" (the in-plane axes)
          "batch_size": 2,
          "median_shape_zyx": [...],                     # after resampling and cropping
          "resampling": {"input_order": 3, "target_order": 3, "mask_order": 0},
          "network": {
            "architecture": "PlainConvUNet",             # or "ResEncUNet"
            "dims": 3,
            "features_per_stage": [32, 64, ...],
            "kernel_sizes": [[3,3,3], ...],              # per stage
            "strides": [[1,1,1], [2,2,2], ...],          # per stage; first is always 1s
            "n_conv_per_stage": [2, 2, ...],             # encoder
            "n_conv_per_stage_decoder": [2, ...],        # one fewer than stages
            "upsampling": "transposed",                  # or "interp_conv"
            "deep_supervision": true,
            "norm": "batch",                             # instance | batch | group | none
            "residual": false                            # predict the correction to input channel 0
          },
          "estimated_vram_gb": 7.1
        },
        "2d": {..., "slice_axes": [0]}                   # axes 2D slices are taken along
      }
    }
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autosr.errors import AutosrError
from autosr.io.atomic import atomic_write_json
from autosr.io.json_file import read_json_file
from autosr.network.build import total_stride
from autosr.paths import SAFE_NAME_RULE, check_name, name_problem

CONFIGURATION_NAMES = ("2d", "3d_fullres", "3d_lowres")
ARCHITECTURES = ("PlainConvUNet", "ResEncUNet")
UPSAMPLING_MODES = ("transposed", "interp_conv")


@dataclass
class ConfigurationPlan:
    """One configuration of plans.json, with typed accessors over the raw dict (kept for round trips)."""

    name: str
    raw: dict[str, Any]

    @property
    def dims(self) -> int:
        return int(self.raw["network"]["dims"])

    @property
    def data_identifier(self) -> str:
        """The preprocessed folder name (checked: it becomes a folder under $AUTOSR_PREPROCESSED)."""
        return check_name(self.raw["data_identifier"], f"configurations.{self.name}.data_identifier")

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.raw["spacing_zyx"])

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.raw["patch_size"])

    @property
    def batch_size(self) -> int:
        return int(self.raw["batch_size"])

    @property
    def network(self) -> dict[str, Any]:
        return self.raw["network"]

    @property
    def slice_axes(self) -> tuple[int, ...]:
        """`2d` only: the (canonical) axes the 2D network slices along; several = planes averaged."""
        return tuple(int(a) for a in self.raw.get("slice_axes", [0]))

    def in_plane_axes(self, slice_axis: int) -> tuple[int, int]:
        """The two volume axes a 2D patch spans when slicing along `slice_axis`, in order."""
        return tuple(a for a in range(3) if a != slice_axis)

    @property
    def patch_spacing(self) -> tuple[float, ...]:
        """The spacing along each patch axis (a 2D patch: the in-plane axes of its first slicing axis)."""
        if self.dims == 3:
            return self.spacing_zyx
        return tuple(self.spacing_zyx[a] for a in self.in_plane_axes(self.slice_axes[0]))

    @property
    def resampling(self) -> dict[str, int]:
        return self.raw.get("resampling", {"input_order": 3, "target_order": 3, "mask_order": 0})


@dataclass
class Plans:
    """plans.json in memory. `raw` is the JSON dict; accessors read from it."""

    raw: dict[str, Any]

    @property
    def plans_name(self) -> str:
        """Part of the model folder name (checked: it becomes a folder under $AUTOSR_RESULTS)."""
        return check_name(self.raw.get("plans_name", "autosrPlans"), "plans_name")

    @property
    def dataset_name(self) -> str:
        return str(self.raw["dataset_name"])

    @property
    def num_input_channels(self) -> int:
        return int(self.raw["num_input_channels"])

    @property
    def target_modality(self) -> str:
        return str(self.raw.get("target_modality", "MR"))

    @property
    def input_normalization(self) -> list[dict[str, Any]]:
        return self.raw["normalization"]["input"]

    @property
    def target_normalization(self) -> dict[str, Any]:
        return self.raw["normalization"]["target"]

    @property
    def configuration_names(self) -> list[str]:
        return list(self.raw["configurations"])

    def configuration(self, name: str) -> ConfigurationPlan:
        configurations = self.raw.get("configurations", {})
        if name not in configurations:
            raise AutosrError(
                f"configuration '{name}' is not in the plans of {self.raw.get('dataset_name', '?')} "
                f"(available: {', '.join(configurations) or 'none'})"
            )
        return ConfigurationPlan(name, configurations[name])

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(self.raw, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plans:
        path = Path(path)
        if not path.is_file():
            raise AutosrError(f"{path}: no plans here; run `autosr plan DATASET` first")
        raw = read_json_file(path, "fix the edit, or plan again with `autosr plan DATASET --replan`")
        problems = validate_plans_dict(raw)
        if problems:
            from autosr.errors import DatasetProblems

            raise DatasetProblems(
                problems,
                header=f"{path} is not valid (fix the edit, or plan again with `autosr plan DATASET --replan`)",
            )
        return cls(raw)


def _is_int_list(v: Any, length: int | None = None) -> bool:
    return (
        isinstance(v, list)
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        and (length is None or len(v) == length)
    )


def validate_plans_dict(raw: Any) -> list[str]:
    """Every problem of a plans dict, each naming its field; empty when it is usable."""
    if not isinstance(raw, dict):
        return ["the file must hold a JSON object"]
    problems = []
    for key in ("dataset_name", "num_input_channels", "normalization", "configurations"):
        if key not in raw:
            problems.append(f"missing key '{key}'")
    if problems:
        return problems
    if "plans_name" in raw and (problem := name_problem(raw["plans_name"])) is not None:
        problems.append(
            f"'plans_name' {raw['plans_name']!r} cannot be used as a file or folder name: it {problem}; {SAFE_NAME_RULE}"
        )
    n_in = raw["num_input_channels"]
    norm = raw["normalization"]
    if not isinstance(norm, dict) or "input" not in norm or "target" not in norm:
        problems.append("'normalization' needs 'input' (one entry per channel) and 'target'")
    elif not isinstance(norm["input"], list) or len(norm["input"]) != n_in:
        problems.append(f"'normalization.input' must list {n_in} entries (one per input channel)")
    configurations = raw["configurations"]
    if not isinstance(configurations, dict) or not configurations:
        return problems + ["'configurations' must be a non-empty object"]
    for name, c in configurations.items():
        where = f"configurations.{name}"
        if (problem := name_problem(name)) is not None:
            problems.append(
                f"configuration name {name!r} cannot be used as a file or folder name: it {problem}; {SAFE_NAME_RULE}"
            )
            continue
        if not isinstance(c, dict):
            problems.append(f"{where} must be an object")
            continue
        if (problem := name_problem(c.get("data_identifier"))) is not None:
            problems.append(
                f"{where}.data_identifier {c.get('data_identifier')!r} cannot be used as a file or folder name: it {problem}; {SAFE_NAME_RULE}"
            )
        net = c.get("network")
        if not isinstance(net, dict):
            problems.append(f"{where}.network is missing")
            continue
        dims = net.get("dims")
        if dims not in (2, 3):
            problems.append(f"{where}.network.dims must be 2 or 3, got {dims!r}")
            continue
        patch = c.get("patch_size")
        if not _is_int_list(patch, dims) or any(p < 1 for p in patch):
            problems.append(f"{where}.patch_size must be {dims} positive integers, got {patch!r}")
        bs = c.get("batch_size")
        if not isinstance(bs, int) or bs < 1:
            problems.append(f"{where}.batch_size must be a positive integer, got {bs!r}")
        spacing = c.get("spacing_zyx")
        if not (
            isinstance(spacing, list)
            and len(spacing) == 3
            and all(isinstance(s, (int, float)) and s > 0 for s in spacing)
        ):
            problems.append(f"{where}.spacing_zyx must be 3 positive numbers, got {spacing!r}")
        if net.get("architecture") not in ARCHITECTURES:
            problems.append(
                f"{where}.network.architecture must be one of {ARCHITECTURES}, got {net.get('architecture')!r}"
            )
        if net.get("upsampling", "transposed") not in UPSAMPLING_MODES:
            problems.append(
                f"{where}.network.upsampling must be one of {UPSAMPLING_MODES}, got {net.get('upsampling')!r}"
            )
        feats, kernels, strides = net.get("features_per_stage"), net.get("kernel_sizes"), net.get("strides")
        if not _is_int_list(feats) or not feats:
            problems.append(f"{where}.network.features_per_stage must be a list of integers")
            continue
        n_stages = len(feats)
        if not (isinstance(kernels, list) and len(kernels) == n_stages and all(_is_int_list(k, dims) for k in kernels)):
            problems.append(f"{where}.network.kernel_sizes must hold {n_stages} lists of {dims} integers")
        if not (isinstance(strides, list) and len(strides) == n_stages and all(_is_int_list(s, dims) for s in strides)):
            problems.append(f"{where}.network.strides must hold {n_stages} lists of {dims} integers")
        elif _is_int_list(patch, dims):
            total = total_stride(net)
            bad = [p for p, t in zip(patch, total) if p % t]
            if bad:
                problems.append(
                    f"{where}.patch_size {patch} must be divisible by the network's total stride {total} per axis"
                )
        if "slice_axes" in c:
            axes = c["slice_axes"]
            if dims != 2 or not _is_int_list(axes) or not axes or len(set(axes)) != len(axes):
                problems.append(f"{where}.slice_axes is for 2d configurations: a list of distinct axes, got {axes!r}")
            elif any(a not in (0, 1, 2) for a in axes):
                problems.append(f"{where}.slice_axes must hold axes 0 (z), 1 (y) or 2 (x), got {axes!r}")
        for key, expected in (("n_conv_per_stage", n_stages), ("n_conv_per_stage_decoder", n_stages - 1)):
            v = net.get(key)
            if not _is_int_list(v, expected):
                problems.append(f"{where}.network.{key} must hold {expected} integers, got {v!r}")
    return problems
