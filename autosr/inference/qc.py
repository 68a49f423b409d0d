"""Per-scan quality control: how far a new scan lies from the scans the model was trained on, and a flag.

A model predicts whatever it is given; over thousands of unpaired scans the question is which outputs to
trust. Each scan gets *signals* measured the same way on the training (cross-validation) cases:

- geometry: voxel spacing and field of view (mm) per canonical axis, and the subject volume (ml, the input
  foreground preprocessing finds);
- intensities, per input channel: the scale of the raw intensities inside the subject (their standard
  deviation: a scan exported in other units, or scaled x10), and the distance of the *normalized* intensity
  distribution (what the network sees) to the training cases' typical one: the mean absolute difference of
  `DISTRIBUTION_QUANTILES` (an approximation of the 1-Wasserstein distance, in standard deviations), and the
  distance of its *depth profile* (the mean normalized intensity in `DEPTH_LAYERS` layers of equal volume,
  from the subject's surface inward) to the training cases' typical profile. A different contrast (T2 instead
  of T1: the profile turns upside down even where the histogram stays alike), a failed skull-strip or a
  different body part moves them;
- acquisition quality, per input channel: the *noise level* of the normalized input (`noise_level`: a
  robust estimate of the standard deviation of white noise, from the median absolute value of a
  second-difference residual inside the subject, as Immerkaer 1996 does in 2D; higher: a noisier scan,
  lower: a smoother one, e.g. acquired at a coarser voxel size and interpolated, or denoised), the *signal
  outside the subject* (`background`: the mean absolute raw intensity outside the subject region over the
  median inside; ghosting, wrap-around or a contrast mapping that lifts the background raise it) and the
  *low-frequency intensity non-uniformity* (`nonuniformity`: the standard deviation of the median
  normalized intensity over the eight octants of the subject; a bias field raises it, and medians keep a
  small bright or dark structure from moving it);
- with an uncertainty map (`--uncertainty`, folds x mirrorings): its mean and 99th percentile inside the
  subject, in normalized target units.

Thresholds come from the cross-validation cases (`build_reference`, cached in the model folder as
`qc_reference.json`): per signal, the 1st-99th percentile range of the training cases' values, widened by a
margin of `MARGIN_FRACTION` of that range and at least the rule's `floor` (a factor for ratio-type signals,
compared on a log scale). A value outside is flagged, with the reason in words. The rules are the registry
`SIGNAL_RULES`; documentation/inference.md ("Quality flags") lists them with the measurements behind the
floors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autosr.errors import AutosrError
from autosr.imaging.foreground import subject_region
from autosr.io import Geometry, read_json
from autosr.io.atomic import atomic_write_json
from autosr.io.orientation import to_world_axes
from autosr.preprocessing.normalization import invert_image
from autosr.preprocessing.preprocess import PreprocessedScan

QC_REFERENCE_NAME = "qc_reference.json"
REFERENCE_VERSION = 3
AXES = ("z", "y", "x")
DISTRIBUTION_QUANTILES = tuple(float(q) for q in np.linspace(2.5, 97.5, 20))
DEPTH_LAYERS = 5
DEPTH_MAX_VOXELS = 2_000_000  # the depth map is computed on a grid subsampled to at most about this many voxels
UNCERTAINTY_PERCENTILE = 99.0
REFERENCE_PERCENTILES = (1.0, 99.0)  # the training range of a signal: these percentiles of the CV cases
MARGIN_FRACTION = 0.5  # bounds = that range widened by this fraction of its width on each side ...


@dataclass(frozen=True)
class SignalRule:
    """How one kind of signal is compared with the training cases.

    `log`: compared as log(value) (ratio-type quantities: spacings, sizes, intensity scales), so the margin
    `floor` is log(factor). `sides`: "both" (too small is as suspicious as too large) or "high".
    `network_input`: measured on what the network sees (the normalized input on its working grid), so it
    counts in the scan's `input_shift`; geometry and the raw intensity scale do not (preprocessing resamples
    and normalizes them away: a scan exported x3 gives the network the same input).
    """

    words: str
    unit: str
    log: bool
    sides: str
    floor: float
    network_input: bool = False


# ... and at least `floor`. Floors: a factor 1.5 for geometry (a 1 mm model on 1.5 mm scans is plausible,
# 3 mm is not); a factor 3 for the raw intensity scale (MR units are arbitrary and z-scoring removes a
# global scale, so only gross departures mean a different export or protocol); 0.15 SD for the intensity
# distribution and a factor 1.5 for the uncertainty: measured (documentation/benchmark.md, "Quality flags")
# to leave every held-out synthetic brain and phantom unflagged and to flag x3 spacing, x10 intensities and an
# inverted (T2-like) contrast. Acquisition quality: a factor 1.5 in noise level and in background (the SNR or the
# background signal changed by half), and 0.15 SD for the non-uniformity, as for the intensity distribution.
SIGNAL_RULES: dict[str, SignalRule] = {
    "spacing": SignalRule("voxel spacing", "mm", log=True, sides="both", floor=math.log(1.5)),
    "extent": SignalRule("field of view", "mm", log=True, sides="both", floor=math.log(1.5)),
    "subject_volume": SignalRule("subject volume", "ml", log=True, sides="both", floor=math.log(1.5)),
    "intensity_scale": SignalRule(
        "intensity scale (std inside the subject)", "", log=True, sides="both", floor=math.log(3.0)
    ),
    "intensity_distance": SignalRule(
        "distance of the normalized intensity distribution to the training cases'",
        "SD",
        log=False,
        sides="high",
        floor=0.15,
        network_input=True,
    ),  # fmt: skip
    "intensity_profile": SignalRule(
        "distance of the intensity-by-depth profile to the training cases'",
        "SD",
        log=False,
        sides="high",
        floor=0.15,
        network_input=True,
    ),  # fmt: skip
    "noise_level": SignalRule(
        "noise level of the normalized input", "SD", log=True, sides="both", floor=math.log(1.5), network_input=True
    ),
    "background": SignalRule(
        "signal outside the subject (mean |intensity| there over the median inside)",
        "",
        log=True,
        sides="both",
        floor=math.log(1.5),
        network_input=True,
    ),  # fmt: skip
    "nonuniformity": SignalRule(
        "intensity non-uniformity (SD of the octants' median normalized intensity)",
        "SD",
        log=False,
        sides="high",
        floor=0.15,
        network_input=True,
    ),  # fmt: skip
    "uncertainty_mean": SignalRule("mean uncertainty", "SD", log=True, sides="high", floor=math.log(1.5)),
    "uncertainty_p99": SignalRule(
        "99th percentile of the uncertainty", "SD", log=True, sides="high", floor=math.log(1.5)
    ),
}


def rule_of(signal: str) -> SignalRule | None:
    """The rule of a signal name (`spacing_z`, `intensity_scale_c0`, `uncertainty_mean`), None if reported only."""
    if signal in SIGNAL_RULES:
        return SIGNAL_RULES[signal]
    base = signal.rsplit("_", 1)[0]
    return SIGNAL_RULES.get(base)


# --- signals ----------------------------------------------------------------------------------------------


@dataclass
class ScanSignals:
    """A scan's signals (name -> number) and, per input channel, the quantiles and the depth profile of its
    normalized intensities (compared with the training cases' typical ones by `QCReference.assess`)."""

    values: dict[str, float]
    quantiles: list[list[float]]
    profiles: list[list[float]]


def depth_layers(foreground: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Per foreground voxel (in `foreground[foreground]` order), its layer 0..DEPTH_LAYERS-1 from the surface
    inward: the voxels ranked by their distance to the background (mm) and cut into layers of equal volume."""
    from scipy import ndimage

    stride = max(1, int(np.ceil((foreground.size / DEPTH_MAX_VOXELS) ** (1 / 3))))
    coarse = foreground[::stride, ::stride, ::stride]
    depth = ndimage.distance_transform_edt(np.pad(coarse, 1), sampling=[s * stride for s in spacing_zyx])[
        1:-1, 1:-1, 1:-1
    ]
    if stride > 1:  # back onto the full grid, each coarse voxel covering its stride^3 block
        depth = depth[np.ix_(*(np.arange(n) // stride for n in foreground.shape))]
    values = depth[foreground]
    layers = np.empty(values.size, dtype=np.int64)  # by rank, so ties (whole shells at one depth) split evenly
    layers[np.argsort(values, kind="stable")] = np.arange(values.size) * DEPTH_LAYERS // max(values.size, 1)
    return layers


SECOND_DIFFERENCE = (1.0, -2.0, 1.0)


def noise_level(image: np.ndarray, inside: np.ndarray) -> float:
    """Robust standard deviation of white noise in `image` (Z, Y, X) inside the mask `inside`.

    The image is filtered with the second difference (1, -2, 1) along every axis of at least 3 voxels (their
    product: it removes any intensity that is linear along one of those axes, so smooth anatomy and bias
    leave little), and the residual's median absolute value over the voxels whose whole neighbourhood lies
    inside, times 1.4826 (the MAD of a Gaussian), is divided by the filter's gain on white noise (the norm
    of its coefficients, sqrt(6) per axis). The median ignores the few voxels on edges. 0 without voxels."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    inside = np.asarray(inside, dtype=bool)
    axes = [a for a, n in enumerate(image.shape) if n >= 3]
    residual, interior = image, inside.copy()
    for axis in axes:
        residual = ndimage.correlate1d(residual, SECOND_DIFFERENCE, axis=axis, mode="nearest")
        structure = np.ones([3 if a == axis else 1 for a in range(image.ndim)], dtype=bool)
        interior = ndimage.binary_erosion(interior, structure, border_value=0)
    values = residual[interior]
    if values.size == 0:
        return 0.0
    gain = math.sqrt(6.0 ** len(axes))
    return float(1.4826 * np.median(np.abs(values - np.median(values))) / gain)


def octant_medians(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Median of `image` over each of the 8 octants of the mask `inside`, split at its centroid along each array
    axis (a voxel at or above the centroid goes to the upper half); an empty octant holds the mask's median."""
    inside = np.asarray(inside, dtype=bool)
    index = np.nonzero(inside)
    code = np.zeros(index[0].size, dtype=np.int64)
    for axis, i in enumerate(index):
        code |= (i >= i.mean()).astype(np.int64) << axis
    values = np.asarray(image, dtype=np.float64)[inside]
    everywhere = float(np.median(values)) if values.size else 0.0
    return np.array([np.median(values[code == k]) if (code == k).any() else everywhere for k in range(8)])


def quality_signals(normalized: np.ndarray, raw: np.ndarray, foreground: np.ndarray, channel: int) -> dict[str, float]:
    """The acquisition-quality signals (module docstring) of one input channel (Z, Y, X), normalized and raw."""
    foreground = np.asarray(foreground, dtype=bool)
    values = {
        f"noise_level_c{channel}": noise_level(normalized, foreground),
        f"nonuniformity_c{channel}": float(np.std(octant_medians(normalized, foreground))),
    }
    outside = ~subject_region(foreground)
    level = float(np.median(raw[foreground]))
    if outside.any() and level > 0:  # a scan cropped tight to its subject has no background to measure
        values[f"background_c{channel}"] = float(np.mean(np.abs(raw[outside]))) / level
    return values


def input_signals(scan: PreprocessedScan) -> ScanSignals:
    """Geometry and intensity signals of a preprocessed scan (its properties keep the input's geometry).

    Per-axis values are in canonical (world) order, so an axial and a sagittal acquisition compare.
    """
    geometry = Geometry.from_json(scan.properties["input_geometry"])
    values: dict[str, float] = {}
    for name, per_axis in (
        ("shape", geometry.size_zyx),
        ("spacing", geometry.spacing_zyx),
        ("extent", geometry.physical_extent_zyx),
    ):
        for axis, v in zip(AXES, to_world_axes(list(per_axis), geometry)):
            values[f"{name}_{axis}"] = float(v)
    planned = Geometry.from_json(scan.properties["planned_geometry"])
    foreground = np.asarray(scan.foreground, dtype=bool)
    voxel_ml = float(np.prod(planned.spacing_zyx)) / 1000.0
    values["subject_volume"] = float(foreground.sum()) * voxel_ml
    inside = foreground if foreground.any() else np.ones_like(foreground)
    layers = depth_layers(inside, planned.spacing_zyx)
    quantiles, profiles = [], []
    for c, (channel, params) in enumerate(zip(scan.input, scan.properties["input_normalization"])):
        normalized = np.asarray(channel[inside], dtype=np.float32)
        raw = invert_image(normalized, params).astype(np.float64)
        values[f"intensity_mean_c{c}"] = float(raw.mean())
        values[f"intensity_scale_c{c}"] = float(raw.std())
        values[f"intensity_p99_5_c{c}"] = float(np.percentile(raw, 99.5))
        if foreground.any():
            values.update(quality_signals(channel, invert_image(channel, params), foreground, c))
        quantiles.append([float(q) for q in np.percentile(normalized, DISTRIBUTION_QUANTILES)])
        sums = np.bincount(layers, weights=normalized, minlength=DEPTH_LAYERS)
        counts = np.maximum(np.bincount(layers, minlength=DEPTH_LAYERS), 1)
        profiles.append([float(v) for v in sums / counts])
    return ScanSignals(values, quantiles, profiles)


def uncertainty_signals(uncertainty: np.ndarray, foreground: np.ndarray) -> dict[str, float]:
    """Mean and 99th percentile of a normalized uncertainty map (Z, Y, X) inside the subject."""
    uncertainty = np.asarray(uncertainty)
    foreground = np.asarray(foreground, dtype=bool)
    values = uncertainty[foreground] if foreground.any() else uncertainty.ravel()
    return {
        "uncertainty_mean": float(values.mean()),
        "uncertainty_p99": float(np.percentile(values, UNCERTAINTY_PERCENTILE)),
    }


def intensity_distances(
    vectors: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], name: str = "intensity_distance"
) -> dict[str, float]:
    """`<name>_c<k>`: per channel, the mean |value - reference value| of two vectors (normalized units)."""
    return {
        f"{name}_c{c}": float(np.mean(np.abs(np.asarray(v) - np.asarray(r))))
        for c, (v, r) in enumerate(zip(vectors, reference))
    }


def _distances(signals: ScanSignals, reference_quantiles, reference_profiles) -> dict[str, float]:
    return {
        **intensity_distances(signals.quantiles, reference_quantiles),
        **intensity_distances(signals.profiles, reference_profiles, "intensity_profile"),
    }


# --- bounds from the cross-validation cases -----------------------------------------------------------------


def on_rule_scale(value: Any, rule: SignalRule) -> Any:
    """A signal's value(s) on the scale its rule compares on: log for ratio-type signals, else as is."""
    return np.log(np.maximum(value, 1e-12)) if rule.log else value


def flag_margin(low: float, high: float, rule: SignalRule) -> float:
    """The flagging margin of a signal whose training range is [low, high] on its rule's scale."""
    return max(MARGIN_FRACTION * (high - low), rule.floor)


def bounds_from_values(values: Sequence[float], rule: SignalRule) -> dict[str, Any]:
    """The flagging bounds of one signal from the training cases' values (see the module docstring)."""
    raw = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if raw.size == 0:
        raise ValueError("no values to derive bounds from")
    lo, hi = np.percentile(on_rule_scale(raw, rule), REFERENCE_PERCENTILES)
    margin = flag_margin(lo, hi, rule)
    back = np.exp if rule.log else (lambda v: v)
    return {
        "cv_low": float(back(lo)),
        "cv_high": float(back(hi)),
        "low": float(back(lo - margin)) if rule.sides == "both" else None,
        "high": float(back(hi + margin)),
        "num_cases": int(raw.size),
    }


def bounds_for(cases: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Bounds of every ruled signal present in all the cases' value dicts."""
    names = sorted(set.intersection(*(set(v) for v in cases.values()))) if cases else []
    out = {}
    for name in names:
        rule = rule_of(name)
        if rule is not None:
            out[name] = bounds_from_values([v[name] for v in cases.values()], rule)
    return out


def flag_score(values: dict[str, float], bounds: dict[str, dict[str, Any]], network_input_only: bool = False) -> float:
    """How far the farthest signal lies outside the training cases' range, in units of its flagging margin: 0
    inside the range, 1 at the flagging limit (so above 1 is the flag), 3 three margins out. It ranks scans
    with everything the yes/no flag knows. `network_input_only`: over the signals of what the network sees
    (`SignalRule.network_input`): the scan's *input shift*."""
    score = 0.0
    for name, b in bounds.items():
        value, rule = values.get(name), rule_of(name)
        if value is None or rule is None or not np.isfinite(value) or (network_input_only and not rule.network_input):
            continue
        lo, hi, v = (float(on_rule_scale(x, rule)) for x in (b["cv_low"], b["cv_high"], value))
        margin = flag_margin(lo, hi, rule) or 1.0
        excess = (v - hi) / margin if v > hi else ((lo - v) / margin if rule.sides == "both" and v < lo else 0.0)
        score = max(score, excess)
    return float(score)


def _fmt(value: float, unit: str) -> str:
    text = f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
    return f"{text} {unit}".rstrip()


def check_against(values: dict[str, float], bounds: dict[str, dict[str, Any]]) -> list[str]:
    """The reasons (in words) a scan's values fall outside the bounds; empty when none does."""
    reasons = []
    for name, b in bounds.items():
        if name not in values or values[name] is None:
            continue
        rule = rule_of(name)
        value = values[name]
        label = f"{rule.words} ({name})"
        training = f"training cases {_fmt(b['cv_low'], rule.unit)} to {_fmt(b['cv_high'], rule.unit)}"
        if b["high"] is not None and value > b["high"]:
            reasons.append(
                f"{label} {_fmt(value, rule.unit)} above the limit {_fmt(b['high'], rule.unit)} ({training})"
            )
        elif b["low"] is not None and value < b["low"]:
            reasons.append(f"{label} {_fmt(value, rule.unit)} below the limit {_fmt(b['low'], rule.unit)} ({training})")
    return reasons


# --- the reference: signals of the cross-validation cases ----------------------------------------------------


def uncertainty_key(
    folds: Sequence[int], checkpoint: str, mirror_axes: Sequence[int], step_fraction: float, sampling: str | None = None
) -> str:
    """Which ensemble an uncertainty reference belongs to (its spread depends on the members); `sampling`: a
    generative model's `Predictor.sampling_key` (samples, steps, seed)."""
    key = (
        f"folds={','.join(map(str, sorted(folds)))};checkpoint={checkpoint};"
        f"mirror={','.join(map(str, mirror_axes)) or 'none'};step={step_fraction:g}"
    )
    return f"{key};{sampling}" if sampling else key


@dataclass
class QCReference:
    """The training cases' signals and the bounds derived from them (`qc_reference.json` in a model folder)."""

    data: dict[str, Any]

    @property
    def reference_quantiles(self) -> list[list[float]]:
        return self.data["reference_quantiles"]

    def uncertainty_bounds(self, key: str | None) -> dict[str, dict[str, Any]] | None:
        entry = self.data.get("uncertainty", {}).get(key) if key else None
        return entry["bounds"] if entry else None

    def assess(
        self, signals: ScanSignals, uncertainty: dict[str, float] | None, key: str | None
    ) -> tuple[dict[str, float], bool, str]:
        """(all values incl. distances and uncertainty, flag, reason in words) of one scan. The values end with
        `flag_score` (over every compared signal) and `input_shift` (over the network's input alone; see
        `flag_score`), the numbers to sort scans by."""
        values = dict(signals.values)
        values.update(_distances(signals, self.reference_quantiles, self.data["reference_profiles"]))
        bounds = dict(self.data["bounds"])
        reasons = check_against(values, bounds)
        notes = []
        if uncertainty is not None:
            values.update(uncertainty)
            spread_bounds = self.uncertainty_bounds(key)
            if spread_bounds is None:
                notes.append(
                    "uncertainty not compared: no reference for this ensemble (autosr qc-reference ... --uncertainty)"
                )
            else:
                reasons += check_against(values, spread_bounds)
                bounds.update(spread_bounds)
        values["flag_score"] = flag_score(values, bounds)
        values["input_shift"] = flag_score(values, bounds, network_input_only=True)
        return values, bool(reasons), "; ".join(reasons + notes)

    def save(self, model_dir: str | os.PathLike) -> Path:
        path = Path(model_dir) / QC_REFERENCE_NAME
        atomic_write_json(self.data, path)
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> QCReference | None:
        """The model folder's reference, or None when it has none (or one of another format)."""
        path = Path(model_dir) / QC_REFERENCE_NAME
        if not path.is_file():
            return None
        data = read_json(path)
        if not isinstance(data, dict) or data.get("version") != REFERENCE_VERSION:
            return None
        return cls(data)


def reference_from_cases(cases: dict[str, ScanSignals], configuration: str, preprocessing_hash: str) -> QCReference:
    """Bounds from the training cases' input signals (the distances are to their per-quantile median)."""
    if not cases:
        raise AutosrError("no training cases to derive the quality-control thresholds from")
    num_channels = len(next(iter(cases.values())).quantiles)

    def median(kind: str) -> list[list[float]]:
        stacked = [[getattr(s, kind)[c] for s in cases.values()] for c in range(num_channels)]
        return [[float(v) for v in np.median(per_channel, axis=0)] for per_channel in stacked]

    reference_quantiles, reference_profiles = median("quantiles"), median("profiles")
    values = {case: {**s.values, **_distances(s, reference_quantiles, reference_profiles)} for case, s in cases.items()}
    return QCReference(
        {
            "version": REFERENCE_VERSION,
            "configuration": configuration,
            "preprocessing_hash": preprocessing_hash,
            "rule": {
                "percentiles": list(REFERENCE_PERCENTILES),
                "margin_fraction": MARGIN_FRACTION,
                "floors": {name: r.floor for name, r in SIGNAL_RULES.items()},
            },
            "distribution_quantiles": list(DISTRIBUTION_QUANTILES),
            "depth_layers": DEPTH_LAYERS,
            "reference_quantiles": reference_quantiles,
            "reference_profiles": reference_profiles,
            "cases": {
                case: {"values": values[case], "quantiles": cases[case].quantiles, "profiles": cases[case].profiles}
                for case in sorted(cases)
            },
            "bounds": bounds_for(values),
            "uncertainty": {},
        }
    )


def add_uncertainty_reference(
    reference: QCReference, key: str, cases: dict[str, dict[str, float]], members: int
) -> None:
    """Store the uncertainty signals of the training cases for one ensemble, and their bounds."""
    reference.data.setdefault("uncertainty", {})[key] = {
        "members": members,
        "cases": {c: cases[c] for c in sorted(cases)},
        "bounds": bounds_for(cases),
    }


def reference_is_current(reference: QCReference | None, configuration: str, preprocessing_hash: str) -> bool:
    return (
        reference is not None
        and reference.data.get("configuration") == configuration
        and reference.data.get("preprocessing_hash") == preprocessing_hash
    )


ProgressFn = Callable[[str], None]
