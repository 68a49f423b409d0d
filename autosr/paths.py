"""Where raw datasets, preprocessed data and trained models live, and how a dataset is named.

Roots come from explicit arguments (CLI flags) first, then the environment variables `AUTOSR_RAW`,
`AUTOSR_PREPROCESSED` and `AUTOSR_RESULTS`. They are read once, when `AutosrPaths.resolve` is called, and
passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from autosr.errors import AutosrError

ENV_VARS = {"raw": "AUTOSR_RAW", "preprocessed": "AUTOSR_PREPROCESSED", "results": "AUTOSR_RESULTS"}
DATASET_NAME_PATTERN = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")
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
            return path.name
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


def dataset_id_of(name: str) -> int | None:
    """The numeric id of a `DatasetXXX_Name` folder name, else None."""
    match = DATASET_NAME_PATTERN.match(name)
    return int(match.group(1)) if match else None


def find_dataset_folder(identifier: str | int | os.PathLike, root: Path | None, which: str, env_var: str) -> Path:
    """Resolve an id, full name or path to an existing dataset folder under `root`."""
    text = str(identifier)
    as_path = Path(text).expanduser()
    if as_path.is_dir() and (os.sep in text or text.startswith(".")):
        return as_path.resolve()
    if root is None:
        raise AutosrError(f"the {which} folder is not set: export {env_var}=/path/to/{which} or pass --{which}")
    if not root.is_dir():
        raise AutosrError(f"the {which} folder {root} does not exist: create it or point {env_var} elsewhere")
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and DATASET_NAME_PATTERN.match(p.name))
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


def ensure_writable_folder(folder: Path, env_var: str) -> Path:
    """Create `folder` if needed and check it is writable; the error says which variable points at it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AutosrError(f"{folder}: cannot be created ({e}); fix the path or point {env_var} elsewhere") from e
    if not os.access(folder, os.W_OK):
        raise AutosrError(f"{folder}: is not writable; fix its permissions or point {env_var} elsewhere")
    return folder


def model_folder_name(trainer: str, plans_name: str, configuration: str) -> str:
    """`<Trainer>__<plans_name>__<configuration>`: one trained model under `$AUTOSR_RESULTS/DatasetXXX_Name/`."""
    return f"{trainer}__{plans_name}__{configuration}"
