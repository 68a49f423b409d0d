"""`autosr predict`: predict a folder of scans with a trained model's fold ensemble (the command-line layer
over `autosr.inference.api.predict`).

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
import sys

from autosr.commands.arguments import add_path_arguments, paths_from_args
from autosr.inference.api import predict
from autosr.inference.sampling import DEFAULT_SAMPLING_STEPS
from autosr.inference.sliding_window import DEFAULT_STEP_FRACTION
from autosr.model_layout import CHECKPOINT_NAMES
from autosr.paths import DEFAULT_PLANS_NAME, DEFAULT_TRAINER


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
    generative = parser.add_argument_group("generative models (DiffusionTrainer; documentation/diffusion.md)")
    generative.add_argument(
        "--sampling-steps", type=int, default=None,
        help=f"sampling steps per sample (default: the model's, {DEFAULT_SAMPLING_STEPS} for DiffusionTrainer); each "
        "step is one sliding window over the volume",
    )  # fmt: skip
    generative.add_argument(
        "--num-samples", type=int, default=None,
        help="samples per fold; the prediction is their mean (default: 1); with --uncertainty the spread is over "
        "samples x folds",
    )  # fmt: skip
    generative.add_argument(
        "--seed", type=int, default=0, help="seed of the noise volumes (default: 0; same seed, same predictions)"
    )
    generative.add_argument(
        "--save-samples", action="store_true",
        help="also write every sample to OUT/samples/<case>_sample<NN><ending> (fold-major)",
    )  # fmt: skip
    add_path_arguments(parser)


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
        sampling_steps=args.sampling_steps,
        num_samples=args.num_samples,
        seed=args.seed,
        save_samples=args.save_samples,
    )
    print(f"autosr predict: {summary.describe()}", file=sys.stderr if summary.failed else sys.stdout)
    return 0 if summary.ok else 1
