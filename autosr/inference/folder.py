"""The mechanics of predicting a folder of scans: which cases, which are done, which part is ours.

Prediction runs over thousands of scans, on several machines, and gets interrupted, so:

- a case is finished when its output file exists (outputs are written atomically, so a present file is
  complete) and is skipped unless `overwrite`;
- `num_parts`/`part_id` take every `num_parts`-th case of the sorted case list, starting at `part_id`:
  the parts never overlap and together cover the folder, and each gets a mix of early and late names;
- problems of one case (a missing channel, more channels than the model was trained on, an unreadable
  file) are that case's failure, reported at the end, never a reason to stop the others;
- the work around the network (reading, preprocessing, export) runs in worker processes beside it:
  autosr/inference/pipeline.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autosr.errors import AutosrError
from autosr.formats.dataset_spec import CHANNEL_SUFFIX, CaseFiles, discover_input_cases
from autosr.io.image_io import detached_data_files, file_ending_of, image_file_problem
from autosr.paths import SAFE_NAME_RULE, name_problem

UNCERTAINTY_FOLDER = "uncertainty"
SAMPLES_FOLDER = "samples"


@dataclass
class FolderSummary:
    """What a folder run did: case ids predicted, skipped as already done, failed (with the reason), flagged
    by the quality check (OUT/summary.csv says why), and where the time went (`timings`: wall_s and the sums
    of preprocess_s, network_s, export_s over the predicted cases)."""

    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    flagged: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # "<file>: <why>; <fix>" per input file not predicted

    @property
    def ok(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        lines = [
            f"{len(self.predicted)} predicted, {len(self.skipped)} already done (skipped), {len(self.failed)} failed"
        ]
        if self.flagged:
            lines.append(
                f"{len(self.flagged)} flagged by the quality check (see summary.csv): {', '.join(self.flagged[:10])}"
                + (" ..." if len(self.flagged) > 10 else "")
            )
        if self.ignored:
            lines.append(f"{len(self.ignored)} file(s) of the input folder not predicted:")
            lines.extend(f"  - {entry}" for entry in self.ignored[:20])
            if len(self.ignored) > 20:
                lines.append(f"  - ... and {len(self.ignored) - 20} more")
        wall, network = self.timings.get("wall_s"), self.timings.get("network_s")
        if wall and network is not None and self.predicted:
            lines.append(
                f"{wall:.1f} s wall for {len(self.predicted)} case(s), the network busy {100 * network / wall:.0f}% "
                f"of it ({3600 * len(self.predicted) / wall:.0f} scans per hour)"
            )
        if self.failed:
            lines.append("failed cases (fix them and run the same command again; finished cases are kept):")
            lines.extend(f"  - {case}: {reason}" for case, reason in sorted(self.failed.items()))
        return "\n".join(lines)


@dataclass
class InputCase:
    """One case to predict: its channel files in channel order, or the reason it cannot be predicted."""

    case_id: str
    channel_files: list[Path]
    problem: str | None = None


def discover_prediction_cases(input_dir: str | os.PathLike, file_ending: str, num_channels: int) -> list[InputCase]:
    """Every `<case>_<XXXX><ending>` case in `input_dir`, sorted, with per-case problems attached.

    Raises when the folder is missing or holds no file of the expected form, naming what was expected.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise AutosrError(f"{input_dir}: input folder not found")
    grouped = discover_input_cases(input_dir, file_ending, num_channels)
    extra_channels = _channels_beyond(input_dir, file_ending, num_channels)
    if not grouped:
        present = sorted(p.name for p in input_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "") if present else "no files"
        raise AutosrError(
            f"{input_dir}: no input files named <case>_<XXXX>{file_ending} (e.g. scan01_0000{file_ending}, one "
            f"file per channel, {num_channels} channel{'s' if num_channels > 1 else ''} for this model); "
            f"found: {shown}. Rename the files or convert them to {file_ending}"
        )
    cases = []
    for case_id, files in grouped.items():
        cases.append(InputCase(case_id, [p for p in files.channels if p is not None], _problem_of(files)))
        if case_id in extra_channels and cases[-1].problem is None:
            cases[-1].problem = (
                f"has channel files {', '.join(extra_channels[case_id])} but the model was trained on "
                f"{num_channels} channel{'s' if num_channels > 1 else ''} (_0000 to _{num_channels - 1:04d})"
            )
    return cases


def ignored_input_files(input_dir: str | os.PathLike, file_ending: str) -> list[str]:
    """The image files of `input_dir` that are never predicted, each as "<name>: not predicted: <why>; <fix>",
    so that the run's summary names every scan left out instead of losing it silently:

    - hidden names (starting with '.': editor or macOS copies such as `._scan_0000`, or a scan renamed by
      mistake);
    - images in another format than the model's (`scan_0000.nii` for a `.nii.gz` model);
    - images without the channel index (`scan.nii.gz`).

    The voxel-data files of detached headers (a `.mhd`'s `.raw`) belong to their header and are not listed.
    """
    folder = Path(input_dir)
    data_files = detached_data_files(folder)
    ignored = []
    for p in sorted(folder.iterdir()):
        if p.name in data_files or not p.is_file():
            continue
        if p.name.startswith("."):
            if p.name.endswith(file_ending):
                ignored.append(
                    f"{p.name}: not predicted: a hidden file (its name starts with '.'); rename it without the "
                    "leading '.' to predict it"
                )
            continue
        ending = file_ending_of(p)
        if ending and not p.name.endswith(file_ending):
            ignored.append(
                f"{p.name}: not predicted: file ending {ending}, the model reads {file_ending}; rename it (if it "
                f"is a {file_ending} file) or convert it to {file_ending}"
            )
        elif p.name.endswith(file_ending) and not CHANNEL_SUFFIX.fullmatch(p.name[: -len(file_ending)]):
            ignored.append(
                f"{p.name}: not predicted: the name lacks the 4-digit channel index; rename it "
                f"<case>_0000{file_ending} (one file per channel)"
            )
    return ignored


def _problem_of(files: CaseFiles) -> str | None:
    if (problem := name_problem(files.case_id)) is not None:
        return (
            f"the case id {files.case_id!r} {problem}, and predictions are named after it; rename the input "
            f"files ({SAFE_NAME_RULE})"
        )
    if not files.missing_channels:
        return None
    missing = ", ".join(f"_{i:04d}" for i in files.missing_channels)
    return f"missing channel file(s) {missing} (every case needs one file per channel the model was trained on)"


def _channels_beyond(input_dir: Path, file_ending: str, num_channels: int) -> dict[str, list[str]]:
    """Channel files whose index is not below `num_channels`, by case (discovery ignores them)."""
    extra: dict[str, list[str]] = {}
    for p in sorted(input_dir.iterdir()):
        if not (p.is_file() and p.name.endswith(file_ending)) or p.name.startswith("."):
            continue
        match = CHANNEL_SUFFIX.fullmatch(p.name[: -len(file_ending)])
        if match and int(match.group("channel")) >= num_channels:
            extra.setdefault(match.group("case"), []).append(f"_{match.group('channel')}")
    return extra


def select_part(case_ids: Sequence[str], num_parts: int, part_id: int) -> list[str]:
    """Part `part_id` of `num_parts` of the sorted case ids (every num_parts-th one); parts never overlap."""
    if num_parts < 1:
        raise AutosrError(f"--num-parts must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise AutosrError(f"--part-id must be between 0 and {num_parts - 1} for --num-parts {num_parts}, got {part_id}")
    return sorted(case_ids)[part_id::num_parts]


def output_file(output_dir: str | os.PathLike, case_id: str, file_ending: str) -> Path:
    return Path(output_dir) / f"{case_id}{file_ending}"


def uncertainty_file(output_dir: str | os.PathLike, case_id: str, file_ending: str) -> Path:
    """Uncertainty maps live in a subfolder, so the output folder holds predictions only (for evaluate)."""
    return Path(output_dir) / UNCERTAINTY_FOLDER / f"{case_id}{file_ending}"


def sample_file(output_dir: str | os.PathLike, case_id: str, index: int, file_ending: str) -> Path:
    """Sample `index` of a generative model's prediction (`predict --save-samples`), beside the uncertainty."""
    return Path(output_dir) / SAMPLES_FOLDER / f"{case_id}_sample{index:02d}{file_ending}"


def is_finished(output_dir: str | os.PathLike, case_id: str, file_ending: str) -> bool:
    """A case is finished when its prediction exists (written last, atomically and checked, so it is complete)
    and is whole: a prediction cut short by an older version's unchecked write is predicted again."""
    path = output_file(output_dir, case_id, file_ending)
    return path.is_file() and image_file_problem(path) is None
