"""Paired scans from a BIDS tree: one session (or acquisition) is the input, another the target.

BIDS names files `sub-<label>[_ses-<label>][_acq-<label>][_...]_<suffix>.nii[.gz]` inside
`sub-<label>/[ses-<label>/]<datatype>/`. A pair is formed per subject by the entities the user names,
e.g. `--input-session 3T --target-session 7T --suffix T1w`, or within one session by
`--input-acq lowres --target-acq highres`. Subjects lacking one side (or holding several candidate files
for it) are listed and skipped. Source files are copied, never modified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from autosr.dataset_conversion.raw_writer import (
    check_file_ending,
    new_dataset_folder,
    place_image,
    write_dataset_json,
)
from autosr.errors import AutosrError
from autosr.io.image_io import file_ending_of

BIDS_IMAGE_ENDINGS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Selector:
    """Which files of a subject form one side of the pair: suffix plus optional session/acquisition."""

    suffix: str
    session: str | None = None
    acquisition: str | None = None

    def matches(self, entities: dict[str, str], suffix: str) -> bool:
        return (
            suffix == self.suffix
            and (self.session is None or entities.get("ses") == self.session)
            and (self.acquisition is None or entities.get("acq") == self.acquisition)
        )


def parse_bids_name(path: Path) -> tuple[dict[str, str], str] | None:
    """(entities, suffix) of a BIDS image file name, or None when it is not one."""
    ending = file_ending_of(path)
    if ending not in BIDS_IMAGE_ENDINGS:
        return None
    parts = path.name[: -len(ending)].split("_")
    entities = {}
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep:
            return None
        entities[key] = value
    if "sub" not in entities:
        return None
    return entities, parts[-1]


@dataclass
class BidsPairing:
    """Cases found: case id -> (input file, target file, mask file or None); and subjects skipped, with why."""

    pairs: dict[str, tuple[Path, Path, Path | None]]
    skipped: dict[str, str]


def pick_file(files: list[tuple[Path, tuple[dict[str, str], str]]], selector: Selector, role: str) -> Path | str:
    """The one file of a subject matching `selector`, or the reason there is not exactly one."""
    found = [p for p, (entities, suffix) in files if selector.matches(entities, suffix)]
    if len(found) == 1:
        return found[0]
    wanted = f"suffix {selector.suffix}" + (f", ses-{selector.session}" if selector.session else "")
    wanted += f", acq-{selector.acquisition}" if selector.acquisition else ""
    if not found:
        return f"no {role} file ({wanted})"
    names = ", ".join(p.name for p in found)
    return f"{len(found)} {role} files ({wanted}): {names}; narrow with --input-acq/--target-acq"


def find_bids_pairs(
    bids_root: Path, input_side: Selector, target_side: Selector, mask_side: Selector | None, datatype: str = "anat"
) -> BidsPairing:
    """Pair each subject's input and target files (and mask) according to the selectors."""
    subjects = sorted(p for p in bids_root.glob("sub-*") if p.is_dir())
    pairs, skipped = {}, {}
    for subject in subjects:
        files = [
            (p, parsed)
            for p in sorted(subject.glob(f"**/{datatype}/*"))
            if p.is_file() and (parsed := parse_bids_name(p)) is not None
        ]

        inp, tgt = pick_file(files, input_side, "input"), pick_file(files, target_side, "target")
        mask = pick_file(files, mask_side, "mask") if mask_side is not None else None
        reasons = [r for r in (inp, tgt, mask) if isinstance(r, str)]
        if reasons:
            skipped[subject.name] = "; ".join(reasons)
            continue
        case_id = subject.name.replace("-", "")
        pairs[case_id] = (inp, tgt, mask)
    return BidsPairing(pairs, skipped)


def convert_bids(
    bids_root: str | os.PathLike,
    raw_root: str | os.PathLike,
    dataset_id: int,
    name: str,
    suffix: str,
    input_session: str | None = None,
    target_session: str | None = None,
    input_acq: str | None = None,
    target_acq: str | None = None,
    mask_suffix: str | None = None,
    target_modality: str = "MR",
    datatype: str = "anat",
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
) -> tuple[Path, dict[str, str]]:
    """Write a raw dataset from a BIDS tree; returns its folder and the skipped subjects with reasons.

    The mask, when asked for, is taken from the target's session (files `..._<mask_suffix>.nii.gz`).
    """
    bids_root = Path(bids_root)
    if not bids_root.is_dir():
        raise AutosrError(f"{bids_root}: BIDS folder not found")
    if (input_session, input_acq) == (target_session, target_acq):
        raise AutosrError(
            "input and target would be the same files: give --input-session/--target-session or "
            "--input-acq/--target-acq that differ"
        )
    check_file_ending(file_ending)
    input_side = Selector(suffix, input_session, input_acq)
    target_side = Selector(suffix, target_session, target_acq)
    mask_side = Selector(mask_suffix, target_session) if mask_suffix else None
    pairing = find_bids_pairs(bids_root, input_side, target_side, mask_side, datatype)
    if not pairing.pairs:
        details = "; ".join(f"{s}: {r}" for s, r in list(pairing.skipped.items())[:5]) or "no sub-* folders"
        raise AutosrError(f"{bids_root}: no subject has both an input and a target file ({details})")
    folder = new_dataset_folder(raw_root, dataset_id, name, overwrite=overwrite)
    for case_id, (inp, tgt, mask) in pairing.pairs.items():
        place_image(inp, folder / "imagesTr" / f"{case_id}_0000{file_ending}")
        place_image(tgt, folder / "targetsTr" / f"{case_id}{file_ending}")
        if mask is not None:
            place_image(mask, folder / "masksTr" / f"{case_id}{file_ending}")

    def side_name(session: str | None, acq: str | None) -> str:
        return "_".join([suffix] + [v for v in (session, acq) if v])

    write_dataset_json(
        folder,
        name=name,
        channel_names={"0": side_name(input_session, input_acq)},
        target_name=side_name(target_session, target_acq),
        target_modality=target_modality,
        file_ending=file_ending,
        num_training=len(pairing.pairs),
        description=f"converted from the BIDS dataset {bids_root}",
        skipped_subjects=pairing.skipped or None,
    )
    return folder, pairing.skipped
