"""Run any segmentation tool, given as a command line, on image files; cache its outputs.

Why: labs judge a synthetic scan with the segmenter they use for their studies (FastSurfer, SynthSeg,
FreeSurfer, a lab script). autosr does not ship those; it calls them.

The command is a template such as `mri_synthseg --i {input} --o {output}`:

- it is split into arguments once, with POSIX shell rules (`shlex.split`: quotes group words), and run
  **without a shell** (no pipes, redirections, `&&` or variable expansion; a tool needing those goes in a
  wrapper script). The placeholders are then replaced inside the arguments, so a path with spaces or shell
  characters stays one argument and is never interpreted;
- placeholders: `{input}` the image to segment, `{output}` the label map to write (`.nii.gz`), both
  required; `{case}` the case id; `{mask}` the case's mask (only when masks were given). No value ever
  becomes an option: a relative path starting with '-' is given as './-...', and an argument that would
  start with '-' only because of a case id is refused (case ids start with a letter or digit anyway);
- the tool is run once per image, in parallel threads (`num_parallel`), from the current folder, with its
  standard output and error written to a log file;
- the output is written to a hidden temporary name and renamed once the tool exited with code 0 and the
  file reads as an image, so an interrupted run never leaves a label map a later run would trust;
- a label map is reused when it exists and its `.json` sidecar records the same command and the same
  source file (path, size, modification time): change the prediction or the command and it is redone;
- a failing run (non-zero exit code, no output, unreadable output, program not runnable) is one message
  naming the case, the image, the exit code, the last lines of the log and the log's path; the other
  runs go on.

`builtin` names autosr's own tissue segmenter (`autosr segment-tissue`, see `tissue_segmenter.py`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from autosr.errors import AutosrError
from autosr.io import atomic_write_json, read_json
from autosr.io.atomic import remove_stale_temporaries, temporary_name_for
from autosr.io.image_io import read_sitk
from autosr.io.json_file import read_json_file

PathLike = str | os.PathLike
PLACEHOLDERS = ("input", "output", "case", "mask")
REQUIRED_PLACEHOLDERS = ("input", "output")
BUILTIN = "builtin"
BUILTIN_LABEL_NAMES = {1: "csf", 2: "gm", 3: "wm"}  # classes by increasing T1-weighted intensity
OUTPUT_ENDING = ".nii.gz"
LOG_TAIL_LINES = 5
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Segmenter:
    """A segmentation command: the argument template, a name for tables, and arguments added per mask."""

    command: tuple[str, ...]
    name: str = "segmenter"
    mask_arguments: tuple[str, ...] = ()  # appended when the case has a mask (the built-in's `--mask {mask}`)

    @property
    def needs_mask(self) -> bool:
        return any("{mask}" in part for part in self.command)

    def argv(
        self, input_path: PathLike, output_path: PathLike, case_id: str, mask: PathLike | None = None
    ) -> list[str]:
        """The argument list of one run: the template with the placeholders replaced inside each argument."""
        if self.needs_mask and mask is None:
            raise AutosrError(f"case {case_id}: the segmenter command uses {{mask}} but the case has no mask")
        values = {
            "input": _not_an_option(input_path),
            "output": _not_an_option(output_path),
            "case": case_id,
            "mask": _not_an_option(mask) if mask is not None else "",
        }
        template = self.command + (self.mask_arguments if mask is not None else ())
        argv = []
        for part in template:
            argument = _PLACEHOLDER.sub(lambda m: values[m.group(1)], part)
            if argument.startswith("-") and not part.startswith("-"):
                raise AutosrError(
                    f"case {case_id!r}: the segmenter argument {part!r} would become {argument!r}, which the program "
                    "would read as an option; rename the case so its id starts with a letter or digit"
                )
            argv.append(argument)
        return argv

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "command": shlex.join(self.command + self.mask_arguments)}


def _not_an_option(path: PathLike) -> str:
    """A file path as an argument no program reads as an option: a relative path starting with '-' gets './'."""
    text = str(path)
    return f".{os.sep}{text}" if text.startswith("-") else text


def builtin_segmenter() -> Segmenter:
    """autosr's own tissue segmenter, run as `python -m autosr.cli segment-tissue {input} {output}`."""
    return Segmenter(
        (sys.executable, "-m", "autosr.cli", "segment-tissue", "{input}", "{output}"),
        name="autosr segment-tissue (builtin)",
        mask_arguments=("--mask", "{mask}"),
    )


def parse_command(text: str, name: str | None = None, source: str = "--segmenter") -> Segmenter:
    """A `Segmenter` from a command template (see the module docstring), checked before any run."""
    if text.strip() == BUILTIN:
        return builtin_segmenter()
    try:
        parts = tuple(shlex.split(text))
    except ValueError as e:
        raise AutosrError(f"{source}: cannot split the command {text!r} ({e}); check its quotes") from e
    if not parts:
        raise AutosrError(f"{source}: the segmenter command is empty")
    used = {m for part in parts for m in _PLACEHOLDER.findall(part)}
    unknown = sorted(used - set(PLACEHOLDERS))
    if unknown:
        raise AutosrError(
            f"{source}: unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)} in {text!r}; "
            f"valid: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        )
    missing = [p for p in REQUIRED_PLACEHOLDERS if p not in used]
    if missing:
        raise AutosrError(
            f"{source}: the command {text!r} lacks {' and '.join('{' + m + '}' for m in missing)}; write it like "
            "'mytool --in {input} --out {output}' (autosr replaces them with the file paths)"
        )
    if _PLACEHOLDER.search(parts[0]):
        raise AutosrError(f"{source}: the program itself ({parts[0]!r}) cannot be a placeholder")
    if shutil.which(parts[0]) is None and not Path(parts[0]).is_file():
        raise AutosrError(
            f"{source}: the segmenter program {parts[0]!r} is neither on PATH nor a file; install it, or give "
            "its full path (quote a path with spaces)"
        )
    if name is None:  # the program, and the script it runs when the second word is a file
        name = Path(parts[0]).name
        if len(parts) > 1 and not _PLACEHOLDER.search(parts[1]) and Path(parts[1]).is_file():
            name += f" {Path(parts[1]).name}"
    return Segmenter(parts, name=name)


CONFIG_KEYS = ("command", "name", "label_names", "structures")


def load_segmenter_config(path: PathLike) -> tuple[Segmenter, Path | None, tuple[int, ...] | None]:
    """(segmenter, label table path or None, structures or None) from a JSON file.

    Keys: `command` (required, the template), `name` (for tables), `label_names` (a FreeSurfer-format
    lookup table; a relative path is taken from the JSON file's folder), `structures` (label values).
    """
    path = Path(path)
    config = read_json_file(path, "fix the segmenter config")
    if not isinstance(config, dict) or not isinstance(config.get("command"), str):
        raise AutosrError(
            f'{path}: must hold a JSON object with a "command" string, e.g. {{"command": "tool {{input}} {{output}}"}}'
        )
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise AutosrError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(CONFIG_KEYS)}")
    segmenter = parse_command(config["command"], config.get("name"), source=str(path))
    table = config.get("label_names")
    table_path = None if table is None else (Path(table) if Path(table).is_absolute() else path.parent / table)
    structures = config.get("structures")
    if structures is not None:
        structures = parse_structures(structures, str(path))
    return segmenter, table_path, structures


def parse_structures(values: Sequence[Any], source: str) -> tuple[int, ...]:
    """Label values (positive integers) as a sorted tuple without repeats."""
    try:
        numbers = [int(v) for v in values]
    except (TypeError, ValueError) as e:
        raise AutosrError(f"{source}: structures must be label values (positive integers), got {values!r}") from e
    if not numbers or any(n <= 0 for n in numbers) or any(float(v) != int(v) for v in values):
        raise AutosrError(f"{source}: structures must be label values (positive integers), got {values!r}")
    return tuple(sorted(set(numbers)))


def load_segmenter(spec: str) -> tuple[Segmenter, Path | None, tuple[int, ...] | None]:
    """`--segmenter`'s value: `builtin`, a path to a JSON config (`*.json`), or a command template."""
    if spec.strip().lower().endswith(".json") and Path(spec.strip()).is_file():
        return load_segmenter_config(spec.strip())
    segmenter = parse_command(spec)
    return segmenter, None, None


# --- running -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmenterRun:
    """One image to segment: `source` -> `output` (a `.nii.gz` path), for case `case_id`."""

    case_id: str
    what: str  # what the image is, for messages: 'prediction', 'input', 'target'
    source: Path
    output: Path
    log: Path
    mask: Path | None = None


def file_fingerprint(path: PathLike | None) -> dict[str, Any] | None:
    """{path, size, mtime_ns} of a file (None for None): what a cached result was made from."""
    if path is None:
        return None
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns)}


def sidecar_of(output: Path) -> Path:
    name = output.name[: -len(OUTPUT_ENDING)] if output.name.endswith(OUTPUT_ENDING) else output.stem
    return output.with_name(f"{name}.json")


def is_current(output: Path, key: dict[str, Any]) -> bool:
    """True when `output` exists and its sidecar records exactly `key`."""
    sidecar = sidecar_of(output)
    if not output.is_file() or not sidecar.is_file():
        return False
    try:
        return read_json(sidecar) == key
    except (OSError, ValueError):
        return False


def run_key(segmenter: Segmenter, run: SegmenterRun) -> dict[str, Any]:
    return {
        "command": segmenter.describe()["command"],
        "source": file_fingerprint(run.source),
        "mask": file_fingerprint(run.mask),
    }


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-LOG_TAIL_LINES:])


def run_segmenter(segmenter: Segmenter, run: SegmenterRun) -> str | None:
    """Segment one image unless its cached label map is current; None on success, else the message."""
    key = run_key(segmenter, run)
    if is_current(run.output, key):
        return None
    run.output.parent.mkdir(parents=True, exist_ok=True)
    run.log.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name_for(run.output)
    where = f"case {run.case_id}: the segmenter {segmenter.name!r} on the {run.what} {run.source}"
    try:
        argv = segmenter.argv(run.source, tmp, run.case_id, run.mask)
    except AutosrError as e:
        return str(e)
    try:
        with open(run.log, "w", encoding="utf-8") as log:
            log.write(f"$ {shlex.join(argv)}\n")
            log.flush()
            try:
                completed = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            except OSError as e:
                return f"{where} could not start ({e.strerror or e}); command: {shlex.join(argv)}"
        if completed.returncode != 0:
            tail = _tail(run.log)
            return (
                f"{where} failed with exit code {completed.returncode}"
                + (f"; last output: {tail}" if tail else "")
                + f"; full log: {run.log}"
            )
        if not tmp.is_file():
            return f"{where} exited with code 0 but wrote no file at the {{output}} path {tmp}; log: {run.log}"
        try:
            read_sitk(tmp)
        except AutosrError as e:
            return f"{where} wrote an unreadable label map ({e}); log: {run.log}"
        os.replace(tmp, run.output)
        atomic_write_json(key, sidecar_of(run.output))
        return None
    finally:
        if tmp.exists():
            tmp.unlink()


def run_segmenter_jobs(
    segmenter: Segmenter, runs: list[SegmenterRun], num_parallel: int = 1
) -> dict[SegmenterRun, str]:
    """Run every job (`num_parallel` at a time); {run: message} for the ones that failed."""
    failures: dict[SegmenterRun, str] = {}
    for folder in sorted({run.output.parent for run in runs}):  # label maps of a killed run's segmenter
        remove_stale_temporaries(folder)
    progress = dict(total=len(runs), desc=f"segmenting ({segmenter.name})", unit="image", disable=len(runs) < 2)
    with ThreadPoolExecutor(max(1, min(num_parallel, len(runs) or 1))) as pool:
        for run, message in tqdm(zip(runs, pool.map(lambda r: run_segmenter(segmenter, r), runs)), **progress):
            if message is not None:
                failures[run] = message
    return failures
