"""How much of a synthetic brain's voxel error can any uncertainty rank? The noise draw against the subject.

    python benchmarks/bench_trust_ceiling.py --workdir W [--case brain_012] [--draws 2] [--out ceiling.json]

Needs the brain model of `benchmarks/bench_trust.py` in the same `--workdir`. The held-out case is rebuilt
from its generator (`synthetic_brain.subject_parts`, seed and case index of the dataset; checked equal to the
written files), so its noise-free input and noise-free target are known. The 5-fold ensemble (no mirroring)
predicts the written input, the noise-free input and `--draws` inputs with other Rician noise draws. Reported:
the MAE of each; the Spearman correlation of the written input's |error| with the |error| of each other
version (how much of the voxels' error ranking is fixed by the subject rather than by the noise draw: two
draws of the same subject share only that part), and with its own |error| against the noise-free target (how
much the target's noise matters). documentation/trust.md quotes it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="bench_trust_work")
    parser.add_argument("--case", default="brain_012", help="a held-out case of the bench_trust brain dataset")
    parser.add_argument("--draws", type=int, default=2, help="other noise draws of the input")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    from autosr.dataset_conversion import synthetic_brain as sb
    from autosr.evaluation.stress.trust_metrics import spearman
    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings
    from autosr.io import read_image
    from autosr.io.resampling import resample_to_geometry
    from autosr.preprocessing.preprocess import preprocess_arrays

    torch.set_num_threads(1)
    workdir = Path(args.workdir).resolve()
    raw = workdir / "raw" / "Dataset952_TrustBrain"
    settings = sb.SyntheticBrainSettings(num_train=12, num_test=4, target_spacing_mm=2.0)  # as bench_trust.py
    index = int(args.case.rsplit("_", 1)[1])
    rng = np.random.default_rng([settings.seed, index])
    parts = sb.subject_parts(sb.load_template(settings.target_spacing_mm), settings.input_spacing, rng)
    written = sb.rician(parts.clean_input, rng)
    on_disk, _ = read_image(raw / "imagesTs" / f"{args.case}_0000.nii.gz")
    target, target_geometry = read_image(raw / "targetsTs" / f"{args.case}.nii.gz")
    if not (np.allclose(on_disk, written, atol=1e-3) and np.allclose(target, parts.target, atol=1e-3)):
        raise SystemExit(f"{args.case}: the rebuilt subject differs from the written files (other settings?)")
    mask = read_image(raw / "masksTs" / f"{args.case}.nii.gz")[0] > 0
    model = workdir / "results" / "Dataset952_TrustBrain" / "Trainer__autosrPlans__2d"
    predictor = Predictor.from_trained(
        model, [0, 1, 2, 3, 4], "final", PredictionSettings(device="cpu", use_mirroring=False)
    )

    def error(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
        scan = preprocess_arrays(image[None], parts.input_geometry, predictor.plans, predictor.configuration_name)
        normalized, _ = predictor.predict_preprocessed(scan.input)
        predicted, geometry, _ = predictor.export(normalized, scan.properties, False, None, scan.foreground)
        if not geometry.same_grid(target_geometry):
            predicted = resample_to_geometry(predicted, geometry, target_geometry, order=1)
        return np.abs(predicted - truth)[mask]

    written_error = error(written, target)
    versions = {"noise-free input": parts.clean_input.astype(np.float32)}
    for draw in range(args.draws):
        versions[f"noise draw {draw + 1}"] = sb.rician(parts.clean_input, np.random.default_rng([101, draw]))
    errors = {name: error(image, target) for name, image in versions.items()}
    draws = [e for name, e in errors.items() if name.startswith("noise draw")]
    result = {
        "case": args.case,
        "mae_written_input": float(written_error.mean()),
        "mae_written_input_vs_noise_free_target": float(error(written, parts.clean_target).mean()),
        **{f"mae_{name.replace(' ', '_').replace('-', '_')}": float(e.mean()) for name, e in errors.items()},
        "spearman_vs_noise_free_target": spearman(written_error, error(written, parts.clean_target)),
        **{
            f"spearman_vs_{name.replace(' ', '_').replace('-', '_')}": spearman(written_error, e)
            for name, e in errors.items()
        },
        "spearman_vs_mean_of_draws": spearman(written_error, np.mean(draws, axis=0)) if draws else None,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
