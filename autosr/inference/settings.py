"""The options of a prediction run, declared once: which model (`ModelSource`), how each scan is predicted
(`PredictionSettings`) and what a folder run writes (`FolderSettings`).

Three objects because the code has three places that consume options: finding and opening the model (before
anything is loaded), the `Predictor` (tiles, mirroring, the device, sampling; the same for one array, a case
or a folder), and the folder pipeline (which files are written, which cases are ours, how many workers).
Each is a frozen dataclass: a field's default is written here and nowhere else (the CLI reads its defaults
from these classes), each field is checked in `__post_init__` (one place says "step must be in (0, 1]"),
and a variant is `dataclasses.replace(settings, use_mirroring=False)`.

    from autosr.inference.api import predict
    from autosr.inference.settings import FolderSettings, ModelSource, PredictionSettings

    model = ModelSource(dataset=902, configuration="3d_fullres", folds=(0, 1, 2, 3, 4))
    predict("new_scans/", "predictions/", model, PredictionSettings(use_mirroring=False), FolderSettings(uncertainty=True))
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from autosr.errors import AutosrError
from autosr.formats.package_manifest import Manifest
from autosr.inference.sliding_window import DEFAULT_STEP_FRACTION
from autosr.inference.student import checked_folds
from autosr.model_layout import CHECKPOINT_NAMES
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER, AutosrPaths

# The folds a model is trained in and a prediction ensembles unless told otherwise.
ALL_FOLDS = (0, 1, 2, 3, 4)
DEFAULT_CHECKPOINT = "final"


@dataclass(frozen=True)
class PredictionSettings:
    """How each scan is predicted: the same for an array, a case and a folder, for every fold."""

    # sliding-window step as a fraction of the patch (smaller: more overlap, slower); the default's measurement
    # is written beside DEFAULT_STEP_FRACTION (sliding_window.py)
    step_fraction: float = DEFAULT_STEP_FRACTION
    # tiles per forward pass, mirrored copies included; None: measured from free GPU memory at the first
    # prediction (fast_path.measured_tile_batch_size), on a CPU the configuration's training batch size
    tile_batch_size: int | None = None
    # test-time mirroring over the axes training mirrored (2**axes passes per tile)
    use_mirroring: bool = True
    # the distilled student (-f distilled) mirrors too; off by default (autosr/inference/student.py)
    mirror_student: bool = False
    # outside the subject region (the input foreground grown by a margin) the training targets' background
    # level; False keeps the raw network output there
    background_fill: bool = True
    # torch.compile each network first (a minute of compilation; pays over many scans on a GPU)
    compile_networks: bool = False
    # "cuda", "cuda:1", "mps" or "cpu"; None: CUDA, else MPS, else CPU (autosr.device.choose_device)
    device: str | None = None
    # generative models only: steps per sample (None: the checkpoint's), samples per fold (None: 1), and
    # the seed of the noise volumes (same seed, same predictions; a regression model ignores it)
    sampling_steps: int | None = None
    num_samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.step_fraction <= 1:
            raise AutosrError(f"--step-size must be in (0, 1], got {self.step_fraction}")
        if self.tile_batch_size is not None and self.tile_batch_size < 1:
            raise AutosrError(
                f"--tile-batch-size must be at least 1, got {self.tile_batch_size} (leave it out for the "
                "training batch size)"
            )
        for flag, value in (("--sampling-steps", self.sampling_steps), ("--num-samples", self.num_samples)):
            if value is not None and value < 1:
                raise AutosrError(f"{flag} must be at least 1, got {value}")

    @property
    def generative_options_given(self) -> bool:
        """Options that only a generative model can use (an error for a regression model)."""
        return self.sampling_steps is not None or self.num_samples is not None


@dataclass(frozen=True)
class FolderSettings:
    """What a folder run writes, which cases are this run's, and how the work around the network runs."""

    # also write the per-voxel spread (folds x mirrorings, or x samples) to OUT/uncertainty/
    uncertainty: bool = False
    # a generative model's samples to OUT/samples/<case>_sample<NN><ending> (fold-major)
    save_samples: bool = False
    # write on each input's own grid instead of the planned spacing over its extent
    on_input_grid: bool = False
    # predict cases whose output already exists again (otherwise they are skipped: a run resumes)
    overwrite: bool = False
    # this run predicts every num_parts-th case starting at part_id (one part per machine)
    num_parts: int = 1
    part_id: int = 0
    # processes that read, preprocess and export beside the network; None: $AUTOSR_NUM_WORKERS, else the
    # CPU count - 1, at most 4 (pipeline.default_num_workers); 0: everything in this process
    num_workers: int | None = None
    progress: bool = True
    # case id -> the original files a case's provenance names as its inputs, where the files read are stand-ins
    # made for this run (a DICOM series converted to a temporary image, a BIDS scan linked into a working
    # folder): the sidecar is right when first written, so a run killed at any point leaves no record naming a
    # deleted file (a rerun skips the case as done). Cases not listed name the channel files read.
    input_sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_parts < 1:
            raise AutosrError(f"--num-parts must be at least 1, got {self.num_parts}")
        if not 0 <= self.part_id < self.num_parts:
            raise AutosrError(
                f"--part-id must be in 0 .. {self.num_parts - 1} (--num-parts {self.num_parts}), got {self.part_id}"
            )
        if self.num_workers is not None and self.num_workers < 0:
            raise AutosrError(f"--num-workers must be 0 or more, got {self.num_workers}")

    @property
    def part(self) -> str:
        """This run's part as summary.csv records it."""
        return f"{self.part_id}/{self.num_parts}"

    def inputs_of(self, case_id: str, files_read: Sequence[str | os.PathLike]) -> list[str]:
        """What the provenance of `case_id` names as its inputs: its original sources, else the files read."""
        return list(self.input_sources.get(case_id) or [str(p) for p in files_read])


@dataclass(frozen=True)
class PackageIdentity:
    """A model package as provenance names it: its file name and the SHA-256 of the whole zip (the identity of a
    package, documentation/model_packages.md), hashed once per run, when `ModelSource.opened` opens it."""

    name: str
    sha256: str

    @classmethod
    def of(cls, package: str | os.PathLike) -> PackageIdentity:
        from autosr.formats.package_archive import sha256_of

        return cls(Path(package).name, sha256_of(package))


@dataclass(frozen=True)
class OpenedModel:
    """A model ready to load: its folder, the folds and checkpoint to use, and when it came from a package the
    package's manifest and identity (then the folder is a temporary copy that lives as long as
    `ModelSource.opened`)."""

    model_dir: Path
    folds: tuple[int, ...]
    checkpoint: str
    manifest: Manifest | None = None
    package: PackageIdentity | None = None


@dataclass(frozen=True)
class ModelSource:
    """Which trained model: a dataset's model folder (`dataset` + `configuration`, with `trainer` and
    `plans_name`), a model folder by path (`model_dir`), or a model package (`package`, a zip from
    `autosr export-model`). `folds`/`checkpoint` None: 0-4 and final, or the package's."""

    dataset: str | int | None = None
    configuration: str | None = None
    trainer: str = DEFAULT_TRAINER
    plans_name: str = DEFAULT_PLANS_NAME
    model_dir: str | os.PathLike | None = None
    package: str | os.PathLike | None = None
    folds: tuple[int | str, ...] | None = None  # numbers, or ("distilled",): the student
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.folds is not None:
            object.__setattr__(self, "folds", checked_folds(self.folds))
        if self.package is not None and (
            self.model_dir is not None or self.dataset is not None or self.configuration is not None
        ):
            raise AutosrError("--model names the model by itself: leave out -d/-c and -m")
        if self.package is None and self.model_dir is None and (self.dataset is None or self.configuration is None):
            raise AutosrError("name the model: -d DATASET -c CONFIGURATION, or -m MODEL_FOLDER")
        if self.checkpoint is not None and self.checkpoint not in CHECKPOINT_NAMES:
            raise AutosrError(f"unknown checkpoint '{self.checkpoint}' (choose one of {', '.join(CHECKPOINT_NAMES)})")

    @contextmanager
    def opened(self, paths: AutosrPaths | None = None) -> Iterator[OpenedModel]:
        """The model folder to load, with the folds and checkpoint resolved; a package is unpacked (checked
        member by member) into a temporary folder that is removed when the block ends."""
        if self.package is not None:
            from autosr.formats.package_reader import open_model_package

            with open_model_package(self.package) as package:  # checked first: a missing file is one message
                identity = PackageIdentity.of(self.package)
                yield OpenedModel(
                    Path(package.model_dir),
                    tuple(self.folds or package.manifest.folds),
                    self.checkpoint or package.manifest.checkpoint,
                    package.manifest,
                    identity,
                )
            return
        if self.model_dir is not None:
            model_dir = Path(self.model_dir)
        else:
            from autosr.inference.model_folder import locate_model_folder

            model_dir = locate_model_folder(
                paths or AutosrPaths.resolve(), self.dataset, self.configuration, self.trainer, self.plans_name
            )
        yield OpenedModel(model_dir, self.folds or ALL_FOLDS, self.checkpoint or DEFAULT_CHECKPOINT)
