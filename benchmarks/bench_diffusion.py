"""The three model families at equal training budget: L1 regression, adversarial, diffusion (flow matching).

    python benchmarks/bench_diffusion.py --dataset brain2d --iterations 1000 --steps 1 2 4 8 16 \
        --samples 4 --workdir /tmp/diffbench --out brain2d.json

Every variant trains fold 0 of the dataset for the same number of iterations with
`benchmarks/bench_variants.py` (same data, seed and plan; a variant whose checkpoint is in the workdir is
reused), then predicts the held-out test scans (`imagesTs`) from the raw files through the `Predictor`
(no test-time mirroring, step 0.5) and is scored against `targetsTs` inside `masksTs`: PSNR, SSIM,
MS-SSIM, MAE, tissue Dice (mean of the three classes of `tissue_agreement`), sharpness (mean gradient
magnitude relative to the reference's). Generative variants are predicted once per `--steps` value (one
sample) and once per `--samples` value at the default number of steps (the mean of that many samples), which
gives the sampling-steps vs quality curve and what averaging samples does. Cost of prediction per volume:
network forward passes and tiles (counted by a wrapper around the network) and seconds (wall clock, one
thread; shared machines make them noisy, say so where they are quoted). The no-learning baselines are
scored alike. Figures: documentation/diffusion.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_variants  # noqa: E402 - the benchmark next door, imported by path

SHOWN = ("psnr", "ssim", "ms_ssim", "mae", "tissue_dice", "sharpness")


class CountingNetwork(nn.Module):
    """The network unchanged, counting forward passes and tiles (batch items) it is called with."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.passes = 0
        self.tiles = 0

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any):
        self.passes += 1
        self.tiles += int(x.shape[0])
        return self.network(x, *args, **kwargs)


def mean_row(rows: list[dict[str, Any]]) -> dict[str, float]:
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if isinstance(rows[0][k], float)}
    dice = [v for k, v in mean.items() if k.startswith("tissue_dice_")]
    mean["tissue_dice"] = float(np.mean(dice)) if dice else float("nan")
    return mean


def predict_and_score(trainer, plans, configuration, spec, raw, test_cases, out_dir, **sampling) -> dict[str, Any]:
    from autosr.inference.predictor import Predictor
    from autosr.inference.settings import PredictionSettings

    counter = CountingNetwork(trainer.network)
    settings = PredictionSettings(device="cpu", **{"use_mirroring": False, **sampling})
    predictor = Predictor(
        [counter],
        plans,
        configuration,
        spec,
        settings,
        mirror_axes=trainer.mirror_axes(),
        sampler=trainer.sampler_spec(),
    )
    rows, seconds = [], 0.0
    for case in test_cases:
        out = out_dir / f"{case}.nii.gz"
        start = time.perf_counter()
        predictor.predict_case([raw / "imagesTs" / f"{case}_0000.nii.gz"], out)
        seconds += time.perf_counter() - start
        rows += bench_variants.score(out, raw, case, tissue=True)
    n = len(test_cases)
    return {
        "mean": mean_row(rows),
        "forward_passes_per_volume": counter.passes / n,
        "tiles_per_volume": counter.tiles / n,
        "predict_seconds_per_volume": round(seconds / n, 2),
    }


def show(label: str, result: dict[str, Any]) -> None:
    m = result["mean"]
    cost = ""
    if "forward_passes_per_volume" in result:
        cost = f" | passes {result['forward_passes_per_volume']:.0f} s/vol {result['predict_seconds_per_volume']:.1f}"
    print(f"{label:36s} " + " ".join(f"{k} {m[k]:.4f}" for k in SHOWN if k in m) + cost, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="brain2d", choices=["brain2d", "brain3d", "phantom3d"])
    parser.add_argument("--variants", nargs="+", default=["default", "adversarial", "diffusion"])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="sampling steps to try")
    parser.add_argument("--samples", type=int, nargs="*", default=[4], help="samples to average (default steps)")
    parser.add_argument("--workdir", type=Path, default=Path("bench_diffusion_work"))
    parser.add_argument("--tta", action="store_true", help="also predict with test-time mirroring")
    parser.add_argument("--skip-baselines", action="store_true", help="leave the baseline rows out")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every row (rewritten after each row)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from autosr.formats.dataset_spec import discover_cases, load_dataset_spec

    workdir = args.workdir.resolve()
    paths, folder, configuration = bench_variants.prepare_dataset(args.dataset, workdir)
    raw = paths.raw / folder
    spec = load_dataset_spec(raw)
    test_cases = sorted(discover_cases(raw, spec, "Ts"))
    results: list[dict[str, Any]] = []

    def save() -> None:
        if args.out:
            report = {"dataset": args.dataset, "iterations": args.iterations, "test_cases": test_cases, "rows": results}
            args.out.write_text(json.dumps(report, indent=2))

    if not args.skip_baselines:
        baselines = bench_variants.baseline_rows(raw, spec, test_cases, tissue=True)
        for method, m in baselines["mean"].items():
            dice = [v for k, v in m.items() if k.startswith("tissue_dice_")]
            m["tissue_dice"] = float(np.mean(dice)) if dice else float("nan")
            show(method, {"mean": m})
        results.append(baselines)
        save()
    for variant in args.variants:
        trainer, plans, seconds = bench_variants.train_variant(
            paths, folder, configuration, variant, args.iterations, workdir
        )
        trainer.network.eval()
        base = workdir / "predictions" / folder / configuration / variant
        settings: list[tuple[str, dict[str, Any]]] = [("", {})]
        if trainer.sampler_spec() is not None:
            settings = [(f"steps{s}", {"sampling_steps": s}) for s in args.steps]
            settings += [(f"samples{n}", {"num_samples": n}) for n in args.samples]
        if args.tta:
            settings.append(("tta", {"use_mirroring": True}))
        for label, sampling in settings:
            result = predict_and_score(trainer, plans, configuration, spec, raw, test_cases, base / label, **sampling)
            result.update(variant=variant, setting=label or "direct", train_seconds=round(seconds, 1), **sampling)
            result.pop("use_mirroring", None)
            show(f"{variant} {label}", result)
            results.append(result)
            save()


if __name__ == "__main__":
    main()
