"""Distillation: the student of `autosr distill` against the fold ensemble and one fold, on held-out scans.

    OMP_NUM_THREADS=1 python benchmarks/bench_distillation.py --kind MR --workdir /tmp/distill_mr \
        --fold-iters 200 --student-iters 400 --out mr.json

One kind per run (`MR`: low-field -> high-field phantom; `CT`: MR-like input -> CT target in HU), 32^3 phantoms
(target 1 mm, input 1.5 mm): 20 paired training cases and 6 held-out ones. Two more phantom sets of the same
kind, never paired with targets in training: 20 unpaired scans like the training inputs, and a *shifted*
scanner (input voxels 2 mm, bias field slope +-0.35 instead of +-0.12, noise sigma 35 instead of 20) with 20
unpaired scans and 6 held-out pairs.

The dataset is planned (`3d_fullres`, patch 32^3, network narrowed to at most 32 features so the run fits a
shared CPU), folds 0-4 train `--fold-iters` iterations each (`train_fold`), then three students are distilled
(`distill`, `--student-iters` iterations, the planned network): from the training cases only, with the 20
in-distribution unpaired scans, and with the 20 shifted unpaired scans. Each student is kept in a model folder
of its own under WORKDIR/students/<name>_<iterations>/ (the model folder holds one `fold_distilled/`); `--students`
picks which are distilled besides the first. A student's name is its recipe: `student`, `student_unpaired` or
`student_shifted_unpaired` (which unpaired scans), then `+`-joined options of `DistillationRequest`: `seedN`
(another seed), `initN` (start from fold N's weights; the default is fold 0's), `scratch` (random weights),
`perturbed` (inputs degraded like another scanner's), `shareNN` (NN % of the patches from the unpaired scans),
`nomatch` (the paired inputs are not degraded like the unpaired scans, `--no-unpaired-match`); e.g.
`student_shifted_unpaired+scratch+share25`. Students kept by runs before fold 0 became the default start were
trained from scratch under the names without `scratch`.
`--students-only` scores the named students alone (the ensemble and fold rows do not change between runs on
the same workdir).

Every method predicts the held-out scans of both kinds from the raw files through `Predictor.predict_case`
(preprocessing, network, export), timed per scan (wall and CPU seconds of this process), with its forward passes
counted by a hook on the networks (tiles per call summed), and scored with autosr's evaluation on the target grid
inside the mask (PSNR, SSIM, MS-SSIM, MAE; bench_variants.score). Methods: the ensemble (5 folds x 8 mirrorings),
fold 0 with and without mirroring, and each student (one pass; the first also with --tta).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CONFIGURATION = "3d_fullres"
IDS = {"MR": 971, "CT": 972}
ITERS_PER_EPOCH = 25
SHIFTED = {"input_spacing_zyx": (2.0, 2.0, 2.0), "bias_amplitude": 0.35, "noise_sigma": 35.0}


def make_data(kind: str, workdir: Path):
    """(paths, dataset folder name, {set name: folder of a raw-like dataset}) with everything generated and
    the dataset planned and preprocessed."""
    from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_dataset
    from autosr.formats.plans import Plans
    from autosr.paths import AutosrPaths
    from autosr.planning.api import plan_dataset
    from autosr.preprocessing.preprocess import preprocess_dataset

    paths = AutosrPaths.resolve(workdir / "raw", workdir / "preprocessed", workdir / "results")
    for root in (paths.raw, paths.preprocessed, paths.results, workdir / "extra"):
        root.mkdir(parents=True, exist_ok=True)
    name = f"Distill{kind}"
    folder = f"Dataset{IDS[kind]:03d}_{name}"
    base = PhantomSettings(num_train=20, num_test=6, modality=kind, seed=IDS[kind])
    sets = {
        "paired": (paths.raw, base),
        "unpaired": (workdir / "extra", PhantomSettings(num_train=20, num_test=0, modality=kind, seed=IDS[kind] + 1)),
        "shifted": (
            workdir / "extra",
            PhantomSettings(num_train=20, num_test=6, modality=kind, seed=IDS[kind] + 2, **SHIFTED),
        ),
    }
    folders = {}
    for offset, (set_name, (root, settings)) in zip((0, 10, 20), sets.items()):
        set_id, set_name_full = IDS[kind] + offset, name if set_name == "paired" else f"{name}{set_name.capitalize()}"
        folders[set_name] = root / f"Dataset{set_id:03d}_{set_name_full}"
        if not (folders[set_name] / "dataset.json").is_file():
            make_phantom_dataset(root, set_id, set_name_full, settings)
    pre = paths.preprocessed / folder
    if not (pre / "plans.json").is_file():
        plans = plan_dataset(folder, paths, configurations=[CONFIGURATION], num_processes=1, preprocess=False)
        config = plans.raw["configurations"][CONFIGURATION]
        config["network"]["features_per_stage"] = [
            min(32, max(8, f // 4)) for f in config["network"]["features_per_stage"]
        ]
        config["batch_size"] = 2
        config["patch_size"] = [32, 32, 32]
        plans.save(pre / "plans.json")
        preprocess_dataset(folders["paired"], pre, Plans.load(pre / "plans.json"), [CONFIGURATION], progress=False)
    return paths, folder, folders


def train_folds(paths, folder: str, iterations: int) -> Path:
    from autosr.training.run import train_fold

    model_dir = paths.results / folder / f"Trainer__autosrPlans__{CONFIGURATION}"
    for fold in range(5):
        if not (model_dir / f"fold_{fold}" / "checkpoint_final.pt").is_file():
            epochs = max(1, iterations // ITERS_PER_EPOCH)
            train_fold(
                folder, CONFIGURATION, fold, paths=paths, device="cpu", epochs=epochs,
                iters_per_epoch=ITERS_PER_EPOCH, num_workers=0,
            )  # fmt: skip
    return model_dir


def recipe(name: str, sets: dict[str, Path]) -> dict[str, Any]:
    """The `DistillationRequest` fields of the student `name` (see the module docstring)."""
    base, *options = name.split("+")
    unpaired = {"student": None, "student_unpaired": "unpaired", "student_shifted_unpaired": "shifted"}
    if base not in unpaired:
        raise SystemExit(f"{name}: a student's name starts with one of {', '.join(unpaired)}")
    fields: dict[str, Any] = {"unpaired_dir": None if unpaired[base] is None else sets[unpaired[base]] / "imagesTr"}
    for option in options:
        if option == "perturbed":
            fields["perturb_inputs"] = True
        elif option == "scratch":
            fields["from_scratch"] = True
        elif option == "nomatch":
            fields["match_unpaired"] = False
        elif option.startswith("seed"):
            fields["seed"] = int(option[4:])
        elif option.startswith("init"):
            fields["init_fold"] = int(option[4:])
        elif option.startswith("share"):
            fields["unpaired_share"] = int(option[5:]) / 100
        else:
            raise SystemExit(f"{name}: unknown option '{option}'")
    return fields


def distill_student(paths, folder: str, model_dir: Path, name: str, fields: dict[str, Any], iterations: int, workdir):
    """Distil one student and keep it in a model folder of its own (WORKDIR/students/<name>_<iterations>/<model>); returns it."""
    from autosr.training.distillation.api import DistillationRequest, distill

    kept = workdir / "students" / f"{name}_{iterations}" / model_dir.name
    if (kept / "fold_distilled" / "checkpoint_final.pt").is_file():
        return kept
    shutil.rmtree(model_dir / "fold_distilled", ignore_errors=True)
    start = time.perf_counter()
    request = DistillationRequest(
        folder, CONFIGURATION, epochs=max(1, iterations // ITERS_PER_EPOCH),
        iters_per_epoch=ITERS_PER_EPOCH, num_workers=0, device="cpu", progress=False, **fields,
    )  # fmt: skip
    distill(request, paths)
    print(f"{name}: distilled in {time.perf_counter() - start:.0f} s", flush=True)
    kept.mkdir(parents=True, exist_ok=True)
    for planning in ("plans.json", "dataset.json", "fingerprint.json"):
        shutil.copy(model_dir / planning, kept / planning)
    shutil.move(str(model_dir / "fold_distilled"), kept / "fold_distilled")
    return kept


def evaluate(predictor, raw: Path, out: Path) -> dict[str, Any]:
    """Predict and score every held-out case of `raw`; mean metrics, passes, wall and CPU seconds per scan."""
    from bench_variants import score

    passes = [0]

    def count(module, inputs, output):
        passes[0] += int(inputs[0].shape[0])

    hooks = [n.register_forward_hook(count) for n in predictor.networks]
    rows, walls, cpus = [], [], []
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTs").glob("*_0000.nii.gz"))
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        wall, cpu = time.perf_counter(), time.process_time()
        predictor.predict_case([raw / "imagesTs" / f"{case}_0000.nii.gz"], out / f"{case}.nii.gz")
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        rows += [r for r in score(out / f"{case}.nii.gz", raw, case) if r["method"] == "model"]
    for hook in hooks:
        hook.remove()
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "ms_ssim", "mae")}
    return {
        **mean,
        "passes_per_scan": passes[0] / len(cases),
        "wall_s_per_scan": float(np.mean(walls)),
        "cpu_s_per_scan": float(np.mean(cpus)),
        "cases": len(cases),
    }


def uncertainty_check(predictor, sets: dict[str, Path], out: Path) -> dict[str, Any]:
    """Does the spread follow the error? Per held-out scan of both kinds: MAE and the mean uncertainty inside the
    mask (both in target units, on the target grid); their Spearman rank correlation over all scans."""
    from bench_variants import score
    from scipy.stats import spearmanr

    from autosr.io import read_image, resample_to_geometry

    rows = []
    for held_out in ("paired", "shifted"):
        raw = sets[held_out]
        for image in sorted((raw / "imagesTs").glob("*_0000.nii.gz")):
            case = image.name[: -len("_0000.nii.gz")]
            folder = out / held_out
            (folder / "uncertainty").mkdir(parents=True, exist_ok=True)
            predictor.predict_case([image], folder / f"{case}.nii.gz", folder / "uncertainty" / f"{case}.nii.gz")
            mae = next(r["mae"] for r in score(folder / f"{case}.nii.gz", raw, case) if r["method"] == "model")
            reference_geometry = read_image(raw / "targetsTs" / f"{case}.nii.gz")[1]
            mask = read_image(raw / "masksTs" / f"{case}.nii.gz")[0] > 0
            spread, geometry = read_image(folder / "uncertainty" / f"{case}.nii.gz")
            spread = resample_to_geometry(spread, geometry, reference_geometry, order=1)
            rows.append({"set": held_out, "case": case, "mae": mae, "mean_spread": float(spread[mask].mean())})
    rho = spearmanr([r["mae"] for r in rows], [r["mean_spread"] for r in rows])[0]
    means = {
        s: {k: float(np.mean([r[k] for r in rows if r["set"] == s])) for k in ("mae", "mean_spread")}
        for s in ("paired", "shifted")
    }
    return {"spearman_mae_vs_spread": float(rho), "means": means, "cases": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=sorted(IDS), required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--fold-iters", type=int, default=200)
    parser.add_argument("--student-iters", type=int, default=400)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--students", nargs="+", default=["student", "student_unpaired", "student_shifted_unpaired"],
        help="which students to distil and score (default: the three without options; 'student' always)",
    )  # fmt: skip
    parser.add_argument(
        "--students-only", action="store_true", help="score the students alone (no ensemble, fold and --tta rows)"
    )
    parser.add_argument(
        "--uncertainty-only", action="store_true",
        help="only the uncertainty check (spread vs error per scan) of the ensemble and the student with --tta",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings

    paths, folder, sets = make_data(args.kind, args.workdir)
    start = time.perf_counter()
    model_dir = train_folds(paths, folder, args.fold_iters)
    print(f"folds trained ({time.perf_counter() - start:.0f} s)", flush=True)
    names = list(dict.fromkeys(["student", *args.students]))
    kept = {
        n: distill_student(paths, folder, model_dir, n, recipe(n, sets), args.student_iters, args.workdir)
        for n in names
    }
    cpu = PredictionSettings(device="cpu", tile_batch_size=1)
    if args.uncertainty_only:
        mirrored = PredictionSettings(device="cpu", tile_batch_size=1, mirror_student=True)
        checks = {
            "ensemble 5 folds x 8 mirrorings": Predictor.from_trained(model_dir, (0, 1, 2, 3, 4), settings=cpu),
            "student x 8 mirrorings": Predictor.from_trained(kept["student"], ("distilled",), settings=mirrored),
        }
        results = {}
        for name, predictor in checks.items():
            results[name] = uncertainty_check(predictor, sets, args.workdir / "uncertainty" / name.replace(" ", "_"))
            r = results[name]
            print(
                f"{args.kind} {name:34s}: spearman(mae, spread) {r['spearman_mae_vs_spread']:+.2f}; "
                + "; ".join(f"{k}: mae {v['mae']:.1f} spread {v['mean_spread']:.1f}" for k, v in r["means"].items()),
                flush=True,
            )
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        return
    references = {
        "ensemble 5 folds x 8 mirrorings": lambda: Predictor.from_trained(model_dir, (0, 1, 2, 3, 4), settings=cpu),
        "fold 0 x 8 mirrorings": lambda: Predictor.from_trained(model_dir, (0,), settings=cpu),
        "fold 0, no mirroring": lambda: Predictor.from_trained(
            model_dir, (0,), settings=PredictionSettings(device="cpu", tile_batch_size=1, use_mirroring=False)
        ),
        "student --tta": lambda: Predictor.from_trained(
            kept["student"],
            ("distilled",),
            settings=PredictionSettings(device="cpu", tile_batch_size=1, mirror_student=True),
        ),
    }
    methods = {
        **({} if args.students_only else references),
        **{name: (lambda d=d: Predictor.from_trained(d, ("distilled",), settings=cpu)) for name, d in kept.items()},
    }
    results: dict[str, Any] = {
        "kind": args.kind,
        "fold_iters": args.fold_iters,
        "student_iters": args.student_iters,
        "methods": {},
    }
    for name, make in methods.items():
        predictor = make()
        results["methods"][name] = {}
        for held_out in ("paired", "shifted"):
            row = evaluate(predictor, sets[held_out], args.workdir / "predictions" / name.replace(" ", "_") / held_out)
            results["methods"][name][held_out] = row
            print(
                f"{args.kind} {name:34s} held-out {held_out:8s}: psnr {row['psnr']:6.2f} ssim {row['ssim']:.4f} "
                f"ms_ssim {row['ms_ssim']:.4f} mae {row['mae']:7.2f} passes {row['passes_per_scan']:5.1f} "
                f"cpu {row['cpu_s_per_scan']:.2f} s wall {row['wall_s_per_scan']:.2f} s",
                flush=True,
            )
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
