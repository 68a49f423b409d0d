"""`autosr verify DATASET`: check a raw dataset and print every problem, or its summary when it is valid.

It also measures how far each pair's input and target are apart (rigid registration) and warns about the
misaligned ones; `--no-misalignment` skips that.
"""

from __future__ import annotations

import argparse

from autosr.commands.arguments import add_path_arguments, paths_from_args
from autosr.dataset.verify import verify_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset id (901), full name (Dataset901_Brain) or path to the folder")
    parser.add_argument(
        "--num-folds", type=int, default=5, help="cross-validation folds the dataset must support (default 5)"
    )
    parser.add_argument(
        "-np", "--num-processes", type=int, default=1, help="processes reading images in parallel (default 1)"
    )
    parser.add_argument(
        "--no-misalignment",
        action="store_true",
        help="skip measuring each pair's misalignment by rigid registration (seconds per case)",
    )
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Print the summary; exit 0 when valid, else raise `DatasetProblems` (exit code 2, no traceback)."""
    dataset_dir = paths_from_args(args).raw_dataset(args.dataset)
    report = verify_dataset(
        dataset_dir,
        num_folds=args.num_folds,
        num_processes=args.num_processes,
        measure_misalignment=not args.no_misalignment,
        progress=True,
    )
    if report.ok:
        print(report.summary())
        print("dataset is valid" + (f" ({len(report.warnings)} warning(s) above)" if report.warnings else ""))
    else:
        for warning in report.warnings:
            print(f"warning: {warning}")
    report.raise_if_problems()
    return 0
