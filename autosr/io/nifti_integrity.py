"""Check the voxel data of a NIfTI file: all of it present (not truncated) and finite (no NaN/Inf).

SimpleITK's NIfTI reader (ITK 5.4) turns NaN and +-Inf into 0, and reads a truncated .nii or .nii.gz
with the missing voxels as 0, both without a word: a scan cut short by an interrupted copy would be
trained on or predicted as if it were whole. So every NIfTI read in autosr also looks at the raw voxel
bytes here. The header layout is fixed by the NIfTI-1/-2 standards (https://nifti.nimh.nih.gov/nifti-1).

Cost: integer datatypes (masks, CT in int16) are checked from the file size (.nii) or the gzip trailer
(.nii.gz, whose last 4 bytes hold the uncompressed size); float datatypes are decompressed once more and
scanned in chunks, because only the voxels themselves can say whether they are finite
(documentation/benchmark.md, "Reading checks").
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# NIfTI datatype code -> numpy type, for the types that can hold NaN/Inf
FLOAT_DATATYPES = {16: "f4", 64: "f8"}
CHUNK_BYTES = 1 << 22  # 4 MiB of compressed or raw data per step: bounded memory for any volume size


@dataclass(frozen=True)
class NiftiHeader:
    """What the voxel check needs from a NIfTI header."""

    byte_order: str  # '<' or '>'
    datatype: int
    bits_per_voxel: int
    voxel_offset: int
    num_voxels: int

    @property
    def end_of_voxels(self) -> int:
        """Byte position just after the last voxel (the file size of an uncompressed .nii)."""
        return self.voxel_offset + self.num_voxels * self.bits_per_voxel // 8

    @property
    def float_dtype(self) -> np.dtype | None:
        code = FLOAT_DATATYPES.get(self.datatype)
        return np.dtype(self.byte_order + code) if code else None


@dataclass(frozen=True)
class VoxelCheck:
    """Result of `check_nifti_voxels`: bytes of voxel data found and expected, and NaN/Inf voxels seen."""

    bytes_found: int
    bytes_expected: int
    num_nonfinite: int
    stream_cut: bool = False  # a .gz stream without its end marker (its last bytes are missing)

    @property
    def truncated(self) -> bool:
        return self.bytes_found < self.bytes_expected or self.stream_cut


def is_nifti(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def parse_nifti_header(head: bytes) -> NiftiHeader | None:
    """The header fields of a NIfTI-1 or NIfTI-2 file from its first bytes; None when it is not one (or
    holds values no voxel layout can have: the image reader then has the last word)."""
    try:
        return _parse_nifti_header(head)
    except (struct.error, ValueError, OverflowError):
        return None


def _parse_nifti_header(head: bytes) -> NiftiHeader | None:
    if len(head) < 348:
        return None
    for order in ("<", ">"):
        header_size = struct.unpack(order + "i", head[:4])[0]
        if header_size in (348, 540):
            break
    else:
        return None
    if header_size == 348:
        dims = struct.unpack(order + "8h", head[40:56])
        datatype, bitpix = struct.unpack(order + "2h", head[70:74])
        offset = int(struct.unpack(order + "f", head[108:112])[0])
    else:
        if len(head) < 540:
            return None
        datatype, bitpix = struct.unpack(order + "2h", head[12:16])
        dims = struct.unpack(order + "8q", head[16:80])
        offset = int(struct.unpack(order + "q", head[168:176])[0])
    num_dims = min(max(int(dims[0]), 1), 7)
    num_voxels = math.prod(max(int(d), 1) for d in dims[1 : 1 + num_dims])
    if bitpix <= 0 or bitpix % 8:
        return None
    return NiftiHeader(order, int(datatype), int(bitpix), max(offset, header_size), num_voxels)


def check_nifti_voxels(path: str | os.PathLike, count_nonfinite: bool = True) -> VoxelCheck | None:
    """How much of the voxel data a .nii/.nii.gz holds and how many voxels are NaN/Inf; None when the file
    does not start with a NIfTI header (the image reader then reports it).

    Without `count_nonfinite` only completeness is checked (what a writer checks of the file it just wrote:
    the file size of a .nii, the gzip trailer of a .nii.gz, inflating it only when the trailer disagrees)
    and `num_nonfinite` is 0."""
    path = Path(path)
    compressed = path.name.lower().endswith(".gz")
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
            header = parse_nifti_header(f.read(540))
    except (OSError, EOFError, zlib.error):
        return None
    if header is None:
        return None
    expected = header.end_of_voxels - header.voxel_offset
    float_dtype = header.float_dtype if count_nonfinite else None
    if not compressed:
        found = max(0, min(os.path.getsize(path), header.end_of_voxels) - header.voxel_offset)
        if float_dtype is None or found < expected:
            return VoxelCheck(found, expected, 0)
        data = np.memmap(
            path, dtype=header.float_dtype, mode="r", offset=header.voxel_offset, shape=(header.num_voxels,)
        )
        step = CHUNK_BYTES // header.float_dtype.itemsize
        nonfinite = sum(_count_nonfinite(data[i : i + step]) for i in range(0, data.size, step))
        return VoxelCheck(found, expected, nonfinite)
    if float_dtype is None and _gzip_size_field(path) == header.end_of_voxels % (1 << 32):
        return VoxelCheck(expected, expected, 0)  # the trailer a complete stream ends with: no need to inflate
    return _scan_gzip(path, header, float_dtype)


def _count_nonfinite(values: np.ndarray) -> int:
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def _gzip_size_field(path: Path) -> int | None:
    """ISIZE, the last 4 bytes of a gzip stream: the uncompressed size modulo 2**32."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 18:
            return None
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def _scan_gzip(path: Path, header: NiftiHeader, dtype: np.dtype | None) -> VoxelCheck:
    """Inflate the whole stream (every gzip member) in chunks, counting voxel bytes and (with a float `dtype`)
    NaN/Inf voxels."""
    start, end = header.voxel_offset, header.end_of_voxels
    position, nonfinite, carry = 0, 0, b""
    inflater = zlib.decompressobj(wbits=31)
    complete = False
    with open(path, "rb") as f:
        while True:
            compressed = f.read(CHUNK_BYTES)
            if not compressed:
                break
            while compressed:
                try:
                    out = inflater.decompress(compressed)
                except zlib.error:
                    return VoxelCheck(max(0, min(position, end) - start), end - start, nonfinite, stream_cut=True)
                if dtype is not None:
                    lo, hi = max(start, position), min(end, position + len(out))
                    if hi > lo:
                        block = carry + out[lo - position : hi - position]
                        usable = len(block) - len(block) % dtype.itemsize
                        nonfinite += _count_nonfinite(np.frombuffer(block[:usable], dtype=dtype))
                        carry = block[usable:]
                position += len(out)
                complete = inflater.eof
                compressed = inflater.unused_data if inflater.eof else b""
                if inflater.eof and compressed:  # another gzip member follows
                    inflater = zlib.decompressobj(wbits=31)
                    complete = False
    return VoxelCheck(max(0, min(position, end) - start), end - start, nonfinite, stream_cut=not complete)
