"""`autosr qc-reference`: measure a model's training cases for the per-scan quality flags.

    autosr qc-reference -d 902 -c 3d_fullres                      # input signals (spacing, field of view, intensities)
    autosr qc-reference -d 902 -c 3d_fullres --uncertainty        # also the ensemble's uncertainty (predicts every case)

Writes `qc_reference.json` into the model folder; `autosr predict` and `autosr export-model` read it.
"""

from __future__ import annotations

import argparse

from autosr.commands.arguments import add_path_arguments, paths_from_args
from autosr.commands.model_arguments import add_ensemble_arguments, add_model_arguments, model_source_from_args
from autosr.inference.settings import PredictionSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--uncertainty", action="store_true",
        help="also predict every training case with the ensemble below and record its uncertainty (for "
        "`autosr predict --uncertainty` with the same folds, checkpoint, mirroring and step)",
    )  # fmt: skip
    add_ensemble_arguments(parser)
    parser.add_argument(
        "-np", "--num-processes", type=int, default=1, help="processes for the input signals (default: 1)"
    )
    parser.add_argument("--rebuild", action="store_true", help="measure the input signals again even if present")
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from autosr.inference.qc_reference import qc_reference

    paths = paths_from_args(args)
    with model_source_from_args(args).opened(paths) as model:
        prediction = PredictionSettings(
            step_fraction=args.step_size, use_mirroring=not args.no_tta, mirror_student=args.tta, device=args.device
        )
        path = qc_reference(
            model.model_dir,
            paths.raw_dataset(model.model_dir.parent.name),
            uncertainty=args.uncertainty,
            folds=model.folds,
            checkpoint=model.checkpoint,
            prediction=prediction,
            num_processes=max(1, args.num_processes),
            rebuild=args.rebuild,
        )
    print(f"QC reference: {path}")
    return 0
