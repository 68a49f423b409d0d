"""Arguments several commands share: the folder flags that override the AUTOSR_* environment variables."""

from __future__ import annotations

import argparse

from autosr.paths import AutosrPaths


def add_path_arguments(parser: argparse.ArgumentParser) -> None:
    """--raw/--preprocessed/--results, overriding AUTOSR_RAW/AUTOSR_PREPROCESSED/AUTOSR_RESULTS."""
    group = parser.add_argument_group("folders (override the AUTOSR_* environment variables)")
    group.add_argument("--raw", default=None, help="raw datasets folder (default: $AUTOSR_RAW)")
    group.add_argument("--preprocessed", default=None, help="preprocessed data folder (default: $AUTOSR_PREPROCESSED)")
    group.add_argument("--results", default=None, help="trained models folder (default: $AUTOSR_RESULTS)")


def paths_from_args(args: argparse.Namespace) -> AutosrPaths:
    """The `AutosrPaths` a command's flags and the environment name."""
    return AutosrPaths.resolve(
        raw=getattr(args, "raw", None),
        preprocessed=getattr(args, "preprocessed", None),
        results=getattr(args, "results", None),
    )
