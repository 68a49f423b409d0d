"""Arguments of the commands that use a trained model (predict, qc-reference): which model (`ModelSource`)
and how its ensemble predicts. Defaults are read from the settings classes (autosr/inference/settings.py),
never written here a second time. A module of its own because it imports torch, which `autosr verify`
and the other commands do not need."""

from __future__ import annotations

import argparse

from autosr.commands.arguments import default_of
from autosr.errors import AutosrError
from autosr.inference.settings import ModelSource, PredictionSettings
from autosr.inference.student import fold_name
from autosr.model_layout import CHECKPOINT_NAMES


def add_model_arguments(parser: argparse.ArgumentParser, package: bool = False) -> None:
    """-d/-c, -m, --trainer, --plans, -f, --checkpoint (and --model PACKAGE with `package`): a `ModelSource`."""
    parser.add_argument("-d", "--dataset", help="dataset id, name or folder (with -c; not needed with -m)")
    parser.add_argument("-c", "--configuration", help="configuration, e.g. 3d_fullres or 2d (with -d)")
    parser.add_argument("-m", "--model-dir", help="model folder <Trainer>__<plans>__<configuration> (instead of -d/-c)")
    if package:
        parser.add_argument(
            "--model", dest="model_package", metavar="PACKAGE",
            help="a model package (.zip from `autosr export-model`), read directly (instead of -d/-c or -m)",
        )  # fmt: skip
    in_package = "; with --model, the package's" if package else ""
    parser.add_argument(
        "-f", "--folds", nargs="+", type=_fold_argument, default=default_of(ModelSource, "folds"),
        help=f"folds to ensemble (default: 0 1 2 3 4{in_package}), or 'distilled': the student of `autosr distill`, "
        "alone and without mirroring",
    )  # fmt: skip
    trainer, plans = default_of(ModelSource, "trainer"), default_of(ModelSource, "plans_name")
    parser.add_argument("--trainer", default=trainer, help=f"trainer name in the model folder (default: {trainer})")
    parser.add_argument("--plans", default=plans, help=f"plans name in the model folder (default: {plans})")
    parser.add_argument(
        "--checkpoint", choices=CHECKPOINT_NAMES, default=default_of(ModelSource, "checkpoint"),
        help=f"which checkpoint of each fold (default: final{in_package})",
    )  # fmt: skip


def _fold_argument(text: str) -> int | str:
    """`fold_name` for argparse: a bad fold is a usage error naming what a fold may be."""
    try:
        return fold_name(text)
    except AutosrError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def model_source_from_args(args: argparse.Namespace) -> ModelSource:
    """The `ModelSource` the flags of `add_model_arguments` name."""
    return ModelSource(
        dataset=args.dataset,
        configuration=args.configuration,
        trainer=args.trainer,
        plans_name=args.plans,
        model_dir=args.model_dir,
        package=getattr(args, "model_package", None),
        folds=args.folds,
        checkpoint=args.checkpoint,
    )


def add_ensemble_arguments(parser: argparse.ArgumentParser) -> None:
    """--step-size, --no-tta, --device: how the ensemble's sliding windows run (fields of `PredictionSettings`)."""
    step = default_of(PredictionSettings, "step_fraction")
    parser.add_argument(
        "--step-size", type=float, default=step,
        help=f"sliding-window step as a fraction of the patch (default: {step}; smaller = more overlap, slower)",
    )  # fmt: skip
    parser.add_argument("--no-tta", action="store_true", help="no test-time mirroring (about 2**axes times faster)")
    parser.add_argument(
        "--tta", action="store_true",
        help="test-time mirroring for the distilled student too (-f distilled predicts without it by default)",
    )  # fmt: skip
    parser.add_argument(
        "--device", default=default_of(PredictionSettings, "device"),
        help="cuda, cuda:1, mps or cpu (default: cuda, else mps, else cpu)",
    )  # fmt: skip
