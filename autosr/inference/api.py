"""The prediction stage as a notebook calls it.

    from autosr.inference.api import predict, ensemble_folders

    predict("new_scans/", "predictions/", dataset=902, configuration="3d_fullres")   # what `autosr predict` runs
    ensemble_folders(["pred_3d/", "pred_2d/"], "pred_ensemble/")                   # what `autosr ensemble` runs

`predict` finds the model folder, checks everything that can be checked before loading networks (options,
folders, checkpoints, input files), loads the fold ensemble (`Predictor.from_trained`) and predicts the
folder. `ensemble_folders` averages predictions of several configurations voxel by voxel, in the target's
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
from autosr.inference.folder import FolderSummary, discover_prediction_cases, select_part
from autosr.inference.model_folder import locate_model_folder, require_checkpoints
from autosr.inference.sliding_window import DEFAULT_STEP_FRACTION
from autosr.io import Geometry, file_ending_of, read_image, write_image
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER, AutosrPaths, ensure_writable_folder


def predict(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    dataset: str | int | None = None,
    configuration: str | None = None,
    folds: Sequence[int] | None = None,
    trainer: str = DEFAULT_TRAINER,
    plans_name: str = DEFAULT_PLANS_NAME,
    checkpoint: str | None = None,
    step_fraction: float = DEFAULT_STEP_FRACTION,
    tile_batch_size: int | None = None,
    use_mirroring: bool = True,
    uncertainty: bool = False,
    device: str | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    overwrite: bool = False,
    on_input_grid: bool = False,
    model_dir: str | os.PathLike | None = None,
    paths: AutosrPaths | None = None,
    progress: bool = True,
    keep_background: bool = False,
    compile_networks: bool = False,
    model_package: str | os.PathLike | None = None,
    num_workers: int | None = None,
    sampling_steps: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    save_samples: bool = False,
) -> FolderSummary:
    """Find the model (folder, or a package unpacked for this run), load the fold ensemble and predict
    `input_dir` into `output_dir`. `folds`/`checkpoint` None: 0-4 and final, or the package's.

    `sampling_steps`, `num_samples`, `seed`, `save_samples` apply to generative models only (an error for
    a regression model, except `seed`, which it ignores).
    """
    from autosr.inference.predictor import Predictor

    check_options(step_fraction, tile_batch_size, num_parts, part_id)
    check_folders(input_dir, output_dir)
    if model_package is not None:
        if model_dir is not None or dataset is not None or configuration is not None:
            raise AutosrError("--model names the model by itself: leave out -d/-c and -m")
        from autosr.formats.package_reader import open_model_package

        with open_model_package(model_package) as package:
            return predict(
                input_dir,
                output_dir,
                folds=folds or package.manifest.folds,
                checkpoint=checkpoint or package.manifest.checkpoint,
                step_fraction=step_fraction,
                tile_batch_size=tile_batch_size,
                use_mirroring=use_mirroring,
                uncertainty=uncertainty,
                device=device,
                num_parts=num_parts,
                part_id=part_id,
                overwrite=overwrite,
                on_input_grid=on_input_grid,
                model_dir=package.model_dir,
                progress=progress,
                keep_background=keep_background,
                compile_networks=compile_networks,
                num_workers=num_workers,
                sampling_steps=sampling_steps,
                num_samples=num_samples,
                seed=seed,
                save_samples=save_samples,
            )
    folds = list(folds) if folds else [0, 1, 2, 3, 4]
    checkpoint = checkpoint or "final"
    if model_dir is None:
        if dataset is None or configuration is None:
            raise AutosrError("name the model: -d DATASET -c CONFIGURATION, or -m MODEL_FOLDER")
        model_dir = locate_model_folder(paths or AutosrPaths.resolve(), dataset, configuration, trainer, plans_name)
    model_dir = Path(model_dir)
    check_before_loading(model_dir, input_dir, folds, checkpoint)
    ensure_writable_folder(Path(output_dir), fix="choose another -o, or fix the folder's permissions")
    if model_package is None:
        prepare_qc_reference(model_dir, paths or AutosrPaths.resolve(), progress)
    predictor = Predictor.from_trained(
        model_dir,
        folds=list(folds),
        checkpoint=checkpoint,
        device=device,
        step_fraction=step_fraction,
        use_mirroring=use_mirroring,
        tile_batch_size=tile_batch_size,
        background_fill=not keep_background,
        compile_networks=compile_networks,
        sampling_steps=sampling_steps,
        num_samples=num_samples,
        seed=seed,
    )
    return predictor.predict_folder(
        input_dir,
        output_dir,
        overwrite=overwrite,
        num_parts=num_parts,
        part_id=part_id,
        uncertainty=uncertainty,
        on_input_grid=on_input_grid,
        progress=progress,
        num_workers=num_workers,
        save_samples=save_samples,
    )


def check_options(step_fraction: float, tile_batch_size: int | None, num_parts: int, part_id: int) -> None:
    """Numbers that would otherwise fail only after the model is loaded, or once per case."""
    if not 0 < step_fraction <= 1:
        raise AutosrError(f"--step-size must be in (0, 1], got {step_fraction}")
    if tile_batch_size is not None and tile_batch_size < 1:
        raise AutosrError(
            f"--tile-batch-size must be at least 1, got {tile_batch_size} (leave it out for the training batch size)"
        )
    select_part([], num_parts, part_id)  # checks --num-parts/--part-id


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
