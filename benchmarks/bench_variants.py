"""Model variants at equal training budget, scored on held-out scans under several inference settings.

    python benchmarks/bench_variants.py --dataset brain2d --variants instance batch group none \
        --iterations 400 --infer 0.25:1 0.5:1 0.5:2 --workdir /tmp/variants --out results.json

The choices behind autosr's defaults (network normalization, augmentation, residual learning, the 2D
plane, background handling) are measured with this script: every variant trains fold 0 of the same
dataset for the same number of iterations (same seed, same data, same plan apart from the variant's edit),
then predicts the dataset's held-out test scans (`imagesTs`) through the user-facing `Predictor` from the
raw files, and each prediction is scored against `targetsTs` inside `masksTs` with autosr's evaluation
(PSNR, SSIM, MS-SSIM, MAE), plus sharpness: the mean gradient magnitude of the prediction inside the mask
relative to the reference's (1 = as sharp as the reference), overall and along each axis. The no-learning
baselines (linear map and per-image standardization, fitted on the training cases) are scored alike.

`--infer STEP:SCALE` lists inference settings: tile step as a fraction of the tile, and tile size as a
multiple of the training patch (2 = tiles twice the patch per axis, capped at the volume).

Datasets (generated on first use in the workdir):
- `phantom3d`: 24 + 4 procedural phantoms, 48^3 target at 1 mm, input at 1.5 mm; `3d_fullres`, 32^3 patch,
  narrowed like the brains.
- `brain2d` / `brain3d`: 20 + 4 synthetic brains (MNI152-based), target 3 mm, input 4.5 mm; `2d` or
  `3d_fullres`, network narrowed as the quick demo does (features halved, at most 64; batch at most 16).
- `thick2d` / `thick3d`: 20 + 4 synthetic brains with a thick-slice input (target 2 mm; input 2 mm in-plane,
  8 mm slices averaged over their thickness); `2d` or `3d_fullres`, narrowed.
- `thicksr2d` / `thicksr3d`: the same with the target's contrast and no bias field in the input: resolution
  enhancement alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# --- variants: a name -> an edit of the configuration's plan (and a trainer name) -------------------------


def _set_network(key: str, value: Any) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        config["network"][key] = value

    return edit


def _set(key: str, value: Any) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        config[key] = value

    return edit


VARIANTS: dict[str, tuple[Callable[[dict], None] | None, str]] = {
    "default": (None, "Trainer"),
    # network normalization (documentation/benchmark.md, "Network normalization")
    "instance": (_set_network("norm", "instance"), "Trainer"),
    "batch": (_set_network("norm", "batch"), "Trainer"),
    "group": (_set_network("norm", "group"), "Trainer"),
    "none": (_set_network("norm", "none"), "Trainer"),
    # spatial augmentation ("Augmentation")
    "aug_interpolating": (None, "TrainerInterpolatingAugmentation"),
    "aug_lossless": (None, "TrainerLosslessAugmentation"),
    "aug_mirror": (None, "Trainer"),
    # residual learning and the 2D plane ("Super-resolution")
    "residual": (_set_network("residual", True), "Trainer"),
    "direct": (_set_network("residual", False), "Trainer"),
    "plane_z": (_set("slice_axes", [0]), "Trainer"),
    "plane_y": (_set("slice_axes", [1]), "Trainer"),
    "plane_yx": (_set("slice_axes", [1, 2]), "Trainer"),
    # the three model families (documentation/diffusion.md)
    "adversarial": (None, "AdversarialTrainer"),
    "diffusion": (None, "DiffusionTrainer"),
    # where the flow starts ("Source" in documentation/diffusion.md)
    "diffusion_noise": (_set("diffusion", {"source": "noise"}), "DiffusionTrainer"),
    "diffusion_input": (_set("diffusion", {"source": "input"}), "DiffusionTrainer"),
    "diffusion_input_sigma0.5": (_set("diffusion", {"source": "input", "source_noise": 0.5}), "DiffusionTrainer"),
}


def variant_parts(name: str) -> tuple[list[Callable[[dict], None]], str]:
    """The plan edits and trainer of a variant; "a+b" combines variants (at most one non-default trainer)."""
    edits, trainers = [], set()
    for part in name.split("+"):
        if part not in VARIANTS:
            raise SystemExit(f"unknown variant '{part}' (valid: {', '.join(VARIANTS)}, combined with +)")
        edit, trainer = VARIANTS[part]
        if edit is not None:
            edits.append(edit)
        trainers.add(trainer)
    trainers.discard("Trainer")
    if len(trainers) > 1:
        raise SystemExit(f"variant '{name}' combines trainers {sorted(trainers)}")
    return edits, trainers.pop() if trainers else "Trainer"


# --- datasets ---------------------------------------------------------------------------------------------


def _narrow(config: dict, max_features: int = 64, max_batch: int = 16) -> None:
    network = config["network"]
    network["features_per_stage"] = [min(max(8, f // 2), max_features) for f in network["features_per_stage"]]
    config["batch_size"] = min(config["batch_size"], max_batch)


def prepare_dataset(name: str, workdir: Path, patch: list[int] | None = None):
    """(paths, dataset folder name, configuration) with the dataset generated, planned and preprocessed."""
    from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_dataset
    from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset
    from autosr.formats.plans import Plans
    from autosr.paths import AutosrPaths
    from autosr.planning.api import plan_dataset
    from autosr.preprocessing.preprocess import preprocess_dataset

    paths = AutosrPaths.resolve(workdir / "raw", workdir / "preprocessed", workdir / "results")
    for root in (paths.raw, paths.preprocessed, paths.results):
        root.mkdir(parents=True, exist_ok=True)
    family, configuration = name[:-2], {"2d": "2d", "3d": "3d_fullres"}[name[-2:]]
    ids = {"phantom": 961, "brain": 962, "thick": 963, "thicksr": 964}
    folder = f"Dataset{ids[family]:03d}_{family.capitalize()}Bench"
    raw = paths.raw / folder
    if not (raw / "dataset.json").is_file():
        if family == "phantom":
            phantoms = PhantomSettings(num_train=24, num_test=4, shape_zyx=(48, 48, 48))
            make_phantom_dataset(paths.raw, ids[family], f"{family.capitalize()}Bench", phantoms)
        elif family == "brain":
            brains = SyntheticBrainSettings(num_train=20, num_test=4, target_spacing_mm=3.0)
            make_synthetic_brain_dataset(paths.raw, ids[family], f"{family.capitalize()}Bench", brains, num_processes=2)
        else:
            brains = SyntheticBrainSettings(
                num_train=20,
                num_test=4,
                target_spacing_mm=2.0,
                input_spacing_mm=2.0,
                slice_thickness_mm=8.0,
                contrast="same" if family == "thicksr" else "low-field",
            )
            make_synthetic_brain_dataset(paths.raw, ids[family], f"{family.capitalize()}Bench", brains, num_processes=2)
    pre = paths.preprocessed / folder
    plans_path = pre / "plans.json"
    if not plans_path.is_file():
        plans = plan_dataset(folder, paths, configurations=[configuration], num_processes=2, preprocess=False)
        config = plans.raw["configurations"][configuration]
        _narrow(config)
        if family == "phantom":
            config["patch_size"] = [32, 32, 32]
        if patch:
            config["patch_size"] = list(patch)
        plans.save(plans_path)
        preprocess_dataset(raw, pre, Plans.load(plans_path), [configuration], num_processes=2, progress=False)
    return paths, folder, configuration


# --- training and scoring ---------------------------------------------------------------------------------


def train_variant(paths, folder: str, configuration: str, variant: str, iterations: int, workdir: Path):
    """Train fold 0 of `variant` for `iterations` (in epochs of 25); returns (network, plans, seconds)."""
    from autosr.checkpoint import load_checkpoint
    from autosr.device import choose_device
    from autosr.formats.plans import Plans
    from autosr.formats.splits import cases_of_fold, load_or_create_splits
    from autosr.preprocessing.case_store import list_cases
    from autosr.training.trainer import TrainingContext
    from autosr.training.trainers import TRAINERS

    edits, trainer_name = variant_parts(variant)
    pre = paths.preprocessed / folder
    plans = Plans.load(pre / "plans.json")
    raw_plans = copy.deepcopy(plans.raw)
    for edit in edits:
        edit(raw_plans["configurations"][configuration])
    plans = Plans(raw_plans)
    config = plans.configuration(configuration)
    data_folder = pre / config.data_identifier
    case_ids = list_cases(data_folder)
    train, val = cases_of_fold(load_or_create_splits(pre, case_ids), 0, case_ids)
    out = workdir / "models" / folder / configuration / variant
    per_epoch = 25
    ctx = TrainingContext(
        plans=plans, configuration=configuration, fold=0, output_folder=out, data_folder=data_folder,
        train_cases=train, val_cases=val, device=choose_device("cpu"), num_workers=1,
        num_epochs=max(1, iterations // per_epoch), iters_per_epoch=per_epoch,
    )  # fmt: skip
    trainer = TRAINERS[trainer_name](ctx)
    final = out / "checkpoint_final.pt"
    start = time.perf_counter()
    if final.is_file():
        trainer.network.load_state_dict(load_checkpoint(final)["network_weights"])
    else:
        trainer.fit()
    return trainer, plans, time.perf_counter() - start


def sharpness(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray, spacing) -> dict[str, float]:
    """Mean gradient magnitude inside the mask, prediction / reference, overall and per axis (z, y, x)."""
    p = np.gradient(prediction.astype(np.float64), *spacing)
    r = np.gradient(reference.astype(np.float64), *spacing)
    out = {"sharpness": float(np.sqrt(sum(g**2 for g in p))[mask].mean() / np.sqrt(sum(g**2 for g in r))[mask].mean())}
    for axis, name in enumerate("zyx"):
        out[f"sharpness_{name}"] = float(np.abs(p[axis])[mask].mean() / np.abs(r[axis])[mask].mean())
    return out


def score(
    prediction_file: Path, raw: Path, case: str, baseline_params=None, tissue: bool = False
) -> list[dict[str, Any]]:
    from autosr.evaluation.baseline import baseline_prediction
    from autosr.evaluation.case_scoring import CaseJob, evaluate_case
    from autosr.evaluation.settings import EvaluationSettings
    from autosr.io import read_image, resample_to_geometry

    job = CaseJob(
        case_id=case, reference=raw / "targetsTs" / f"{case}.nii.gz", prediction=prediction_file,
        mask=raw / "masksTs" / f"{case}.nii.gz",
        input_files=[raw / "imagesTs" / f"{case}_0000.nii.gz"] if baseline_params else None,
        baseline_params=baseline_params,
    )  # fmt: skip
    rows = evaluate_case(job, EvaluationSettings(resample=True, tissue=tissue))
    reference, geometry = read_image(job.reference)
    mask = read_image(job.mask)[0] > 0
    prediction, prediction_geometry = read_image(prediction_file)
    images = {"model": resample_to_geometry(prediction, prediction_geometry, geometry, order=1)}
    if baseline_params:
        images.update(baseline_prediction(job.input_files, geometry, baseline_params))
    for row in rows:
        row.update(sharpness(images[row["method"]], reference, mask, geometry.spacing_zyx))
    return rows


def baseline_rows(raw: Path, spec, test_cases: list[str], tissue: bool = False) -> dict[str, Any]:
    """The no-learning baselines (fitted on the training cases) scored like the models, one row per method."""
    from autosr.evaluation.baseline import fit_baselines
    from autosr.formats.dataset_spec import discover_cases

    training = discover_cases(raw, spec, "Tr").values()
    params = fit_baselines([(c.channels, c.target, c.mask) for c in training], modality=spec.target_modality)
    rows = []
    for case in test_cases:
        rows += score(raw / "targetsTs" / f"{case}.nii.gz", raw, case, params, tissue)[1:]
    means = {}
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        means[method] = {k: float(np.mean([r[k] for r in mine])) for k in mine[0] if isinstance(mine[0][k], float)}
        m = means[method]
        print(
            f"{method:24s}: psnr {m['psnr']:6.2f} ssim {m['ssim']:.4f} ms_ssim {m['ms_ssim']:.4f} mae {m['mae']:7.2f} "
            f"sharp {m['sharpness']:.3f} (z {m['sharpness_z']:.3f}) ms_ssim_image {m['ms_ssim_image']:.4f} "
            f"mae_outside {m['mae_outside_mask']:.1f}",
            flush=True,
        )
    return {"variant": "baselines", "mean": means}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        default="phantom3d",
        choices=[f"{f}{d}" for f in ("phantom", "brain", "thick", "thicksr") for d in ("2d", "3d")],
    )
    parser.add_argument("--variants", nargs="+", default=["default"], help=f"any of {', '.join(VARIANTS)}, or a+b")
    parser.add_argument("--patch", type=int, nargs="+", default=None, help="training patch (default: as planned)")
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--infer", nargs="+", default=["0.5:1"], help="STEP:TILE_SCALE settings")
    parser.add_argument("--workdir", type=Path, default=Path("bench_variants_work"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from autosr.formats.dataset_spec import discover_cases, load_dataset_spec
    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings

    workdir = args.workdir.resolve()
    paths, folder, configuration = prepare_dataset(args.dataset, workdir, args.patch)
    raw = paths.raw / folder
    spec = load_dataset_spec(raw)
    test_cases = sorted(discover_cases(raw, spec, "Ts"))
    results: list[dict[str, Any]] = [baseline_rows(raw, spec, test_cases)]
    for variant in args.variants:
        trainer, plans, seconds = train_variant(paths, folder, configuration, variant, args.iterations, workdir)
        patch = plans.configuration(configuration).patch_size
        for setting in args.infer:
            step, scale = (float(v) for v in setting.split(":"))
            tile = [int(p * scale) for p in patch]
            settings = PredictionSettings(device="cpu", step_fraction=step, use_mirroring=False)
            predictor = Predictor(
                [trainer.network], plans, configuration, spec, settings, mirror_axes=trainer.mirror_axes(),
                patch_size=tile, sampler=trainer.sampler_spec(),
            )  # fmt: skip
            out_dir = workdir / "predictions" / folder / configuration / variant / setting.replace(":", "_")
            start = time.perf_counter()
            rows = []
            for case in test_cases:
                out = out_dir / f"{case}.nii.gz"
                if not out.is_file():
                    predictor.predict_case([raw / "imagesTs" / f"{case}_0000.nii.gz"], out)
                rows += score(out, raw, case)
            predict_seconds = (time.perf_counter() - start) / len(test_cases)
            mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if isinstance(rows[0][k], float)}
            results.append(
                {"variant": variant, "step": step, "tile_scale": scale, "train_seconds": round(seconds, 1),
                 "predict_seconds_per_case": round(predict_seconds, 2), "mean": mean}
            )  # fmt: skip
            print(
                f"{variant:12s} step {step:4.2f} tile x{scale:g}: psnr {mean['psnr']:6.2f} ssim {mean['ssim']:.4f} "
                f"ms_ssim {mean['ms_ssim']:.4f} mae {mean['mae']:7.2f} sharp {mean['sharpness']:.3f} "
                f"(z {mean['sharpness_z']:.3f}) ms_ssim_image {mean['ms_ssim_image']:.4f} "
                f"mae_outside {mean['mae_outside_mask']:.1f}",
                flush=True,
            )
    if args.out:
        args.out.write_text(
            json.dumps({"dataset": args.dataset, "iterations": args.iterations, "rows": results}, indent=2)
        )


if __name__ == "__main__":
    main()
