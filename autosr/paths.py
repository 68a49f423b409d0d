"""Where raw datasets, preprocessed data and trained models live, and how a dataset is named.

Roots come from explicit arguments (CLI flags) first, then the environment variables `AUTOSR_RAW`,
`AUTOSR_PREPROCESSED` and `AUTOSR_RESULTS`. They are read once, when `AutosrPaths.resolve` is called, and
passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from autosr.errors import AutosrError

ENV_VARS = {"raw": "AUTOSR_RAW", "preprocessed": "AUTOSR_PREPROCESSED", "results": "AUTOSR_RESULTS"}
# The one allow-list for every name that becomes a file or folder name (case ids, plans name, data
# identifier, configuration, trainer, the part of a file ending after its first dot): ASCII letters,
# digits, '_', '-' and '.', starting with a letter or digit. It keeps '/', '..', hidden names, spaces, line
# breaks and other characters that break paths, shells or tables out of every folder autosr writes, and
# names that a program would read as an option ('-x', '--mask') out of every command line autosr builds.
# Patterns here are applied with `fullmatch` only: `$` also matches before a final line break.
SAFE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
MAX_NAME_LENGTH = 200
SAFE_NAME_RULE = "use only letters, digits, '_', '-' and '.', starting with a letter or digit"
# The one rule for dataset folder names: 'Dataset', a three-digit id, '_', a name (a safe name without '.').
DATASET_NAME_PATTERN = re.compile(r"Dataset(\d{3})_([A-Za-z0-9][A-Za-z0-9_\-]*)")
DATASET_NAME_RULE = (
    "dataset folders are named DatasetXXX_Name: 'Dataset', a three-digit id (000 to 999), '_', then a name of "
    "letters, digits, '_' and '-' starting with a letter or digit (e.g. Dataset050_Brain)"
)
DEFAULT_TRAINER = "Trainer"
DEFAULT_PLANS_NAME = "autosrPlans"


@dataclass(frozen=True)
class AutosrPaths:
    """The three roots. A root is None when neither a flag nor its environment variable set it."""

    raw: Path | None
    preprocessed: Path | None
    results: Path | None

    @classmethod
    def resolve(
        cls,
        raw: str | os.PathLike | None = None,
        preprocessed: str | os.PathLike | None = None,
        results: str | os.PathLike | None = None,
        environ: dict[str, str] | None = None,
    ) -> AutosrPaths:
        env = os.environ if environ is None else environ
        given = {"raw": raw, "preprocessed": preprocessed, "results": results}
        roots = {}
        for key, value in given.items():
            if value is None:
                value = env.get(ENV_VARS[key]) or None
            roots[key] = Path(value).expanduser().resolve() if value is not None else None
        return cls(**roots)

    def require(self, which: str) -> Path:
        """The root named `which` ('raw', 'preprocessed', 'results'), or an error saying how to set it."""
        root = getattr(self, which)
        if root is None:
            raise AutosrError(
                f"the {which} folder is not set: export {ENV_VARS[which]}=/path/to/{which} "
                f"or pass --{which} /path/to/{which}"
            )
        return root

    def raw_dataset(self, identifier: str | int | os.PathLike) -> Path:
        """The raw dataset folder for an id (`901`), a full name (`Dataset901_Brain`) or a path."""
        return find_dataset_folder(identifier, self.raw, "raw", ENV_VARS["raw"])

    def dataset_name(self, identifier: str | int | os.PathLike) -> str:
        """The full `DatasetXXX_Name` for an identifier, looked up in raw, then preprocessed, then results."""
        path = Path(str(identifier))
        if path.is_dir():
            if (problem := dataset_folder_problem(path.resolve())) is not None:
                raise AutosrError(problem)
            return path.resolve().name
        errors = []
        for which in ("raw", "preprocessed", "results"):
            root = getattr(self, which)
            if root is None:
                continue
            try:
                return find_dataset_folder(identifier, root, which, ENV_VARS[which]).name
            except AutosrError as e:
                errors.append(str(e))
        if not errors:
            raise AutosrError(
                "no autosr folders are set: export AUTOSR_RAW, AUTOSR_PREPROCESSED and AUTOSR_RESULTS "
                "(or pass --raw/--preprocessed/--results)"
            )
        raise AutosrError(errors[0])

    def preprocessed_dataset(self, identifier: str | int | os.PathLike) -> Path:
        """`$AUTOSR_PREPROCESSED/DatasetXXX_Name` (not created here)."""
        return self.require("preprocessed") / self.dataset_name(identifier)

    def results_dataset(self, identifier: str | int | os.PathLike) -> Path:
        """`$AUTOSR_RESULTS/DatasetXXX_Name` (not created here)."""
        return self.require("results") / self.dataset_name(identifier)


def parse_dataset_name(name: str) -> tuple[int, str] | None:
    """(id, name) of a `DatasetXXX_Name` folder name (`DATASET_NAME_PATTERN`, whole name), else None."""
    match = DATASET_NAME_PATTERN.fullmatch(name) if isinstance(name, str) else None
    return (int(match.group(1)), match.group(2)) if match else None


def dataset_id_of(name: str) -> int | None:
    """The numeric id of a `DatasetXXX_Name` folder name, else None."""
    parsed = parse_dataset_name(name)
    return parsed[0] if parsed else None


def is_dataset_name(name: str) -> bool:
    """Whether `name` is a whole `DatasetXXX_Name` folder name."""
    return parse_dataset_name(name) is not None


def dataset_folder_name(dataset_id: int | str, name: str) -> str:
    """`DatasetXXX_Name` for an id (0 to 999) and a name, or an error saying which part breaks the rule."""
    if isinstance(dataset_id, bool) or not str(dataset_id).isdigit() or not 0 <= int(dataset_id) <= 999:
        raise AutosrError(f"dataset id {dataset_id} is out of range; use a number from 0 to 999")
    folder_name = f"Dataset{int(dataset_id):03d}_{name}"
    if not is_dataset_name(folder_name):
        raise AutosrError(
            f"dataset name {name!r} may only hold letters, digits, '_' and '-', starting with a letter or digit; "
            "choose another --name"
        )
    return folder_name


def datasets_with_id(root: Path, dataset_id: int) -> list[Path]:
    """The dataset folders of `root` whose id is `dataset_id` (an id names one dataset: see `check_id_free`)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and dataset_id_of(p.name) == int(dataset_id))


def check_id_free(root: Path, folder_name: str) -> None:
    """Refuse a new dataset folder `folder_name` in `root` when another dataset there has its id.

    Every command names a dataset by its id (`autosr plan 500`), so two raw datasets with one id make the id
    ambiguous for every later command; the existing one is named so the user can pick another id."""
    dataset_id = dataset_id_of(folder_name)
    others = [p for p in datasets_with_id(root, dataset_id) if p.name != folder_name] if dataset_id is not None else []
    if others:
        raise AutosrError(
            f"dataset id {dataset_id:03d} is taken by {others[0]}: an id names one dataset, and every command finds "
            f"the dataset by it; choose another id (or remove {others[0].name})"
        )


def dataset_folder_problem(path: Path) -> str | None:
    """Why a folder given by path cannot be a dataset folder (its name breaks `DATASET_NAME_RULE`), or None."""
    if is_dataset_name(path.name):
        return None
    return f"{path}: is not a dataset folder name; {DATASET_NAME_RULE}: rename the folder"


def find_dataset_folder(identifier: str | int | os.PathLike, root: Path | None, which: str, env_var: str) -> Path:
    """Resolve an id, full name or path to an existing dataset folder under `root`."""
    text = str(identifier)
    as_path = Path(text).expanduser()
    if as_path.is_dir() and (os.sep in text or text.startswith(".")):
        if (problem := dataset_folder_problem(as_path.resolve())) is not None:
            raise AutosrError(problem)
        return as_path.resolve()
    if root is None:
        raise AutosrError(f"the {which} folder is not set: export {env_var}=/path/to/{which} or pass --{which}")
    if not root.is_dir():
        raise AutosrError(f"the {which} folder {root} does not exist: create it or point {env_var} elsewhere")
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and is_dataset_name(p.name))
    if text.isdigit():
        wanted = int(text)
        matches = [p for p in candidates if dataset_id_of(p.name) == wanted]
    else:
        matches = [p for p in candidates if p.name == text]
    if len(matches) == 1:
        return matches[0]
    available = ", ".join(p.name for p in candidates) or "none"
    if len(matches) > 1:
        raise AutosrError(
            f"dataset id {text} is ambiguous in {root}: {', '.join(p.name for p in matches)}; "
            "use the full name or give each dataset its own id"
        )
    raise AutosrError(
        f"no dataset '{text}' in the {which} folder {root} (available: {available}); "
        "name it by id (901), full name (Dataset901_Brain) or path"
    )


def name_problem(value: object) -> str | None:
    """What keeps `value` from being used as one file or folder name, or None when it passes the allow-list.

    The one check behind every name autosr turns into a path component (`SAFE_NAME_PATTERN`); the answer
    completes "it ...", e.g. "holds '/'", "holds a line break", "starts with '.'".
    """
    if not isinstance(value, str):
        return f"is {json_kind(value)}, not a text"
    if not value:
        return "is empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_NAME_LENGTH})"
    if SAFE_NAME_PATTERN.fullmatch(value):
        return None
    if value.startswith("."):
        return "starts with '.' (a hidden name, or a step out of the folder)"
    bad = next((c for c in value if not SAFE_NAME_PATTERN.fullmatch("a" + c)), None)
    if bad is not None:
        return f"holds {describe_character(bad)}"
    if value.startswith("-"):
        return "starts with '-' (a program given it would read it as an option)"
    return f"starts with {describe_character(value[0])}"


def describe_character(c: str) -> str:
    """A character as a message can show it: 'a line break', 'a space', "'/'"."""
    names = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab", " ": "a space"}
    if c in names:
        return names[c]
    if not c.isprintable():
        return f"the control character {c!r}"
    return f"'{c}'"


def json_kind(value: object) -> str:
    """How a JSON value reads in a message: 'a list', 'a number', 'null', 'true'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def check_name(value: object, what: str) -> str:
    """`value` when it may become a file or folder name (`name_problem`), else an error naming `what`."""
    problem = name_problem(value)
    if problem is not None:
        raise AutosrError(f"{what} {value!r} cannot be used as a file or folder name: it {problem}; {SAFE_NAME_RULE}")
    return value


def file_ending_problem(ending: object) -> str | None:
    """What is wrong with a file ending such as '.nii.gz' (a '.' and then an allowed name), or None."""
    if not isinstance(ending, str):
        return f"is {json_kind(ending)}, not a text"
    if not ending.startswith("."):
        return "does not start with '.'"
    problem = name_problem(ending[1:])
    return None if problem is None else f"{problem} after its first '.'"


def path_under(root: Path, *parts: str) -> Path:
    """`root/part/...`, refused unless it stays inside `root` once '.' and '..' are resolved.

    A second line of defence behind `check_name`: output paths built from names found in files (plans,
    dataset.json) can never leave their folder. Links are not followed: a folder the user linked into
    the tree on purpose stays usable.
    """
    base = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.join(base, *parts))
    if os.path.commonpath([base, path]) != base:
        raise AutosrError(
            f"{os.path.join(root, *parts)}: leaves the folder {root}; a name in the plans or dataset.json "
            "steps out of it: fix that name"
        )
    return Path(path)


def ensure_writable_folder(
    folder: Path, env_var: str | None = None, fix: str | None = None, create: bool = True
) -> Path:
    """Check that autosr can write into `folder`, by creating (and removing) a file in it.

    A real write, not `os.access`: it also sees read-only mounts, ACLs and network folders. With `create`
    the folder is made first; without, nothing is left behind: a missing folder is checked through the
    nearest existing folder above it (where it would be created). The error names the folder and the fix
    (`fix`, else pointing `env_var` elsewhere).
    """
    fix = fix or (f"fix its permissions or point {env_var} elsewhere" if env_var else "fix its permissions")
    probed = Path(folder)
    try:
        if create:
            probed.mkdir(parents=True, exist_ok=True)
        else:
            while not probed.is_dir() and probed.parent != probed:
                probed = probed.parent
        probe = probed / f".autosr-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except PermissionError as e:
        where = e.filename if e.filename and not str(e.filename).startswith(str(probed / ".autosr-")) else probed
        raise AutosrError(f"{where}: is not writable ({e.strerror}); {fix}") from e
    except OSError as e:
        if e.errno == errno.EROFS:
            raise AutosrError(f"{probed}: is not writable (read-only file system); {fix}") from e
        raise AutosrError(f"{folder}: cannot be created or written ({e.strerror or e}); {fix}") from e
    return Path(folder)
