"""Errors a user can cause and fix.

The CLI prints an `AutosrError` as one message with exit code 2 and no traceback; anything else is a bug
and keeps its traceback. Messages name the offending file or case and say what to do about it.
"""

from __future__ import annotations


class AutosrError(Exception):
    """A problem with the user's input, data or setup, described so that they can fix it."""


class DatasetProblems(AutosrError):
    """Several dataset problems found in one pass, reported together (one per line)."""

    def __init__(self, problems: list[str], header: str = "the dataset has problems"):
        self.problems = list(problems)
        lines = [f"{header} ({len(self.problems)}):"] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class ImageFileProblem(AutosrError):
    """An image file that cannot be used as it is: `problem` says what is wrong, `fix` what to do.

    Kept apart so that callers listing many problems (verification) can phrase them per case."""

    def __init__(self, path: object, problem: str, fix: str):
        self.path, self.problem, self.fix = path, problem, fix
        super().__init__(f"{path}: {problem}; {fix}")

    def __reduce__(self):  # picklable with its fields: it crosses from prediction worker processes
        return (type(self), (self.path, self.problem, self.fix))


class FileWriteError(AutosrError):
    """A file that could not be written completely (the disk is full, a file-size limit is set): nothing was
    left under its name. `problem` says what went wrong.

    Picklable with its fields (it crosses from prediction worker processes to the main one)."""

    FIX = (
        "the disk is full or a file-size limit is set (ulimit -f): free space or raise the limit, "
        "then run the same command again"
    )

    def __init__(self, path: object, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: could not be written completely ({problem}); {self.FIX}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem))
