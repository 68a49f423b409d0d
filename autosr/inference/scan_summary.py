"""`OUT/summary.csv`: one row per scan of a prediction folder, safe with many writers at once.

Several processes (a job array, one process per GPU) write into one output folder. Each scan's row is its own
file, `OUT/qc/<case>.json`, written atomically by whoever predicts that scan (and before its prediction, so a
finished scan always has its row); different scans never share a file, so writers cannot collide. `summary.csv`
is rebuilt from all rows at the end of every run, under an exclusive lock on `OUT/qc/.summary.lock`: the last
run to finish writes a table that holds every row written before it, whichever part it was. The file itself is
replaced atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autosr.errors import AutosrError
from autosr.io import read_json
from autosr.io.atomic import atomic_path, atomic_write_json, is_temporary

QC_FOLDER = "qc"
SUMMARY_NAME = "summary.csv"
THRESHOLDS_NAME = "qc_thresholds.json"  # the limits the flags of a folder were measured against (for the report)
LOCK_NAME = ".summary.lock"
# the columns that lead the table; the signals follow in the order of `SIGNAL_ORDER`, then any others
LEADING_COLUMNS = (
    "case", "status", "flag", "reason", "finished_at", "part", "preprocess_s", "network_s", "export_s", "input",
)  # fmt: skip
SIGNAL_ORDER = ("shape_", "spacing_", "extent_", "subject_volume", "intensity_", "uncertainty_")


def row_file(output_dir: str | os.PathLike, case_id: str) -> Path:
    return Path(output_dir) / QC_FOLDER / f"{case_id}.json"


def foreign_images(output_dir: str | os.PathLike, file_ending: str) -> list[str]:
    """Image files `<name><file_ending>` in the folder that `autosr predict` did not write: every prediction it
    writes has its row (written before it), so an image without one came from elsewhere (references, scans,
    another tool's output). A run must not take them for finished predictions, nor replace them."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file()
        and p.name.endswith(file_ending)
        and not is_temporary(p)
        and not row_file(folder, p.name[: -len(file_ending)]).is_file()
    )


def refuse_foreign_images(output_dir: str | os.PathLike, file_ending: str) -> None:
    """One error when the prediction folder holds images `autosr predict` did not write (`foreign_images`)."""
    if foreign := foreign_images(output_dir, file_ending):
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise AutosrError(
            f"-o {output_dir}: holds {len(foreign)} image file(s) that autosr predict did not write ({shown}): they "
            "would be taken for finished predictions, or replaced; choose another -o (a new folder, or one an "
            "earlier `autosr predict` wrote)"
        )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_row(output_dir: str | os.PathLike, row: dict[str, Any]) -> Path:
    """Write one scan's row (a flat dict with at least `case`) atomically; returns its file."""
    path = row_file(output_dir, str(row["case"]))
    atomic_write_json({k: _finite(v) for k, v in row.items()}, path)
    return path


def read_rows(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of the folder, sorted by case; unreadable row files are skipped (a later run rewrites them)."""
    folder = Path(output_dir) / QC_FOLDER
    rows = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            if is_temporary(path):
                continue
            try:
                rows.append(read_json(path))
            except (OSError, ValueError):
                continue
    return sorted(rows, key=lambda r: str(r.get("case")))


@contextlib.contextmanager
def summary_lock(output_dir: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on the folder's summary (fcntl; where it does not exist, e.g. Windows, no lock)."""
    path = Path(output_dir) / QC_FOLDER / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _column_key(name: str) -> tuple[int, int]:
    """Leading columns first, then the signals by group; within a group the rows' own order (z, y, x; channels)."""
    if name in LEADING_COLUMNS:
        return (0, LEADING_COLUMNS.index(name))
    for i, prefix in enumerate(SIGNAL_ORDER):
        if name.startswith(prefix):
            return (1, i)
    return (2, 0)


def write_summary(output_dir: str | os.PathLike) -> Path | None:
    """Rebuild `OUT/summary.csv` from every row (under the lock); None when the folder has no rows yet."""
    import pandas as pd

    output_dir = Path(output_dir)
    with summary_lock(output_dir):
        rows = read_rows(output_dir)
        if not rows:
            return None
        table = pd.DataFrame(rows)
        table = table[sorted(table.columns, key=_column_key)]  # a stable sort: groups keep the rows' order
        path = output_dir / SUMMARY_NAME
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
    return path
