"""The distilled student (`autosr distill`) as prediction sees it: `-f distilled` names it, it predicts alone,
and without test-time mirroring unless asked.

The student was trained on the fold ensemble's mirrored average, so one pass already carries what the eight
mirrorings bought the teacher; mirroring it again costs 8x for a small change (documentation/benchmark.md,
"Distillation"). `--tta` (`PredictionSettings.mirror_student`) turns it back on, and `--uncertainty` does too:
the student's uncertainty is the spread of its mirrorings, the only spread one network has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from autosr.errors import AutosrError
from autosr.model_layout import DISTILLED_FOLD


def fold_name(text: str) -> int | str:
    """A fold as the command line names it: a number, or `distilled` (argparse `type`)."""
    if str(text).strip() == DISTILLED_FOLD:
        return DISTILLED_FOLD
    try:
        return int(text)
    except ValueError:
        raise AutosrError(f"-f {text}: a fold is a number (0-4) or '{DISTILLED_FOLD}'") from None


def checked_folds(folds: Sequence[int | str]) -> tuple[int | str, ...]:
    """The folds as numbers, or the student alone; mixing the student with folds is refused (it learned the
    folds' average: averaging it with them again only weighs them twice)."""
    named = tuple(fold_name(f) if isinstance(f, str) else int(f) for f in folds)
    if DISTILLED_FOLD in named and len(named) > 1:
        raise AutosrError(
            f"-f {' '.join(map(str, named))}: the distilled student predicts alone (-f {DISTILLED_FOLD}); "
            "give it without the numbered folds, or the numbered folds without it"
        )
    return named


def is_student(folds: Sequence[Any] | None) -> bool:
    """Whether `folds` name the distilled student."""
    return folds is not None and tuple(folds) == (DISTILLED_FOLD,)


def with_student_mirroring(folds: Sequence[Any] | None, settings, uncertainty: bool):
    """`settings` (a `PredictionSettings`) with mirroring forced on for a student whose uncertainty is asked for:
    one network's spread is that of its mirrorings."""
    if is_student(folds) and uncertainty and not settings.mirror_student:
        return replace(settings, mirror_student=True)
    return settings
