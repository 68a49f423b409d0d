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
from autosr.io.json_file import read_json_file
from autosr.paths import file_ending_problem, json_kind

REQUIRED_KEYS = ("name", "channel_names", "target_name", "target_modality", "file_ending")
CHANNEL_SUFFIX = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")  # applied with fullmatch


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


TEXT_KEYS = ("name", "target_name", "target_modality", "description", "reference", "licence")
COUNT_KEYS = ("numTraining", "numTest")


def parse_dataset_spec(d: dict[str, Any], source: str = "dataset.json") -> DatasetSpec:
    """Check every field of a dataset.json dict (presence and type) and build a `DatasetSpec`.

    All problems come in one error. A value of the wrong type is named with what it is ("got a list"),
    never converted: `"target_modality": ["CT"]` must not silently become the modality "['CT']".
    """
    problems = [f"{source}: missing key '{k}'" for k in REQUIRED_KEYS if k not in d]
    for key in TEXT_KEYS:
        if key in d and (not isinstance(d[key], str) or (key in REQUIRED_KEYS and not d[key].strip())):
            problems.append(
                f"{source}: '{key}' must be a{' non-empty' if key in REQUIRED_KEYS else ''} text, got {_shown(d[key])}"
            )
    for key in COUNT_KEYS:
        value = d.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            problems.append(f"{source}: '{key}' must be a whole number of cases (like 20), got {_shown(value)}")
    channel_names = d.get("channel_names", {})
    if "channel_names" in d:
        if not isinstance(channel_names, dict) or not channel_names:
            problems.append(
                f'{source}: \'channel_names\' must be a non-empty mapping like {{"0": "T1w"}}, got {_shown(channel_names)}'
            )
            channel_names = {}
        else:
            keys = sorted(channel_names, key=lambda k: int(k) if str(k).isdigit() else -1)
            if [str(k) for k in keys] != [str(i) for i in range(len(keys))]:
                problems.append(
                    f'{source}: \'channel_names\' keys must be "0", "1", ... without gaps, got {list(channel_names)}'
                )
            for key, value in channel_names.items():
                if not isinstance(value, str) or not value.strip():
                    problems.append(
                        f"{source}: 'channel_names' \"{key}\" must be a channel name (a text), got {_shown(value)}"
                    )
    ending = d.get("file_ending", "")
    if "file_ending" in d and (problem := file_ending_problem(ending)) is not None:
        problems.append(f"{source}: 'file_ending' must look like \".nii.gz\", got {_shown(ending)}: it {problem}")
    normalization = d.get("normalization") or {}
    if not isinstance(normalization, dict):
        problems.append(
            f"{source}: 'normalization' must map channel indices or \"target\" to scheme names, like "
            f'{{"0": "zscore", "target": "ct"}}; got {_shown(normalization)}'
        )
        normalization = {}
    for key, value in normalization.items():
        allowed = {str(i) for i in range(len(channel_names))} | {"target"}
        if str(key) not in allowed:
            problems.append(
                f"{source}: 'normalization' key \"{key}\" is neither an input channel ({', '.join(sorted(allowed - {'target'}))}) "
                'nor "target"'
            )
        if not isinstance(value, str):
            problems.append(f"{source}: 'normalization' \"{key}\" must be a scheme name (a text), got {_shown(value)}")
    if problems:
        from autosr.errors import DatasetProblems

        raise DatasetProblems(problems, header=f"{source} is not valid")
    known = set(REQUIRED_KEYS) | {"normalization", "numTraining"}
    return DatasetSpec(
        name=d["name"],
        channel_names={str(k): v for k, v in channel_names.items()},
        target_name=d["target_name"],
        target_modality=d["target_modality"],
        file_ending=ending,
        normalization={str(k): v for k, v in normalization.items()},
        num_training=d.get("numTraining"),
        extra={k: v for k, v in d.items() if k not in known},
    )


def _shown(value: Any) -> str:
    """A wrong JSON value for a message: its kind and the value itself ('a list (["CT"])')."""
    kind = json_kind(value)
    return kind if kind in ("null", "true", "false") else f"{kind} ({json.dumps(value)})"


def load_dataset_spec(dataset_dir: str | os.PathLike) -> DatasetSpec:
    """Read and check `dataset_dir/dataset.json`."""
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise AutosrError(
            f"{path}: not found; every dataset folder needs a dataset.json (see documentation/dataset_format.md)"
        )
    d = read_json_file(path, "fix the file (see documentation/dataset_format.md)")
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
    """Image files of a folder with the dataset's ending; hidden names are left out (verification reports
    them) and broken links kept in (reading them says so, instead of calling the file missing)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if (p.is_file() or (p.is_symlink() and not p.exists()))
        and p.name.endswith(ending)
        and not p.name.startswith(".")
    )


def discover_input_cases(images_dir: Path, file_ending: str, num_channels: int) -> dict[str, CaseFiles]:
    """Group `<case>_<XXXX><ending>` files of a folder by case; channels beyond `num_channels` are ignored."""
    cases: dict[str, CaseFiles] = {}
    for p in _files_with_ending(images_dir, file_ending):
        stem = p.name[: -len(file_ending)]
        m = CHANNEL_SUFFIX.fullmatch(stem)
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
