"""Read and write images as (Z, Y, X) / (C, Z, Y, X) float32 arrays plus an exact `Geometry`.

Every format SimpleITK reads is accepted; the list of endings autosr validates against is
`SUPPORTED_ENDINGS`. Writes are atomic (see `autosr.io.atomic`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autosr.errors import AutosrError
from autosr.io.atomic import atomic_path
from autosr.io.geometry import Geometry

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def file_ending_of(path: str | os.PathLike) -> str:
    """The image file ending of `path` ('.nii.gz' counts as one), or '' when it is none of ours."""
    name = Path(path).name.lower()
    for ending in sorted(SUPPORTED_ENDINGS, key=len, reverse=True):
        if name.endswith(ending):
            return ending
    return ""


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
    """Read one 3D image; an unreadable or non-3D file becomes an `AutosrError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise AutosrError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first_line = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown reader error"
        raise AutosrError(f"{path}: cannot be read as an image ({first_line}); re-export or replace the file") from e
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise AutosrError(
            f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; autosr wants one "
            "image per channel (split it into <case>_0000, <case>_0001, ...)"
        )
    if image.GetDimension() == 2:
        image = sitk.JoinSeries([image])
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise AutosrError(f"{path}: is {image.GetDimension()}D; autosr reads 3D volumes (one file per channel)")
    return image


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
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
