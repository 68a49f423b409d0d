"""Reading a model package (a zip) without trusting it: every member is checked before anything is written.

A package may come from anywhere (a colleague, a download), and a zip can name files outside the folder it
is unpacked into (`../../.bashrc`, `/etc/...`), hold symbolic links that point elsewhere, or decompress to far
more than its size (a zip bomb). So, before extraction:

- names: relative, `/`-separated, no `..` component, no backslash, no drive letter, no NUL, no duplicates;
- kinds: plain files and folders only (a symbolic link, device or pipe is refused, wherever it points);
- sizes: at most `MAX_MEMBERS` members and `MAX_TOTAL_BYTES` unpacked, no member over 1 MiB compressed more
  than `MAX_COMPRESSION_RATIO` times (checkpoints barely compress; JSON about 10x), the whole package at most
  `MAX_TOTAL_RATIO` times its compressed size once it unpacks to more than `FREE_TOTAL_BYTES` (so many small
  members, each below the per-member check, cannot add up to a bomb either), and the unpacked total must fit
  on the destination's disk;

and during extraction each member is streamed with its bytes counted against its declared size, so a lying
header cannot write more; a member whose data does not match its header (a false size, a bad checksum, cut
short) is one message naming the package and the member. Files land in a fresh folder; nothing is
overwritten.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from autosr.errors import AutosrError

MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 64 * 1024**3  # 64 GiB: five folds of the largest planned 3D network are a few GiB
MAX_COMPRESSION_RATIO = 1_000  # deflate reaches about 1,000x on constant data; bombs go far beyond
RATIO_CHECK_MIN_BYTES = 1024**2  # small members (JSON) may compress well; the ratio matters for big ones
# The package as a whole: its checkpoints (nearly all of its bytes) barely compress (about 1.1x), so a package
# unpacking to over 100 times its compressed size is not a model; below 64 MiB in all anything goes (a tiny
# model's JSON, logs and pictures).
MAX_TOTAL_RATIO = 100
FREE_TOTAL_BYTES = 64 * 1024**2
# What reading a member whose data do not match its header raises (zipfile, zlib, a cut-short stream).
DAMAGED_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError)
CHUNK_BYTES = 1024**2
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Member:
    """A checked archive member: its relative name, unpacked size and whether it is a folder."""

    name: str
    size: int
    is_dir: bool


def _refuse(package: Path, name: str, why: str) -> AutosrError:
    return AutosrError(
        f"{package}: member '{name}' {why}; refusing to unpack this package (nothing was written). "
        "A package written by `autosr export-model` never holds such a member: ask for a fresh export"
    )


def _kind(info: zipfile.ZipInfo) -> int:
    """The member's file type bits from its Unix mode (0 when the archiver recorded none)."""
    return stat.S_IFMT(info.external_attr >> 16)


def check_members(package: str | os.PathLike, archive: zipfile.ZipFile) -> list[Member]:
    """Every member of `archive`, checked by the rules in the module docstring; raises on the first bad one."""
    package = Path(package)
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise AutosrError(f"{package}: {len(infos)} members (at most {MAX_MEMBERS}); this is not a model package")
    members: list[Member] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if "\x00" in name or "\\" in name:
            raise _refuse(package, name, "has a backslash or NUL in its name")
        if name.startswith("/") or _DRIVE.match(name):
            raise _refuse(package, name, "is an absolute path")
        parts = PurePosixPath(name).parts
        if ".." in parts:
            raise _refuse(package, name, "contains '..' (it would be written outside the destination folder)")
        if not parts or any(p in ("", ".") for p in parts):
            raise _refuse(package, name, "has an empty or '.' path component")
        kind = _kind(info)
        if kind == stat.S_IFLNK:
            raise _refuse(package, name, "is a symbolic link (packages hold plain files only)")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(package, name, "is not a plain file or folder (a device, pipe or socket)")
        key = "/".join(parts)
        if key in seen:
            raise _refuse(package, name, "appears twice")
        seen.add(key)
        if info.file_size > RATIO_CHECK_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            raise _refuse(
                package,
                name,
                f"unpacks from {info.compress_size} to {info.file_size} bytes (more than {MAX_COMPRESSION_RATIO}x: "
                "a zip bomb)",
            )
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise AutosrError(
                f"{package}: unpacks to more than {MAX_TOTAL_BYTES / 1024**3:.0f} GiB; refusing (a model package is "
                "far smaller; the file is damaged or a zip bomb)"
            )
        members.append(Member(key, int(info.file_size), info.is_dir() or kind == stat.S_IFDIR))
    compressed = sum(info.compress_size for info in infos)
    if total > FREE_TOTAL_BYTES and total > MAX_TOTAL_RATIO * max(compressed, 1):
        raise AutosrError(
            f"{package}: its {len(infos)} members unpack from {compressed} to {total} bytes in all (more than "
            f"{MAX_TOTAL_RATIO}x, and over {FREE_TOTAL_BYTES // 1024**2} MiB); refusing (a model package is mostly "
            "checkpoints, which barely compress: this is a zip bomb or not a model package)"
        )
    return members


def open_zip(package: Path) -> zipfile.ZipFile:
    """The zip at `package`, or one message saying it is not a readable zip file."""
    try:
        return zipfile.ZipFile(package)
    except (OSError, *DAMAGED_MEMBER_ERRORS) as e:
        raise AutosrError(
            f"{package}: not a readable zip file ({e}); is it a model package from `autosr export-model`? "
            "Fetch or export it again"
        ) from e


def damaged_member(package: Path, name: str, error: Exception) -> AutosrError:
    """The message for a member whose data do not match its header (false size, bad CRC, cut short)."""
    return AutosrError(
        f"{package}: member '{name}' is damaged ({error}); the package is damaged (an interrupted download or "
        "copy?) and was not used: fetch or export it again"
    )


def read_member(package: Path, archive: zipfile.ZipFile, name: str) -> bytes:
    """The bytes of one (small, already size-checked) member; a damaged member is one message."""
    try:
        return archive.read(name)
    except DAMAGED_MEMBER_ERRORS as e:
        raise damaged_member(package, name, e) from e


def extract_checked(
    package: str | os.PathLike, destination: str | os.PathLike, only: Iterable[str] | None = None
) -> list[Member]:
    """Unpack `package` into the new folder `destination` after `check_members`; returns the members.

    `only`: extract just these member names (all checked members otherwise). `destination` must not exist
    (or be empty), so nothing already there is overwritten.
    """
    package, destination = Path(package), Path(destination)
    archive = open_zip(package)
    with archive:
        members = check_members(package, archive)
        wanted = set(only) if only is not None else None
        chosen = [m for m in members if wanted is None or m.name in wanted]
        if destination.exists() and any(destination.iterdir()):
            raise AutosrError(f"{destination}: not empty; packages unpack into a fresh folder")
        destination.mkdir(parents=True, exist_ok=True)
        needed = sum(m.size for m in chosen)
        free = shutil.disk_usage(destination).free
        if needed > free:
            raise AutosrError(
                f"{package}: unpacks to {needed / 1024**2:.0f} MiB but {destination} has {free / 1024**2:.0f} MiB free"
            )
        root = destination.resolve()
        for member in chosen:
            target = (root / member.name).resolve()
            if root not in target.parents:  # belt and braces: the name checks already rule this out
                raise _refuse(package, member.name, "resolves outside the destination folder")
            if member.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with archive.open(member.name) as source, open(target, "xb") as sink:
                    while chunk := source.read(CHUNK_BYTES):
                        written += len(chunk)
                        if written > member.size:
                            raise _refuse(package, member.name, "unpacks to more bytes than its header declares")
                        sink.write(chunk)
            except DAMAGED_MEMBER_ERRORS as e:
                raise damaged_member(package, member.name, e) from e
            if written != member.size:
                raise damaged_member(package, member.name, f"{written} of the {member.size} bytes its header declares")
    return chosen


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
