"""Pipeline benchmark: the demo's dataset, every stage timed, cross-validation and held-out metrics.

Runs (or resumes) `autosr demo` in a work folder and writes one JSON with: the machine, the stage timings
(generate+verify, plan+preprocess, training, find-best, prediction, evaluation), the cross-validation
ranking from best.json (each configuration and ensemble against the baseline) and the held-out test
summary (model vs baseline). The figures in documentation/benchmark.md ("Pipeline") come from here.

    python benchmarks/bench_pipeline.py --quick --workdir /tmp/autosr_bench --out bench_pipeline.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="autosr_bench")
    parser.add_argument("--quick", action="store_true", help="the demo's CPU-sized schedule")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="bench_pipeline.json")
    args = parser.parse_args()

    from autosr.demo import DEMO_DATASET_ID, DEMO_DATASET_NAME, run_demo

    start = time.perf_counter()
    summary = run_demo(args.workdir, quick=args.quick, device=args.device)
    wall = time.perf_counter() - start
    results = Path(args.workdir).resolve() / "results" / f"Dataset{DEMO_DATASET_ID:03d}_{DEMO_DATASET_NAME}"
    best = json.loads((results / "best.json").read_text())
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "quick": args.quick,
        "wall_s": wall,
        "stage_timings_s": summary.get("timings_s"),
        "crossval_ranking": best["ranking"],
        "crossval_baseline_means": best["baseline_means"],
        "heldout_test": {
            k: summary[k] for k in ("num_cases", "metrics", "data_range", "normalization") if k in summary
        },
    }
    Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {args.out} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
