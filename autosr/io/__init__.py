"""Image reading, writing and resampling with SimpleITK; the only place that knows SimpleITK's (X, Y, Z)."""

from autosr.io.atomic import atomic_path, atomic_save_npy, atomic_write_json, read_json
from autosr.io.geometry import Geometry, grid_covering, overlap_fraction
from autosr.io.image_io import SUPPORTED_ENDINGS, file_ending_of, read_channels, read_image, write_image
from autosr.io.resampling import resample_to_geometry

__all__ = [
    "Geometry",
    "SUPPORTED_ENDINGS",
    "atomic_path",
    "atomic_save_npy",
    "atomic_write_json",
    "file_ending_of",
    "grid_covering",
    "overlap_fraction",
    "read_channels",
    "read_image",
    "read_json",
    "resample_to_geometry",
    "write_image",
]
