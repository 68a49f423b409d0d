"""`autosr report DATASET`: write the offline HTML report of a dataset's results (see report.py)."""

from __future__ import annotations

import argparse

from autosr.cli import add_path_arguments, paths_from_args
from autosr.evaluation.report import DEFAULT_MAX_PICTURES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset id (901), full name (Dataset901_Brain) or path")
    parser.add_argument(
        "-o", "--output", default=None, help="HTML file to write (default: $AUTOSR_RESULTS/<dataset>/report.html)"
    )
    parser.add_argument(
        "--max-pictures",
        type=int,
        default=DEFAULT_MAX_PICTURES,
        help=f"per-case pictures per model, worst SSIM first (default {DEFAULT_MAX_PICTURES})",
    )
    parser.add_argument(
        "--evaluation",
        nargs=2,
        action="append",
        metavar=("TITLE", "FOLDER"),
        default=[],
        help="also show an `autosr evaluate` output folder under TITLE, e.g. a held-out test set (repeatable)",
    )
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from autosr.evaluation.report import write_report

    evaluations = dict(args.evaluation)
    path = write_report(args.dataset, paths_from_args(args), args.output, max(0, args.max_pictures), evaluations)
    print(f"report: {path}")
    return 0
