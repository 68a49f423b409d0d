"""`autosr install-model`: check a model package and install it under $AUTOSR_RESULTS.

autosr install-model brain3t7t_3d_fullres.zip
autosr install-model model.zip --results /data/autosr_results --force
"""

from __future__ import annotations

import argparse

from autosr.commands.arguments import add_path_arguments, paths_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("package", help="the model package (.zip from `autosr export-model`)")
    parser.add_argument(
        "--force", action="store_true",
        help="replace an installed model of the same name that differs (its folder is deleted)",
    )  # fmt: skip
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from autosr.formats.package_reader import install_model

    folder = install_model(args.package, paths_from_args(args), force=args.force)
    print(f"installed: {folder}")
    return 0
