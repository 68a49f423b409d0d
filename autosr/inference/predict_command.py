"""`autosr predict`: predict a folder of scans with a trained model's fold ensemble.

    autosr predict -i new_scans/ -o predictions/ -d 902 -c 3d_fullres -f 0 1 2 3 4
    autosr predict -i new_scans/ -o predictions/ -m $AUTOSR_RESULTS/Dataset902_Brain/Trainer__autosrPlans__3d_fullres
    autosr predict -i new_scans/ -o predictions/ --model brain_3d_fullres.zip      # a package from export-model

Besides the predictions, OUT/summary.csv holds one row per scan: timings, input geometry, the quality signals
and a `flag` with its reason (autosr/inference/qc.py).

The exit code is 0 when every case was predicted (or already done), 1 when some failed (they are listed
at the end), 2 for a problem that stopped the run before any case (no model, no input files).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from autosr.cli import add_path_arguments, paths_from_args
from autosr.dataset.spec import load_dataset_spec
from autosr.errors import AutosrError
from autosr.inference.folder import FolderSummary, discover_prediction_cases
from autosr.inference.model_folder import CHECKPOINT_NAMES, locate_model_folder, require_checkpoints
from autosr.inference.sliding_window import DEFAULT_STEP_FRACTION
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER, AutosrPaths
from autosr.planning.plans import Plans


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", required=True, help="folder of <case>_<XXXX><ending> input files")
    parser.add_argument("-o", "--output", required=True, help="folder the predictions are written to")
    parser.add_argument("-d", "--dataset", help="dataset id, name or folder (with -c; not needed with -m)")
    parser.add_argument("-c", "--configuration", help="configuration, e.g. 3d_fullres or 2d (with -d)")
    parser.add_argument("-m", "--model-dir", help="model folder <Trainer>__<plans>__<configuration> (instead of -d/-c)")
    parser.add_argument(
        "--model", dest="model_package", metavar="PACKAGE",
        help="a model package (.zip from `autosr export-model`), read directly (instead of -d/-c or -m)",
    )  # fmt: skip
    parser.add_argument(
        "-f", "--folds", nargs="+", type=int, default=None,
        help="folds to ensemble (default: 0 1 2 3 4; with --model, the package's folds)",
    )  # fmt: skip
    parser.add_argument(
        "--trainer", default=DEFAULT_TRAINER, help=f"trainer name in the model folder (default: {DEFAULT_TRAINER})"
    )
    parser.add_argument(
        "--plans", default=DEFAULT_PLANS_NAME, help=f"plans name in the model folder (default: {DEFAULT_PLANS_NAME})"
    )
    parser.add_argument(
        "--checkpoint", choices=CHECKPOINT_NAMES, default=None,
        help="which checkpoint of each fold (default: final; with --model, the package's)",
    )  # fmt: skip
    parser.add_argument(
        "--step-size", type=float, default=DEFAULT_STEP_FRACTION,
        help=f"sliding-window step as a fraction of the patch (default: {DEFAULT_STEP_FRACTION}; smaller = more overlap, slower)",
    )  # fmt: skip
    parser.add_argument(
        "--tile-batch-size", type=int, default=None,
        help="patches per forward pass, mirrored copies included (default: measured from free GPU memory; on a CPU "
        "the configuration's training batch size)",
    )  # fmt: skip
    parser.add_argument("--no-tta", action="store_true", help="no test-time mirroring (about 2**axes times faster)")
    parser.add_argument(
        "--uncertainty", action="store_true", help="also write the std over folds x mirrorings to OUT/uncertainty/"
    )
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: cuda, else mps, else cpu)")
    parser.add_argument(
        "--num-parts", type=int, default=1, help="split the cases into this many parts (one per machine)"
    )
    parser.add_argument("--part-id", type=int, default=0, help="which part this run predicts (0 .. num-parts - 1)")
    parser.add_argument("--overwrite", action="store_true", help="predict cases whose output already exists again")
    parser.add_argument(
        "--num-workers", type=int, default=None,
        help="processes that read, preprocess and export scans beside the network (default: $AUTOSR_NUM_WORKERS, "
        "else the CPU count - 1, at most 4; 0: everything in one process, one step after the other)",
    )  # fmt: skip
    parser.add_argument(
        "--on-input-grid", action="store_true",
        help="write predictions on each input's own grid instead of the planned spacing over its extent",
    )  # fmt: skip
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the networks first (a minute of compilation; pays when predicting many scans on a GPU)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-background", action="store_true",
        help="keep the network's raw output outside the subject (default: the training targets' background level "
        "outside the input's foreground grown by 2 voxels)",
    )  # fmt: skip
    add_path_arguments(parser)


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
) -> FolderSummary:
    """Find the model (folder, or a package unpacked for this run), load the fold ensemble and predict
    `input_dir` into `output_dir`. `folds`/`checkpoint` None: 0-4 and final, or the package's."""
    from autosr.inference.predictor import Predictor

    if not 0 < step_fraction <= 1:
        raise AutosrError(f"--step-size must be in (0, 1], got {step_fraction}")
    if model_package is not None:
        if model_dir is not None or dataset is not None or configuration is not None:
            raise AutosrError("--model names the model by itself: leave out -d/-c and -m")
        from autosr.packaging.install import open_model_package

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
            )
    folds = list(folds) if folds else [0, 1, 2, 3, 4]
    checkpoint = checkpoint or "final"
    if model_dir is None:
        if dataset is None or configuration is None:
            raise AutosrError("name the model: -d DATASET -c CONFIGURATION, or -m MODEL_FOLDER")
        model_dir = locate_model_folder(paths or AutosrPaths.resolve(), dataset, configuration, trainer, plans_name)
    model_dir = Path(model_dir)
    check_before_loading(model_dir, input_dir, folds, checkpoint)
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


def run(args: argparse.Namespace) -> int:
    summary = predict(
        args.input,
        args.output,
        dataset=args.dataset,
        configuration=args.configuration,
        folds=args.folds,
        trainer=args.trainer,
        plans_name=args.plans,
        checkpoint=args.checkpoint,
        step_fraction=args.step_size,
        tile_batch_size=args.tile_batch_size,
        use_mirroring=not args.no_tta,
        uncertainty=args.uncertainty,
        device=args.device,
        num_parts=args.num_parts,
        part_id=args.part_id,
        overwrite=args.overwrite,
        on_input_grid=args.on_input_grid,
        model_dir=args.model_dir,
        paths=paths_from_args(args),
        keep_background=args.keep_background,
        compile_networks=args.compile,
        model_package=args.model_package,
        num_workers=args.num_workers,
    )
    print(f"autosr predict: {summary.describe()}", file=sys.stderr if summary.failed else sys.stdout)
    return 0 if summary.ok else 1
