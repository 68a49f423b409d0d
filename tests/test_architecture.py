"""The import contract (.importlinter, drawn in documentation/architecture.md "Layers") is checked by the real
tool, holds on this tree, fails on a copy with one upward import, and names every package of autosr."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    # the tree's own autosr comes first on sys.path (before the editable install's finder)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def _layers() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    rows = config["importlinter:contract:layers"]["layers"].split("\n")
    return [name.strip() for row in rows for name in row.split("|") if name.strip()]


def _copy_tree(destination: Path) -> Path:
    shutil.copytree(ROOT / "autosr", destination / "autosr", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(ROOT / ".importlinter", destination / ".importlinter")
    return destination


def test_the_contract_holds_on_this_tree():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward_import"),
    [
        # a lower package importing a higher one at the top of a module
        ("formats/plans.py", "from autosr.planning import planner  # noqa"),
        # the same hidden inside a function counts too
        ("imaging/foreground.py", "def _hidden():\n    from autosr.preprocessing import preprocess  # noqa"),
        # a stage importing a command module
        ("inference/api.py", "from autosr.commands import predict_command  # noqa"),
    ],
)
def test_one_upward_import_breaks_the_contract(tmp_path, module, upward_import):
    tree = _copy_tree(tmp_path)
    path = tree / "autosr" / module
    path.write_text(path.read_text() + "\n\n" + upward_import + "\n")
    result = _lint_imports(tree)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout


def test_every_package_of_autosr_has_a_row():
    rows = set(_layers())
    children = {
        f"autosr.{p.stem if p.is_file() else p.name}"
        for p in (ROOT / "autosr").iterdir()
        if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.name != "__init__.py")
    }
    assert children - rows == set(), "add these to .importlinter and to documentation/architecture.md"
    assert rows - children == set(), "rows of .importlinter naming no package"
    picture = (ROOT / "documentation" / "architecture.md").read_text()
    missing = [name for name in rows if name.removeprefix("autosr.") not in picture]
    assert not missing, missing
