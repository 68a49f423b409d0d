"""Finding the case files of a folder (`images_in`: `<case><suffix><ending>`, one file per case), naming
what is missing, and refusing to score references against themselves (`refuse_self_comparison`), for
`autosr evaluate` and cross-validation."""

from __future__ import annotations

import filecmp
import os
import sys
from pathlib import Path

from autosr.errors import AutosrError, DatasetProblems
from autosr.io import file_ending_of

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


def refuse_self_comparison(
    ref_dir: Path, pred_dir: Path, references: dict[str, Path], predictions: dict[str, Path], cases: list[str]
) -> None:
    """Refuse to score when the prediction folder is the reference folder (every score would be perfect and
    say nothing); say so, loudly, when every prediction is a byte-identical copy of its reference (a sanity
    check of the metrics does that on purpose; a mix-up of folders by accident)."""
    if ref_dir.resolve() == pred_dir.resolve():
        raise AutosrError(
            f"{pred_dir}: the prediction folder is the reference folder, so every score would be perfect; give "
            "the folder of the predictions (what `autosr predict -o` wrote) as the second folder"
        )
    if cases and all(same_bytes(references[c], predictions[c]) for c in cases):
        print(
            f"warning: {pred_dir}: every prediction ({len(cases)}) is a byte-identical copy of its reference in "
            f"{ref_dir}: the scores will be perfect; if that is not what you meant, give the folder of the "
            "predictions (what `autosr predict -o` wrote)",
            file=sys.stderr,
        )


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (sizes first: different predictions rarely have equal sizes)."""
    return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)
