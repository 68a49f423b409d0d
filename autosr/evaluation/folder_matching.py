"""Finding the case files of a folder (`images_in`: `<case><suffix><ending>`, one file per case) and
naming what is missing, for `autosr evaluate` and cross-validation."""

from __future__ import annotations

import os
from pathlib import Path

from autosr.errors import AutosrError, DatasetProblems
from autosr.io import (
    file_ending_of,
)

PathLike = str | os.PathLike


def images_in(folder: PathLike, suffix: str = "") -> dict[str, Path]:
    """{case: file} for the image files of `folder` named `<case><suffix><ending>`.

    Two files for one case (`case.mha` beside `case.nii.gz`) are an error naming both: picking one would
    score whichever sorts first, perhaps a stale export.
    """
    folder = Path(folder)
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    duplicates: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        ending = file_ending_of(p)
        if not ending:
            continue
        stem = p.name[: -len(ending)]
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if stem in found:
            duplicates.setdefault(stem, [found[stem]]).append(p)
        found.setdefault(stem, p)
    if duplicates:
        raise DatasetProblems(
            [
                f"case {case}: {folder} holds {len(files)} files for it ({', '.join(p.name for p in files)}); keep one "
                "(autosr cannot tell which one to use): move the others out of the folder"
                for case, files in sorted(duplicates.items())
            ],
            header="a case has more than one file",
        )
    return found


def require_folder(folder: PathLike | None, what: str) -> Path | None:
    if folder is None:
        return None
    folder = Path(folder)
    if not folder.is_dir():
        raise AutosrError(f"the {what} folder {folder} does not exist")
    return folder


def names(cases: list[str], limit: int = 8) -> str:
    shown = ", ".join(cases[:limit])
    return shown + (f", ... ({len(cases)} in all)" if len(cases) > limit else "") if cases else "none"
