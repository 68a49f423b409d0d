"""L1 `Trainer` vs `AdversarialTrainer` on synthetic brains, with the same budget.

    python benchmarks/bench_adversarial.py [--workdir DIR] [--spacing 3] [--cases 10] [--epochs 8]
        [--iters 10] [--configuration 2d] [--trainers NAME ...] [--weights W ...] [--out results.json]

Generates `--cases` synthetic paired brains (`make_synthetic_brain_dataset`), plans them (the CPU-sized plan
of the quick demo: features halved and capped at 64, batch at most 16), trains fold 0 of each trainer for
exactly `--epochs` x `--iters` iterations, and scores the fold's held-out validation cases, which
`train_fold` predicts as whole volumes on the target grid in target units. Each extra `--weights` value
trains one more adversarial model with that full adversarial weight (same warm-up and ramp), which is how
the default weight was chosen.

Per case, inside the mask: sharpness = mean gradient magnitude (mm^-1 spacing-aware central differences) of
the prediction / that of the reference (1.0 = as sharp as the reference, < 1 blurred); SSIM and PSNR from
`image_metrics` with data_range = the reference's range inside the mask; tissue Dice (mean of the three
classes) from `tissue_agreement`. The same numbers for the reference itself and the input resampled onto
the target grid (the baseline, sharpness only) frame them. Figures: documentation/adversarial.md.
A workdir that already holds a trained model is reused (delete it to retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

DATASET_ID = 971
DATASET_NAME = "AdvBench"


def mean_gradient_magnitude(image: np.ndarray, mask: np.ndarray, spacing_zyx: tuple[float, ...]) -> float:
    """Mean |grad image| inside `mask`, central differences in physical units (intensity per mm)."""
    gradients = np.gradient(image.astype(np.float64), *spacing_zyx)
    return float(np.sqrt(sum(g**2 for g in gradients))[mask].mean())


def score_case(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray, spacing_zyx) -> dict[str, float]:
    from autosr.evaluation.metrics import image_metrics
    from autosr.evaluation.tissue import tissue_agreement

    data_range = float(reference[mask].max() - reference[mask].min())
    metrics = image_metrics(prediction, reference, mask, data_range, with_ms_ssim=False)
    tissue = tissue_agreement(prediction, reference, mask, "MR")
    dice = [v for k, v in tissue.items() if k.startswith("tissue_dice_") and v is not None]
    sharpness = mean_gradient_magnitude(prediction, mask, spacing_zyx) / mean_gradient_magnitude(
        reference, mask, spacing_zyx
    )
    return {
        "sharpness": sharpness,
        "ssim": float(metrics["ssim"]),
        "psnr": float(metrics["psnr"]),
        "mae": float(metrics["mae"]),
        "tissue_dice_mean": float(np.mean(dice)),
    }


def weighted_trainer(weight: float) -> str:
    """Register (in this process only) an AdversarialTrainer whose full adversarial weight is `weight`."""
    from autosr.training.adversarial.trainer import AdversarialTrainer
    from autosr.training.trainers import TRAINERS

    name = f"AdversarialTrainerW{str(weight).replace('.', 'p')}"
    TRAINERS[name] = type(name, (AdversarialTrainer,), {"adversarial_weight": weight})
    return name


def prepare(workdir: Path, spacing: float, cases: int, configuration: str):
    from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset
    from autosr.demo import size_plans_for_cpu
    from autosr.paths import AutosrPaths
    from autosr.planning.api import plan_dataset

    paths = AutosrPaths.resolve(workdir / "raw", workdir / "preprocessed", workdir / "results")
    for root in (paths.raw, paths.preprocessed, paths.results):
        root.mkdir(parents=True, exist_ok=True)
    name = f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    if not (paths.raw / name / "dataset.json").is_file():
        brains = SyntheticBrainSettings(num_train=cases, num_test=0, target_spacing_mm=spacing, seed=0)
        make_synthetic_brain_dataset(paths.raw, DATASET_ID, DATASET_NAME, brains)
    plans_path = paths.preprocessed / name / "plans.json"
    if not plans_path.is_file():
        plan_dataset(name, paths, configurations=[configuration], num_processes=2, progress=False)
        size_plans_for_cpu(plans_path, (configuration,), max_features=64, max_batch=16)
    return paths, name


def train_and_score(paths, name: str, configuration: str, trainer: str, epochs: int, iters: int) -> dict:
    from autosr.io import read_image
    from autosr.training.run import train_fold

    fold_dir = paths.results / name / f"{trainer}__autosrPlans__{configuration}" / "fold_0"
    start = time.perf_counter()
    if not (fold_dir / "validation" / "summary.json").is_file():
        train_fold(
            name, configuration, 0, trainer, paths, "cpu", continue_training=fold_dir.is_dir(), epochs=epochs,
            iters_per_epoch=iters, num_workers=0,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    raw = paths.raw / name
    per_case = {}
    for prediction_file in sorted((fold_dir / "validation").glob("*.nii.gz")):
        prediction, geometry = read_image(prediction_file)
        reference, _ = read_image(raw / "targetsTr" / prediction_file.name)
        mask = read_image(raw / "masksTr" / prediction_file.name)[0] > 0
        per_case[prediction_file.name] = score_case(prediction, reference, mask, geometry.spacing_zyx)
    keys = next(iter(per_case.values())).keys()
    mean = {k: float(np.mean([c[k] for c in per_case.values()])) for k in keys}
    return {"trainer": trainer, "train_seconds": round(seconds, 1), "mean": mean, "cases": per_case}


def baseline_sharpness(paths, name: str, case_files: list[str]) -> float:
    """Sharpness of the input resampled (linear) onto the target grid: how blurred the starting point is."""
    import SimpleITK as sitk

    from autosr.io import read_image

    raw = paths.raw / name
    values = []
    for file in case_files:
        reference_image = sitk.ReadImage(str(raw / "targetsTr" / file))
        case = file.removesuffix(".nii.gz")
        moving = sitk.ReadImage(str(raw / "imagesTr" / f"{case}_0000.nii.gz"), sitk.sitkFloat32)
        resampled = sitk.GetArrayFromImage(sitk.Resample(moving, reference_image, sitk.Transform(), sitk.sitkLinear))
        reference, geometry = read_image(raw / "targetsTr" / file)
        mask = read_image(raw / "masksTr" / file)[0] > 0
        values.append(
            mean_gradient_magnitude(resampled, mask, geometry.spacing_zyx)
            / mean_gradient_magnitude(reference, mask, geometry.spacing_zyx)
        )
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("bench_adversarial_work"))
    parser.add_argument("--spacing", type=float, default=3.0, help="target spacing in mm")
    parser.add_argument("--cases", type=int, default=10, help="training cases (fold 0 holds 2 of 10 out)")
    parser.add_argument("--configuration", default="2d")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--trainers", nargs="*", default=["Trainer", "AdversarialTrainer"])
    parser.add_argument("--weights", nargs="*", type=float, default=[], help="extra adversarial weights to try")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    workdir = args.workdir.resolve()
    paths, name = prepare(workdir, args.spacing, args.cases, args.configuration)
    trainers = list(args.trainers) + [weighted_trainer(w) for w in args.weights]
    results = [train_and_score(paths, name, args.configuration, t, args.epochs, args.iters) for t in trainers]
    cases = list(results[0]["cases"])
    report = {
        "budget": f"fold 0, {args.epochs} epochs x {args.iters} iterations each, {args.configuration}, "
        f"{args.spacing:g} mm, {args.cases} cases ({len(cases)} held out)",
        "input_baseline_sharpness": baseline_sharpness(paths, name, cases),
        "results": results,
    }
    print(f"{'trainer':32s} {'sharpness':>9s} {'ssim':>7s} {'psnr':>7s} {'mae':>8s} {'dice':>6s} {'train s':>8s}")
    for r in results:
        m = r["mean"]
        print(
            f"{r['trainer']:32s} {m['sharpness']:9.3f} {m['ssim']:7.4f} {m['psnr']:7.2f} {m['mae']:8.2f} "
            f"{m['tissue_dice_mean']:6.3f} {r['train_seconds']:8.1f}"
        )
    print(f"input resampled onto the target grid: sharpness {report['input_baseline_sharpness']:.3f}")
    print(report["budget"])
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
