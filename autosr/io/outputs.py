"""The one overwrite policy for every `-o`: what a command may replace without being asked.

A command's output file may already exist. Three cases, one rule:

- it is the same kind of file this command writes, and the kind is *regenerated* (a report: a view of
  results that rerunning the command refreshes): it is replaced;
- it is anything else: a file autosr did not write (a dataset.json, a scan, someone's HTML), or an artefact
  that is not regenerated (a model package handed to colleagues): it is refused, one message naming the
  file and the fix, unless the user passed `--overwrite`;
- a file autosr does not recognise is never replaced silently.

Output *folders* follow the same rule at the level of their files (`foreign_files`): a prediction folder
may hold earlier predictions of autosr (a resumed run skips them), never files it did not write, since
those would be taken for finished predictions or replaced.

Each kind is declared by the module that owns the format (`OutputKind(name, recognise, regenerated)`):
the report recognises its own HTML, the package reader its own zip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autosr.errors import AutosrError


@dataclass(frozen=True)
class OutputKind:
    """A kind of output file: its name in messages, how to recognise one that autosr wrote, and whether
    rerunning the command replaces it without asking."""

    name: str  # e.g. "HTML report", "model package"
    recognise: Callable[[Path], bool]
    regenerated: bool


def check_output_file(path: str | os.PathLike, kind: OutputKind, overwrite: bool = False) -> Path:
    """`path` if the command may write it (see the module docstring); otherwise one `AutosrError`."""
    path = Path(path)
    if path.is_dir():
        raise AutosrError(f"-o {path}: is a folder; name the {kind.name} file to write (e.g. {path / 'x'})")
    if not path.exists() and not path.is_symlink():
        return path
    if overwrite:
        return path
    own = path.is_file() and _recognised(kind, path)
    if own and kind.regenerated:
        return path
    what = f"an existing {kind.name}" if own else f"a file that is not a {kind.name} written by autosr"
    raise AutosrError(
        f"-o {path}: is {what}; it is not replaced without asking: choose another -o, or pass --overwrite to replace it"
    )


def _recognised(kind: OutputKind, path: Path) -> bool:
    try:
        return bool(kind.recognise(path))
    except (OSError, ValueError):
        return False


def has_marker(path: Path, marker: bytes, within: int = 4096) -> bool:
    """True when `marker` occurs in the first `within` bytes of the file (how a text format says who wrote it)."""
    with open(path, "rb") as handle:
        return marker in handle.read(within)
