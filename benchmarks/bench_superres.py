"""Super-resolution of real thick-slice anatomy: interpolation, ECLARE, autosr paired, autosr self-supervised.

For each dataset built by `autosr convert thick-slices` (real scans from packages, see
`benchmarks/superres_sources.py`), the held-out test cases (imagesTs/targetsTs) are scored in one run:

- `interpolation`: the project's baseline, the input B-spline-interpolated onto the target grid and
  intensity-mapped (`autosr.evaluation.baseline`, the better of its two maps by PSNR), fitted on the
  training cases.
- `eclare`: ECLARE (`run-eclare`, installed in its own virtual environment given by `--eclare`, called as
  a separate program: a benchmark peer only, GPL-3, never imported). It learns from each test scan's own
  in-plane resolution. It is given the true slice profile (its profile estimation, ESPRESO, alone costs
  thousands of adversarial steps) and a patch budget (`--eclare-patches`) that fits the CPU, stated in the
  table. Its output is resampled onto the target grid (linear) and intensity-mapped like the baseline.
- `autosr_paired`: `autosr plan -c 2d`, the quick demo's CPU sizing (features halved, at most 64; batch at
  most 16), `TrainerSSIMLoss`, fold 0, the quick super-resolution schedule (20 x 25 iterations);
  `autosr predict` on the test inputs.
- `autosr_selfsup`: the same, trained on `autosr convert thick-slices --no-reference` pairs made from the
  thick inputs of every case (test cases included, as ECLARE uses the test scan; no target is read).

Metrics inside the target's foreground box (the project's `image_metrics`: PSNR, SSIM, MS-SSIM over the
target's intensity range), through-plane sharpness (mean |gradient| along the thick axis, relative to the
target's) and where the error sits: MAE on through-plane edges (the 10% of foreground voxels with the
largest target gradient along the thick axis), in the background (outside the target foreground), and the
intensity level (mean signed error in the foreground). Seconds are wall-clock on this machine.

    python3 benchmarks/bench_superres.py --work /work/data/sr --datasets 501 502 503 \
        --eclare /work/venv-eclare/bin/run-eclare --out documentation/benchmark_superres.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from autosr.evaluation.baseline import baseline_prediction, baseline_predictions, fit_baselines
from autosr.evaluation.masks import reference_data_range
from autosr.evaluation.metrics import image_metrics
from autosr.imaging.foreground import target_foreground
from autosr.io import read_image, resample_to_geometry, write_image

QUICK_EPOCHS, QUICK_ITERS, TRAINER = 20, 25, "TrainerSSIMLoss"
EDGE_FRACTION = 0.10


def cli(*args: str, env: dict[str, str]) -> float:
    """Run the autosr command line; returns its wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "autosr.cli", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def size_for_cpu(plans_path: Path, percentile_clip: bool = False) -> dict:
    """The quick demo's CPU sizing of the 2d configuration; returns the configuration as planned.

    `percentile_clip`: the variant without the full-range rule (CT clipped at the dataset's 0.5/99.5
    percentiles, as before), for the table row that backs the rule."""
    from autosr.demo import QUICK_SUPER_RESOLUTION, size_plans_for_cpu

    plans = json.loads(plans_path.read_text())
    planned = plans["configurations"]["2d"]
    if percentile_clip:
        fingerprint = json.loads((plans_path.parent / "fingerprint.json").read_text())
        stats = fingerprint["intensity_statistics"]
        entries = plans["normalization"]["input"] + [plans["normalization"]["target"]]
        sources = list(stats["input_channels"].values()) + [stats["target"]]
        for entry, source in zip(entries, sources):
            if entry["scheme"] == "ct":
                entry.update(clip_low=source["p00_5"], clip_high=source["p99_5"])
        plans_path.write_text(json.dumps(plans, indent=1))
    s = QUICK_SUPER_RESOLUTION
    size_plans_for_cpu(plans_path, ("2d",), s.max_features, s.max_batch_size)
    return planned


def train_and_predict(
    dataset: str,
    test_inputs: Path,
    out: Path,
    env: dict[str, str],
    percentile_clip: bool = False,
    checkpoint: str = "final",
    folds: tuple[int, ...] = (0,),
) -> dict:
    """Plan (2d), size for CPU, train `folds` and predict the test inputs with their ensemble; seconds per
    stage (training: all folds together)."""
    pre = Path(env["AUTOSR_PREPROCESSED"]) / dataset
    seconds = {"plan": cli("plan", dataset, "-c", "2d", "-np", "1", "--no-preprocess", env=env)}
    planned = size_for_cpu(pre / "plans.json", percentile_clip)
    seconds["plan"] += cli("plan", dataset, "-c", "2d", "-np", "1", env=env)
    for f in folds:
        fold = Path(env["AUTOSR_RESULTS"]) / dataset / f"{TRAINER}__autosrPlans__2d" / f"fold_{f}"
        if checkpoint == "final" and not (fold / "checkpoint_final.pt").is_file():
            seconds["train"] = seconds.get("train", 0.0) + cli(
                "train", dataset, "2d", str(f), "--trainer", TRAINER, "--epochs", str(QUICK_EPOCHS),
                "--iters-per-epoch", str(QUICK_ITERS), "--num-workers", "0", env=env,
            )  # fmt: skip
    if out.exists():
        shutil.rmtree(out)
    seconds["predict"] = cli(
        "predict", "-i", str(test_inputs), "-o", str(out), "-d", dataset, "-c", "2d", "-f", *map(str, folds),
        "--trainer", TRAINER, "--num-workers", "0", "--checkpoint", checkpoint, env=env,
    )  # fmt: skip
    plan = {k: planned[k] for k in ("patch_size", "batch_size", "slice_axes")}
    plan["residual"] = planned["network"].get("residual")
    return {"seconds": seconds, "planned": plan}


def run_eclare(program: str, image: Path, out_dir: Path, profile: dict, inplane_mm: float, patches: int) -> float:
    """ECLARE on one thick scan with the true slice profile; returns wall seconds (cached with the output)."""
    record = out_dir / f"{image.name}.seconds.json"
    if record.is_file():
        return json.loads(record.read_text())["seconds"]
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = "gaussian" if profile["profile"] == "gaussian" else "boxcar"
    start = time.perf_counter()
    subprocess.run(
        [program, "--in-fpath", str(image), "--out-dir", str(out_dir), "--n-patches", str(patches),
         "--batch-size", "64", "--relative-slice-thickness", f"{profile['width_mm'] / inplane_mm:.4f}",
         "--relative-slice-profile-type", kind],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    record.write_text(json.dumps({"seconds": seconds, "patches": patches}))
    return seconds


def whole_thick_scans(raw: Path, axis: int, ending: str, out: Path) -> None:
    """Each subject's whole thick scan, its slabs (training and test) put back together: the self-supervised
    path learns from the thick scans alone, the test scan included (as ECLARE does); no target is read."""
    from autosr.dataset_conversion.thick_slices import slab_axis
    from autosr.io.geometry import Geometry

    out.mkdir(parents=True)
    slabs: dict[str, list[Path]] = {}
    for split in ("imagesTr", "imagesTs"):
        for image in (raw / split).glob(f"*_0000{ending}"):
            subject = image.name[: -len("_0000" + ending)].rsplit("_slab", 1)[0]
            slabs.setdefault(subject, []).append(image)
    cut = slab_axis(axis)
    for subject, files in slabs.items():
        files.sort(key=lambda p: int(p.name[: -len("_0000" + ending)].rsplit("_slab", 1)[-1] or 0))
        pieces = [read_image(f) for f in files]
        array = np.concatenate([np.asarray(a) for a, _ in pieces], axis=cut)
        first = pieces[0][1]
        geometry = Geometry(first.spacing_zyx, first.origin_xyz, first.direction, array.shape)
        write_image(array, geometry, out / f"{subject}{ending}")


def breakdown(pred: np.ndarray, target: np.ndarray, foreground: np.ndarray, axis: int) -> dict:
    """Where the error sits, and through-plane sharpness relative to the target."""
    grad_t = np.abs(np.diff(target, axis=axis))
    grad_p = np.abs(np.diff(pred, axis=axis))
    fg = np.take(foreground, range(foreground.shape[axis] - 1), axis=axis)
    edges = fg & (grad_t >= np.quantile(grad_t[fg], 1 - EDGE_FRACTION))
    err = pred - target
    err_edges = np.abs(np.take(err, range(err.shape[axis] - 1), axis=axis))[edges]
    return {
        "mae_edges": float(err_edges.mean()),
        "mae_background": float(np.abs(err[~foreground]).mean()) if (~foreground).any() else 0.0,
        "bias_foreground": float(err[foreground].mean()),
        "sharpness": float(grad_p[fg].mean() / max(grad_t[fg].mean(), 1e-8)),
    }


def score(pred: np.ndarray, target: np.ndarray, axis: int, modality: str) -> dict:
    foreground = target_foreground(target, modality)
    low, high = reference_data_range(target, foreground)
    metrics = image_metrics(pred, target, foreground, high - low)
    keep = {k: float(metrics[k]) for k in ("psnr", "ssim", "ms_ssim") if metrics.get(k) is not None}
    return {**keep, **breakdown(pred, target, foreground, axis)}


def bench_dataset(dataset: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    raw = Path(env["AUTOSR_RAW"]) / dataset
    spec = json.loads((raw / "dataset.json").read_text())
    profile, axis, ending = spec["slice_profile"], spec["slice_profile"]["axis"], spec["file_ending"]
    cases = sorted(p.name[: -len("_0000" + ending)] for p in (raw / "imagesTs").glob(f"*_0000{ending}"))
    train = sorted(p.name[: -len(ending)] for p in (raw / "targetsTr").glob(f"*{ending}"))
    out = Path(args.work) / "bench" / dataset
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"dataset": dataset, "slice_profile": profile, "test_cases": cases, "methods": {}}

    start = time.perf_counter()
    modality = spec["target_modality"]
    params = fit_baselines(
        [([raw / "imagesTr" / f"{c}_0000{ending}"], raw / "targetsTr" / f"{c}{ending}", None) for c in train],
        modality=modality, input_scheme="ct" if modality == "CT" else "zscore",
    )  # fmt: skip
    fit_seconds = time.perf_counter() - start

    # autosr paired, then self-supervised from the thick inputs of every case
    paired = train_and_predict(dataset, raw / "imagesTs", out / "autosr_paired", env, checkpoint=args.checkpoint)
    runs = {"autosr_paired": paired}
    if args.ensemble_folds:
        runs["autosr_paired_ensemble"] = train_and_predict(
            dataset, raw / "imagesTs", out / "autosr_paired_ensemble", env, folds=tuple(args.ensemble_folds)
        )
    if args.percentile_clip_variant and modality == "CT":
        variant_env = {**env, "AUTOSR_PREPROCESSED": env["AUTOSR_PREPROCESSED"] + "_clip",
                       "AUTOSR_RESULTS": env["AUTOSR_RESULTS"] + "_clip"}  # fmt: skip
        runs["autosr_paired_percentile_clip"] = train_and_predict(
            dataset, raw / "imagesTs", out / "autosr_paired_percentile_clip", variant_env, percentile_clip=True
        )
    if args.no_selfsup and not args.mix_selfsup:
        return finish(dataset, args, raw, spec, out, params, fit_seconds, cases, runs, result)
    thick = out / "thick_inputs"
    if thick.exists():
        shutil.rmtree(thick)
    whole_thick_scans(raw, axis, ending, thick)
    ss_id = int(dataset[7:10]) + 100
    ss_name = f"Dataset{ss_id:03d}_{dataset[11:]}Self"
    cli(
        "convert", "thick-slices", str(thick), "--id", str(ss_id), "--name", ss_name[11:], "--factor",
        str(profile["factor"]), "--axis", str(axis), "--profile", profile["profile"], "--gap", str(profile["gap_mm"]),
        "--no-reference", "--slabs", str(args.selfsup_slabs), "--target-modality", spec["target_modality"],
        "--overwrite", env=env,
    )  # fmt: skip
    if not args.no_selfsup:
        runs["autosr_selfsup"] = train_and_predict(ss_name, raw / "imagesTs", out / "autosr_selfsup", env)
    if args.mix_selfsup:
        mixed = mixed_dataset(raw, Path(env["AUTOSR_RAW"]) / ss_name, int(dataset[7:10]) + 200)
        runs["autosr_paired_mixed"] = train_and_predict(mixed, raw / "imagesTs", out / "autosr_paired_mixed", env)
    return finish(dataset, args, raw, spec, out, params, fit_seconds, cases, runs, result)


def mixed_dataset(paired: Path, selfsup: Path, dataset_id: int) -> str:
    """A raw dataset holding the paired training cases and the self-supervised pairs (prefixed `self_`):
    paired training with the thick scans' own in-plane resolution as extra pairs. Returns its name."""
    name = f"Dataset{dataset_id:03d}_{paired.name[11:]}Mixed"
    folder = paired.parent / name
    if folder.exists():
        shutil.rmtree(folder)
    for split in ("imagesTr", "targetsTr"):
        (folder / split).mkdir(parents=True)
        for f in (paired / split).iterdir():
            shutil.copy2(f, folder / split / f.name)
        for f in (selfsup / split).iterdir():
            shutil.copy2(f, folder / split / f"self_{f.name}")
    spec = json.loads((paired / "dataset.json").read_text())
    spec["name"] = name[11:]
    spec["numTraining"] = len(list((folder / "targetsTr").iterdir()))
    spec["numTest"] = 0
    spec["description"] = f"{paired.name} training pairs and the self-supervised pairs of {selfsup.name}"
    (folder / "dataset.json").write_text(json.dumps(spec, indent=1))
    return name


def finish(dataset, args, raw, spec, out, params, fit_seconds, cases, runs, result) -> dict:
    """Score every method on the test cases."""
    profile, axis, ending, modality = (
        spec["slice_profile"],
        spec["slice_profile"]["axis"],
        spec["file_ending"],
        spec["target_modality"],
    )

    per_method: dict[str, list[dict]] = {}

    def add(method: str, row: dict) -> None:
        per_method.setdefault(method, []).append(row)

    eclare_seconds = []
    for case in cases:
        target, geometry = read_image(raw / "targetsTs" / f"{case}{ending}")
        target = np.asarray(target, np.float64)
        image_path = raw / "imagesTs" / f"{case}_0000{ending}"
        start = time.perf_counter()
        base = baseline_prediction(image_path, geometry, params)
        seconds = time.perf_counter() - start
        for mapping, array in base.items():
            add(
                f"interpolation{mapping[len('baseline') :]}",
                {"case": case, "seconds": seconds, **score(array, target, axis, modality)},
            )
        for name in runs:
            pred, _ = read_image(out / name / f"{case}{ending}")
            add(name, {"case": case, **score(np.asarray(pred, np.float64), target, axis, modality)})
        cached = (out / "eclare" / f"{image_path.name}.seconds.json").is_file()
        if args.eclare and (cached or not args.eclare_cached_only):
            seconds = run_eclare(
                args.eclare, image_path, out / "eclare", profile, min(geometry.spacing_zyx), args.eclare_patches
            )
            eclare_seconds.append(seconds)
            produced = out / "eclare" / image_path.name.replace(".nii", "_eclare.nii")
            up, up_geometry = read_image(produced)
            on_target = resample_to_geometry(np.asarray(up, np.float32), up_geometry, geometry, order=1)
            for mapping, array in baseline_predictions(on_target, params).items():
                add(
                    f"eclare{mapping[len('baseline') :]}",
                    {"case": case, "seconds": seconds, **score(array, target, axis, modality)},
                )
    result["seconds"] = {
        "interpolation_fit": fit_seconds, **{name: run["seconds"] for name, run in runs.items()},
        "eclare_per_scan": float(np.mean(eclare_seconds)) if eclare_seconds else None,
    }  # fmt: skip
    result["planned"] = {name: run["planned"] for name, run in runs.items()}
    result["eclare_patches"] = args.eclare_patches if args.eclare else None
    for method, rows in per_method.items():
        keys = [k for k in rows[0] if k != "case"]
        result["methods"][method] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        result["methods"][method]["cases"] = rows
    for family in ("interpolation", "eclare"):  # the better intensity map by mean PSNR, as the tables do
        options = [m for m in result["methods"] if m.startswith(family + "_")]
        if options:
            best = max(options, key=lambda m: result["methods"][m]["psnr"])
            result["methods"][family] = {**result["methods"][best], "map": best[len(family) + 1 :]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="folder holding raw/, pre/, res/ (AUTOSR_* roots)")
    parser.add_argument("--datasets", nargs="+", help="dataset folder names or ids under raw/")
    parser.add_argument("--eclare", help="the run-eclare program of ECLARE's own virtual environment")
    parser.add_argument("--eclare-patches", type=int, default=1024, help="ECLARE training patches (default 1024)")
    parser.add_argument("--out", help="JSON file of the results")
    parser.add_argument("--no-selfsup", action="store_true", help="leave out autosr self-supervised (CPU time)")
    parser.add_argument(
        "--mix-selfsup", action="store_true",
        help="also train autosr paired with the self-supervised pairs added to the training cases",
    )  # fmt: skip
    parser.add_argument(
        "--ensemble-folds", nargs="+", type=int,
        help="also score autosr paired as the ensemble of these folds (each trained on the same schedule)",
    )  # fmt: skip
    parser.add_argument("--selfsup-slabs", type=int, default=3, help="slabs per self-supervised pair (default 3)")
    parser.add_argument(
        "--percentile-clip-variant", action="store_true",
        help="CT datasets: also train with the 0.5/99.5 percentile clip instead of the full range",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint", default="final",
        help="autosr paired: predict with this checkpoint; `latest` scores an unfinished training as it stands",
    )  # fmt: skip
    parser.add_argument("--eclare-cached-only", action="store_true", help="score ECLARE only where it already ran")
    parser.add_argument("--render", nargs="+", help="only print the table of these result files")
    args = parser.parse_args()
    if args.render:
        print(markdown([r for f in args.render for r in json.loads(Path(f).read_text())]))
        return
    if not (args.work and args.datasets and args.out):
        parser.error("--work, --datasets and --out are required (or --render)")
    work = Path(args.work)
    env = {
        **os.environ,
        "AUTOSR_RAW": str(work / "raw"),
        "AUTOSR_PREPROCESSED": str(work / "pre"),
        "AUTOSR_RESULTS": str(work / "res"),
        "OMP_NUM_THREADS": "1",
    }
    os.environ.update({k: env[k] for k in ("AUTOSR_RAW", "AUTOSR_PREPROCESSED", "AUTOSR_RESULTS")})
    results = []
    for wanted in args.datasets:
        name = next(p.name for p in sorted((work / "raw").iterdir()) if p.name == wanted or p.name[7:10] == wanted)
        results.append(bench_dataset(name, args, env))
        Path(args.out).write_text(json.dumps(results, indent=1))
    print(markdown(results))


METHODS = (
    "interpolation",
    "eclare",
    "autosr_paired",
    "autosr_paired_ensemble",
    "autosr_paired_percentile_clip",
    "autosr_paired_mixed",
    "autosr_selfsup",
)


def markdown(results: list[dict]) -> str:
    """The table of documentation/benchmark.md: one row per dataset and method."""
    lines = [
        "| dataset | method | PSNR (dB) | SSIM | MS-SSIM | sharpness | MAE edges | MAE background | bias | s/scan |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for method in METHODS:
            m = r["methods"].get(method)
            if m is None:
                continue
            seconds = m.get("seconds")
            if seconds is None and method.startswith("autosr"):
                run = r["seconds"][method]
                seconds = (run.get("train", 0.0) + run["predict"]) / len(r["test_cases"])
            lines.append(
                f"| {r['dataset'][11:]} | {method} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m.get('ms_ssim', float('nan')):.4f} "
                f"| {m['sharpness']:.2f} | {m['mae_edges']:.2f} | {m['mae_background']:.2f} | {m['bias_foreground']:+.2f} "
                f"| {seconds:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
