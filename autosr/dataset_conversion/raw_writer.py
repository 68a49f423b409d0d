"""Shared by every converter: create the raw dataset folder, place image files, write dataset.json.

Sources are never modified: a file whose ending already matches the dataset's is copied byte for byte;
one in another format is read with SimpleITK and re-written (geometry kept exact by `autosr.io`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from autosr.errors import AutosrError
from autosr.io.atomic import atomic_copy, atomic_write_json
from autosr.io.image_io import SUPPORTED_ENDINGS, file_ending_of, read_sitk, write_sitk_image
from autosr.paths import check_id_free, dataset_folder_name


def new_dataset_folder(raw_root: str | os.PathLike, dataset_id: int, name: str, overwrite: bool = False) -> Path:
    """`raw_root/DatasetXXX_Name`, created empty; an existing non-empty one is an error unless `overwrite`.

    The id must be free: another dataset with the same id (under any name) is refused, `overwrite` or not."""
    folder_name = dataset_folder_name(dataset_id, name)
    check_id_free(Path(raw_root), folder_name)
    folder = Path(raw_root) / folder_name
    if folder.is_symlink():
        raise AutosrError(
            f"{folder}: is a symbolic link (to {os.readlink(folder)}); autosr does not delete or write through a "
            f"link to a dataset folder: remove the link (`rm {folder}`, the files it points to stay) and convert "
            "again, or choose another --id/--name"
        )
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise AutosrError(f"{folder} already exists; remove it, choose another --id/--name, or pass --overwrite")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_file_ending(file_ending: str) -> str:
    if file_ending not in SUPPORTED_ENDINGS:
        raise AutosrError(f"file ending '{file_ending}' is not supported; choose one of {', '.join(SUPPORTED_ENDINGS)}")
    return file_ending


def place_image(source: Path, destination: Path) -> None:
    """Copy `source` to `destination`, re-writing it through SimpleITK when the file endings differ."""
    if file_ending_of(source) == file_ending_of(destination):
        atomic_copy(source, destination)
        return
    write_sitk_image(read_sitk(source), destination)


def write_dataset_json(
    folder: Path,
    name: str,
    channel_names: dict[str, str],
    target_name: str,
    target_modality: str,
    file_ending: str,
    num_training: int,
    num_test: int = 0,
    **extra: Any,
) -> None:
    """Write dataset.json with the required keys first, then `extra` (description, reference, licence...)."""
    content: dict[str, Any] = {
        "name": name,
        "channel_names": channel_names,
        "target_name": target_name,
        "target_modality": target_modality,
        "file_ending": file_ending,
        "numTraining": num_training,
        "numTest": num_test,
    }
    content.update({k: v for k, v in extra.items() if v is not None})
    atomic_write_json(content, folder / "dataset.json")
