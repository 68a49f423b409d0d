"""Which per-voxel features rank a model's errors? Candidate calibration tables, scored leave one case out.

    python benchmarks/bench_trust_features.py --workdir W --dataset brain [--max-cases 3] [--no-tta]
        [--out features.json]

Needs the trained model of `benchmarks/bench_trust.py` in the same `--workdir`. Predicts the clean held-out
cases as the stress test does (the 5-fold ensemble, mirroring unless `--no-tta`; each scan also once more
from its input smoothed by a Gaussian of 1 input voxel, a crude denoiser), then computes candidate features
of every voxel inside the mask on the target grid: from the prediction (intensity, edge strength, signed
and absolute residual against the 3 x 3 x 3 mean, residuals against Gaussian smoothings, the absolute
residual smoothed), from the input resampled to the target grid (its residual and absolute residual, local
noise, band-pass) and the change of the prediction when the input is smoothed (how much of the output the
input's noise made). Input features are divided by the input's 99th percentile in the mask so that scans
of other intensity scales share a table. For each candidate (a set of features and their quantile bin
counts) an `ErrorTable` is fitted on all cases but one and scored on that one: Spearman correlation of the
expected error with |error| and the sparsification ratio, means over the cases (what the stress test's
`uncertainty_error_spearman` and `sparsification_ratio` measure, with the calibration's leave one case out).

On the brains, each held-out subject is also rebuilt from its generator (as `bench_trust_ceiling.py` does,
checked equal to the written files) and predicted from its noise-free input, which gives two *oracle*
features no real scan has: the noise response (prediction - the noise-free input's prediction: what this
noise draw did to the output) and the noise-free error (|the noise-free input's prediction - target|: where
the model errs whatever the draw). Tables over them say how far knowing either would carry the ranking.
documentation/trust.md quotes it; autosr/inference/calibration.py holds the kept table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DATASETS = {"phantom": "Dataset951_TrustPhantom", "brain": "Dataset952_TrustBrain"}
CURRENT = ("prediction", "edges", "residual")
# (features, bins per feature): the table before (8 x 8 x 8 over intensity, edges, |residual|), the kept one,
# and the alternatives measured against them.
CANDIDATES: list[tuple[tuple[str, ...], tuple[int, ...]]] = [
    (("prediction", "edges", "abs_residual"), (8, 8, 8)),
    (("prediction", "edges", "abs_residual"), (32, 4, 4)),
    (CURRENT, (32, 4, 4)),
    (CURRENT, (8, 8, 8)),
    (("prediction",), (32,)),
    (("prediction", "edges"), (16, 16)),
    (("prediction", "residual"), (32, 16)),
    (("prediction", "residual_g2"), (24, 16)),
    (("prediction", "edges", "abs_residual_smooth1"), (32, 4, 4)),
    (("prediction", "edges", "abs_residual_smooth2"), (32, 4, 4)),
    (("prediction", "edges", "input_abs_residual"), (32, 4, 4)),
    (("prediction", "edges", "input_residual"), (32, 4, 4)),
    (("prediction", "edges", "input_abs_residual_smooth1"), (32, 4, 4)),
    (("prediction", "edges", "input_abs_residual_smooth2"), (32, 4, 4)),
    (("prediction", "edges", "input_noise"), (32, 4, 4)),
    (("prediction", "edges", "input_bandpass"), (32, 4, 4)),
    (("prediction", "edges", "denoising_change"), (32, 4, 4)),
    (("prediction", "input_residual"), (24, 12)),
    (("prediction", "edges", "residual", "input_abs_residual_smooth1"), (16, 4, 4, 4)),
    (("prediction", "edges", "residual", "input_residual"), (16, 4, 4, 4)),
]
ORACLE_CANDIDATES: list[tuple[tuple[str, ...], tuple[int, ...]]] = [
    (("prediction", "edges", "oracle_noise_response"), (32, 4, 4)),
    (("prediction", "oracle_noise_response"), (32, 16)),
    (("prediction", "edges", "residual", "oracle_noise_response"), (16, 4, 4, 8)),
    (("prediction", "oracle_noise_free_error"), (32, 16)),
    (("prediction", "oracle_noise_free_error", "oracle_noise_response"), (16, 8, 8)),
]


def voxel_features(prediction, smoothed_prediction, image, mask, spacing_zyx) -> dict[str, np.ndarray]:
    """Every candidate feature of the voxels inside `mask` (all arrays on the target grid)."""
    from scipy import ndimage

    from autosr.inference.calibration import edge_strength, residual

    prediction = np.asarray(prediction, dtype=np.float64)
    image = np.asarray(image, dtype=np.float64)
    scale = float(np.percentile(image[mask], 99)) or 1.0

    def gauss(a: np.ndarray, sigma: float) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, mode="reflect")

    def box(a: np.ndarray, size: int) -> np.ndarray:
        return ndimage.uniform_filter(a, size, mode="reflect")

    input_residual = image - box(image, 3)
    features = {
        "prediction": prediction,
        "edges": edge_strength(prediction, spacing_zyx),
        "residual": residual(prediction),
        "abs_residual": np.abs(residual(prediction)),
        "residual_g2": prediction - gauss(prediction, 2),
        "abs_residual_smooth1": gauss(np.abs(residual(prediction)), 1),
        "abs_residual_smooth2": gauss(np.abs(residual(prediction)), 2),
        "input_residual": input_residual / scale,
        "input_abs_residual": np.abs(input_residual) / scale,
        "input_abs_residual_smooth1": gauss(np.abs(input_residual), 1) / scale,
        "input_abs_residual_smooth2": gauss(np.abs(input_residual), 2) / scale,
        "input_noise": np.sqrt(box(input_residual**2, 5)) / scale,
        "input_bandpass": np.abs(gauss(image, 1) - gauss(image, 3)) / scale,
        "denoising_change": prediction - np.asarray(smoothed_prediction, dtype=np.float64),
    }
    return {name: np.asarray(value)[mask] for name, value in features.items()}


def score(cases: list[dict[str, np.ndarray]], names: tuple[str, ...], bins: tuple[int, ...]) -> dict[str, float]:
    """Leave one case out: mean Spearman and sparsification ratio of the table fitted on the other cases."""
    from autosr.evaluation.stress.trust_metrics import sparsification, spearman
    from autosr.inference.calibration import ErrorTable

    rho, ratio, error_ratio = [], [], []
    for index, case in enumerate(cases):
        others = [c for i, c in enumerate(cases) if i != index]
        table = ErrorTable.fit(
            [np.concatenate([c[n] for c in others]) for n in names], np.concatenate([c["error"] for c in others]), bins
        )
        expected = table.lookup([case[n] for n in names])
        rho.append(spearman(expected, case["error"]))
        sparsified = sparsification(expected, case["error"])
        ratio.append(sparsified["ratio"])
        error_ratio.append(sparsified["error_ratio"])
    return {
        "spearman": float(np.mean(rho)),
        "sparsification_ratio": float(np.mean(ratio)),
        "sparsification_error_ratio": float(np.mean(error_ratio)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="bench_trust_work")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="brain")
    parser.add_argument("--max-cases", type=int, default=3)
    parser.add_argument("--no-tta", action="store_true", help="predict without mirroring")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch
    from scipy import ndimage

    from autosr.evaluation.stress.api import evaluation_cases
    from autosr.evaluation.stress.trust_metrics import spearman
    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings
    from autosr.io import read_image
    from autosr.io.resampling import resample_to_geometry
    from autosr.preprocessing.preprocess import preprocess_arrays

    torch.set_num_threads(1)
    raw = Path(args.workdir).resolve() / "raw" / DATASETS[args.dataset]
    model = Path(args.workdir).resolve() / "results" / DATASETS[args.dataset] / "Trainer__autosrPlans__2d"
    settings = PredictionSettings(device="cpu", use_mirroring=not args.no_tta)
    predictor = Predictor.from_trained(model, [0, 1, 2, 3, 4], "final", settings)
    cases, _ = evaluation_cases(raw, args.max_cases)

    def predict(image: np.ndarray, geometry, target_geometry) -> np.ndarray:
        scan = preprocess_arrays(image[None], geometry, predictor.plans, predictor.configuration_name)
        normalized, _ = predictor.predict_preprocessed(scan.input)
        predicted, out_geometry, _ = predictor.export(normalized, scan.properties, False, None, scan.foreground)
        if not out_geometry.same_grid(target_geometry):
            predicted = resample_to_geometry(predicted, out_geometry, target_geometry, order=1)
        return predicted

    def noise_free_input(case_id: str, written: np.ndarray) -> tuple[np.ndarray, object] | None:
        """A held-out brain's noise-free input and its geometry, rebuilt from the generator (None: phantom)."""
        if args.dataset != "brain":
            return None
        from autosr.dataset_conversion import synthetic_brain as sb

        brain = sb.SyntheticBrainSettings(num_train=12, num_test=4, target_spacing_mm=2.0)  # as bench_trust.py
        rng = np.random.default_rng([brain.seed, int(case_id.rsplit("_", 1)[1])])
        parts = sb.subject_parts(sb.load_template(brain.target_spacing_mm), brain.input_spacing, rng)
        if not np.allclose(written, sb.rician(parts.clean_input, rng), atol=1e-3):
            raise SystemExit(f"{case_id}: the rebuilt subject differs from the written files (other settings?)")
        return parts.clean_input.astype(np.float32), parts.input_geometry

    voxels = []
    for case in cases:
        image, geometry = read_image(case.channels[0])
        target, target_geometry = read_image(case.target)
        mask = read_image(case.mask)[0] > 0  # the bench_trust datasets have masks
        prediction = predict(image, geometry, target_geometry)
        smoothed = predict(
            ndimage.gaussian_filter(image.astype(np.float64), 1.0).astype(np.float32), geometry, target_geometry
        )
        on_target_grid = resample_to_geometry(image, geometry, target_geometry, order=1)
        features = voxel_features(prediction, smoothed, on_target_grid, mask, target_geometry.spacing_zyx)
        features["error"] = np.abs(prediction - target)[mask].astype(np.float64)
        clean = noise_free_input(case.case_id, image)
        if clean is not None:
            noise_free = predict(clean[0], clean[1], target_geometry)
            features["oracle_noise_response"] = (prediction - noise_free)[mask].astype(np.float64)
            features["oracle_noise_free_error"] = np.abs(noise_free - target)[mask].astype(np.float64)
        voxels.append(features)
        print(f"[bench_trust_features] {case.case_id}: MAE {features['error'].mean():.1f}", flush=True)
    single = {
        name: float(np.mean([spearman(c[name], c["error"]) for c in voxels])) for name in voxels[0] if name != "error"
    }
    rows = []
    oracle = ORACLE_CANDIDATES if "oracle_noise_response" in voxels[0] else []
    for names, bins in CANDIDATES + oracle:
        row = {"features": list(names), "bins": list(bins), **score(voxels, names, bins)}
        rows.append(row)
        print(f"  {' + '.join(names):60s} {'x'.join(map(str, bins)):>10s}  rho {row['spearman']:.3f}  "
              f"ratio {row['sparsification_ratio']:.3f}", flush=True)  # fmt: skip
    result = {
        "dataset": args.dataset,
        "cases": [c.case_id for c in cases],
        "mirroring": not args.no_tta,
        "single_feature_spearman": single,
        "candidates": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
