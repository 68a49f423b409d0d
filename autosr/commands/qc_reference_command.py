"""`autosr qc-reference`: measure a model's training cases for the per-scan quality flags.

    autosr qc-reference -d 902 -c 3d_fullres                      # input signals (spacing, field of view, intensities)
    autosr qc-reference -d 902 -c 3d_fullres --uncertainty        # also the ensemble's uncertainty (predicts every case)

Writes `qc_reference.json` into the model folder; `autosr predict` and `autosr export-model` read it.
"""

from __future__ import annotations

import argparse

from autosr.commands.arguments import add_path_arguments, paths_from_args
from autosr.errors import AutosrError
from autosr.inference.model_folder import CHECKPOINT_NAMES, locate_model_folder
from autosr.inference.sliding_window import DEFAULT_STEP_FRACTION
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", help="dataset id, name or folder (with -c; not needed with -m)")
    parser.add_argument("-c", "--configuration", help="configuration, e.g. 3d_fullres or 2d (with -d)")
    parser.add_argument("-m", "--model-dir", help="model folder <Trainer>__<plans>__<configuration> (instead of -d/-c)")
    parser.add_argument(
        "--trainer", default=DEFAULT_TRAINER, help=f"trainer name in the model folder (default: {DEFAULT_TRAINER})"
    )
    parser.add_argument(
        "--plans", default=DEFAULT_PLANS_NAME, help=f"plans name in the model folder (default: {DEFAULT_PLANS_NAME})"
    )
    parser.add_argument(
        "--uncertainty", action="store_true",
        help="also predict every training case with the ensemble below and record its uncertainty (for "
        "`autosr predict --uncertainty` with the same folds, checkpoint, mirroring and step)",
    )  # fmt: skip
    parser.add_argument(
        "-f", "--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds of the ensemble (default: 0 1 2 3 4)"
    )
    parser.add_argument(
        "--checkpoint", choices=CHECKPOINT_NAMES, default="final", help="which checkpoint of each fold (default: final)"
    )
    parser.add_argument("--no-tta", action="store_true", help="the ensemble predicts without test-time mirroring")
    parser.add_argument(
        "--step-size", type=float, default=DEFAULT_STEP_FRACTION,
        help=f"sliding-window step of the ensemble (default: {DEFAULT_STEP_FRACTION})",
    )  # fmt: skip
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: cuda, else mps, else cpu)")
    parser.add_argument(
        "-np", "--num-processes", type=int, default=1, help="processes for the input signals (default: 1)"
    )
    parser.add_argument("--rebuild", action="store_true", help="measure the input signals again even if present")
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autosr.inference.qc_reference import qc_reference

    paths = paths_from_args(args)
    if args.model_dir:
        model_dir = Path(args.model_dir)
    elif args.dataset and args.configuration:
        model_dir = locate_model_folder(paths, args.dataset, args.configuration, args.trainer, args.plans)
    else:
        raise AutosrError("name the model: -d DATASET -c CONFIGURATION, or -m MODEL_FOLDER")
    raw = paths.raw_dataset(model_dir.parent.name)
    path = qc_reference(
        model_dir,
        raw,
        uncertainty=args.uncertainty,
        folds=args.folds,
        checkpoint=args.checkpoint,
        use_mirroring=not args.no_tta,
        step_fraction=args.step_size,
        device=args.device,
        num_processes=max(1, args.num_processes),
        rebuild=args.rebuild,
    )
    print(f"QC reference: {path}")
    return 0
