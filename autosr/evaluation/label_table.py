"""Names of label values, read from a lookup table in FreeSurfer's colour-table format.

Why: segmenters write numbers (17, 53); tables and plots should say Left-Hippocampus. FreeSurfer's
`FreeSurferColorLUT.txt` format is what FreeSurfer, FastSurfer and SynthSeg users already have:

    # comment
    17  Left-Hippocampus   220 216  20 0
    53  Right-Hippocampus  220 216  20 0

one label per line: the integer value, the name (no spaces), optionally R G B A (ignored). Blank lines and
lines starting with `#` are skipped. A two-column file (`value name`) is therefore also accepted.
"""

from __future__ import annotations

import os
from pathlib import Path

from autosr.errors import AutosrError


def read_label_table(path: str | os.PathLike) -> dict[int, str]:
    """{label value: name} from a FreeSurfer-format lookup table; each bad line is named in the error."""
    path = Path(path)
    if not path.is_file():
        raise AutosrError(
            f"{path}: label lookup table not found (expected FreeSurfer LUT format: 'value name R G B A')"
        )
    names: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        try:
            value = int(parts[0])
        except ValueError:
            value = None
        if value is None or len(parts) < 2:
            raise AutosrError(
                f"{path}, line {number}: expected 'value name [R G B A]' (FreeSurfer LUT format), got {text!r}"
            )
        names[value] = parts[1]
    if not names:
        raise AutosrError(f"{path}: no labels found (expected lines 'value name [R G B A]')")
    return names


def label_name(value: int, names: dict[int, str] | None) -> str:
    """The table's name of `value`, else `label_<value>`."""
    if names and int(value) in names:
        return names[int(value)]
    return f"label_{int(value)}"
