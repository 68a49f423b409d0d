"""`autosr predict -i` on a folder of DICOM series: each series of this run's part is converted once into a
private temporary folder as `<case>_0000<ending>` (geometry and voxel values exactly as SimpleITK's series reader
gives them, written with the checked writer), the folder prediction runs on it, and the folder is removed.

The run's `FolderSettings.input_sources` name each series' slice files, so every provenance sidecar names the
DICOM files from the moment it is written (never the temporary conversion, which a killed run leaves deleted).
Series whose prediction exists already are not converted (a rerun is as cheap as for files). A series that
cannot be read as one regular volume (autosr/formats/dicom_series.py: mixed, incomplete) is that case's
failure, named in the run's summary and summary.csv; the other series are still predicted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from autosr.errors import AutosrError
from autosr.formats.dicom_series import find_series, holds_dicom_series, read_series
from autosr.inference.folder import FolderSummary, is_finished, select_part
from autosr.inference.settings import FolderSettings
from autosr.io.image_io import write_sitk_image
from autosr.io.temporaries import private_folder

STAGING_PREFIX = "autosr-dicom-"


@dataclass
class StagedSeries:
    """The folder to predict instead of the DICOM folder, the settings to predict it with (the series' slice files
    as `input_sources`), and the series that could not be converted (case id -> reason)."""

    input_dir: Path
    folder: FolderSettings
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # predicted by an earlier run: not converted

    @property
    def empty(self) -> bool:
        return not any(self.input_dir.iterdir())


@contextmanager
def series_as_images(
    input_dir: str | os.PathLike, output_dir: str | os.PathLike, file_ending: str, folder: FolderSettings
) -> Iterator[StagedSeries | None]:
    """None when `input_dir` is not a folder of DICOM series; else the converted series (see the module)."""
    if not holds_dicom_series(input_dir, file_ending):
        yield None
        return
    series = find_series(input_dir)
    mine = set(select_part([s.case_id for s in series], folder.num_parts, folder.part_id))
    staging = private_folder(tempfile.gettempdir(), STAGING_PREFIX)
    try:
        failed, skipped = {}, []
        for one in series:
            if one.case_id not in mine:
                continue
            if not folder.overwrite and is_finished(output_dir, one.case_id, file_ending):
                skipped.append(one.case_id)
                continue
            try:
                image = read_series(one)
            except AutosrError as e:
                failed[one.case_id] = str(e)
                continue
            write_sitk_image(image, staging / f"{one.case_id}_0000{file_ending}")
        sources = {one.case_id: tuple(str(f) for f in one.files) for one in series if one.case_id in mine}
        yield StagedSeries(staging, replace(folder, num_parts=1, part_id=0, input_sources=sources), failed, skipped)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def finish_series_run(output_dir: str | os.PathLike, staged: StagedSeries, summary: FolderSummary) -> None:
    """Series that could not be read are failures of the run, with a row in summary.csv like any failed scan."""
    from autosr.inference.scan_summary import write_row, write_summary

    if not staged.failed:
        return
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    for case_id, reason in sorted(staged.failed.items()):
        summary.failed[case_id] = reason
        write_row(output_dir, {"case": case_id, "status": "failed", "flag": True, "reason": reason})
    write_summary(output_dir)
