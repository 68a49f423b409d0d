"""`autosr convert <kind> ...`: build a raw dataset from a public layout, or generate a synthetic one.

Kinds: `bids` (paired sessions/acquisitions of a BIDS tree), `synthrad` (SynthRAD MR/CBCT -> CT),
`synthetic-brain` (MNI152-based low-field -> high-field brains, needs the `demo` extra) and `phantom`
(procedural ellipsoid heads for smoke tests). Each writes `$AUTOSR_RAW/DatasetXXX_Name/`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from autosr.commands.arguments import add_path_arguments, paths_from_args


def _add_common(parser: argparse.ArgumentParser, default_name: str | None) -> None:
    parser.add_argument(
        "--name", default=default_name, required=default_name is None, help="dataset name (DatasetXXX_<name>)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset folder of that id and name"
    )
    parser.add_argument(
        "--register",
        nargs="?",
        const="rigid",
        choices=("rigid", "affine"),
        default=None,
        help="then co-register every pair (`autosr register` with this transform, rigid when none is named) "
        "into a registered copy beside the converted dataset",
    )
    add_path_arguments(parser)


def _add_misalign(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--misalign",
        nargs=2,
        type=float,
        metavar=("MM", "DEG"),
        default=None,
        help="displace every input by a known rigid transform: MM mm in a random direction and DEG degrees "
        "about a random axis (listed in misalignment.json), to test and benchmark registration",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    bids = kinds.add_parser("bids", help="pair two sessions or acquisitions of a BIDS dataset")
    bids.add_argument("bids_root", help="BIDS dataset folder (holding sub-*/)")
    bids.add_argument("--id", type=int, required=True, help="dataset id (0-999)")
    bids.add_argument("--suffix", required=True, help="BIDS suffix of the images to pair, e.g. T1w")
    bids.add_argument("--input-session", default=None, help="session label of the input, e.g. 3T")
    bids.add_argument("--target-session", default=None, help="session label of the target, e.g. 7T")
    bids.add_argument("--input-acq", default=None, help="acquisition label of the input")
    bids.add_argument("--target-acq", default=None, help="acquisition label of the target")
    bids.add_argument("--mask-suffix", default=None, help="suffix of mask files in the target session, e.g. mask")
    bids.add_argument("--datatype", default="anat", help="BIDS datatype folder (default anat)")
    bids.add_argument("--target-modality", default="MR", help="MR (default), CT or other")
    bids.add_argument("--file-ending", default=".nii.gz", help="file ending of the written dataset (default .nii.gz)")
    _add_common(bids, None)

    synthrad = kinds.add_parser("synthrad", help="SynthRAD <region>/<case>/{mr|cbct,ct,mask} -> CT dataset")
    synthrad.add_argument("synthrad_root", help="SynthRAD folder (holding region folders, or one region)")
    synthrad.add_argument("--id", type=int, required=True, help="dataset id (0-999)")
    synthrad.add_argument("--input", choices=("mr", "cbct"), default="mr", help="input image (default mr)")
    synthrad.add_argument(
        "--file-ending", default=".nii.gz", help="file ending of the written dataset (default .nii.gz)"
    )
    _add_common(synthrad, "SynthRAD")

    brain = kinds.add_parser(
        "synthetic-brain", help="synthetic low-field -> high-field brains from MNI152 (needs autosr[demo])"
    )
    brain.add_argument("id", type=int, help="dataset id (0-999)")
    brain.add_argument("--num-train", type=int, default=20, help="training cases (default 20)")
    brain.add_argument("--num-test", type=int, default=4, help="test cases (default 4)")
    brain.add_argument("--target-spacing", type=float, default=2.0, help="target voxel size in mm (default 2)")
    brain.add_argument(
        "--input-spacing", type=float, default=None, help="input voxel size in mm (default 1.5 x target)"
    )
    brain.add_argument(
        "--slice-thickness",
        type=float,
        default=None,
        help="make the input a thick-slice acquisition: slices this thick (mm) along --slice-axis, each averaging "
        "the signal over its thickness; --input-spacing is then the in-plane voxel size",
    )
    brain.add_argument(
        "--slice-axis", type=int, choices=(0, 1, 2), default=0, help="axis of the thick slices: 0 z (default), 1 y, 2 x"
    )
    brain.add_argument(
        "--contrast", choices=("low-field", "same"), default="low-field",
        help="input contrast: low-field-like with a bias field (default; contrast synthesis too) or the target's "
        "(resolution enhancement alone)",
    )  # fmt: skip
    brain.add_argument("--seed", type=int, default=0, help="random seed; a seed always gives the same dataset")
    brain.add_argument(
        "--tissue-labels",
        action="store_true",
        help="also write the true tissue label maps (1 csf, 2 gm, 3 wm) to labelsTr/ and labelsTs/",
    )
    brain.add_argument(
        "-np", "--num-processes", type=int, default=max(1, min(4, os.cpu_count() or 1)), help="worker processes"
    )
    _add_misalign(brain)
    _add_common(brain, "SyntheticBrain")

    phantom = kinds.add_parser("phantom", help="procedural ellipsoid-head phantom pairs (seconds, for smoke tests)")
    phantom.add_argument("id", type=int, help="dataset id (0-999)")
    phantom.add_argument("--num-train", type=int, default=6, help="training cases (default 6)")
    phantom.add_argument("--num-test", type=int, default=2, help="test cases (default 2)")
    phantom.add_argument("--size", type=int, default=32, help="target grid edge in voxels (default 32)")
    phantom.add_argument("--modality", choices=("MR", "CT"), default="MR", help="target modality (default MR)")
    phantom.add_argument(
        "--slice-thickness",
        type=float,
        default=None,
        help="make the input a thick-slice acquisition: slices this thick (mm) along --slice-axis (in-plane 1.5 mm)",
    )
    phantom.add_argument(
        "--slice-axis", type=int, choices=(0, 1, 2), default=0, help="axis of the thick slices: 0 z (default), 1 y, 2 x"
    )
    phantom.add_argument("--seed", type=int, default=0, help="random seed")
    _add_common(phantom, "Phantom")


def run(args: argparse.Namespace) -> int:
    raw_root = paths_from_args(args).require("raw")
    skipped: dict[str, str] = {}
    if args.kind == "bids":
        from autosr.dataset_conversion.bids import convert_bids

        folder, skipped = convert_bids(
            args.bids_root, raw_root, args.id, args.name, args.suffix,
            input_session=args.input_session, target_session=args.target_session,
            input_acq=args.input_acq, target_acq=args.target_acq, mask_suffix=args.mask_suffix,
            target_modality=args.target_modality, datatype=args.datatype, file_ending=args.file_ending,
            overwrite=args.overwrite,
        )  # fmt: skip
    elif args.kind == "synthrad":
        from autosr.dataset_conversion.synthrad import convert_synthrad

        folder, skipped = convert_synthrad(
            args.synthrad_root, raw_root, args.id, args.name, args.input, args.file_ending, args.overwrite
        )
    elif args.kind == "synthetic-brain":
        from autosr.dataset_conversion.synthetic_brain import make_synthetic_brain_dataset

        folder = make_synthetic_brain_dataset(
            raw_root, args.id, args.name, args.num_train, args.num_test, args.target_spacing, args.input_spacing,
            args.seed, args.num_processes, args.overwrite, args.slice_thickness, args.slice_axis, args.contrast,
            args.tissue_labels, misalign=args.misalign,
        )  # fmt: skip
    else:
        from autosr.dataset_conversion.phantom import make_phantom_dataset
        from autosr.dataset_conversion.raw_writer import new_dataset_folder

        new_dataset_folder(raw_root, args.id, args.name, overwrite=args.overwrite)
        input_spacing, thick_axes = [1.5] * 3, ()
        if args.slice_thickness is not None:
            input_spacing[args.slice_axis], thick_axes = args.slice_thickness, (args.slice_axis,)
        folder = make_phantom_dataset(
            raw_root, args.id, args.name, args.num_train, args.num_test, (args.size,) * 3,
            input_spacing_zyx=tuple(input_spacing), modality=args.modality, seed=args.seed, thick_axes=thick_axes,
        )  # fmt: skip
    report_conversion(Path(folder), skipped)
    if args.register is not None:
        from autosr.commands.register_command import print_summary
        from autosr.registration.api import register_dataset
        from autosr.registration.pairwise import RegistrationSettings

        summary = register_dataset(
            Path(folder),
            settings=RegistrationSettings(transform=args.register),
            num_processes=getattr(args, "num_processes", 1),
        )
        print_summary(summary)
        summary.raise_if_failed()
    return 0


def report_conversion(folder: Path, skipped: dict[str, str]) -> None:
    """Say where the dataset went, what was left out and why, and how to check it."""
    if skipped:
        print(f"skipped {len(skipped)} (one side missing or ambiguous):")
        for item, reason in skipped.items():
            print(f"  {item}: {reason}")
    print(f"wrote {folder}")
    print(f"check it with: autosr verify {folder.name}")
