"""SynthRAD challenge layouts -> an MR->CT (or CBCT->CT) raw dataset with body masks.

SynthRAD ships `<root>/<region>/<case>/{mr|cbct, ct, mask}.nii.gz` (2023) or `.mha` (2025); `root` may also
be a single region folder. Every folder holding a `ct` image is a case; its folder name (e.g. `1BA001`)
is the case id, prefixed by the region when two regions share a name. Cases lacking the input image are
listed and skipped. Input, CT and mask already share one grid in SynthRAD; the mask is kept as the region
that counts.
"""

from __future__ import annotations

import os
from pathlib import Path

from autosr.dataset_conversion.raw_writer import (
    check_file_ending,
    new_dataset_folder,
    place_image,
    write_dataset_json,
)
from autosr.errors import AutosrError

SYNTHRAD_ENDINGS = (".nii.gz", ".mha", ".nii")
INPUT_KINDS = ("mr", "cbct")


def find_image(folder: Path, stem: str) -> Path | None:
    for ending in SYNTHRAD_ENDINGS:
        if (folder / f"{stem}{ending}").is_file():
            return folder / f"{stem}{ending}"
    return None


def find_synthrad_cases(
    root: Path, input_kind: str
) -> tuple[dict[str, tuple[Path, Path, Path | None]], dict[str, str]]:
    """Case id -> (input, ct, mask or None), and skipped case folders with the reason."""
    case_folders = sorted({p.parent for ending in SYNTHRAD_ENDINGS for p in root.rglob(f"ct{ending}")})
    cases, skipped = {}, {}
    for folder in case_folders:
        case_id = folder.name
        if case_id in cases or any(c.endswith(f"_{case_id}") for c in cases):
            case_id = f"{folder.parent.name}_{folder.name}"
        inp = find_image(folder, input_kind)
        if inp is None:
            skipped[str(folder.relative_to(root))] = f"no {input_kind} image"
            continue
        cases[case_id] = (inp, find_image(folder, "ct"), find_image(folder, "mask"))
    return cases, skipped


def convert_synthrad(
    synthrad_root: str | os.PathLike,
    raw_root: str | os.PathLike,
    dataset_id: int,
    name: str,
    input_kind: str = "mr",
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
) -> tuple[Path, dict[str, str]]:
    """Write a raw dataset from a SynthRAD folder; returns its folder and the skipped cases with reasons."""
    root = Path(synthrad_root)
    if not root.is_dir():
        raise AutosrError(f"{root}: SynthRAD folder not found")
    if input_kind not in INPUT_KINDS:
        raise AutosrError(f"input '{input_kind}' unknown; choose one of {', '.join(INPUT_KINDS)}")
    check_file_ending(file_ending)
    cases, skipped = find_synthrad_cases(root, input_kind)
    if not cases:
        raise AutosrError(
            f"{root}: no case folder holds both {input_kind} and ct images "
            f"(expected <root>/<region>/<case>/{input_kind}.nii.gz and ct.nii.gz, or .mha)"
        )
    folder = new_dataset_folder(raw_root, dataset_id, name, overwrite=overwrite)
    for case_id, (inp, ct, mask) in cases.items():
        place_image(inp, folder / "imagesTr" / f"{case_id}_0000{file_ending}")
        place_image(ct, folder / "targetsTr" / f"{case_id}{file_ending}")
        if mask is not None:
            place_image(mask, folder / "masksTr" / f"{case_id}{file_ending}")
    write_dataset_json(
        folder,
        name=name,
        channel_names={"0": input_kind.upper()},
        target_name="CT",
        target_modality="CT",
        file_ending=file_ending,
        num_training=len(cases),
        description=f"converted from the SynthRAD layout {root} ({input_kind.upper()} -> CT)",
        reference="SynthRAD challenge (Thummerer et al., Medical Physics 2023)",
        skipped_cases=skipped or None,
    )
    return folder, skipped
