"""dataset.json and the raw folder layout.

A raw dataset folder `DatasetXXX_Name/` holds:

    dataset.json
    imagesTr/<case>_<XXXX><ending>   input channel XXXX (4 digits) of a training case
    targetsTr/<case><ending>         the paired target (the grid it is on is the reference grid)
    masksTr/<case><ending>           optional: region that counts (brain, body), on the target grid
    imagesTs/, targetsTs/, masksTs/  optional held-out test cases, same naming

dataset.json keys: `name`, `channel_names` ({"0": "T1w_3T"}), `target_name`, `target_modality`
("MR", "CT" or other), `file_ending`; optional `normalization` ({"0": "zscore", "target": "ct"}),
`numTraining`, `description`, `reference`, `licence`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autosr.errors import AutosrError

REQUIRED_KEYS = ("name", "channel_names", "target_name", "target_modality", "file_ending")
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class DatasetSpec:
    """The contents of dataset.json."""

    name: str
    channel_names: dict[str, str]
    target_name: str
    target_modality: str
    file_ending: str
    normalization: dict[str, str] = field(default_factory=dict)
    num_training: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def channel_indices(self) -> list[int]:
        return sorted(int(k) for k in self.channel_names)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.extra)
        d.update(
            name=self.name,
            channel_names=self.channel_names,
            target_name=self.target_name,
            target_modality=self.target_modality,
            file_ending=self.file_ending,
        )
        if self.normalization:
            d["normalization"] = self.normalization
        if self.num_training is not None:
            d["numTraining"] = self.num_training
        return d


def parse_dataset_spec(d: dict[str, Any], source: str = "dataset.json") -> DatasetSpec:
    """Check the keys of a dataset.json dict and build a `DatasetSpec`; every problem in one error."""
    problems = [f"{source}: missing key '{k}'" for k in REQUIRED_KEYS if k not in d]
    channel_names = d.get("channel_names", {})
    if "channel_names" in d:
        if not isinstance(channel_names, dict) or not channel_names:
            problems.append(f'{source}: \'channel_names\' must be a non-empty mapping like {{"0": "T1w"}}')
            channel_names = {}
        else:
            keys = sorted(channel_names, key=lambda k: int(k) if str(k).isdigit() else -1)
            if [str(k) for k in keys] != [str(i) for i in range(len(keys))]:
                problems.append(
                    f'{source}: \'channel_names\' keys must be "0", "1", ... without gaps, got {list(channel_names)}'
                )
    ending = d.get("file_ending", "")
    if "file_ending" in d and (not isinstance(ending, str) or not ending.startswith(".")):
        problems.append(f"{source}: 'file_ending' must look like \".nii.gz\", got {ending!r}")
    num_training = d.get("numTraining")
    if num_training is not None and not isinstance(num_training, int):
        problems.append(f"{source}: 'numTraining' must be an integer, got {num_training!r}")
    if problems:
        from autosr.errors import DatasetProblems

        raise DatasetProblems(problems, header=f"{source} is not valid")
    known = set(REQUIRED_KEYS) | {"normalization", "numTraining"}
    return DatasetSpec(
        name=str(d["name"]),
        channel_names={str(k): str(v) for k, v in channel_names.items()},
        target_name=str(d["target_name"]),
        target_modality=str(d["target_modality"]),
        file_ending=str(ending),
        normalization={str(k): str(v) for k, v in (d.get("normalization") or {}).items()},
        num_training=num_training,
        extra={k: v for k, v in d.items() if k not in known},
    )


def load_dataset_spec(dataset_dir: str | os.PathLike) -> DatasetSpec:
    """Read and check `dataset_dir/dataset.json`."""
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise AutosrError(
            f"{path}: not found; every dataset folder needs a dataset.json (see documentation/dataset_format.md)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise AutosrError(f"{path}: is not valid JSON ({e}); fix the file") from e
    if not isinstance(d, dict):
        raise AutosrError(f"{path}: must hold a JSON object")
    return parse_dataset_spec(d, source=str(path))


@dataclass
class CaseFiles:
    """The files of one case. `channels[i]` is channel i's file, None where it is missing."""

    case_id: str
    channels: list[Path | None]
    target: Path | None = None
    mask: Path | None = None

    @property
    def missing_channels(self) -> list[int]:
        return [i for i, p in enumerate(self.channels) if p is None]


def _files_with_ending(folder: Path, ending: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(ending) and not p.name.startswith("."))


def discover_input_cases(images_dir: Path, file_ending: str, num_channels: int) -> dict[str, CaseFiles]:
    """Group `<case>_<XXXX><ending>` files of a folder by case; channels beyond `num_channels` are ignored."""
    cases: dict[str, CaseFiles] = {}
    for p in _files_with_ending(images_dir, file_ending):
        stem = p.name[: -len(file_ending)]
        m = CHANNEL_SUFFIX.match(stem)
        if not m:
            continue
        case_id, channel = m.group("case"), int(m.group("channel"))
        entry = cases.setdefault(case_id, CaseFiles(case_id, [None] * num_channels))
        if channel < num_channels:
            entry.channels[channel] = p
    return dict(sorted(cases.items()))


def discover_cases(dataset_dir: str | os.PathLike, spec: DatasetSpec, split: str = "Tr") -> dict[str, CaseFiles]:
    """All cases of a split ('Tr' or 'Ts'): inputs from images<split>, targets, masks where present.

    A case appears when any of its files exists (an input channel or a target), so that validation can
    report a target without inputs as well as inputs without a target.
    """
    root = Path(dataset_dir)
    ending = spec.file_ending
    cases = discover_input_cases(root / f"images{split}", ending, spec.num_channels)
    for p in _files_with_ending(root / f"targets{split}", ending):
        case_id = p.name[: -len(ending)]
        cases.setdefault(case_id, CaseFiles(case_id, [None] * spec.num_channels)).target = p
    for p in _files_with_ending(root / f"masks{split}", ending):
        case_id = p.name[: -len(ending)]
        if case_id in cases:
            cases[case_id].mask = p
    return dict(sorted(cases.items()))
