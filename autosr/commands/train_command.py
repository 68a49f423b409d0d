"""`autosr train DATASET CONFIG FOLD`: thin argparse layer over `autosr.training.run.train_fold`."""

from __future__ import annotations

import argparse

from autosr.errors import AutosrError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from autosr.commands.arguments import add_path_arguments
    from autosr.training.trainers import TRAINERS

    parser.add_argument("dataset", help="dataset id (901), name (Dataset901_Brain) or path")
    parser.add_argument("configuration", help="configuration in plans.json: 2d, 3d_fullres, 3d_lowres")
    parser.add_argument("fold", help="fold 0-4, or 'all' to train on every case (no validation)")
    parser.add_argument("--trainer", default="Trainer", help=f"trainer variant (one of: {', '.join(TRAINERS)})")
    parser.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: CUDA, else MPS, else CPU)")
    parser.add_argument(
        "--continue", dest="continue_training", action="store_true", help="resume from checkpoint_latest.pt"
    )
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="train with N GPUs on this machine (launches torchrun with N processes); for several machines run "
        "torchrun yourself (documentation/training.md)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the fixed 1000)")
    parser.add_argument(
        "--iters-per-epoch", type=int, default=None, help="iterations per epoch (default: the fixed 250)"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="data loading processes (default: $AUTOSR_NUM_WORKERS, else CPU cores - 1, at most 12; 0 = none)",
    )
    add_path_arguments(parser)


def _forwarded_argv(args: argparse.Namespace) -> list[str]:
    argv = [str(args.dataset), args.configuration, str(args.fold), "--trainer", args.trainer]
    for flag, value in (
        ("--device", args.device),
        ("--epochs", args.epochs),
        ("--iters-per-epoch", args.iters_per_epoch),
        ("--num-workers", args.num_workers),
        ("--raw", args.raw),
        ("--preprocessed", args.preprocessed),
        ("--results", args.results),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.continue_training:
        argv.append("--continue")
    return argv


def run(args: argparse.Namespace) -> int:
    from autosr.commands.arguments import paths_from_args
    from autosr.training.run import spawn_torchrun, train_fold

    if args.num_gpus < 1:
        raise AutosrError(f"--num-gpus must be at least 1, got {args.num_gpus}")
    if args.num_gpus > 1:
        return spawn_torchrun(args.num_gpus, _forwarded_argv(args))
    train_fold(
        args.dataset,
        args.configuration,
        args.fold,
        trainer=args.trainer,
        paths=paths_from_args(args),
        device=args.device,
        continue_training=args.continue_training,
        epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch,
        num_workers=args.num_workers,
    )
    return 0
