"""`autosr predict`: predict a folder of scans with a trained model's fold ensemble (the command-line layer
over `autosr.inference.api.predict`).

    autosr predict -i new_scans/ -o predictions/ -d 902 -c 3d_fullres -f 0 1 2 3 4
    autosr predict -i new_scans/ -o predictions/ -m $AUTOSR_RESULTS/Dataset902_Brain/Trainer__autosrPlans__3d_fullres
    autosr predict -i new_scans/ -o predictions/ --model brain_3d_fullres.zip      # a package from export-model
    autosr predict --bids study/ --bids-filter 'ses=3T,suffix=T1w' --model brain.zip  # study/derivatives/autosr/

Besides the predictions, OUT/summary.csv holds one row per scan: timings, input geometry, the quality signals
and a `flag` with its reason (autosr/inference/qc.py), and each prediction has a provenance sidecar
`<case>.json` (autosr/inference/provenance.py; `autosr provenance FILE` prints it).

The exit code is 0 when every case was predicted (or already done), 1 when some failed (they are listed
at the end), 2 for a problem that stopped the run before any case (no model, no input files).
"""

from __future__ import annotations

import argparse
import sys

from autosr.commands.arguments import add_path_arguments, default_of, paths_from_args
from autosr.commands.model_arguments import add_ensemble_arguments, add_model_arguments, model_source_from_args
from autosr.errors import AutosrError
from autosr.inference.api import predict
from autosr.inference.sampling import DEFAULT_SAMPLING_STEPS
from autosr.inference.settings import FolderSettings, PredictionSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i", "--input",
        help="folder of <case>_<XXXX><ending> input files, or of DICOM series (one scan per series); or use --bids",
    )  # fmt: skip
    parser.add_argument(
        "-o", "--output",
        help="folder the predictions are written to (required with -i; with --bids default BIDS_DIR/derivatives/autosr)",
    )  # fmt: skip
    add_bids_arguments(parser)
    add_model_arguments(parser, package=True)
    add_prediction_arguments(parser)
    add_folder_arguments(parser)
    add_path_arguments(parser)


def add_bids_arguments(parser: argparse.ArgumentParser) -> None:
    """A BIDS dataset in, a BIDS derivatives dataset out (autosr/inference/bids_outputs.py)."""
    parser.add_argument(
        "--bids", metavar="BIDS_DIR",
        help="predict the anatomical scans of this BIDS dataset (needs pybids: pip install 'autosr[bids]') into a BIDS "
        "derivatives dataset with provenance sidecars (instead of -i)",
    )  # fmt: skip
    parser.add_argument(
        "--bids-filter", metavar="ENTITY=VALUE,...",
        help="which scans of --bids: BIDS entities, e.g. 'session=3T,suffix=T1w' or 'ses=3T,acq=mprage' (default: "
        "every anat image in the model's file ending)",
    )  # fmt: skip


def add_prediction_arguments(parser: argparse.ArgumentParser) -> None:
    """How each scan is predicted (`PredictionSettings`)."""
    add_ensemble_arguments(parser)
    parser.add_argument(
        "--tile-batch-size", type=int, default=default_of(PredictionSettings, "tile_batch_size"),
        help="patches per forward pass, mirrored copies included (default: measured from free GPU memory; on a CPU "
        "the configuration's training batch size)",
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
    generative = parser.add_argument_group("generative models (DiffusionTrainer; documentation/diffusion.md)")
    generative.add_argument(
        "--sampling-steps", type=int, default=default_of(PredictionSettings, "sampling_steps"),
        help=f"sampling steps per sample (default: the model's, {DEFAULT_SAMPLING_STEPS} for DiffusionTrainer); each "
        "step is one sliding window over the volume",
    )  # fmt: skip
    generative.add_argument(
        "--num-samples", type=int, default=default_of(PredictionSettings, "num_samples"),
        help="samples per fold; the prediction is their mean (default: 1); with --uncertainty the spread is over "
        "samples x folds",
    )  # fmt: skip
    seed = default_of(PredictionSettings, "seed")
    generative.add_argument(
        "--seed",
        type=int,
        default=seed,
        help=f"seed of the noise volumes (default: {seed}; same seed, same predictions)",
    )
    generative.add_argument(
        "--save-samples", action="store_true",
        help="also write every sample to OUT/samples/<case>_sample<NN><ending> (fold-major)",
    )  # fmt: skip


def add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """What the folder run writes and which cases are this run's (`FolderSettings`)."""
    parser.add_argument(
        "--uncertainty", action="store_true", help="also write the std over folds x mirrorings to OUT/uncertainty/"
    )
    parser.add_argument(
        "--num-parts", type=int, default=default_of(FolderSettings, "num_parts"),
        help="split the cases into this many parts (one per machine)",
    )  # fmt: skip
    parser.add_argument(
        "--part-id", type=int, default=default_of(FolderSettings, "part_id"),
        help="which part this run predicts (0 .. num-parts - 1)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="predict cases whose output already exists again")
    parser.add_argument(
        "--num-workers", type=int, default=default_of(FolderSettings, "num_workers"),
        help="processes that read, preprocess and export scans beside the network (default: $AUTOSR_NUM_WORKERS, "
        "else the CPU count - 1, at most 4; 0: everything in one process, one step after the other)",
    )  # fmt: skip
    parser.add_argument(
        "--on-input-grid", action="store_true",
        help="write predictions on each input's own grid instead of the planned spacing over its extent",
    )  # fmt: skip


def prediction_settings(args: argparse.Namespace) -> PredictionSettings:
    return PredictionSettings(
        step_fraction=args.step_size,
        tile_batch_size=args.tile_batch_size,
        use_mirroring=not args.no_tta,
        mirror_student=args.tta,
        background_fill=not args.keep_background,
        compile_networks=args.compile,
        device=args.device,
        sampling_steps=args.sampling_steps,
        num_samples=args.num_samples,
        seed=args.seed,
    )


def folder_settings(args: argparse.Namespace) -> FolderSettings:
    return FolderSettings(
        uncertainty=args.uncertainty,
        save_samples=args.save_samples,
        on_input_grid=args.on_input_grid,
        overwrite=args.overwrite,
        num_parts=args.num_parts,
        part_id=args.part_id,
        num_workers=args.num_workers,
    )


def run(args: argparse.Namespace) -> int:
    if args.bids is not None:
        if args.input is not None:
            raise AutosrError("give either -i (a folder of scans) or --bids (a BIDS dataset), not both")
        from autosr.inference.bids_outputs import BidsQuery, predict_bids

        summary = predict_bids(
            args.bids,
            model_source_from_args(args),
            BidsQuery.parse(args.bids_filter),
            args.output,
            prediction_settings(args),
            folder_settings(args),
            paths_from_args(args),
        )
    else:
        if args.input is None or args.output is None:
            raise AutosrError(
                "name the scans and where the predictions go: -i INPUT_FOLDER -o OUTPUT_FOLDER (or --bids)"
            )
        if args.bids_filter is not None:
            raise AutosrError("--bids-filter selects scans of a BIDS dataset: use it with --bids")
        summary = predict(
            args.input,
            args.output,
            model_source_from_args(args),
            prediction_settings(args),
            folder_settings(args),
            paths_from_args(args),
        )
    print(f"autosr predict: {summary.describe()}", file=sys.stderr if summary.failed else sys.stdout)
    return 0 if summary.ok else 1
