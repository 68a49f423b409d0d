"""Registration, measured misalignment and N4 on synthetic brains with known displacements.

    python benchmarks/bench_registration.py accuracy [--workdir DIR] [--spacing 2] [--cases 8]
        [--displacements 2,2 4,4 8,8] [--mask-margin MM] [--out accuracy.json]
    python benchmarks/bench_registration.py bias [--workdir DIR] [--spacing 2] [--cases 8] [--unshrunk]
        [--out bias.json]
    python benchmarks/bench_registration.py training [--workdir DIR] [--spacing 3] [--train 20] [--test 8]
        [--misalign 4 4] [--epochs 12] [--iters 25] [--out training.json]

`accuracy`: for each displacement (mm, degrees), `--cases` synthetic brains are generated with
`--misalign` (inputs displaced by exactly that translation and rotation, random direction and axis;
`misalignment.json` holds the truth) and registered with `register_dataset` in one process (SimpleITK's
default threads), rigid with and without the N4 bias correction the metric sees. Per case: the mean over
the brain mask of |T_found(x) - T_true(x)| (mm), the angle of T_found^-1 T_true (degrees), the seconds,
and what the misalignment measurement of `autosr verify` reads against the true mean displacement. The
aligned dataset (0 mm, 0 degrees) gives the measurement floor. `--mask-margin MM` replaces the default
dilation of the region the metric samples (to measure that choice).

`bias`: N4 (`correct_bias_field`, as `n4_zscore` and registration use it) on the inputs of `--cases`
synthetic brains (their +-15 % bias field is drawn per case): the coefficient of variation of the input
inside the white matter (target > 850, inside the mask; the input resampled linearly onto the target grid)
before and after, and the CPU seconds per image (input and target). `--unshrunk` also fits the field on
the full-resolution input (no shrinking), to measure what the shrunk fit gives up.

`training`: one synthetic dataset three ways, the same voxels each time: aligned (the truth), misaligned
by `--misalign`, and that misaligned dataset registered by `autosr register`; plus the aligned one with
`n4_zscore` for the input. Each is planned with the `2d` configuration narrowed as the quick demo does
(features halved, at most 64, batch at most 16), fold 0 is trained with the L1 `Trainer` for exactly
`--epochs` x `--iters` iterations, and the model predicts the *aligned* held-out test inputs, scored
against their targets inside the masks (`evaluate_folders`, resampled onto the target grid), so the arms
differ only in the training pairs. Figures: documentation/registration.md and documentation/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def _truth_errors(record: dict, truth: dict, mask_file: Path) -> tuple[float, float, float]:
    from autosr.io import read_image
    from autosr.registration.transforms import (
        LinearMap,
        difference_mm,
        displacement_mm,
        region_points,
        rotation_angle_deg,
    )

    mask, geometry = read_image(mask_file)
    points = region_points(mask, geometry)
    found, true = LinearMap.from_json(record["linear_map"]), LinearMap.from_json(truth)
    return (
        float(difference_mm(found, true, points).mean()),
        rotation_angle_deg(found.matrix.T @ true.matrix),
        float(displacement_mm(true, points).mean()),
    )


def accuracy(args: argparse.Namespace) -> dict:
    from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset
    from autosr.registration.api import register_dataset
    from autosr.registration.misalignment import measure_pair_misalignment
    from autosr.registration.pairwise import RegistrationSettings

    workdir = Path(args.workdir)
    results = {}
    for index, text in enumerate(["0,0", *args.displacements]):
        mm, deg = (float(v) for v in text.split(","))
        source = workdir / f"Dataset{100 + index:03d}_Mis{index}"
        if not (source / "dataset.json").is_file():
            brains = SyntheticBrainSettings(
                num_train=args.cases, num_test=0, target_spacing_mm=args.spacing, seed=1, misalign=(mm, deg)
            )
            make_synthetic_brain_dataset(workdir, 100 + index, f"Mis{index}", brains, num_processes=2)
        truth = json.loads((source / "misalignment.json").read_text())["cases"]
        made_with = {(d["translation_mm"], d["rotation_deg"]) for d in truth.values()}
        if made_with != {(mm, deg)}:  # a dataset of an earlier run with other --displacements
            raise SystemExit(f"{source} holds displacements {sorted(made_with)}, not {text}: use another --workdir")
        row = {"translation_mm": mm, "rotation_deg": deg}
        for label, bias_correction in (("n4", True), ("no_n4", False)):
            out = workdir / f"Dataset{200 + index:03d}_Reg{index}{label.replace('_', '')}"
            shutil.rmtree(out, ignore_errors=True)
            settings = RegistrationSettings(bias_correction=bias_correction)
            if args.mask_margin is not None:
                settings = replace(settings, mask_margin_mm=args.mask_margin)
            summary = register_dataset(source, out, settings=settings, num_processes=1, progress=False)
            summary.raise_if_failed()
            cases = {}
            for case_id, displacement in truth.items():
                record = json.loads((out / "registration" / "Tr" / f"{case_id}.json").read_text())
                error_mm, error_deg, true_mm = _truth_errors(
                    record, displacement, source / "masksTr" / f"{case_id}.nii.gz"
                )
                cases[case_id] = {
                    "error_mm": error_mm,
                    "error_deg": error_deg,
                    "seconds": record["seconds"],
                    "cpu_seconds": record["cpu_seconds"],
                }
            row[label] = _aggregate(cases)
        measured = {}
        for case_id, displacement in truth.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            estimate = measure_pair_misalignment(
                source / "imagesTr" / f"{case_id}_0000.nii.gz",
                source / "targetsTr" / f"{case_id}.nii.gz",
                source / "masksTr" / f"{case_id}.nii.gz",
            )
            true_mm = _truth_errors(
                {"linear_map": displacement}, displacement, source / "masksTr" / f"{case_id}.nii.gz"
            )[2]
            measured[case_id] = {
                "true_mean_mm": true_mm,
                "measured_mean_mm": estimate.mean_mm,
                "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu_start,
            }
        row["verify_measurement"] = {
            "true_mean_mm": float(np.mean([m["true_mean_mm"] for m in measured.values()])),
            "measured_mean_mm": float(np.mean([m["measured_mean_mm"] for m in measured.values()])),
            "max_abs_difference_mm": float(
                max(abs(m["measured_mean_mm"] - m["true_mean_mm"]) for m in measured.values())
            ),
            "median_seconds": float(np.median([m["seconds"] for m in measured.values()])),
            "median_cpu_seconds": float(np.median([m["cpu_seconds"] for m in measured.values()])),
        }
        results[text] = row
        print(json.dumps({text: row}, indent=1), flush=True)
    return results


def _aggregate(cases: dict) -> dict:
    errors = np.array([c["error_mm"] for c in cases.values()])
    angles = np.array([c["error_deg"] for c in cases.values()])
    seconds = np.array([c["seconds"] for c in cases.values()])
    cpu_seconds = np.array([c["cpu_seconds"] for c in cases.values()])
    return {
        "error_mm_mean": float(errors.mean()),
        "error_mm_max": float(errors.max()),
        "error_deg_mean": float(angles.mean()),
        "error_deg_max": float(angles.max()),
        "seconds_median": float(np.median(seconds)),
        "seconds_max": float(seconds.max()),
        "cpu_seconds_median": float(np.median(cpu_seconds)),
        "cpu_seconds_max": float(cpu_seconds.max()),
        "cases": cases,
    }


def _coefficient_of_variation(image, reference, region: np.ndarray) -> float:
    """std/mean of `image` (resampled linearly onto `reference`'s grid) inside `region`."""
    import SimpleITK as sitk

    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    values = sitk.GetArrayFromImage(resampled)[region]
    return float(values.std() / values.mean())


def bias(args: argparse.Namespace) -> dict:
    import SimpleITK as sitk

    from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset
    from autosr.imaging.bias_field import correct_bias_field

    workdir = Path(args.workdir)
    source = workdir / "Dataset100_Bias"
    if not (source / "dataset.json").is_file():
        brains = SyntheticBrainSettings(num_train=args.cases, num_test=0, target_spacing_mm=args.spacing, seed=2)
        make_synthetic_brain_dataset(workdir, 100, "Bias", brains, num_processes=2)
    cases = {}
    for target_file in sorted((source / "targetsTr").glob("*.nii.gz")):
        case_id = target_file.name.removesuffix(".nii.gz")
        target = sitk.ReadImage(str(target_file), sitk.sitkFloat32)
        image = sitk.ReadImage(str(source / "imagesTr" / f"{case_id}_0000.nii.gz"), sitk.sitkFloat32)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "masksTr" / target_file.name))) > 0
        white_matter = mask & (sitk.GetArrayFromImage(target) > 850)
        cpu = time.process_time()
        corrected = correct_bias_field(image)
        input_cpu = time.process_time() - cpu
        cpu = time.process_time()
        correct_bias_field(target)
        target_cpu = time.process_time() - cpu
        cases[case_id] = {
            "wm_cv_before": _coefficient_of_variation(image, target, white_matter),
            "wm_cv_after": _coefficient_of_variation(corrected, target, white_matter),
            "input_cpu_seconds": input_cpu,
            "target_cpu_seconds": target_cpu,
            "input_size_xyz": list(image.GetSize()),
            "target_size_xyz": list(target.GetSize()),
        }
        if args.unshrunk:
            cpu = time.process_time()
            unshrunk = correct_bias_field(image, voxels_per_axis=max(image.GetSize()))
            cases[case_id]["unshrunk_input_cpu_seconds"] = time.process_time() - cpu
            cases[case_id]["wm_cv_after_unshrunk"] = _coefficient_of_variation(unshrunk, target, white_matter)
    keys = ["wm_cv_before", "wm_cv_after", "input_cpu_seconds", "target_cpu_seconds"]
    if args.unshrunk:
        keys += ["wm_cv_after_unshrunk", "unshrunk_input_cpu_seconds"]
    summary = {key: float(np.mean([c[key] for c in cases.values()])) for key in keys}
    print(json.dumps(summary, indent=1), flush=True)
    return {"mean": summary, "cases": cases}


def training(args: argparse.Namespace) -> dict:
    from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset
    from autosr.demo import size_plans_for_cpu
    from autosr.evaluation.evaluate import evaluate_folders
    from autosr.evaluation.settings import EvaluationSettings
    from autosr.inference.api import predict
    from autosr.inference.settings import FolderSettings, ModelSource, PredictionSettings
    from autosr.paths import AutosrPaths
    from autosr.planning.api import plan_dataset
    from autosr.registration.api import register_dataset
    from autosr.training.run import train_fold

    workdir = Path(args.workdir)
    paths = AutosrPaths.resolve(workdir / "raw", workdir / "preprocessed", workdir / "results")
    for root in (paths.raw, paths.preprocessed, paths.results):
        root.mkdir(parents=True, exist_ok=True)
    brains = SyntheticBrainSettings(num_train=args.train, num_test=args.test, target_spacing_mm=args.spacing, seed=0)
    aligned = paths.raw / "Dataset301_Aligned"
    if not (aligned / "dataset.json").is_file():
        make_synthetic_brain_dataset(paths.raw, 301, "Aligned", brains, num_processes=2)
    misaligned = paths.raw / "Dataset302_Misaligned"
    if not (misaligned / "dataset.json").is_file():
        shifted = replace(brains, misalign=tuple(args.misalign))
        make_synthetic_brain_dataset(paths.raw, 302, "Misaligned", shifted, num_processes=2)
    registered = paths.raw / "Dataset303_Registered"
    start = time.perf_counter()
    register_dataset(misaligned, registered, num_processes=2, progress=False).raise_if_failed()
    registration_seconds = time.perf_counter() - start
    n4 = paths.raw / "Dataset304_AlignedN4"
    if not (n4 / "dataset.json").is_file():
        shutil.copytree(aligned, n4)
        content = json.loads((n4 / "dataset.json").read_text())
        content["normalization"] = {"0": "n4_zscore"}
        (n4 / "dataset.json").write_text(json.dumps(content, indent=2))

    results = {"registration_seconds_2_processes": registration_seconds}
    for label, folder in (
        ("aligned", aligned),
        ("misaligned", misaligned),
        ("registered", registered),
        ("aligned_n4", n4),
    ):
        name = folder.name
        start = time.perf_counter()
        plan_dataset(name, paths, configurations=["2d"], num_processes=2, progress=False)
        plans_path = paths.preprocessed / name / "plans.json"
        size_plans_for_cpu(plans_path, ("2d",), max_features=64, max_batch=16)
        fold_dir = paths.results / name / "Trainer__autosrPlans__2d" / "fold_0"
        if not (fold_dir / "checkpoint_final.pt").is_file():
            train_fold(
                name, "2d", 0, "Trainer", paths, "cpu", continue_training=fold_dir.is_dir(), epochs=args.epochs,
                iters_per_epoch=args.iters, num_workers=0,
            )  # fmt: skip
        train_seconds = time.perf_counter() - start
        prediction_dir = workdir / "predictions" / label
        predict(
            aligned / "imagesTs", prediction_dir, ModelSource(dataset=name, configuration="2d", folds=(0,)),
            PredictionSettings(device="cpu"), FolderSettings(progress=False), paths,
        )  # fmt: skip
        _, summary = evaluate_folders(
            aligned / "targetsTs", prediction_dir, mask_dir=aligned / "masksTs", input_dir=aligned / "imagesTs",
            settings=EvaluationSettings(resample=True, tissue=False, ms_ssim=False), pictures=False,
        )  # fmt: skip
        metrics = summary["metrics"]
        results[label] = {
            "plan_and_train_seconds": train_seconds,
            "model": {k: metrics["model"][k] for k in ("psnr", "ssim", "mae") if k in metrics["model"]},
            "baseline": {
                k: metrics["baseline"][k] for k in ("psnr", "ssim", "mae") if k in metrics.get("baseline", {})
            },
        }
        print(json.dumps({label: results[label]}, indent=1), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_subparsers(dest="part", required=True)
    acc = parts.add_parser("accuracy")
    acc.add_argument("--workdir", default="/tmp/bench_registration_accuracy")
    acc.add_argument("--spacing", type=float, default=2.0)
    acc.add_argument("--cases", type=int, default=8)
    acc.add_argument("--displacements", nargs="+", default=["2,2", "4,4", "8,8"])
    acc.add_argument("--mask-margin", type=float, default=None, help="dilation of the metric region (mm)")
    acc.add_argument("--out", default=None)
    bias_parser = parts.add_parser("bias")
    bias_parser.add_argument("--workdir", default="/tmp/bench_registration_bias")
    bias_parser.add_argument("--spacing", type=float, default=2.0)
    bias_parser.add_argument("--cases", type=int, default=8)
    bias_parser.add_argument("--unshrunk", action="store_true", help="also fit N4 on the unshrunk input")
    bias_parser.add_argument("--out", default=None)
    train = parts.add_parser("training")
    train.add_argument("--workdir", default="/tmp/bench_registration_training")
    train.add_argument("--spacing", type=float, default=3.0)
    train.add_argument("--train", type=int, default=20)
    train.add_argument("--test", type=int, default=8)
    train.add_argument("--misalign", nargs=2, type=float, default=[4.0, 4.0])
    train.add_argument("--epochs", type=int, default=12)
    train.add_argument("--iters", type=int, default=25)
    train.add_argument("--out", default=None)
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    results = {"part": args.part, "arguments": vars(args), "cpu_count": os.cpu_count()}
    results.update({"accuracy": accuracy, "bias": bias, "training": training}[args.part](args))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
