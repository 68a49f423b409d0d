"""`autosr demo`: thin argparse layer over `autosr.demo.run_demo` (the whole pipeline on a synthetic paired
brain dataset)."""

from __future__ import annotations

import argparse

from autosr.demo import TASKS, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="autosr_work", help="where the demo's folders go (default: autosr_work)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CPU-sized run: 3 mm voxels, the 2d configuration, narrow network, short schedule (10 min measured on 2 CPU cores)",
    )
    parser.add_argument(
        "--task", choices=TASKS, default="contrast",
        help="contrast: low-field -> high-field brains (default); super-resolution: 12 mm slices -> 3 mm voxels",
    )  # fmt: skip
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("-np", "--num-processes", type=int, default=None, help="worker processes for data steps")


def run(args: argparse.Namespace) -> int:
    run_demo(args.workdir, quick=args.quick, device=args.device, num_processes=args.num_processes, task=args.task)
    return 0
