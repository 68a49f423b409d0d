"""Training benchmarks.

    python benchmarks/bench_training.py iteration [--patch Z Y X] [--batch B] [--features ...] [--iters N]
        time per training iteration through the real data pipeline (patch sampling + augmentation +
        forward/backward/step), against the bare network's forward+backward+step on random tensors of the
        same shape in the same process; reports the data-pipeline overhead and peak memory (CUDA peak
        allocated where available, else the process's peak RSS, labelled as such).

    python benchmarks/bench_training.py compare --what upsampling|optimizer [--epochs E --iters I]
        short trainings on the phantom (8 cases, 32^3, 6 train / 2 validation) through `train_fold`,
        reporting validation masked L1 (normalized units) and a checkerboard measure: the energy of the
        prediction at the Nyquist frequency of all three axes (2x2x2 alternating-sign filter) inside the
        mask, divided by the same for the reference (1 = as much as the truth, > 1 = artefact).

Figures and the exact commands that produced them: documentation/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autosr.formats.plans import Plans
from autosr.network import build_network
from autosr.preprocessing.case_store import save_case

# A typical 3d_fullres plan for a 1 mm brain on a 24 GB GPU (6 stages, 32..320 features).
DEFAULT_FEATURES = [32, 64, 128, 256, 320, 320]
DEFAULT_PATCH = [128, 128, 128]
DEFAULT_BATCH = 2


def network_plan(features: list[int], dims: int, upsampling: str = "interp_conv") -> dict:
    n = len(features)
    return {
        "architecture": "PlainConvUNet",
        "dims": dims,
        "features_per_stage": features,
        "kernel_sizes": [[3] * dims] * n,
        "strides": [[1] * dims] + [[2] * dims] * (n - 1),
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "upsampling": upsampling,
        "deep_supervision": True,
    }


def write_plans(pre: Path, name: str, patch: list[int], batch: int, network: dict) -> None:
    configuration = {
        "data_identifier": "autosrPlans_3d_fullres",
        "spacing_zyx": [1.0, 1.0, 1.0],
        "patch_size": patch,
        "batch_size": batch,
        "network": network,
    }
    raw = {
        "plans_name": "autosrPlans",
        "dataset_name": name,
        "num_input_channels": 1,
        "target_modality": "MR",
        "normalization": {"input": [{"scheme": "zscore"}], "target": {"scheme": "zscore"}},
        "configurations": {"3d_fullres": configuration},
    }
    Plans(raw).save(pre / "plans.json")


def peak_memory() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB CUDA peak allocated"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return f"{rss_kib / 2**20:.2f} GiB peak process RSS (CPU run: no CUDA peak to report)"


def bench_iteration(args: argparse.Namespace) -> None:
    from autosr.paths import AutosrPaths
    from autosr.training.run import FoldRequest, prepare_fold

    torch.set_num_threads(args.threads)
    patch, batch = list(args.patch), args.batch
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    plan = network_plan(args.features, len(patch))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        name = "Dataset990_Bench"
        pre = root / "pre" / name
        shape = [int(p * 1.5) for p in patch]
        rng = np.random.RandomState(0)
        for i in range(5):
            image = rng.randn(1, *shape).astype(np.float32)
            mask = np.ones((1, *shape), dtype=np.uint8)
            save_case(pre / "autosrPlans_3d_fullres", f"case{i}", image, {}, image * 2 + 1, mask)
        write_plans(pre, name, patch, batch, plan)
        paths = AutosrPaths.resolve(raw=root / "raw", preprocessed=root / "pre", results=root / "res")
        run = prepare_fold(
            FoldRequest(name, "3d_fullres", 0, device=str(device), epochs=1000, iters_per_epoch=1000,
                        num_workers=args.num_workers),
            paths,
        )  # fmt: skip
        trainer = run.runner
        train_iter, _ = trainer.make_iterators()

        def timed(step, n):
            times = []
            for _ in range(n):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            return float(np.median(times))

        shape = (trainer.batch_size, 1, *patch)
        batch_dict = {
            "input": torch.randn(shape, device=device),
            "target": torch.randn(shape, device=device),
            "mask": torch.ones(shape, device=device),
        }
        trainer.network.train()
        timed(lambda: trainer.training_step(batch_dict), args.warmup)
        bare = timed(lambda: trainer.training_step(batch_dict), args.iters)
        full = timed(lambda: trainer.training_step(next(train_iter)), args.iters)
        if hasattr(train_iter, "_finish"):
            train_iter._finish()
    print(f"device: {device}  threads: {args.threads}  data workers: {args.num_workers}")
    print(f"patch {patch}, batch {batch}, features {args.features}")
    print(f"bare network forward+backward+step (random tensors, median of {args.iters}): {bare:.3f} s")
    print(f"full training iteration incl. data pipeline (median of {args.iters}):        {full:.3f} s")
    print(f"data pipeline overhead: {100 * (full - bare) / bare:.1f} %")
    print(f"peak memory: {peak_memory()}")


def checkerboard_ratio(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Nyquist-frequency energy of the prediction over that of the reference, inside the mask."""
    from scipy.ndimage import convolve

    kernel = np.indices((2, 2, 2)).sum(0) % 2 * 2 - 1.0
    kernel /= 8.0
    hp = lambda a: convolve(a.astype(np.float64), kernel, mode="nearest")  # noqa: E731
    m = mask > 0
    return float(np.mean(hp(prediction)[m] ** 2) / max(np.mean(hp(reference)[m] ** 2), 1e-12))


def make_phantom_preprocessed(pre: Path, n_cases: int = 8) -> None:
    from autosr.dataset_conversion.phantom import make_phantom_case
    from autosr.io import resample_to_geometry

    for i in range(n_cases):
        coarse, in_geo, target, tgt_geo, mask = make_phantom_case(case_seed=100 + i)
        fine = resample_to_geometry(coarse, in_geo, tgt_geo, order=3)
        inside = mask > 0
        inp, tgt = (((a - a[inside].mean()) / a[inside].std()).astype(np.float32) for a in (fine, target))
        save_case(pre / "autosrPlans_3d_fullres", f"ph{i:02d}", inp[None], {}, tgt[None], mask[None])
    splits = [{"train": [f"ph{i:02d}" for i in range(2, n_cases)], "val": ["ph00", "ph01"]}] * 5
    (pre / "splits.json").write_text(json.dumps(splits))


def bench_compare(args: argparse.Namespace) -> None:
    from autosr.checkpoint import load_checkpoint
    from autosr.inference.sliding_window import predict_sliding_window
    from autosr.paths import AutosrPaths
    from autosr.preprocessing.case_store import load_case
    from autosr.training.run import train_fold

    torch.set_num_threads(args.threads)
    variants = {
        "upsampling": [("transposed", "TrainerSGD"), ("interp_conv", "TrainerSGD")],
        "optimizer": [("interp_conv", "TrainerSGD"), ("interp_conv", "Trainer")],
    }[args.what]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        name = "Dataset991_Phantom"
        pre = root / "pre" / name
        make_phantom_preprocessed(pre)
        paths = AutosrPaths.resolve(raw=root / "raw", preprocessed=root / "pre", results=root / "res")
        rows = []
        # trainers seed themselves (TrainingContext.seed = 0): each run is reproducible, one run per variant
        for upsampling, trainer in variants:
            write_plans(pre, name, [32, 32, 32], 2, network_plan([8, 16, 32, 64], 3, upsampling))
            results = root / "res" / name
            if results.exists():
                import shutil

                shutil.rmtree(results)
            start = time.time()
            fold_dir = train_fold(
                name, "3d_fullres", 0, trainer=trainer, paths=paths, device="cpu", epochs=args.epochs,
                iters_per_epoch=args.iters, num_workers=0,
            )  # fmt: skip
            seconds = time.time() - start
            summary = json.loads((fold_dir / "validation" / "summary.json").read_text())
            plan = Plans.load(fold_dir.parent / "plans.json").configuration("3d_fullres").network
            net = build_network(plan, 1, 1)
            net.load_state_dict(load_checkpoint(fold_dir / "checkpoint_final.pt")["network_weights"])
            net.deep_supervision = False
            net.eval()
            ratios = []
            for case_id in ("ph00", "ph01"):
                case = load_case(pre / "autosrPlans_3d_fullres", case_id, mmap=False)
                with torch.no_grad():
                    pred = predict_sliding_window(net, torch.from_numpy(case.input), [32, 32, 32])[0].numpy()
                ratios.append(checkerboard_ratio(pred, case.target[0], case.mask[0]))
            curves = load_checkpoint(fold_dir / "checkpoint_final.pt")["logger_state"]["curves"]
            rows.append((0, upsampling, trainer, summary["mean"]["mae"], float(np.mean(ratios)),
                         curves["train_loss"][-1], seconds))  # fmt: skip
            print(f"{upsampling:12s} {trainer:13s} val masked L1 {rows[-1][3]:.4f}  "
                  f"checkerboard {rows[-1][4]:.3f}  final train loss {rows[-1][5]:.4f}  {seconds:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    print(f"{'upsampling':12s} {'trainer':13s} {'val masked L1':>14s} {'checkerboard':>13s} {'train loss':>11s}")
    for _, upsampling, trainer, l1, cb, train_loss, _ in rows:
        print(f"{upsampling:12s} {trainer:13s} {l1:14.4f} {cb:13.3f} {train_loss:11.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    it = sub.add_parser("iteration")
    it.add_argument("--patch", type=int, nargs="+", default=DEFAULT_PATCH)
    it.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    it.add_argument("--features", type=int, nargs="+", default=DEFAULT_FEATURES)
    it.add_argument("--iters", type=int, default=10)
    it.add_argument("--warmup", type=int, default=2)
    it.add_argument("--num-workers", type=int, default=min(8, max(0, (os.cpu_count() or 1) - 1)))
    it.add_argument("--threads", type=int, default=torch.get_num_threads())
    it.add_argument("--device", default=None)
    cmp = sub.add_parser("compare")
    cmp.add_argument("--what", choices=["upsampling", "optimizer"], required=True)
    cmp.add_argument("--epochs", type=int, default=10)
    cmp.add_argument("--iters", type=int, default=25)
    cmp.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    {"iteration": bench_iteration, "compare": bench_compare}[args.mode](args)


if __name__ == "__main__":
    main()
