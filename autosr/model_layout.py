"""Where a trained model's files live: the one owner of the results layout.

    $AUTOSR_RESULTS/DatasetXXX_Name/
        <Trainer>__<plans>__<configuration>/           ModelFolder
            plans.json, dataset.json, fingerprint.json   copies, so a model folder predicts on its own
            fold_<k>/                                    FoldFolder (k = 0..4, or "all")
            fold_distilled/                              the student distilled from the folds (`autosr distill`):
                checkpoint_*.pt, training_log.txt, ...     like a fold's, plus
                teacher.json                             the teacher checkpoints' SHA-256 it was trained from
            distillation_cache/                          the teacher's predictions it learns from: teacher.json
                                                         (the teacher's checkpoints) and cases/ (preprocessed cases)
                checkpoint_final.pt, checkpoint_best.pt, checkpoint_latest.pt
                training_log.txt, progress.png
                .training.lock                           held by the one process training the fold
                preprocessed_data.json                   the preprocessed cases it was trained on (their identity)
                validation/                              the fold's validation predictions and their scores
            crossval_results/                            the folds' validation merged and scored
        ensembles/ensemble__<A>--<B>/                    find-best's pairwise ensembles (a crossval_results/ each)
        best.json, report.html

Every stage that reads or writes these paths asks this module instead of spelling them, so the layout can
change in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from autosr.paths import check_name, path_under

NAME_SEPARATOR = "__"
CHECKPOINT_NAMES = ("final", "best", "latest")
PLANNING_FILES = ("plans.json", "dataset.json", "fingerprint.json")
CROSSVAL_FOLDER = "crossval_results"
VALIDATION_FOLDER = "validation"
ENSEMBLES_FOLDER = "ensembles"
# the fold-like member `autosr distill` trains: `predict -f distilled` uses it alone
DISTILLED_FOLD = "distilled"
TEACHER_CACHE_FOLDER = "distillation_cache"


@dataclass(frozen=True)
class FoldFolder:
    """`fold_<k>/` of a model folder."""

    path: Path

    def checkpoint(self, which: str = "final") -> Path:
        """`checkpoint_<which>.pt`, `which` one of `CHECKPOINT_NAMES`."""
        if which not in CHECKPOINT_NAMES:
            raise ValueError(f"unknown checkpoint '{which}' (valid: {', '.join(CHECKPOINT_NAMES)})")
        return self.path / f"checkpoint_{which}.pt"

    @property
    def validation_dir(self) -> Path:
        return self.path / VALIDATION_FOLDER

    @property
    def log_file(self) -> Path:
        return self.path / "training_log.txt"

    @property
    def data_record_file(self) -> Path:
        """`preprocessed_data.json`: the identity of every preprocessed case this fold was trained on."""
        return self.path / "preprocessed_data.json"

    @property
    def progress_file(self) -> Path:
        return self.path / "progress.png"

    @property
    def lock_file(self) -> Path:
        """Held (autosr.io.locks) by the process training this fold, and removed when it stops."""
        return self.path / ".training.lock"

    @property
    def teacher_record_file(self) -> Path:
        """`teacher.json` of the distilled fold: which teacher checkpoints (SHA-256) its targets came from."""
        return self.path / "teacher.json"


@dataclass(frozen=True)
class ModelFolder:
    """`<Trainer>__<plans>__<configuration>/`: one trained model (its folds) of one dataset."""

    path: Path
    trainer: str
    plans_name: str
    configuration: str

    @staticmethod
    def folder_name(trainer: str, plans_name: str, configuration: str) -> str:
        """`<Trainer>__<plans_name>__<configuration>`, each part checked as a safe path component."""
        for value, what in ((trainer, "trainer"), (plans_name, "plans_name"), (configuration, "configuration")):
            check_name(value, what)
        return NAME_SEPARATOR.join((trainer, plans_name, configuration))

    @classmethod
    def create(
        cls, dataset_results_dir: str | os.PathLike, trainer: str, plans_name: str, configuration: str
    ) -> ModelFolder:
        """The model folder of these parts under a dataset's results folder (which it never leaves)."""
        name = cls.folder_name(trainer, plans_name, configuration)
        return cls(path_under(Path(dataset_results_dir), name), trainer, plans_name, configuration)

    @classmethod
    def parse(cls, path: str | os.PathLike) -> ModelFolder | None:
        """The model folder at `path` when its name has the three parts, else None."""
        path = Path(path)
        parts = path.name.split(NAME_SEPARATOR)
        if len(parts) != 3 or not all(parts):
            return None
        return cls(path, *parts)

    @classmethod
    def at(cls, path: str | os.PathLike) -> ModelFolder:
        """The layout of the model folder at `path`; its name parts are empty when the folder was renamed
        (`predict -m` accepts any name)."""
        return cls.parse(path) or cls(Path(path), "", "", "")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def plans_file(self) -> Path:
        return self.path / "plans.json"

    @property
    def dataset_file(self) -> Path:
        return self.path / "dataset.json"

    @property
    def crossval_dir(self) -> Path:
        return self.path / CROSSVAL_FOLDER

    def fold(self, fold: int | str) -> FoldFolder:
        return FoldFolder(self.path / f"fold_{fold}")

    @property
    def distilled(self) -> FoldFolder:
        """`fold_distilled/`: the student network distilled from the folds."""
        return self.fold(DISTILLED_FOLD)

    @property
    def teacher_cache_dir(self) -> Path:
        """`distillation_cache/`: the teacher ensemble's predictions, stored as preprocessed cases."""
        return self.path / TEACHER_CACHE_FOLDER

    def folds_with_validation(self, num_folds: int) -> list[int]:
        """Folds 0..num_folds-1 whose validation folder exists."""
        return [k for k in range(num_folds) if self.fold(k).validation_dir.is_dir()]

    def has_checkpoints(self) -> bool:
        """Whether any fold (numbered or "all") holds any checkpoint: something was trained in this folder."""
        return any(self.path.glob("fold_*/checkpoint_*.pt"))

    def folds_with_checkpoint(self, which: str = "final") -> list[int]:
        """The numbered folds that have checkpoint `which`, sorted."""
        found = []
        for p in self.path.glob(f"fold_*/checkpoint_{which}.pt"):
            number = p.parent.name.removeprefix("fold_")
            if number.isdigit():
                found.append(int(number))
        return sorted(found)


def model_folders(dataset_results_dir: str | os.PathLike) -> list[ModelFolder]:
    """Every model folder of a dataset's results folder, sorted by name."""
    folder = Path(dataset_results_dir)
    if not folder.is_dir():
        return []
    found = (ModelFolder.parse(p) for p in sorted(folder.iterdir()) if p.is_dir())
    return [m for m in found if m is not None]
