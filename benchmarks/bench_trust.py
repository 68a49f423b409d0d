"""Does autosr say when a synthetic scan is wrong? `autosr stress-test` on two small datasets.

    python benchmarks/bench_trust.py [--workdir DIR] [--datasets phantom brain] [--folds 0 1 2 3 4]
        [--epochs 8] [--iters 20] [--max-cases 3] [--no-tta DATASET ...] [--prepare-only] [--out results.json]

Per dataset: generate it (`make_phantom_dataset`: 12+4 ellipsoid heads on a 40^3 grid at 1 mm;
`make_synthetic_brain_dataset`: 12+4 low-field -> high-field brains at 2 mm, the MNI152 template of the
`demo` extra), plan the 2d configuration sized for a CPU as the quick demo does (features halved and capped
at 32, batch at most 8), train `--folds` for `--epochs` x `--iters` iterations each, then run the stress test
(`run_stress_test`, what `autosr stress-test` calls) on at most `--max-cases` held-out test scans, with
test-time mirroring unless `--no-tta` names the dataset. `--raw-dataset FOLDER` stresses an existing raw
dataset instead (e.g. a real thick-slice set of `autosr convert thick-slices`; its kind in the results is its
folder name), planned, sized and trained the same way. Every stage that is already done in `--workdir` is reused (delete it to start over).
Writes the stress test's folders under WORKDIR/stress/<dataset>/ and the headline figures of both datasets
to `--out`; documentation/benchmark.md ("Trust") quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

DATASETS = {"phantom": (951, "TrustPhantom"), "brain": (952, "TrustBrain")}
TRAINER = "Trainer"
CONFIGURATION = "2d"


def dataset_name(kind: str) -> str:
    """The dataset folder name of a generated kind, or `kind` itself for an existing raw dataset."""
    if kind in DATASETS:
        dataset_id, name = DATASETS[kind]
        return f"Dataset{dataset_id:03d}_{name}"
    return kind


def make_dataset(kind: str, raw_root: Path) -> Path:
    """The raw dataset of `kind` under `raw_root` (generated once)."""
    folder = raw_root / dataset_name(kind)
    if (folder / "dataset.json").is_file():
        return folder
    dataset_id, name = DATASETS[kind]
    if kind == "phantom":
        from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_dataset

        settings = PhantomSettings(num_train=12, num_test=4, shape_zyx=(40, 40, 40))
        return make_phantom_dataset(raw_root, dataset_id, name, settings)
    from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset

    settings = SyntheticBrainSettings(num_train=12, num_test=4, target_spacing_mm=2.0)
    return make_synthetic_brain_dataset(raw_root, dataset_id, name, settings, num_processes=1)


def train(kind: str, paths, folds: list[int], epochs: int, iters: int) -> Path:
    """Plan (CPU-sized) and train the folds of `kind`; returns the model folder."""
    from autosr.demo import size_plans_for_cpu
    from autosr.model_layout import ModelFolder
    from autosr.paths import DEFAULT_PLANS_NAME
    from autosr.planning.api import plan_dataset
    from autosr.training.run import train_fold

    dataset = dataset_name(kind)
    plans_path = paths.preprocessed / dataset / "plans.json"
    if not plans_path.is_file():
        plan_dataset(dataset, paths, configurations=[CONFIGURATION], num_processes=1, progress=False)
    size_plans_for_cpu(plans_path, (CONFIGURATION,), max_features=32, max_batch=8)
    model = ModelFolder.create(paths.results / dataset, TRAINER, DEFAULT_PLANS_NAME, CONFIGURATION)
    for fold in folds:
        if model.fold(fold).checkpoint("final").is_file():
            continue
        t0 = time.perf_counter()
        train_fold(dataset, CONFIGURATION, fold, TRAINER, paths, "cpu", epochs=epochs, iters_per_epoch=iters)
        print(f"[bench_trust] {kind} fold {fold} trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return model.path


def stress(kind: str, paths, model_dir: Path, folds: list[int], max_cases: int, workdir: Path, tta: bool) -> dict:
    """Run the stress test of `kind`'s model; returns stress.json's content."""
    from autosr.evaluation.stress.api import StressSettings, run_stress_test
    from autosr.inference.settings import ModelSource, PredictionSettings

    out = workdir / "stress" / kind
    t0 = time.perf_counter()
    result = run_stress_test(
        paths.raw / dataset_name(kind),
        ModelSource(model_dir=model_dir, folds=tuple(folds)),
        out,
        PredictionSettings(device="cpu", use_mirroring=tta),
        StressSettings(max_cases=max_cases),
    )
    result["benchmark_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="bench_trust_work")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["phantom", "brain"])
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--max-cases", type=int, default=3)
    parser.add_argument(
        "--no-tta", nargs="*", default=[], choices=sorted(DATASETS), help="datasets stressed without mirroring"
    )
    parser.add_argument("--raw-dataset", default=None, help="stress this existing raw dataset folder instead")
    parser.add_argument("--prepare-only", action="store_true", help="generate and train, no stress test")
    parser.add_argument("--out", default=None, help="write the headline figures here (JSON)")
    args = parser.parse_args()

    import torch

    from autosr.paths import AutosrPaths

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    workdir = Path(args.workdir).resolve()
    paths = AutosrPaths.resolve(workdir / "raw", workdir / "preprocessed", workdir / "results")
    for root in (paths.raw, paths.preprocessed, paths.results):
        root.mkdir(parents=True, exist_ok=True)
    results = {}
    kinds = args.datasets
    if args.raw_dataset:
        source = Path(args.raw_dataset).resolve()
        kinds = [source.name]
        if not (paths.raw / source.name).exists():
            (paths.raw / source.name).symlink_to(source, target_is_directory=True)
    for kind in kinds:
        make_dataset(kind, paths.raw)
        model_dir = train(kind, paths, args.folds, args.epochs, args.iters)
        if args.prepare_only:
            continue
        tta = kind not in args.no_tta
        results[kind] = stress(kind, paths, model_dir, args.folds, args.max_cases, workdir, tta)
        print(json.dumps({kind: {k: v for k, v in results[kind].items() if not isinstance(v, (dict, list))}}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
