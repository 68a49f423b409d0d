"""`autosr <command>`: a thin argparse layer over functions a notebook can call with the same names.

Commands are listed in `COMMANDS`, an explicit registry from name to the module that implements it; each
module provides `add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their
command runs, so `autosr --help` is instant. A user-caused `AutosrError` prints as one message with exit
code 2; anything else keeps its traceback, because it is a bug.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from autosr import __version__
from autosr.errors import AutosrError

# name -> (implementing module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "verify": ("autosr.commands.verify_command", "check a raw dataset and list every problem"),
    "convert": ("autosr.commands.convert_command", "convert public layouts or generate synthetic data"),
    "register": ("autosr.commands.register_command", "co-register inputs to targets into a registered copy"),
    "plan": ("autosr.commands.plan_command", "verify, fingerprint, plan and preprocess a dataset"),
    "train": ("autosr.commands.train_command", "train one fold of one configuration"),
    "distill": ("autosr.commands.distill_command", "train one student network on the fold ensemble's predictions"),
    "predict": ("autosr.commands.predict_command", "predict a folder of scans with a trained model"),
    "provenance": ("autosr.commands.provenance_command", "say which model package made a predicted file"),
    "qc-reference": ("autosr.commands.qc_reference_command", "measure the training cases for per-scan quality flags"),
    "ensemble": ("autosr.commands.ensemble_command", "average predictions of several configurations"),
    "evaluate": ("autosr.commands.evaluate_command", "score predictions against references"),
    "segment-tissue": ("autosr.commands.segment_tissue_command", "csf/gm/wm tissue segmenter (built-in)"),
    "find-best": ("autosr.commands.find_best_command", "rank configurations and ensembles by cross-validation"),
    "export-model": ("autosr.commands.export_command", "write a trained model's package (zip with model card)"),
    "install-model": ("autosr.commands.install_command", "check a model package and install it under AUTOSR_RESULTS"),
    "stress-test": (
        "autosr.commands.stress_test_command",
        "perturb and lesion held-out scans: does the uncertainty predict the error",
    ),
    "report": ("autosr.commands.report_command", "write an offline HTML report of a dataset's results"),
    "demo": ("autosr.commands.demo_command", "generate a synthetic brain dataset and run the whole pipeline on it"),
}


def _load_command(name: str):
    """The command's module. Every registered command is built, so an import error is real (a missing
    dependency, a checkout run without installing) and keeps its traceback."""
    return importlib.import_module(COMMANDS[name][0])


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autosr",
        description="Self-configuring paired image-to-image translation for 3D medical volumes "
        "(plan -> train 5 folds -> predict with the fold ensemble -> evaluate).",
    )
    parser.add_argument("--version", action="version", version=f"autosr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _load_command(name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--write-commands-doc"] and len(argv) == 2:
        from autosr.io.atomic import atomic_path

        with atomic_path(argv[1]) as tmp:
            tmp.write_text(commands_markdown(), encoding="utf-8")
        return 0
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = _load_command(args.command)
    if hasattr(signal, "SIGXFSZ"):
        # past a file-size limit (ulimit -f) a write then fails with EFBIG, which the checked writes report as
        # one message, instead of the signal killing the process (CPython ignores it already; made explicit)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        code = module.run(args)
    except AutosrError as e:
        print(f"autosr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autosr {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return int(code or 0)


def commands_markdown() -> str:
    """documentation/commands.md: every command's `--help`, generated so the page cannot drift from the CLI.

    Regenerate with `python -m autosr.cli --write-commands-doc documentation/commands.md`; a test compares.
    """
    import os

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width; fix it for a stable page
    try:
        parts = [
            "# Commands\n",
            "Every command's `--help`, generated from the code (`python -m autosr.cli --write-commands-doc "
            "documentation/commands.md`). Folders default to `$AUTOSR_RAW`, `$AUTOSR_PREPROCESSED` and "
            "`$AUTOSR_RESULTS`; a dataset is named by id (`901`), full name (`Dataset901_Brain`) or path.\n",
        ]
        for name in COMMANDS:
            parser = build_parser(name)
            action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            sub = action.choices[name]
            parts.append(f"## autosr {name}\n\n```\n{sub.format_help().rstrip()}\n```\n")
            nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
            for kind_action in nested:
                for kind, kind_parser in kind_action.choices.items():
                    parts.append(f"### autosr {name} {kind}\n\n```\n{kind_parser.format_help().rstrip()}\n```\n")
        return "\n".join(parts)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


if __name__ == "__main__":
    sys.exit(main())
