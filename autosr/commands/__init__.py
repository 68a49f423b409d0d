"""The command-line layer: one `<name>_command.py` per `autosr <name>` (registered in `autosr.cli.COMMANDS`),
each `add_arguments(parser)` and `run(args) -> int` over a stage's API module, and nothing else. Nothing
outside this package and `autosr.cli` imports it (documentation/architecture.md, "Layers").
"""
