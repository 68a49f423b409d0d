"""`autosr export-model`: write a trained model's package (a zip with plans, checkpoints, model card).

autosr export-model -d 902 -c 3d_fullres -o brain3t7t_3d_fullres.zip
autosr export-model -d 902 -c 2d --trainer TrainerSSIMLoss -f 0 1 2 --checkpoint best -o model.zip
"""

from __future__ import annotations

import argparse

from autosr.commands.arguments import add_path_arguments, paths_from_args
from autosr.inference.model_folder import CHECKPOINT_NAMES
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", required=True, help="dataset id, name or folder")
    parser.add_argument("-c", "--configuration", required=True, help="configuration, e.g. 3d_fullres or 2d")
    parser.add_argument("-o", "--output", required=True, help="the package to write (a .zip)")
    parser.add_argument(
        "--trainer", default=DEFAULT_TRAINER, help=f"trainer name in the model folder (default: {DEFAULT_TRAINER})"
    )
    parser.add_argument(
        "--plans", default=DEFAULT_PLANS_NAME, help=f"plans name in the model folder (default: {DEFAULT_PLANS_NAME})"
    )
    parser.add_argument(
        "-f", "--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds to ship (default: 0 1 2 3 4)"
    )
    parser.add_argument(
        "--checkpoint", choices=CHECKPOINT_NAMES, default="final", help="which checkpoint of each fold (default: final)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing -o file (never without it)")
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from autosr.packaging.export import export_model

    path = export_model(
        args.dataset,
        args.configuration,
        args.output,
        trainer=args.trainer,
        plans_name=args.plans,
        folds=args.folds,
        checkpoint=args.checkpoint,
        paths=paths_from_args(args),
        overwrite=args.overwrite,
    )
    print(
        f"model package: {path} ({path.stat().st_size / 1024**2:.1f} MiB); install with `autosr install-model {path}`"
    )
    return 0
