"""`autosr register DATASET`: co-register each input to its target and write a registered copy beside it."""

from __future__ import annotations

import argparse
import os

from autosr.commands.arguments import add_path_arguments, paths_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset id (901), full name (Dataset901_Brain) or path to the folder")
    parser.add_argument(
        "--id",
        type=int,
        default=None,
        help="id of the registered copy (default: the copy an earlier run wrote, else the first free id after "
        "the source's)",
    )
    parser.add_argument("--name", default=None, help="name of the registered copy (default: <source name>Registered)")
    parser.add_argument(
        "--transform",
        choices=("rigid", "affine"),
        default="rigid",
        help="rigid (default; written into the input's header, no resampling) or affine (rigid, then affine; "
        "inputs are resampled)",
    )
    parser.add_argument(
        "--no-bias-correction",
        action="store_true",
        help="skip the N4 bias-field correction the metric sees (faster, less accurate on MR with a bias field)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="register every case again (default: skip cases done before)"
    )
    parser.add_argument(
        "-np",
        "--num-processes",
        type=int,
        default=max(1, min(4, os.cpu_count() or 1)),
        help="cases registered in parallel (default: up to 4)",
    )
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from autosr.registration.api import register_dataset, registered_dataset_folder
    from autosr.registration.pairwise import RegistrationSettings

    source = paths_from_args(args).raw_dataset(args.dataset)
    output = registered_dataset_folder(source, args.id, args.name)
    settings = RegistrationSettings(transform=args.transform, bias_correction=not args.no_bias_correction)
    summary = register_dataset(source, output, settings, num_processes=args.num_processes, overwrite=args.overwrite)
    print_summary(summary)
    summary.raise_if_failed()
    return 0


def print_summary(summary) -> None:
    """The per-case table and where the registered dataset went."""
    print(summary.table())
    print(f"registered dataset: {summary.output_dir}")
    print(f"transforms and parameters: {summary.output_dir / 'registration'}")
    print(f"check what registration left with: autosr verify {summary.output_dir.name}")
