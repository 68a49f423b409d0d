"""The prediction stage as a notebook calls it.

    from autosr.inference.api import predict, ensemble_folders
    from autosr.inference.settings import ModelSource

    predict("new_scans/", "predictions/", ModelSource(dataset=902, configuration="3d_fullres"))  # `autosr predict`
    ensemble_folders(["pred_3d/", "pred_2d/"], "pred_ensemble/")                              # `autosr ensemble`

`predict` finds the model folder, checks everything that can be checked before loading networks (folders,
checkpoints, input files; the options checked themselves when their objects were made, autosr/inference/
settings.py), loads the fold ensemble (`Predictor.from_trained`) and predicts the folder. `ensemble_folders` averages predictions of several configurations voxel by voxel, in the target's
units: the same cases on the same grids (`autosr predict` writes every configuration on the planned grid over
the input's extent, so one dataset's configurations line up); a mismatch is an error naming the case, nothing
is resampled silently, and the first folder's geometry is written unchanged. The command modules
(predict_command.py, ensemble_command.py) are thin argparse layers over these.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autosr.errors import AutosrError
from autosr.formats.dataset_spec import load_dataset_spec
from autosr.formats.plans import Plans
from autosr.inference.dicom_input import finish_series_run, series_as_images
from autosr.inference.folder import FolderSummary, discover_prediction_cases
from autosr.inference.model_folder import require_checkpoints
from autosr.inference.scan_summary import refuse_foreign_images
from autosr.inference.settings import FolderSettings, ModelSource, OpenedModel, PredictionSettings
from autosr.inference.student import with_student_mirroring
from autosr.io import Geometry, file_ending_of, read_image, write_image
from autosr.paths import AutosrPaths, ensure_writable_folder


def predict(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model: ModelSource,
    prediction: PredictionSettings | None = None,
    folder: FolderSettings | None = None,
    paths: AutosrPaths | None = None,
) -> FolderSummary:
    """Find the model (`model`: a folder, or a package unpacked for this run), load the fold ensemble and
    predict `input_dir` into `output_dir`: each scan as `prediction` says (default `PredictionSettings()`),
    the folder as `folder` says (default `FolderSettings()`). `paths` locate a dataset's model folder and,
    for the quality flags, its raw training cases (default: the AUTOSR_* environment variables).
    """
    check_folders(input_dir, output_dir)
    paths = paths or AutosrPaths.resolve()
    with model.opened(paths) as opened:
        return predict_opened(opened, input_dir, output_dir, prediction, folder, paths)


def predict_opened(
    opened: OpenedModel,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    prediction: PredictionSettings | None = None,
    folder: FolderSettings | None = None,
    paths: AutosrPaths | None = None,
) -> FolderSummary:
    """`predict` with a model already opened: a caller that reads the model first (`predict_bids`: its file
    ending, its identity) predicts inside the same `ModelSource.opened` block, so a package is unpacked and
    hashed once per run."""
    folder = folder or FolderSettings()
    paths = paths or AutosrPaths.resolve()
    spec_file = opened.model_dir / "dataset.json"
    ending = load_dataset_spec(opened.model_dir).file_ending if spec_file.is_file() else ".nii.gz"
    with series_as_images(input_dir, output_dir, ending, folder) as staged:  # a folder of DICOM series
        if staged is None:
            return _predict_folder(opened, input_dir, output_dir, prediction, folder, paths)
        summary = FolderSummary(skipped=list(staged.skipped))
        if not staged.empty:
            run = _predict_folder(opened, staged.input_dir, output_dir, prediction, staged.folder, paths)
            run.skipped = sorted(summary.skipped + run.skipped)
            summary = run
        finish_series_run(output_dir, staged, summary)
        return summary


def _predict_folder(
    opened: OpenedModel,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    prediction: PredictionSettings | None,
    folder: FolderSettings,
    paths: AutosrPaths,
) -> FolderSummary:
    from autosr.inference.predictor import Predictor

    check_before_loading(opened.model_dir, input_dir, opened.folds, opened.checkpoint)
    refuse_foreign_images(output_dir, load_dataset_spec(opened.model_dir).file_ending)
    ensure_writable_folder(Path(output_dir), fix="choose another -o, or fix the folder's permissions")
    prepare_qc_reference(opened.model_dir, paths, folder.progress)
    prediction = with_student_mirroring(opened.folds, prediction or PredictionSettings(), folder.uncertainty)
    predictor = Predictor.from_trained(
        opened.model_dir, opened.folds, opened.checkpoint, prediction, package=opened.package
    )
    return predictor.predict_folder(input_dir, output_dir, folder)


def check_folders(input_dir: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """The output folder must not be the input folder nor hold it: predictions (and their uncertainty/
    subfolder) would land among the inputs, and the next run would read a prediction named like
    `scan_0001.nii.gz` as channel 1 of a case `scan`, or predict a prediction. An output folder inside
    the input folder is fine: cases are only looked for in the input folder itself, not below it."""
    inputs, outputs = Path(input_dir).resolve(), Path(output_dir).resolve()
    if inputs == outputs:
        raise AutosrError(
            f"-o {output_dir} is the input folder: predictions would be mixed with the scans and read back as "
            "inputs; choose another -o (a new folder, or one beside the inputs)"
        )
    if outputs in inputs.parents:
        raise AutosrError(
            f"-i {input_dir} lies inside the output folder {output_dir}: predictions and their uncertainty/ folder "
            "are written there and could land among the inputs; choose another -o (one that does not hold the inputs)"
        )


def check_before_loading(model_dir: Path, input_dir: str | os.PathLike, folds: Sequence[int], checkpoint: str) -> None:
    """Fail in a second, before networks are built: missing checkpoints, an input folder with nothing to predict."""
    require_checkpoints(model_dir, list(folds), checkpoint)
    if not (model_dir / "dataset.json").is_file():
        raise AutosrError(
            f"{model_dir / 'dataset.json'}: missing; copy the dataset's dataset.json into the model folder"
        )
    spec = load_dataset_spec(model_dir)
    num_channels = Plans.load(model_dir / "plans.json").num_input_channels
    discover_prediction_cases(input_dir, spec.file_ending, num_channels)


def prepare_qc_reference(model_dir: Path, paths: AutosrPaths, progress: bool = True) -> None:
    """Measure the training cases for the quality flags once (cached in the model folder as qc_reference.json)
    when the folder has no current reference and the raw dataset is reachable; otherwise leave it."""
    from autosr.inference.model_folder import configuration_of
    from autosr.inference.qc import QCReference, reference_is_current
    from autosr.inference.qc_reference import ensure_reference
    from autosr.preprocessing.preprocess import preprocessing_hash

    plans = Plans.load(model_dir / "plans.json")
    configuration = configuration_of(model_dir, None, plans.configuration_names)
    if reference_is_current(QCReference.load(model_dir), configuration, preprocessing_hash(plans, configuration)):
        return
    raw = paths.raw / model_dir.parent.name if paths.raw is not None else None
    if raw is None or not (raw / "dataset.json").is_file() or not os.access(model_dir, os.W_OK):
        return
    print(
        f"autosr predict: measuring the training cases of {raw.name} for the quality flags (once; kept in {model_dir})"
    )
    ensure_reference(model_dir, raw, progress=progress)


def _prediction_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise AutosrError(f"{folder}: prediction folder not found")
    files = {}
    for p in sorted(folder.iterdir()):
        ending = file_ending_of(p)
        if p.is_file() and ending and not p.name.startswith("."):
            files[p.name] = p
    return files


def ensemble_folders(
    input_dirs: Sequence[str | os.PathLike], output_dir: str | os.PathLike, overwrite: bool = False
) -> list[str]:
    """Average each case over `input_dirs` into `output_dir` (same file name); returns the cases written."""
    folders = [Path(d) for d in input_dirs]
    if len(folders) < 2:
        raise AutosrError("ensembling needs at least two prediction folders")
    for folder in folders:
        if folder.resolve() == Path(output_dir).resolve():
            raise AutosrError(
                f"-o {output_dir} is one of the input folders: the averages would replace that model's predictions; "
                "choose another -o"
            )
    listings = [_prediction_files(f) for f in folders]
    names = set(listings[0])
    if not names:
        raise AutosrError(f"{folders[0]}: holds no predictions (image files)")
    problems = []
    for folder, listing in zip(folders[1:], listings[1:]):
        missing, extra = sorted(names - set(listing)), sorted(set(listing) - names)
        if missing:
            problems.append(f"{folder} lacks {', '.join(missing)} (present in {folders[0]})")
        if extra:
            problems.append(f"{folder} has {', '.join(extra)} which {folders[0]} lacks")
    if problems:
        raise AutosrError("the folders do not hold the same cases: " + "; ".join(problems))
    ensure_writable_folder(Path(output_dir), fix="choose another -o, or fix the folder's permissions")
    written = []
    for name in sorted(names):
        destination = Path(output_dir) / name
        if destination.is_file() and not overwrite:
            continue
        mean, geometry = average_images([listing[name] for listing in listings], name)
        write_image(mean, geometry, destination)
        written.append(name)
    return written


def average_images(files: Sequence[str | os.PathLike], case: str) -> tuple[np.ndarray, Geometry]:
    """The voxel-wise mean (float64 sum, float32 result) of images on one grid, and that grid; images on
    different grids are an error naming the case and both files."""
    total, geometry = read_image(files[0])
    total = total.astype(np.float64)
    for path in files[1:]:
        array, other = read_image(path)
        if not other.same_grid(geometry):
            raise AutosrError(
                f"case {case}: {path} is on a different grid ({other.describe()}, origin {other.origin_xyz}) than "
                f"{files[0]} ({geometry.describe()}, origin {geometry.origin_xyz}); ensemble predictions made on "
                "the same grid"
            )
        total += array
    return (total / len(files)).astype(np.float32), geometry
