"""`autosr find-best DATASET`: rank configurations and ensembles by cross-validation (see find_best.py)."""

from __future__ import annotations

import argparse

from autosr.commands.arguments import add_path_arguments, paths_from_args
from autosr.evaluation.structure_arguments import add_structure_arguments, structure_options_from_args
from autosr.evaluation.summary import SUMMARY_METRICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset id (901), full name (Dataset901_Brain) or path")
    parser.add_argument(
        "-c", "--configurations", nargs="+", default=None, help="configurations to compare (default: every trained one)"
    )
    parser.add_argument("--trainers", nargs="+", default=None, help="trainers to compare (default: every trained one)")
    parser.add_argument("-p", "--plans", default=None, help="plans name to compare (default: every one)")
    parser.add_argument(
        "--metric", default="ssim", choices=SUMMARY_METRICS, help="ranking metric (default ssim; ties broken by mae)"
    )
    parser.add_argument("--no-ensembles", action="store_true", help="do not build and score pairwise ensembles")
    parser.add_argument("--no-pictures", action="store_true", help="skip the per-case PNGs")
    parser.add_argument(
        "-np", "--num-processes", type=int, default=1, help="cases scored, and segmenter runs, in parallel (default 1)"
    )
    add_structure_arguments(
        parser,
        "label maps <case><ending> of the training cases on the target grid (e.g. manual delineations), the "
        "reference of the structure agreement instead of segmenting the targets",
    )
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from autosr.evaluation.find_best import find_best

    result = find_best(
        args.dataset,
        paths_from_args(args),
        configurations=args.configurations,
        trainers=args.trainers,
        plans_name=args.plans,
        metric=args.metric,
        ensembles=not args.no_ensembles,
        num_processes=max(1, args.num_processes),
        pictures=not args.no_pictures,
        structures=structure_options_from_args(args),
        reference_labels_dir=args.reference_labels,
    )
    metric = result["metric"]
    print(
        f"ranking by {metric} ({'higher' if result['higher_is_better'] else 'lower'} is better; ties by mae) over {len(result['cases_compared'])} cases:"
    )
    for i, entry in enumerate(result["ranking"], 1):
        means = entry["means"]
        print(
            f"{i:>3}. {entry['name']:<60} {metric} {means.get(metric, float('nan')):.4f}  mae {means.get('mae', float('nan')):.4f}"
        )
    if result["baseline_means"]:
        b = result["baseline_means"]
        print(
            f"     {'baseline (input, resampled + linear map)':<60} {metric} {b.get(metric, float('nan')):.4f}  mae {b.get('mae', float('nan')):.4f}"
        )
    if args.segmenter is not None:
        print("structure agreement of each candidate: <results>/structures.csv, summary.json, bland_altman/")
    print(f"best: {result['best']}; predict with:")
    for line in result["predict_commands"]:
        print(f"  {line}")
    if result["ensemble_command"]:
        print(f"  {result['ensemble_command']}")
    return 0
