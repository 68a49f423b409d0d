"""`autosr ensemble`: voxel-wise mean of the predictions of several configurations (the command-line layer
over `autosr.inference.api.ensemble_folders`).

    autosr ensemble -i predictions_3d_fullres/ predictions_2d/ -o predictions_ensemble/

Predictions are averaged in the target's units, voxel by voxel, so they must be the same cases on the
same grids (`autosr predict` writes every configuration on the planned grid over the input's extent, so
predictions of one dataset's configurations line up). A mismatch is an error naming the case; nothing is
resampled silently. The first folder's geometry is written unchanged.
"""

from __future__ import annotations

import argparse
import sys

from autosr.inference.api import ensemble_folders


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--inputs", nargs="+", required=True, help="two or more prediction folders")
    parser.add_argument("-o", "--output", required=True, help="folder for the averaged predictions")
    parser.add_argument("--overwrite", action="store_true", help="recompute cases whose output already exists")


def run(args: argparse.Namespace) -> int:
    written = ensemble_folders(args.inputs, args.output, overwrite=args.overwrite)
    print(f"autosr ensemble: wrote {len(written)} case(s) to {args.output}", file=sys.stdout)
    return 0
