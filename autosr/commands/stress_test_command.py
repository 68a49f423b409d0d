"""`autosr stress-test DATASET -c CONFIGURATION -o DIR`: perturbed and lesioned held-out scans predicted by a
trained ensemble, and whether its uncertainty, intervals and flags predict its errors.

    autosr stress-test 902 -c 3d_fullres -o stress/               # every held-out case, folds 0-4
    autosr stress-test 902 -c 2d -f 0 1 2 -o stress/ --max-cases 2

Writes DIR/stress.json, stress.csv (case x perturbation), lesions.csv and pictures/, and the clean cases'
calibration (expected error, 90% interval) into the model folder's calibration.json, which `autosr predict
--uncertainty` with the same folds, checkpoint, mirroring and step then uses (documentation/trust.md).
"""

from __future__ import annotations

import argparse

from autosr.commands.arguments import add_path_arguments, default_of, paths_from_args
from autosr.commands.model_arguments import add_ensemble_arguments
from autosr.evaluation.stress.api import StressSettings
from autosr.inference.settings import ModelSource
from autosr.model_layout import CHECKPOINT_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset id, name or folder (its raw imagesTs/targetsTs are stressed)")
    parser.add_argument("-c", "--configuration", required=True, help="configuration, e.g. 3d_fullres or 2d")
    parser.add_argument("-o", "--output", required=True, help="folder for stress.json, the tables and pictures")
    parser.add_argument(
        "-f", "--folds", nargs="+", type=int, default=None, help="folds to ensemble (default: 0 1 2 3 4)"
    )
    trainer, plans = default_of(ModelSource, "trainer"), default_of(ModelSource, "plans_name")
    parser.add_argument("--trainer", default=trainer, help=f"trainer name in the model folder (default: {trainer})")
    parser.add_argument("--plans", default=plans, help=f"plans name in the model folder (default: {plans})")
    parser.add_argument(
        "--checkpoint", choices=CHECKPOINT_NAMES, default=None, help="which checkpoint of each fold (default: final)"
    )
    parser.add_argument(
        "--max-cases", type=int, default=default_of(StressSettings, "max_cases"),
        help="stress at most this many cases, the first in sorted order (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=default_of(StressSettings, "seed"),
        help="seed of the perturbations and lesion places (default: 0; the same seed, the same scans)",
    )  # fmt: skip
    parser.add_argument("--no-pictures", action="store_true", help="write the tables and stress.json only")
    parser.add_argument(
        "--no-calibration", action="store_true",
        help="do not store the clean cases' calibration in the model folder (it is measured all the same)",
    )  # fmt: skip
    add_ensemble_arguments(parser)
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autosr.evaluation.stress.api import run_stress_test
    from autosr.inference.settings import PredictionSettings
    from autosr.paths import ensure_writable_folder

    paths = paths_from_args(args)
    raw = paths.raw_dataset(args.dataset)
    model = ModelSource(
        dataset=raw.name,
        configuration=args.configuration,
        trainer=args.trainer,
        plans_name=args.plans,
        folds=args.folds,
        checkpoint=args.checkpoint,
    )
    prediction = PredictionSettings(step_fraction=args.step_size, use_mirroring=not args.no_tta, device=args.device)
    settings = StressSettings(
        max_cases=args.max_cases,
        seed=args.seed,
        pictures=not args.no_pictures,
        store_calibration=not args.no_calibration,
    )
    ensure_writable_folder(Path(args.output), fix="choose another -o, or fix the folder's permissions")
    summary = run_stress_test(raw, model, args.output, prediction, settings, paths)
    print(f"stress test of {len(summary['cases'])} case(s) written to {args.output}")
    for key in (
        "uncertainty_error_spearman", "sparsification_ratio", "sparsification_error_ratio", "interval_coverage",
        "interval_coverage_perturbed",
        "flag_auroc", "flag_score_auroc", "input_shift_auroc", "expected_error_auroc",
    ):  # fmt: skip
        value = summary.get(key)
        print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0
