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


@dataclass(frozen=True)
class BidsPairSelection:
    """Which files of each subject form a pair: the suffix (e.g. T1w), the session and/or acquisition of
    the input and of the target (they must differ), an optional mask suffix (taken from the target's
    session), and the datatype folder."""

    suffix: str
    input_session: str | None = None
    target_session: str | None = None
    input_acq: str | None = None
    target_acq: str | None = None
    mask_suffix: str | None = None
    datatype: str = "anat"

    def __post_init__(self) -> None:
        if (self.input_session, self.input_acq) == (self.target_session, self.target_acq):
            raise AutosrError(
                "input and target would be the same files: give --input-session/--target-session or "
                "--input-acq/--target-acq that differ"
            )

    @property
    def input_side(self) -> Selector:
        return Selector(self.suffix, self.input_session, self.input_acq)

    @property
    def target_side(self) -> Selector:
        return Selector(self.suffix, self.target_session, self.target_acq)

    @property
    def mask_side(self) -> Selector | None:
        return Selector(self.mask_suffix, self.target_session) if self.mask_suffix else None

    def side_name(self, session: str | None, acq: str | None) -> str:
        return "_".join([self.suffix] + [v for v in (session, acq) if v])


def convert_bids(
    bids_root: str | os.PathLike,
    raw_root: str | os.PathLike,
    dataset_id: int,
    name: str,
    selection: BidsPairSelection,
    target_modality: str = "MR",
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
) -> tuple[Path, dict[str, str]]:
    """Write a raw dataset from a BIDS tree, pairing files as `selection` says; returns its folder and the
    skipped subjects with reasons."""
    bids_root = Path(bids_root)
    if not bids_root.is_dir():
        raise AutosrError(f"{bids_root}: BIDS folder not found")
    check_file_ending(file_ending)
    pairing = find_bids_pairs(
        bids_root, selection.input_side, selection.target_side, selection.mask_side, selection.datatype
    )
    if not pairing.pairs:
        details = "; ".join(f"{s}: {r}" for s, r in list(pairing.skipped.items())[:5]) or "no sub-* folders"
        raise AutosrError(f"{bids_root}: no subject has both an input and a target file ({details})")
    folder = new_dataset_folder(raw_root, dataset_id, name, overwrite=overwrite)
    for case_id, (inp, tgt, mask) in pairing.pairs.items():
        place_image(inp, folder / "imagesTr" / f"{case_id}_0000{file_ending}")
        place_image(tgt, folder / "targetsTr" / f"{case_id}{file_ending}")
        if mask is not None:
            place_image(mask, folder / "masksTr" / f"{case_id}{file_ending}")

    write_dataset_json(
        folder,
        name=name,
        channel_names={"0": selection.side_name(selection.input_session, selection.input_acq)},
        target_name=selection.side_name(selection.target_session, selection.target_acq),
        target_modality=target_modality,
        file_ending=file_ending,
        num_training=len(pairing.pairs),
        description=f"converted from the BIDS dataset {bids_root}",
        skipped_subjects=pairing.skipped or None,
    )
    return folder, pairing.skipped
