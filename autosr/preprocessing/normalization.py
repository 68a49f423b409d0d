"""Intensity normalization schemes, each with an exact inverse.

A scheme is chosen per input channel and for the target in plans.json (`normalization`). Parameters are
plain JSON: dataset-level ones live in the plans, per-image ones in each case's properties. Schemes:

- `zscore` (MR and anything without physical units): per image, subtract the mean and divide by the
  standard deviation of the voxels inside the mask (or the foreground). For an MR *target* the per-image
  parameters are used in training only; predictions are mapped back with the dataset's typical target
  mean/std (`export_mean`, `export_std` in plans), because an unseen scan has no target to take them from.
  MR intensities are arbitrary units, so "the dataset's typical target scale" is the honest promise.
- `ct` (CT in HU): clip to the dataset's p0.5/p99.5 (`clip_low`, `clip_high`), then subtract the dataset
  mean and divide by the dataset std (all from the fingerprint). The inverse is exact inside the clip
  window; values outside it come back as the window's edges (the only loss, and it is deliberate).
- `n4_zscore` (MR with a bias field, e.g. 7T): N4 bias-field correction (`autosr.imaging.bias_field`,
  fitted inside the image's own foreground so an input is corrected identically at training and
  prediction), then `zscore`. The inverse is `zscore`'s: predictions come back without a bias field.
- `none`: identity, for data that is already normalized.

Documentation: documentation/normalization.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autosr.errors import AutosrError

EPSILON = 1e-8


class ZScore:
    """Per-image z-score inside a mask."""

    name = "zscore"

    @staticmethod
    def fit_image(image: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
        values = image[mask > 0] if mask is not None and np.any(mask) else image[image != 0]
        if values.size == 0:
            values = image.ravel()
        return {"mean": float(values.mean()), "std": float(max(values.std(), EPSILON))}

    @staticmethod
    def normalize(image: np.ndarray, params: dict[str, float]) -> np.ndarray:
        return ((image - params["mean"]) / params["std"]).astype(np.float32)

    @staticmethod
    def invert(image: np.ndarray, params: dict[str, float]) -> np.ndarray:
        return (image.astype(np.float64) * params["std"] + params["mean"]).astype(np.float32)


class N4ZScore(ZScore):
    """N4 bias-field correction, then the per-image z-score; `correct` runs before `fit_image`."""

    name = "n4_zscore"

    @staticmethod
    def correct(image: np.ndarray) -> np.ndarray:
        from autosr.imaging.bias_field import correct_bias_field_array

        return correct_bias_field_array(image)


class CTClip:
    """Global clip to dataset percentiles, then global z-score; every parameter is dataset-level."""

    name = "ct"

    @staticmethod
    def fit_image(image: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
        return {}

    @staticmethod
    def normalize(image: np.ndarray, params: dict[str, float]) -> np.ndarray:
        clipped = np.clip(image, params["clip_low"], params["clip_high"])
        return ((clipped - params["mean"]) / params["std"]).astype(np.float32)

    @staticmethod
    def invert(image: np.ndarray, params: dict[str, float]) -> np.ndarray:
        return (image.astype(np.float64) * params["std"] + params["mean"]).astype(np.float32)


class NoNormalization:
    name = "none"

    @staticmethod
    def fit_image(image: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
        return {}

    @staticmethod
    def normalize(image: np.ndarray, params: dict[str, float]) -> np.ndarray:
        return image.astype(np.float32, copy=True)

    @staticmethod
    def invert(image: np.ndarray, params: dict[str, float]) -> np.ndarray:
        return image.astype(np.float32, copy=True)


NORMALIZATION_SCHEMES: dict[str, type] = {
    "zscore": ZScore,
    "n4_zscore": N4ZScore,
    "ct": CTClip,
    "none": NoNormalization,
}


def scheme(name: str):
    """The scheme class called `name`, or an error listing the valid names."""
    if name not in NORMALIZATION_SCHEMES:
        raise AutosrError(
            f"unknown normalization scheme '{name}' (valid: {', '.join(NORMALIZATION_SCHEMES)}); "
            "fix dataset.json 'normalization' or plans.json"
        )
    return NORMALIZATION_SCHEMES[name]


def normalize_image(image: np.ndarray, entry: dict[str, Any], mask: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Normalize one image with a plans entry {"scheme", dataset-level params}; returns it and its parameters.

    The returned parameters merge dataset-level and per-image ones, so `invert_image(x, params)` is all an
    inverse needs.
    """
    cls = scheme(entry["scheme"])
    correct = getattr(cls, "correct", None)  # an intensity correction some schemes apply first (N4)
    if correct is not None:
        image = correct(image)
    params = {k: v for k, v in entry.items() if k != "scheme"}
    params.update(cls.fit_image(image, mask))
    return cls.normalize(image, params), {"scheme": entry["scheme"], **params}


def normalize_target(
    image: np.ndarray, entry: dict[str, Any], mask: np.ndarray | None, input_parameters: list[dict[str, Any]]
) -> tuple[np.ndarray, dict]:
    """Normalize a training target; returns it and its parameters (as `normalize_image`).

    Where the plans say `export_from_input` (resolution enhancement of one contrast), the target is put in
    its own input's units (the input's mean/std), the units every prediction is exported from: the network
    then learns the change of contrast a thick slice causes (a sharp target's spread is 5-40% above its
    blurred input's on real anatomy) instead of having it missing at export, and its residual starts from
    the identity in the same units. Otherwise the target's own scheme and parameters."""
    first = input_parameters[0] if input_parameters else {}
    if not (entry.get("export_from_input") and exports_with_dataset_scale(entry["scheme"]) and "std" in first):
        return normalize_image(image, entry, mask)
    cls = scheme(entry["scheme"])
    correct = getattr(cls, "correct", None)
    if correct is not None:
        image = correct(image)
    params = {k: v for k, v in entry.items() if k != "scheme"}
    params.update(mean=first["mean"], std=first["std"])
    return cls.normalize(image, params), {"scheme": entry["scheme"], **params}


def invert_image(image: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    return scheme(params["scheme"]).invert(image, params)


def target_export_parameters(
    target_entry: dict[str, Any], input_parameters: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Parameters that map a normalized prediction back to target units for a scan without a target.

    `zscore`, `n4_zscore`: the dataset's typical target mean/std, or, where the plans say
    `export_from_input` (resolution enhancement of one contrast), this scan's own input mean/std: a thick-slice
    scan has its target's intensity level, while the dataset's typical level is wrong for any scan or slab
    whose tissue mix differs (documentation/benchmark.md, "Super-resolution on real anatomy");
    `ct` and `none`: the dataset-level parameters.
    """
    name = target_entry["scheme"]
    first = (input_parameters or [{}])[0]
    if target_entry.get("export_from_input") and exports_with_dataset_scale(name) and "std" in first:
        return {"scheme": name, "mean": first["mean"], "std": first["std"]}
    if exports_with_dataset_scale(name):
        return {"scheme": name, "mean": target_entry["export_mean"], "std": target_entry["export_std"]}
    return dict(target_entry)


def exports_with_dataset_scale(name: str) -> bool:
    """True for the per-image z-score schemes, whose predictions are exported with the dataset's typical
    target mean/std (`export_mean`, `export_std` in plans)."""
    return issubclass(scheme(name), ZScore)


def input_scheme_names(spec) -> list[str]:
    """The scheme of each input channel of a `DatasetSpec`: dataset.json's `normalization` override, else
    the default for the channel's name (`choose_scheme`)."""
    return [spec.normalization.get(str(i)) or choose_scheme(spec.channel_names[str(i)]) for i in spec.channel_indices]


def target_scheme_name(spec) -> str:
    """The target's scheme: dataset.json's `normalization.target`, else the default for its modality."""
    return spec.normalization.get("target") or choose_scheme(spec.target_modality)


def choose_scheme(modality_or_name: str) -> str:
    """Default scheme for a channel or target from its modality/name: CT -> 'ct', everything else 'zscore'."""
    text = modality_or_name.upper()
    if text == "CT" or text.startswith("CT_") or text.endswith("_CT") or text in ("HU", "CBCT_HU"):
        return "ct"
    return "zscore"
