"""`autosr evaluate REF_DIR PRED_DIR ...`: the command-line face of `evaluate_folders`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from autosr.commands.arguments import default_of
from autosr.errors import AutosrError
from autosr.evaluation.normalization import NORMALIZATIONS
from autosr.evaluation.settings import MODALITIES, EvaluationSettings
from autosr.evaluation.structure_arguments import add_structure_arguments, structure_options_from_args
from autosr.io import read_json
from autosr.paths import ensure_writable_folder

DEFAULT_PROCESSES = min(4, os.cpu_count() or 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref_dir", help="reference images <case><ending> (e.g. a dataset's targetsTs/)")
    parser.add_argument("pred_dir", help="predictions <case><ending> on the reference grids")
    parser.add_argument(
        "--mask-dir",
        default=None,
        help="masks <case><ending>: the region that counts (default: each reference's foreground)",
    )
    parser.add_argument(
        "--input-dir",
        default=None,
        help="inputs <case>_0000<ending>: adds the no-learning baseline row and an input column to the pictures",
    )
    parser.add_argument(
        "--baseline-params",
        default=None,
        help="JSON with the baselines' parameters as summary.json's 'baseline' holds them (default: fitted on the "
        "evaluated cases)",
    )
    parser.add_argument(
        "--modality",
        default=default_of(EvaluationSettings, "modality"),
        choices=MODALITIES,
        help="target modality: picks the default normalization, data range and tissue model (default MR)",
    )
    parser.add_argument(
        "--normalization",
        default=default_of(EvaluationSettings, "normalization"),
        choices=NORMALIZATIONS,
        help="intensity normalization of both images before scoring (default: none for MR, ct_clip for CT)",
    )
    parser.add_argument(
        "--data-range",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=default_of(EvaluationSettings, "data_range"),
        help="fixed intensity interval for PSNR/SSIM (for CT: the HU window); default: the reference's p0.1-p99.9 inside the region (MR), [-1024, 3000] HU (CT)",
    )
    parser.add_argument(
        "--resample",
        action="store_true",
        help="resample predictions (B-spline) and masks/label maps (nearest) that are on another grid onto the reference grid",
    )
    parser.add_argument(
        "--seg-pred",
        default=None,
        metavar="DIR",
        help="label maps of the predictions <case><ending>, used instead of running --segmenter on them "
        "(with --reference-labels; adds seg_dice_<label> to cases.csv)",
    )
    add_structure_arguments(
        parser,
        "label maps <case><ending> on the reference grid, e.g. manual delineations, used as the reference "
        "of the structure agreement instead of segmenting the references (alias: --seg-ref)",
        cache=True,
    )
    parser.add_argument("--seg-ref", dest="reference_labels", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-pictures", action="store_true", help="skip the per-case PNGs")
    parser.add_argument("-o", "--output", default=None, help="output folder (default: PRED_DIR/evaluation)")
    parser.add_argument(
        "-np",
        "--num-processes",
        type=int,
        default=DEFAULT_PROCESSES,
        help=f"cases scored, and segmenter runs, in parallel (default {DEFAULT_PROCESSES})",
    )


def run(args: argparse.Namespace) -> int:
    from autosr.evaluation.evaluate import evaluate_folders
    from autosr.evaluation.report_text import summary_lines

    settings = EvaluationSettings(
        modality=args.modality, normalization=args.normalization, data_range=args.data_range, resample=args.resample
    )
    params = None
    if args.baseline_params is not None:
        if args.input_dir is None:
            raise AutosrError("--baseline-params needs --input-dir (the baseline is computed from the inputs)")
        path = Path(args.baseline_params)
        if not path.is_file():
            raise AutosrError(f"{path}: baseline parameters not found")
        params = read_json(path)
        if not isinstance(params, dict) or not {"a", "b"} <= set(params):
            raise AutosrError(f"{path}: must hold a JSON object with keys 'a' and 'b' (and optionally 'order')")
    out_dir = Path(args.output) if args.output else Path(args.pred_dir) / "evaluation"
    ensure_writable_folder(out_dir, fix="choose another -o, or fix the folder's permissions", create=False)
    _, summary = evaluate_folders(
        args.ref_dir,
        args.pred_dir,
        mask_dir=args.mask_dir,
        input_dir=args.input_dir,
        out_dir=out_dir,
        settings=settings,
        seg_ref_dir=args.reference_labels,
        seg_pred_dir=args.seg_pred,
        baseline_params=params,
        num_processes=max(1, args.num_processes),
        pictures=not args.no_pictures,
        structures=structure_options_from_args(args),
    )
    for line in summary_lines(summary):
        print(line)
    if summary.get("structure_agreement"):
        from autosr.evaluation.structure_evaluation import headline

        for line in headline(summary["structure_agreement"]):
            print(line)
    print(f"per-case table and summary.json{'' if args.no_pictures else ' and pictures'}: {out_dir}")
    return 0
