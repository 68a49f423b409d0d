"""`autosr stress-test` as a notebook calls it: does the model keep real structure, invent none, and does it
say when its output is wrong?

    from autosr.evaluation.stress.api import StressSettings, run_stress_test
    from autosr.inference.settings import ModelSource

    run_stress_test("raw/Dataset902_Brains", ModelSource(dataset=902, configuration="2d"), "stress/")

On the held-out cases (imagesTs with targetsTs; the training cases when there are none: then the folds
have seen them and every figure is optimistic) each scan is predicted by the fold ensemble with its spread
(folds x mirrorings, `Predictor.predict_preprocessed`): clean, after each acquisition change of
`perturbations.ACQUISITION_CHANGES`, and with lesions (`lesions.py`). The lesioned prediction is scored twice:
against the target with the same lesions (paired) and against the target without them (input-only: a model
sees only its input, so it is the same prediction). Per scan (`stress.csv`): the error, how well the spread
and the calibrated expected error rank it (Spearman, sparsification), the interval's coverage, the scan's
expected error, the quality flag and its score (`flag_score.py`; the model folder's quality reference is
measured from the raw training cases first when it has none, as `autosr predict` does). Per lesion
(`lesions.csv`): its contrast ratio, Dice and the spread inside it. `stress.json` holds the means and the
AUROCs of the per-scan scores for the scans whose error is worse than the worst clean scan's.

The interval and the expected error come from `autosr.inference.calibration`, fitted on the clean scans:
each case is scored with the calibration of the *other* cases (leave one case out, so its coverage is
measured on voxels the calibration never saw); the calibration of all clean cases is stored in the model
folder for `autosr predict --uncertainty`. With one case only the calibration is fitted on it and
stress.json says `calibration_in_sample: true`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autosr.errors import AutosrError
from autosr.evaluation.stress.lesions import (
    HYPER_FACTOR,
    HYPO_FACTOR,
    LESION_DIAMETERS_MM,
    Lesion,
    insert_lesions,
    place_lesions,
    tissue_labels,
)
from autosr.evaluation.stress.perturbations import ACQUISITION_CHANGES, perturbation_seed
from autosr.evaluation.stress.scan_scores import ScanVoxels, lesion_scores, scan_voxels
from autosr.formats.dataset_spec import CaseFiles, discover_cases, load_dataset_spec
from autosr.inference.settings import ModelSource, PredictionSettings
from autosr.io import Geometry, read_image
from autosr.io.resampling import resample_to_geometry
from autosr.paths import AutosrPaths


@dataclass(frozen=True)
class StressSettings:
    """What a stress test runs: how many cases (None: all), the seed of every perturbation and lesion
    placement, whether pictures are drawn and whether the clean cases' calibration is stored in the model
    folder (for `autosr predict --uncertainty`)."""

    max_cases: int | None = None
    seed: int = 0
    pictures: bool = True
    store_calibration: bool = True

    def __post_init__(self) -> None:
        if self.max_cases is not None and self.max_cases < 1:
            raise AutosrError(f"--max-cases must be at least 1, got {self.max_cases}")


@dataclass
class Variant:
    """One stressed version of a case: its name, its kind (paired lesions are in input and truth,
    input-only ones in the input alone), the input perturbation and the lesions."""

    name: str
    kind: str  # clean | acquisition | lesion | input_only_lesion
    perturbation: Any = None
    lesions: tuple[Lesion, ...] = ()


@dataclass
class ScanResult:
    case: str
    variant: Variant
    voxels: ScanVoxels
    qc: dict[str, Any]


def evaluation_cases(raw_dataset_dir: Path, max_cases: int | None) -> tuple[list[CaseFiles], str]:
    """The held-out cases with targets (else the training cases), sorted, at most `max_cases`; and 'Ts'/'Tr'."""
    spec = load_dataset_spec(raw_dataset_dir)
    for split in ("Ts", "Tr"):
        cases = discover_cases(raw_dataset_dir, spec, split)
        usable = [c for _, c in sorted(cases.items()) if c.target is not None and not c.missing_channels]
        if usable:
            return usable[:max_cases] if max_cases else usable, split
    raise AutosrError(
        f"{raw_dataset_dir}: no case with input and target in imagesTs/targetsTs or imagesTr/targetsTr; a stress "
        "test compares predictions with known targets: put the held-out cases' targets into targetsTs/"
    )


def variants_of(target: np.ndarray, mask: np.ndarray, geometry: Geometry, seed: int) -> list[Variant]:
    """The fixed set of stressed versions of one case (see the module docstring)."""
    labels = tissue_labels(target, mask)
    centres = place_lesions(labels, geometry, "wm", LESION_DIAMETERS_MM, 1.0, seed)
    centres += place_lesions(labels, geometry, "gm", LESION_DIAMETERS_MM, 1.0, seed + 1, existing=centres)
    variants = [Variant("clean", "clean")]
    variants += [Variant(p.name, "acquisition", p) for p in ACQUISITION_CHANGES]
    for factor, kind in ((HYPO_FACTOR, "hypo"), (HYPER_FACTOR, "hyper")):
        lesions = tuple(Lesion(c.centre_xyz, c.diameter_mm, factor) for c in centres)
        variants.append(Variant(f"lesions_{kind}", "lesion", lesions=lesions))
    return variants


def lesion_tissue(index: int) -> str:
    """Lesions are placed white matter first, then grey matter, `len(LESION_DIAMETERS_MM)` each."""
    return "wm" if index < len(LESION_DIAMETERS_MM) else "gm"


def run_stress_test(
    raw_dataset_dir: str | os.PathLike,
    model: ModelSource,
    out_dir: str | os.PathLike,
    prediction: PredictionSettings | None = None,
    settings: StressSettings | None = None,
    paths: AutosrPaths | None = None,
) -> dict[str, Any]:
    """Run the stress test (module docstring) and write `out_dir`/stress.json, stress.csv, lesions.csv and
    pictures/; returns stress.json's content."""
    from autosr.evaluation.stress.flag_score import QCScorer
    from autosr.evaluation.stress.outputs import summarize, write_outputs
    from autosr.imaging.foreground import channel_foreground, target_foreground
    from autosr.inference.predictor import Predictor

    settings = settings or StressSettings()
    raw = Path(raw_dataset_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases, split = evaluation_cases(raw, settings.max_cases)
    spec = load_dataset_spec(raw)
    results: list[ScanResult] = []
    lesion_rows: list[dict[str, Any]] = []
    pictures: list[dict[str, Any]] = []
    with model.opened(paths) as opened:
        predictor = Predictor.from_trained(
            opened.model_dir, opened.folds, opened.checkpoint, prediction, package=opened.package
        )
        scorer = QCScorer.for_predictor(predictor, raw)
        for case_index, case in enumerate(cases):
            inputs = [read_image(p) for p in case.channels]
            input_geometry = inputs[0][1]
            channels = np.stack([a for a, _ in inputs])
            foreground = channel_foreground(channels[0])  # of the unperturbed input, for every perturbation
            target, target_geometry = read_image(case.target)
            mask = read_image(case.mask)[0] > 0 if case.mask else target_foreground(target, spec.target_modality)
            seed = perturbation_seed(settings.seed, case_index, 0)
            clean: tuple[np.ndarray, np.ndarray] | None = None
            for variant_index, variant in enumerate(variants_of(target, mask, target_geometry, seed)):
                print(f"autosr stress-test: {case.case_id} {variant.name}", flush=True)
                array, geometry = channels, input_geometry
                if variant.perturbation is not None:
                    vseed = perturbation_seed(settings.seed, case_index, variant_index)
                    pairs = [variant.perturbation.apply(c, input_geometry, foreground, vseed) for c in array]
                    array, geometry = np.stack([a for a, _ in pairs]), pairs[0][1]
                if variant.lesions:
                    array = np.stack([insert_lesions(c, geometry, variant.lesions) for c in array])
                predicted, spread, qc = _predict(predictor, scorer, array, geometry, target_geometry)
                if variant.kind == "clean":
                    clean = (predicted, spread)
                scored = [(variant, insert_lesions(target, target_geometry, variant.lesions))]
                if variant.lesions:  # the same input scored against a truth without the lesions
                    scored.append(
                        (Variant(f"input_only_{variant.name}", "input_only_lesion", None, variant.lesions), target)
                    )
                for version, truth in scored:
                    voxels = scan_voxels(predicted, truth, spread, mask, target_geometry)
                    results.append(ScanResult(case.case_id, version, voxels, qc))
                for index, lesion in enumerate(variant.lesions):
                    scores = lesion_scores(lesion, target_geometry, predicted, clean[0], target, spread, clean[1])
                    for paired in (True, False):
                        lesion_rows.append(
                            {
                                "case": case.case_id,
                                "perturbation": variant.name if paired else f"input_only_{variant.name}",
                                "paired": paired,
                                "kind": lesion.kind,
                                "tissue": lesion_tissue(index),
                                "diameter_mm": lesion.diameter_mm,
                                **scores,
                            }
                        )
                if variant.lesions and settings.pictures and case_index == 0:
                    shown = resample_to_geometry(array[0], geometry, target_geometry, order=1)
                    pictures.append(
                        {
                            "name": variant.name,
                            "lesions": variant.lesions,
                            "input": shown,
                            "prediction": predicted,
                            "target": scored[0][1],
                            "geometry": target_geometry,
                        }
                    )
        summary = summarize(results, lesion_rows, split, predictor, opened)
        calibration = summary.pop("_calibration")
        if settings.store_calibration and calibration is not None:
            from autosr.inference.calibration import save_calibration

            source = f"autosr stress-test: {len(cases)} clean {'held-out' if split == 'Ts' else 'training'} cases"
            summary["calibration_file"] = str(save_calibration(opened.model_dir, scorer.key, calibration, source))
    write_outputs(out, summary, results, lesion_rows, pictures if settings.pictures else None)
    return summary


def _predict(predictor, scorer, array: np.ndarray, geometry: Geometry, target_geometry: Geometry):
    """Prediction and spread (target units) on the target grid, and the scan's quality-control values."""
    from autosr.preprocessing.preprocess import preprocess_arrays

    scan = preprocess_arrays(array, geometry, predictor.plans, predictor.configuration_name)
    normalized, uncertainty = predictor.predict_preprocessed(scan.input, with_uncertainty=True)
    predicted, out_geometry, spread = predictor.export(normalized, scan.properties, False, uncertainty, scan.foreground)
    if not out_geometry.same_grid(target_geometry):
        predicted = resample_to_geometry(predicted, out_geometry, target_geometry, order=1)
        spread = resample_to_geometry(spread, out_geometry, target_geometry, order=1)
    return predicted, spread, scorer.assess(scan, uncertainty)
