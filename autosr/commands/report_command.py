"""`autosr report DATASET`: write the offline HTML report of a dataset's results (see report.py).

`--predictions TITLE FOLDER` adds the page of a prediction folder (its quality flags, prediction_report.py);
without a dataset, that page is written on its own (default: FOLDER/report.html).
"""

from __future__ import annotations

import argparse

from autosr.commands.arguments import add_path_arguments, paths_from_args
from autosr.errors import AutosrError
from autosr.evaluation.report import DEFAULT_MAX_PICTURES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset",
        nargs="?",
        help="dataset id (901), full name (Dataset901_Brain) or path (optional with --predictions)",
    )
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
    parser.add_argument(
        "--predictions", nargs=2, action="append", metavar=("TITLE", "FOLDER"), default=[],
        help="also show an `autosr predict` output folder under TITLE: flagged scans, quality signals, pictures "
        "(repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--stress-test", nargs=2, action="append", metavar=("TITLE", "FOLDER"), default=[],
        help="also show an `autosr stress-test` output folder under TITLE: lesions, calibration, AUROC (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing -o file even when it is not an autosr report (an autosr report is always refreshed)",
    )  # fmt: skip
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from autosr.evaluation.report import write_report

    predictions = dict(args.predictions)
    if args.dataset is None:
        if not predictions:
            raise AutosrError("name a dataset, or give --predictions TITLE FOLDER for a prediction folder's page")
        from pathlib import Path

        from autosr.evaluation.prediction_report import write_prediction_report

        output = args.output or Path(next(iter(predictions.values()))) / "report.html"
        print(f"report: {write_prediction_report(predictions, output, max(0, args.max_pictures), args.overwrite)}")
        return 0
    evaluations = dict(args.evaluation)
    path = write_report(
        args.dataset, paths_from_args(args), args.output, max(0, args.max_pictures), evaluations, predictions,
        args.overwrite, dict(args.stress_test),
    )  # fmt: skip
    print(f"report: {path}")
    return 0
