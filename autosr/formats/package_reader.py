"""Installing a model package under `$AUTOSR_RESULTS`, or unpacking it for one prediction run.

Both first check the zip as a whole (autosr/formats/package_archive.py: names, kinds, sizes) and against its
manifest (exactly the listed members, no others), unpack into a fresh private folder, and compare every
file's SHA-256 with the manifest before the model is used. Installation then moves the model folder into
place with a rename (on the results folder's own disk), so other processes never see half a model:

- no model of that name yet: it is moved in;
- the same model (every packaged file identical): nothing changes;
- a different model of the same name: refused, unless `force` (the old folder is then replaced).

`open_model_package` unpacks into a temporary folder that is removed afterwards, so `autosr predict --model
model.zip` needs no results folder and parallel runs never share (or race on) an unpacked copy.

Both private folders carry their owner in their name (`autosr.io.temporaries`: `$TMPDIR/autosr-model-h<host>-
<pid>-<random>`, `$AUTOSR_RESULTS/.autosr-install-h<host>-<pid>-<random>`); a run killed before its clean-up
leaves one behind, and the next run of either kind removes the ones whose owner has ended.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from autosr.errors import AutosrError
from autosr.formats.package_archive import check_members, extract_checked, open_zip, read_member, sha256_of
from autosr.formats.package_manifest import MANIFEST_NAME, MODEL_CARD_NAME, Manifest
from autosr.io.atomic import named_write_errors
from autosr.io.json_file import parse_json_bytes
from autosr.io.temporaries import private_folder
from autosr.paths import AutosrPaths, ensure_writable_folder

MAX_MANIFEST_BYTES = 16 * 1024**2
INSTALL_PREFIX = ".autosr-install-"  # in the results folder, beside the model's final place (one disk: a rename)
UNPACK_PREFIX = "autosr-model-"  # in the system's temporary folder


@dataclass(frozen=True)
class UnpackedModel:
    """A checked, unpacked package: its manifest and the model folder (`<Trainer>__<plans>__<config>`)."""

    manifest: Manifest
    model_dir: Path


def inspect_package(package: str | os.PathLike) -> Manifest:
    """Check a package without unpacking it: safe members, a valid manifest, exactly the members it lists."""
    package = Path(package)
    if not package.is_file():
        raise AutosrError(f"{package}: no such model package (a .zip written by `autosr export-model`)")
    archive = open_zip(package)
    with archive:
        members = check_members(package, archive)
        files = {m.name: m for m in members if not m.is_dir}
        if MANIFEST_NAME not in files:
            raise AutosrError(f"{package}: no {MANIFEST_NAME}; not a model package written by `autosr export-model`")
        if files[MANIFEST_NAME].size > MAX_MANIFEST_BYTES:
            raise AutosrError(f"{package}: {MANIFEST_NAME} is implausibly large; refusing the package")
        data = parse_json_bytes(
            read_member(package, archive, MANIFEST_NAME), f"{package}: {MANIFEST_NAME}", "ask for a fresh export"
        )
    manifest = Manifest.from_json(data, str(package))
    expected = set(manifest.member_names())
    extra, missing = sorted(set(files) - expected), sorted(expected - set(files))
    if extra or missing:
        details = "; ".join(
            part
            for part in (
                f"files the manifest does not list: {', '.join(extra[:5])}" if extra else "",
                f"listed files missing: {', '.join(missing[:5])}" if missing else "",
            )
            if part
        )
        raise AutosrError(f"{package}: the archive does not match its manifest ({details}); ask for a fresh export")
    for name, entry in manifest.files.items():
        if files[f"{manifest.model_path}/{name}"].size != entry["bytes"]:
            raise AutosrError(f"{package}: {name} has another size than its manifest says; the package is damaged")
    return manifest


def _verify(model_dir: Path, manifest: Manifest, source: Path) -> None:
    damaged = [name for name, entry in manifest.files.items() if sha256_of(model_dir / name) != entry["sha256"]]
    if damaged:
        raise AutosrError(
            f"{source}: {', '.join(damaged[:5])} do(es) not match the checksum in {MANIFEST_NAME}; the package is "
            "damaged (an interrupted download?): fetch or export it again"
        )


def unpack_package(package: str | os.PathLike, destination: str | os.PathLike) -> UnpackedModel:
    """Check and unpack `package` into the new folder `destination`; manifest and model card end up inside the
    model folder, so an unpacked model describes itself."""
    package, destination = Path(package), Path(destination)
    manifest = inspect_package(package)
    with named_write_errors(destination):
        extract_checked(package, destination, only=manifest.member_names())
    model_dir = destination / manifest.model_path
    _verify(model_dir, manifest, package)
    for name in (MANIFEST_NAME, MODEL_CARD_NAME):
        os.replace(destination / name, model_dir / name)
    return UnpackedModel(manifest, model_dir)


def differing_files(folder: Path, manifest: Manifest) -> list[str]:
    """The packaged files that are missing from `folder` or differ there; empty when it holds this model."""
    return [
        name
        for name, entry in manifest.files.items()
        if not (folder / name).is_file() or sha256_of(folder / name) != entry["sha256"]
    ]


def install_model(package: str | os.PathLike, paths: AutosrPaths | None = None, force: bool = False) -> Path:
    """Install `package` as `$AUTOSR_RESULTS/DatasetXXX_Name/<Trainer>__<plans>__<config>`; returns that folder."""
    package = Path(package)
    paths = paths or AutosrPaths.resolve()
    results = ensure_writable_folder(paths.require("results"), "AUTOSR_RESULTS")
    manifest = inspect_package(package)
    final = results / manifest.dataset_name / manifest.model_folder
    if final.is_dir() and not differing_files(final, manifest):
        return final  # already installed, identical
    staging = private_folder(results, INSTALL_PREFIX)
    try:
        unpacked = unpack_package(package, staging)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            differing = differing_files(final, manifest)
            if not differing:
                return final
            if not force:
                raise AutosrError(
                    f"{final} holds a different model of the same name ({', '.join(differing[:3])} differ); "
                    "pass --force to replace it (the folder is deleted, training logs and validation outputs "
                    "included), or install into another results folder (--results)"
                )
            retired = final.parent / f".{final.name}.replaced-{uuid.uuid4().hex[:8]}"
            os.replace(final, retired)
            os.replace(unpacked.model_dir, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            try:
                os.replace(unpacked.model_dir, final)
            except OSError:  # another process installed it meanwhile
                if differing_files(final, manifest):
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


@contextlib.contextmanager
def open_model_package(package: str | os.PathLike) -> Iterator[UnpackedModel]:
    """Unpack `package` into a private temporary folder for the duration of the `with` block."""
    folder = private_folder(tempfile.gettempdir(), UNPACK_PREFIX)
    try:
        yield unpack_package(package, folder / "unpacked")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
