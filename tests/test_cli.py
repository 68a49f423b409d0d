"""The CLI front door: help, the command registry, user errors as one message, the generated docs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from autosr.cli import COMMANDS, commands_markdown, main

DOC = Path(__file__).resolve().parents[1] / "documentation" / "commands.md"


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_every_registered_command_is_built():
    for name in COMMANDS:
        completed = subprocess.run(
            [sys.executable, "-m", "autosr.cli", name, "--help"], capture_output=True, text=True, check=False
        )
        assert completed.returncode == 0, (name, completed.stderr)
        assert "not built yet" not in completed.stdout + completed.stderr


def test_user_error_is_one_message_without_traceback(autosr_roots, capsys):
    assert main(["verify", "123"]) == 2
    err = capsys.readouterr().err
    assert "no dataset '123'" in err and "Traceback" not in err


def test_commands_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == commands_markdown(), (
        "documentation/commands.md is out of date: python -m autosr.cli --write-commands-doc documentation/commands.md"
    )


def test_a_real_import_error_keeps_its_traceback(monkeypatch):
    """An import that fails (a missing dependency, a checkout run without installing) is not dressed up as a
    command that does not exist: the ModuleNotFoundError reaches the user with its module name."""
    import pytest

    from autosr import cli

    monkeypatch.setitem(cli.COMMANDS, "broken", ("autosr.no_such_module_command", "a command whose module is gone"))
    with pytest.raises(ModuleNotFoundError, match="autosr.no_such_module_command"):
        main(["broken"])
