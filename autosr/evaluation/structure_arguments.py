"""The command-line options of structure agreement, shared by `autosr evaluate` and `autosr find-best`."""

from __future__ import annotations

import argparse

from autosr.evaluation.structure_evaluation import StructureOptions, structure_options


def add_structure_arguments(parser: argparse.ArgumentParser, reference_labels_help: str, cache: bool = False) -> None:
    group = parser.add_argument_group("structure agreement (documentation/evaluation.md)")
    group.add_argument(
        "--segmenter",
        default=None,
        metavar="CMD|FILE.json|builtin",
        help="segmentation command run on the prediction, the reference and the input resampled onto the "
        'reference grid, e.g. "mri_synthseg --i {input} --o {output}" (placeholders {input} {output} '
        "{case} {mask}; split like a shell line but run without a shell); or a JSON file "
        '{"command": ..., "name": ..., "label_names": LUT, "structures": [...]}; or builtin '
        "(autosr segment-tissue)",
    )
    group.add_argument(
        "--reference-labels", dest="reference_labels", default=None, metavar="DIR", help=reference_labels_help
    )
    group.add_argument(
        "--label-names",
        default=None,
        metavar="LUT",
        help="names of the label values: a lookup table in FreeSurfer's format ('value name R G B A' lines)",
    )
    group.add_argument(
        "--structures",
        type=int,
        nargs="+",
        default=None,
        metavar="LABEL",
        help="label values to score (default: every label found; with reference labels, the labels they hold)",
    )
    if cache:
        group.add_argument(
            "--segmentation-cache",
            default=None,
            metavar="DIR",
            help="where the segmentations of references and inputs are kept and reused, e.g. shared between "
            "evaluations of several models (default: OUTPUT/segmentations)",
        )


def structure_options_from_args(args: argparse.Namespace) -> StructureOptions | None:
    """The options the flags give, or None when no structure option was given."""
    if args.segmenter is None and args.label_names is None and args.structures is None:
        return None
    return structure_options(
        args.segmenter, args.label_names, args.structures, getattr(args, "segmentation_cache", None)
    )
