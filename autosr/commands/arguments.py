"""Arguments every command shares: the folder flags that override the AUTOSR_* environment variables, and
`default_of`, through which a flag's default is read from its settings class instead of written again."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

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


def default_of(settings_class: type, name: str) -> Any:
    """The default of field `name` of a settings dataclass: a flag's default and help text come from the one
    place the option is declared."""
    for f in fields(settings_class):
        if f.name == name:
            return f.default
    raise KeyError(f"{settings_class.__name__} has no field {name!r}")
