"""`autosr distill DATASET -c CONFIG`: thin argparse layer over `autosr.training.distillation.api.distill`.

autosr distill 902 -c 3d_fullres                         # the student of folds 0-4, from the training cases
autosr distill 902 -c 3d_fullres --unpaired unpaired_3t/ # ... and from unpaired scans the teacher labels
autosr distill 902 -c 3d_fullres --from-scratch          # random weights instead of the first fold's
autosr predict -i scans/ -o out/ -d 902 -c 3d_fullres -f distilled
"""

from __future__ import annotations

import argparse

from autosr.commands.arguments import add_path_arguments, default_of, paths_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from autosr.model_layout import CHECKPOINT_NAMES
    from autosr.training.distillation.api import DistillationRequest
    from autosr.training.distillation.student import STUDENT_PLANS

    parser.add_argument("dataset", help="dataset id (901), name (Dataset901_Brain) or path")
    parser.add_argument(
        "-c", "--configuration", required=True, help="configuration of the trained model, e.g. 3d_fullres"
    )
    parser.add_argument(
        "-f", "--folds", nargs="+", type=int, default=list(default_of(DistillationRequest, "folds")),
        help="the teacher's folds (default: 0 1 2 3 4), ensembled with their test-time mirroring",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint", choices=CHECKPOINT_NAMES, default=default_of(DistillationRequest, "checkpoint"),
        help="which checkpoint of each teacher fold (default: final)",
    )  # fmt: skip
    trainer, plans = default_of(DistillationRequest, "trainer"), default_of(DistillationRequest, "plans_name")
    parser.add_argument("--trainer", default=trainer, help=f"trainer name of the model folder (default: {trainer})")
    parser.add_argument("--plans", default=plans, help=f"plans name of the model folder (default: {plans})")
    parser.add_argument(
        "--unpaired", metavar="DIR", default=None,
        help="a folder of <case>_<XXXX><ending> scans without targets: the teacher predicts them too and the student "
        "learns from those predictions as well",
    )  # fmt: skip
    parser.add_argument(
        "--student-plan", choices=STUDENT_PLANS, default=default_of(DistillationRequest, "student_plan"),
        help="the student's network: the planned one, or half the features per stage (default: planned)",
    )  # fmt: skip
    parser.add_argument(
        "--unpaired-share", type=float, default=None, metavar="SHARE",
        help="the share of the student's patches drawn from the unpaired scans, e.g. 0.25 (default: every cached "
        "case equally often)",
    )  # fmt: skip
    parser.add_argument(
        "--init-fold", type=int, default=None, metavar="FOLD",
        help="start the student from this teacher fold's weights (planned student only; default: the first teacher "
        "fold's)",
    )  # fmt: skip
    parser.add_argument(
        "--from-scratch", action="store_true",
        help="start the student from random weights instead of a teacher fold's (a half-width student always does)",
    )  # fmt: skip
    parser.add_argument(
        "--perturb-inputs", action="store_true",
        help="noisy student: degrade the student's inputs like another scanner's (linear bias field, noise); the "
        "target stays the teacher's prediction of the clean input",
    )  # fmt: skip
    parser.add_argument(
        "--no-unpaired-match", dest="match_unpaired", action="store_false",
        help="with --unpaired: do not degrade the paired inputs like the unpaired scans (by default their blur, noise "
        "and bias field against the training inputs are measured and half the paired patches get them)",
    )  # fmt: skip
    parser.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: CUDA, else MPS, else CPU)")
    parser.add_argument(
        "--continue", dest="continue_training", action="store_true",
        help="resume: cached teacher predictions are kept, the student continues from checkpoint_latest.pt",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default: the fixed 1000)")
    parser.add_argument(
        "--iters-per-epoch", type=int, default=None, help="student iterations per epoch (default: the fixed 250)"
    )
    parser.add_argument(
        "--num-workers", type=int, default=None,
        help="data loading processes (default: $AUTOSR_NUM_WORKERS, else CPU cores - 1, at most 12; 0 = none)",
    )  # fmt: skip
    add_path_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from autosr.training.distillation.api import DistillationRequest, distill

    request = DistillationRequest(
        dataset=args.dataset,
        configuration=args.configuration,
        folds=tuple(args.folds),
        checkpoint=args.checkpoint,
        trainer=args.trainer,
        plans_name=args.plans,
        unpaired_dir=args.unpaired,
        student_plan=args.student_plan,
        epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch,
        num_workers=args.num_workers,
        device=args.device,
        continue_training=args.continue_training,
        init_fold=args.init_fold,
        from_scratch=args.from_scratch,
        perturb_inputs=args.perturb_inputs,
        unpaired_share=args.unpaired_share,
        match_unpaired=args.match_unpaired,
    )
    folder = distill(request, paths_from_args(args))
    print(f"autosr distill: the student is in {folder}; predict with it: autosr predict ... -f distilled")
    return 0
