"""`autosr plan DATASET`: verify -> fingerprint -> plans -> preprocess, with a table of the plans.

The command-line layer over `autosr.planning.api.plan_dataset`.
"""

from __future__ import annotations

import argparse
import os

from autosr.commands.arguments import add_path_arguments, paths_from_args
from autosr.formats.plans import CONFIGURATION_NAMES
from autosr.planning.api import plan_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset id (901), name (Dataset901_Brain) or path")
    parser.add_argument("--gpu-memory-gb", type=float, default=8.0, help="GPU memory budget the plans fit (default 8)")
    parser.add_argument(
        "-c", "--configurations", nargs="+", default=None, help=f"subset of {', '.join(CONFIGURATION_NAMES)}"
    )
    parser.add_argument(
        "-np", "--num-processes", type=int, default=max(1, min(8, os.cpu_count() or 1)), help="worker processes"
    )
    parser.add_argument("--no-preprocess", action="store_true", help="stop after writing plans.json")
    parser.add_argument("--replan", action="store_true", help="plan again even if plans.json exists (replaces edits)")
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    plan_dataset(
        args.dataset,
        paths_from_args(args),
        gpu_memory_gb=args.gpu_memory_gb,
        configurations=args.configurations,
        num_processes=args.num_processes,
        preprocess=not args.no_preprocess,
        replan=args.replan,
    )
    return 0
