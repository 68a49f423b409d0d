"""DICOM series as prediction input: a folder of series, one scan per series, read with SimpleITK.

Scanners export a scan as a series of slice files; `autosr predict -i FOLDER` accepts a folder (and its
subfolders) of such series when it holds no image file in the model's ending. Series are found by GDCM's
series UIDs (`ImageSeriesReader.GetGDCMSeriesIDs`), and each is read in the slice order GDCM sorts it into
(by position along the slice normal). The geometry is SimpleITK's: origin of the first slice, in-plane
spacing from PixelSpacing, the slice spacing from the positions, the direction from ImageOrientationPatient.

Two ways a series goes wrong, each one clear message naming the series' folder and the fix (instead of a
silently wrong volume):

- *mixed*: slices of different size or orientation under one series UID (two scans exported with one UID);
- *incomplete*: the distances between consecutive slice positions differ (a missing slice leaves a gap
  twice the spacing), which SimpleITK would stretch over the volume without a word.

Case ids: the series' folder relative to the input folder (`patient01/t1_mprage` -> `patient01_t1_mprage`; the
input folder itself -> `series`), with `_s<SeriesNumber>` appended when a folder holds several series;
characters outside the safe-name rule become `_`.
"""

from __future__ import annotations

import locale
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autosr.errors import AutosrError
from autosr.io.image_io import file_ending_of, geometry_of

DICOM_MAGIC_OFFSET = 128  # a DICOM Part 10 file: 128 bytes of preamble, then "DICM"
SLICE_GAP_TOLERANCE = 1e-3  # relative: slice distances may differ by rounding of the position strings only
POSITION_TAG, ORIENTATION_TAG, SERIES_NUMBER_TAG = "0020|0032", "0020|0037", "0020|0011"
UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(frozen=True)
class DicomSeries:
    """One series: its case id, its folder and its slice files in GDCM's order."""

    case_id: str
    folder: Path
    files: tuple[str, ...]


@contextmanager
def _kept_locale():
    """GDCM sets the process locale to C while it reads or writes; put the caller's back. GDCM's warning for a
    folder without series (most folders of a tree) is silenced meanwhile: a folder with none is no problem."""
    saved = locale.setlocale(locale.LC_ALL, None)
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
        locale.setlocale(locale.LC_ALL, saved)


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(DICOM_MAGIC_OFFSET)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def holds_dicom_series(folder: str | os.PathLike, file_ending: str) -> bool:
    """True when `folder` holds no image in `file_ending` but DICOM files (in it or below it)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if any(p.is_file() and p.name.endswith(file_ending) for p in folder.iterdir()):
        return False
    for root, _, names in os.walk(folder):
        for name in names:
            if not name.startswith(".") and not file_ending_of(name) and is_dicom_file(Path(root) / name):
                return True
    return False


def find_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """Every series below `folder`, sorted by case id; no series is an error naming the folder."""
    folder = Path(folder)
    found: list[DicomSeries] = []
    with _kept_locale():
        for root, dirs, _ in sorted(os.walk(folder)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(root)
            relative = Path(root).relative_to(folder)
            base = UNSAFE.sub("_", "_".join(relative.parts)) if relative.parts else "series"
            for index, series_id in enumerate(ids):
                files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, series_id))
                case_id = base
                if len(ids) > 1:
                    number = _tag(files[0], SERIES_NUMBER_TAG).strip() or str(index + 1)
                    case_id = f"{base}_s{UNSAFE.sub('_', number)}"
                found.append(DicomSeries(case_id, Path(root), files))
    if not found:
        raise AutosrError(f"-i {folder}: holds no DICOM series (and no image files in the model's ending)")
    ids = [s.case_id for s in found]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise AutosrError(
            f"-i {folder}: several series would be named {', '.join(duplicates)}; give each series (or each "
            "SeriesNumber) a folder of its own"
        )
    return sorted(found, key=lambda s: s.case_id)


def _tag(path: str, tag: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.LoadPrivateTagsOff()
    reader.ReadImageInformation()
    return reader.GetMetaData(tag) if reader.HasMetaDataKey(tag) else ""


def _slice_problem(series: DicomSeries) -> str | None:
    """What makes the slices not one regular volume (mixed sizes/orientations, uneven spacing), or None."""
    positions, orientations, sizes = [], set(), set()
    for path in series.files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        sizes.add(reader.GetSize()[:2])
        if reader.HasMetaDataKey(ORIENTATION_TAG):
            orientations.add(tuple(round(float(v), 4) for v in reader.GetMetaData(ORIENTATION_TAG).split("\\")))
        if reader.HasMetaDataKey(POSITION_TAG):
            positions.append([float(v) for v in reader.GetMetaData(POSITION_TAG).split("\\")])
    if len(sizes) > 1 or len(orientations) > 1:
        return (
            f"mixes slices of {len(sizes)} sizes and {len(orientations)} orientations under one series UID (two "
            "scans in one series?)"
        )
    if len(series.files) < 2:
        return "has a single slice; a scan needs a volume (export the whole series)"
    if len(positions) == len(series.files) and orientations:
        row = np.array(next(iter(orientations)))
        normal = np.cross(row[:3], row[3:])
        along = np.sort(np.array(positions) @ normal)
        gaps = np.diff(along)
        if gaps.min() <= 0 or gaps.max() - gaps.min() > SLICE_GAP_TOLERANCE * gaps.max():
            where = int(np.argmax(np.abs(gaps - np.median(gaps))))
            return (
                f"is incomplete or uneven: slices {where + 1} and {where + 2} (of {len(series.files)}, sorted along "
                f"the slice normal) are {gaps[where]:.4g} mm apart, the others {np.median(gaps):.4g} mm (a missing "
                "slice?)"
            )
    return None


def read_series(series: DicomSeries) -> sitk.Image:
    """The series as one SimpleITK volume, after the checks above (an `AutosrError` naming the folder)."""
    with _kept_locale():
        problem = _slice_problem(series)
        if problem is not None:
            raise AutosrError(
                f"DICOM series {series.case_id} ({series.folder}) {problem}; export the complete series again, or "
                "convert it to NIfTI yourself"
            )
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(list(series.files))
        image = reader.Execute()
    geometry_of(image)  # a 3D volume
    return image
