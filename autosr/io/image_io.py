"""Read and write images as (Z, Y, X) / (C, Z, Y, X) float32 arrays plus an exact `Geometry`.

Every format SimpleITK reads is accepted; the list of endings autosr validates against is
`SUPPORTED_ENDINGS`. Reading refuses, with one message naming the file and the fix, what SimpleITK would
read wrongly without a word (truncated NIfTI, NaN/Inf in NIfTI: see `read_sitk`); every command reads
through here. Writes are atomic and checked before the rename (`write_sitk_image`, `autosr.io.atomic`):
SimpleITK's NIfTI writer reports no error when the disk is full or a file-size limit cuts the file short.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autosr.errors import AutosrError, FileWriteError, ImageFileProblem
from autosr.io.atomic import atomic_path, named_write_errors
from autosr.io.geometry import Geometry
from autosr.io.nifti_integrity import check_nifti_voxels, is_nifti
from autosr.io.temporaries import private_folder

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
# The largest voxel magnitude autosr reads. Every stage computes in float32 (largest number 3.4e38) and squares
# and sums voxel values (variances in normalization and the fingerprint, MSE and PSNR in scoring) over up to
# 1e10 voxels: 1e10 * (1e12)^2 = 1e34 stays finite with room to spare, while 1e14 would not. No scan needs more:
# CT is stored in HU (about +-3e4), MR in arbitrary units (at most about 1e7), PET in Bq/ml (about 1e8).
MAX_ABS_VOXEL_VALUE = 1e12


def file_ending_of(path: str | os.PathLike) -> str:
    """The image file ending of `path` ('.nii.gz' counts as one), or '' when it is none of ours."""
    name = Path(path).name.lower()
    for ending in sorted(SUPPORTED_ENDINGS, key=len, reverse=True):
        if name.endswith(ending):
            return ending
    return ""


# Formats whose header names a separate voxel-data file beside it (MetaImage .mhd -> .raw/.zraw, detached NRRD
# .nhdr -> .raw/.raw.gz): the data file is part of its header's image, never an image or a case of its own.
DETACHED_HEADER_ENDINGS = (".mhd", ".nhdr")
HEADER_BYTES = 1 << 16


def detached_data_file(header: Path) -> str | None:
    """The name of the voxel-data file a .mhd/.nhdr header in the same folder points to, or None (voxels in
    the header file itself, a list or pattern of files, another folder, an unreadable header)."""
    ending = file_ending_of(header)
    if ending not in DETACHED_HEADER_ENDINGS:
        return None
    try:
        with open(header, "rb") as f:
            text = f.read(HEADER_BYTES).decode("latin-1")
    except OSError:
        return None
    separator, keys = ("=", ("elementdatafile",)) if ending == ".mhd" else (":", ("data file", "datafile"))
    for line in text.splitlines():
        key, found, value = line.partition(separator)
        if found and key.strip().lower() in keys:
            value = value.strip()
            if value.upper() in ("LOCAL", "LIST") or "%" in value or " " in value:
                return None
            return value if Path(value).name == value else None
    return None


def detached_data_files(folder: str | os.PathLike) -> set[str]:
    """Names of the voxel-data files that the .mhd/.nhdr headers of `folder` point to."""
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    found = (detached_data_file(p) for p in folder.iterdir() if file_ending_of(p) in DETACHED_HEADER_ENDINGS)
    return {name for name in found if name is not None}


def geometry_of(image: sitk.Image) -> Geometry:
    """The `Geometry` of a 3D SimpleITK image (its (x, y, z) spacing and size reversed to (z, y, x))."""
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
    return Geometry(
        spacing_zyx=image.GetSpacing()[::-1],
        origin_xyz=image.GetOrigin(),
        direction=image.GetDirection(),
        size_zyx=image.GetSize()[::-1],
    )


def apply_geometry(image: sitk.Image, geometry: Geometry) -> sitk.Image:
    image.SetSpacing(tuple(geometry.spacing_zyx[::-1]))
    image.SetOrigin(tuple(geometry.origin_xyz))
    image.SetDirection(tuple(geometry.direction))
    return image


def read_sitk(path: str | os.PathLike) -> sitk.Image:
    """Read one 3D image, refusing what SimpleITK would read wrongly or silently change.

    Every command reads images through here (or `read_image`/`read_channels` above it), so they all refuse
    the same files with the same message (an `ImageFileProblem` naming the file and the fix): a missing
    file or a broken link, an unreadable file, several components per voxel, a 2D image or a 4D series,
    voxel data cut short (SimpleITK reads a truncated NIfTI with zeros) and NaN/Inf voxels (SimpleITK
    reads NIfTI ones as 0), and voxel magnitudes above `MAX_ABS_VOXEL_VALUE` (float32 arithmetic on them
    would overflow to Inf and NaN further down).
    """
    path = Path(path)
    check_image_file_present(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        dimension, size, components = reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents()
        if components != 1:
            raise ImageFileProblem(
                path,
                f"has {components} components per voxel",
                "autosr wants one image per channel: split it into <case>_0000, <case>_0001, ...",
            )
        if dimension == 2:
            raise ImageFileProblem(
                path,
                f"is a 2D image ({size[0]} x {size[1]} pixels)",
                "autosr trains on and predicts 3D volumes: give the 3D scan (one file per channel)",
            )
        if not (dimension == 3 or (dimension == 4 and size[3] == 1)):
            raise ImageFileProblem(
                path,
                f"is {dimension}D with size {' x '.join(map(str, size))}",
                "autosr reads 3D volumes: store each volume (channel, time point) in its own file",
            )
        if 1 in size[:3]:
            raise ImageFileProblem(
                path,
                f"is a single slice ({' x '.join(map(str, size[:3]))} voxels): a 2D image stored as 3D",
                "autosr trains on and predicts 3D volumes: give the whole 3D scan (one file per channel)",
            )
        image = reader.Execute()
    except RuntimeError as e:
        shortfall = metaimage_shortfall(path)
        if shortfall is not None:
            found, expected = shortfall
            raise ImageFileProblem(
                path,
                f"is truncated: it holds {found} of the {expected} bytes of voxel data its header announces "
                "(an interrupted copy or download?)",
                "copy or export the file again",
            ) from e
        message = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown reader error"
        if "No such file or directory" in message:  # ITK reports a failed voxel read with the last errno
            message = "the voxel data could not be read completely: the file is probably truncated or damaged"
            raise ImageFileProblem(
                path, f"cannot be read as an image ({message})", "copy or export the file again"
            ) from e
        raise ImageFileProblem(path, f"cannot be read as an image ({message})", "re-export or replace the file") from e
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    check_voxels(path, image)
    return image


METAIMAGE_ELEMENT_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip


def metaimage_shortfall(path: Path) -> tuple[int, int] | None:
    """(bytes found, bytes announced) when an uncompressed single-file MetaImage (.mha) holds less voxel data
    than its header announces; None otherwise (other formats, compressed data, a whole file). ITK reports
    such a file with an unrelated errno ("No such file or directory"), so the reader says it here instead."""
    if path.suffix.lower() != ".mha":
        return None
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fields: dict[str, str] = {}
    offset = 0
    for line in head.split(b"\n"):
        offset += len(line) + 1
        key, _, value = line.decode("latin-1").partition("=")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    else:
        return None
    if fields.get("ElementDataFile") != "LOCAL" or fields.get("CompressedData", "False").lower() == "true":
        return None
    element = METAIMAGE_ELEMENT_BYTES.get(fields.get("ElementType", ""))
    try:
        sizes = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        return None
    if element is None or not sizes:
        return None
    expected = math.prod(sizes) * channels * element
    found = path.stat().st_size - offset
    return (found, expected) if found < expected else None


def check_image_file_present(path: Path) -> None:
    """A clear message for a path that is not a readable file: missing, a broken link, a folder."""
    if path.is_file():
        return
    if path.is_symlink():
        raise ImageFileProblem(
            path,
            f"is a broken symbolic link (it points to {os.readlink(path)}, which does not exist)",
            "fix the link or put the file itself there",
        )
    if path.is_dir():
        raise ImageFileProblem(path, "is a folder, not an image file", "move its files up or remove it")
    raise ImageFileProblem(path, "file not found", "check the path")


def check_voxels(path: Path, image: sitk.Image) -> None:
    """Refuse voxel data that is cut short or holds NaN/Inf (NIfTI: from the raw bytes, which SimpleITK
    hides; other formats keep NaN/Inf on reading, so their float voxels are checked directly)."""
    if is_nifti(path):
        check = check_nifti_voxels(path)
        if check is None:
            check_magnitude(path, image)
            return
        if check.truncated:
            held = (
                f"it holds {check.bytes_found} of the {check.bytes_expected} bytes of voxel data its header announces"
                if check.bytes_found < check.bytes_expected
                else "its compressed data stops before the end of the stream"
            )
            raise ImageFileProblem(
                path,
                f"is truncated: {held}, and SimpleITK would fill the rest with zeros (an interrupted copy or "
                "download?)",
                "copy or export the file again",
            )
        num_nonfinite = check.num_nonfinite
    elif image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        values = sitk.GetArrayViewFromImage(image)
        num_nonfinite = int(values.size - np.count_nonzero(np.isfinite(values)))
    else:
        num_nonfinite = 0
    if num_nonfinite:
        hidden = " (SimpleITK would read them as 0, silently)" if is_nifti(path) else ""
        raise ImageFileProblem(
            path,
            f"has {num_nonfinite} NaN/Inf voxels{hidden}",
            "replace them with the background value (e.g. 0) and re-save the file",
        )
    check_magnitude(path, image)


# Pixel types whose values can exceed MAX_ABS_VOXEL_VALUE (32-bit and smaller integers stay below 4.3e9).
WIDE_PIXEL_TYPES = (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkInt64, sitk.sitkUInt64)


def check_magnitude(path: Path, image: sitk.Image) -> None:
    """Refuse voxel values beyond `MAX_ABS_VOXEL_VALUE` in magnitude (see its comment for the bound)."""
    if image.GetPixelID() not in WIDE_PIXEL_TYPES:
        return
    values = sitk.GetArrayViewFromImage(image)
    if not values.size:
        return
    peak = max(abs(float(values.min())), abs(float(values.max())))
    if peak > MAX_ABS_VOXEL_VALUE:
        raise ImageFileProblem(
            path,
            f"has voxel values up to {peak:.3g} in magnitude, beyond the {MAX_ABS_VOXEL_VALUE:.0e} autosr accepts "
            "(it computes in float32, largest number 3.4e38, and squares and sums voxel values)",
            "store the scan in its physical units or rescale it (e.g. divide by a power of ten) and re-save the file",
        )


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read one image as a float32 (Z, Y, X) array and its exact geometry."""
    image = read_sitk(path)
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    return array, geometry_of(image)


def read_channels(paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, Geometry]:
    """Read several single-channel files of one case into a (C, Z, Y, X) float32 array.

    All channels must share one grid; the first channel's geometry is returned.
    """
    if not paths:
        raise ValueError("read_channels needs at least one file")
    arrays, geometries = [], []
    for p in paths:
        a, g = read_image(p)
        arrays.append(a)
        geometries.append(g)
    for p, g in zip(paths[1:], geometries[1:]):
        if not g.same_grid(geometries[0]):
            raise AutosrError(
                f"{p}: is on a different grid ({g.describe()}) than {paths[0]} ({geometries[0].describe()}); "
                "channels of one case must be resampled onto one grid before use"
            )
    return np.stack(arrays, axis=0), geometries[0]


def write_image(
    array: np.ndarray,
    geometry: Geometry,
    path: str | os.PathLike,
    dtype: np.dtype | type = np.float32,
    compress: bool = True,
) -> None:
    """Write a (Z, Y, X) or (1, Z, Y, X) array with `geometry` to `path`, atomically.

    The format follows the file ending. Integer dtypes are rounded and clipped to their range first.
    """
    array = np.asarray(array)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"write_image writes one channel, got array of shape {array.shape}")
        array = array[0]
    if tuple(array.shape) != tuple(geometry.size_zyx):
        raise ValueError(f"array shape {array.shape} does not match geometry size {geometry.size_zyx}")
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = np.clip(np.rint(array), info.min, info.max)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.astype(dtype, copy=False)))
    apply_geometry(image, geometry)
    write_sitk_image(image, path, compress)


def write_sitk_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write a SimpleITK image to `path` atomically, checked before the rename (`image_file_problem`); a full
    disk or a file-size limit raises `FileWriteError` and leaves `path` as it was."""
    if file_ending_of(path) in DETACHED_HEADER_ENDINGS:
        _write_detached(image, Path(path), compress)
        return
    with atomic_path(path, verify=image_file_problem) as tmp:
        _sitk_write(image, tmp, compress, path)


DETACHED_HEADER_ENDINGS = (".mhd", ".nhdr")  # a header naming a separate voxel file (.raw/.zraw, .raw.gz)


def _sitk_write(image: sitk.Image, destination: Path, compress: bool, named: str | os.PathLike) -> None:
    try:
        sitk.WriteImage(image, str(destination), useCompression=compress)
    except RuntimeError as e:  # ITK's other writers do notice a failed write; their message names `destination`
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        raise FileWriteError(named, f"the image writer failed: {lines[-1] if lines else e}") from e


def _write_detached(image: sitk.Image, path: Path, compress: bool) -> None:
    """A header + voxel-file format: written under their final names into a private folder beside `path` (the
    header names its voxel file, so neither may be renamed alone), checked, then moved: voxels first, header
    last, so a header in place always has its voxels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = private_folder(path.parent, ".autosr-write-")
    try:
        with named_write_errors(path):
            _sitk_write(image, staging / path.name, compress, path)
            problem = image_file_problem(staging / path.name)
            if problem is not None:
                raise FileWriteError(path, problem)
            for written in sorted(staging.iterdir(), key=lambda p: p.name == path.name):
                os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def image_file_problem(path: str | os.PathLike) -> str | None:
    """What is missing from an image file autosr has just written, or None when it is whole.

    Cheap, so every write can afford it: a NIfTI's size (.nii) or gzip trailer (.nii.gz; the stream is inflated
    only when the trailer disagrees), an uncompressed MetaImage's size, else the header of any format."""
    path = Path(path)
    if is_nifti(path):
        check = check_nifti_voxels(path, count_nonfinite=False)
        if check is None:
            return f"no complete NIfTI header: only {path.stat().st_size} bytes reached the disk"
        if check.truncated:
            return f"only {check.bytes_found} of its {check.bytes_expected} bytes of voxel data reached the disk"
        return None
    shortfall = metaimage_shortfall(path)
    if shortfall is not None:
        return f"only {shortfall[0]} of its {shortfall[1]} bytes of voxel data reached the disk"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return f"its header cannot be read back: only {path.stat().st_size} bytes reached the disk"
    return None
