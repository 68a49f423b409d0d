"""Count NaN/Inf voxels in a NIfTI file by reading its raw voxel bytes.

SimpleITK's NIfTI reader (ITK 5.4) turns NaN and +-Inf into 0 without a word, so a check through
SimpleITK never sees them, while the file still holds them (nibabel and FSL do see them). Verification
therefore reads float NIfTI voxels directly: the header layout is fixed by the NIfTI-1/-2 standards
(https://nifti.nimh.nih.gov/nifti-1), and only float datatypes can hold non-finite values.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

# NIfTI datatype code -> numpy scalar type, for the types that can hold NaN/Inf
FLOAT_DATATYPES = {16: "f4", 64: "f8", 1536: "f16"}


def _open(path: str | os.PathLike):
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def count_nonfinite_nifti(path: str | os.PathLike) -> int:
    """Number of NaN/Inf voxels stored in a .nii/.nii.gz file (0 for integer datatypes)."""
    with _open(path) as f:
        head = f.read(540)
        if len(head) < 348:
            return 0
        for order in ("<", ">"):
            header_size = struct.unpack(order + "i", head[:4])[0]
            if header_size in (348, 540):
                break
        else:
            return 0
        if header_size == 348:
            dims = struct.unpack(order + "8h", head[40:56])
            datatype = struct.unpack(order + "h", head[70:72])[0]
            vox_offset = int(struct.unpack(order + "f", head[108:112])[0])
        else:
            datatype = struct.unpack(order + "h", head[12:14])[0]
            dims = struct.unpack(order + "8q", head[16:80])
            vox_offset = int(struct.unpack(order + "q", head[168:176])[0])
        if datatype not in FLOAT_DATATYPES:
            return 0
        num_voxels = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + max(int(dims[0]), 1)]]))
        dtype = np.dtype(order + FLOAT_DATATYPES[datatype])
        f.seek(vox_offset)
        data = np.frombuffer(f.read(num_voxels * dtype.itemsize), dtype=dtype)
    return int(data.size - np.count_nonzero(np.isfinite(data)))
