"""`autosr convert <kind> ...`: build a raw dataset from a public layout, or generate a synthetic one.

Kinds: `bids` (paired sessions/acquisitions of a BIDS tree), `synthrad` (SynthRAD MR/CBCT -> CT),
`synthetic-brain` (MNI152-based low-field -> high-field brains, needs the `demo` extra), `phantom`
(procedural ellipsoid heads for smoke tests) and `thick-slices` (thick slices simulated from real
high-resolution scans, or self-supervised pairs from thick scans). Each writes `$AUTOSR_RAW/DatasetXXX_Name/`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from autosr.commands.arguments import add_path_arguments, default_of, paths_from_args
from autosr.dataset_conversion.bids import BidsPairSelection
from autosr.dataset_conversion.phantom import PhantomSettings
from autosr.dataset_conversion.synthetic_brain import CONTRASTS, SyntheticBrainSettings
from autosr.dataset_conversion.thick_slices import PROFILES, ThickSliceSettings


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


def _add_counts(parser: argparse.ArgumentParser, settings_class: type) -> None:
    num_train, num_test = default_of(settings_class, "num_train"), default_of(settings_class, "num_test")
    parser.add_argument("--num-train", type=int, default=num_train, help=f"training cases (default {num_train})")
    parser.add_argument("--num-test", type=int, default=num_test, help=f"test cases (default {num_test})")


def _add_slice_axis(parser: argparse.ArgumentParser) -> None:
    """The thick-slice axis of both generators (the phantom turns it into `PhantomSettings.thick_axes`)."""
    parser.add_argument(
        "--slice-axis", type=int, choices=(0, 1, 2), default=default_of(SyntheticBrainSettings, "slice_axis"),
        help="axis of the thick slices: 0 z (default), 1 y, 2 x",
    )  # fmt: skip


def _add_seed(parser: argparse.ArgumentParser, settings_class: type) -> None:
    seed = default_of(settings_class, "seed")
    parser.add_argument(
        "--seed", type=int, default=seed, help=f"random seed (default {seed}); a seed always gives the same dataset"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    bids = kinds.add_parser("bids", help="pair two sessions or acquisitions of a BIDS dataset")
    bids.add_argument("bids_root", help="BIDS dataset folder (holding sub-*/)")
    bids.add_argument("--id", type=int, required=True, help="dataset id (0-999)")
    bids.add_argument("--suffix", required=True, help="BIDS suffix of the images to pair, e.g. T1w")
    bids.add_argument("--input-session", help="session label of the input, e.g. 3T")
    bids.add_argument("--target-session", help="session label of the target, e.g. 7T")
    bids.add_argument("--input-acq", help="acquisition label of the input")
    bids.add_argument("--target-acq", help="acquisition label of the target")
    bids.add_argument("--mask-suffix", help="suffix of mask files in the target session, e.g. mask")
    datatype = default_of(BidsPairSelection, "datatype")
    bids.add_argument("--datatype", default=datatype, help=f"BIDS datatype folder (default {datatype})")
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
    _add_counts(brain, SyntheticBrainSettings)
    target_spacing = default_of(SyntheticBrainSettings, "target_spacing_mm")
    brain.add_argument(
        "--target-spacing",
        type=float,
        default=target_spacing,
        help=f"target voxel size in mm (default {target_spacing:g})",
    )
    brain.add_argument("--input-spacing", type=float, help="input voxel size in mm (default 1.5 x target)")
    brain.add_argument(
        "--slice-thickness",
        type=float,
        help="make the input a thick-slice acquisition: slices this thick (mm) along --slice-axis, each averaging "
        "the signal over its thickness; --input-spacing is then the in-plane voxel size",
    )
    _add_slice_axis(brain)
    brain.add_argument(
        "--contrast", choices=CONTRASTS, default=default_of(SyntheticBrainSettings, "contrast"),
        help="input contrast: low-field-like with a bias field (default; contrast synthesis too) or the target's "
        "(resolution enhancement alone)",
    )  # fmt: skip
    _add_seed(brain, SyntheticBrainSettings)
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
    _add_counts(phantom, PhantomSettings)
    size = default_of(PhantomSettings, "shape_zyx")[0]
    phantom.add_argument("--size", type=int, default=size, help=f"target grid edge in voxels (default {size})")
    modality = default_of(PhantomSettings, "modality")
    phantom.add_argument(
        "--modality", choices=("MR", "CT"), default=modality, help=f"target modality (default {modality})"
    )
    phantom.add_argument(
        "--slice-thickness",
        type=float,
        help="make the input a thick-slice acquisition: slices this thick (mm) along --slice-axis (in-plane 1.5 mm)",
    )
    _add_slice_axis(phantom)
    _add_seed(phantom, PhantomSettings)
    _add_common(phantom, "Phantom")

    thick = kinds.add_parser(
        "thick-slices",
        help="real high-resolution scans -> thick-slice inputs with a slice profile (or self-supervised pairs)",
    )
    thick.add_argument("source", help="folder of high-resolution scans (one case per scan and slab)")
    thick.add_argument("--id", type=int, required=True, help="dataset id (0-999)")
    factor = default_of(ThickSliceSettings, "factor")
    thick.add_argument("--factor", type=int, default=factor, help=f"target slices per thick slice (default {factor})")
    thick.add_argument(
        "--axis", type=int, default=default_of(ThickSliceSettings, "axis"),
        help="array axis of the thick slices: 0 z (default), 1 y, 2 x",
    )  # fmt: skip
    thick.add_argument(
        "--profile", choices=PROFILES, default=default_of(ThickSliceSettings, "profile"),
        help="slice profile (default box)",
    )  # fmt: skip
    thick.add_argument("--fwhm", type=float, help="Gaussian profile FWHM in mm (default: slice spacing minus gap)")
    thick.add_argument(
        "--gap",
        type=float,
        default=default_of(ThickSliceSettings, "gap_mm"),
        help="gap between slices in mm (default 0)",
    )
    thick.add_argument(
        "--slabs",
        type=int,
        default=default_of(ThickSliceSettings, "slabs"),
        help="cases per scan: slabs cut along the first other axis",
    )
    thick.add_argument(
        "--num-test",
        type=int,
        default=default_of(ThickSliceSettings, "num_test"),
        help="the last N cases (sorted) become test cases",
    )
    thick.add_argument(
        "--no-reference", action="store_true",
        help="the sources are thick-slice scans (thick along --axis by --factor): build self-supervised pairs "
        "from their own in-plane resolution",
    )  # fmt: skip
    thick.add_argument(
        "--target-modality", default=default_of(ThickSliceSettings, "target_modality"), help="MR (default), CT or other"
    )
    thick.add_argument(
        "--file-ending",
        default=default_of(ThickSliceSettings, "file_ending"),
        help="file ending of the written dataset",
    )
    _add_common(thick, None)


def run(args: argparse.Namespace) -> int:
    raw_root = paths_from_args(args).require("raw")
    skipped: dict[str, str] = {}
    if args.kind == "bids":
        from autosr.dataset_conversion.bids import convert_bids

        selection = BidsPairSelection(
            args.suffix, args.input_session, args.target_session, args.input_acq, args.target_acq, args.mask_suffix,
            args.datatype,
        )  # fmt: skip
        folder, skipped = convert_bids(
            args.bids_root, raw_root, args.id, args.name, selection, args.target_modality, args.file_ending,
            args.overwrite,
        )  # fmt: skip
    elif args.kind == "synthrad":
        from autosr.dataset_conversion.synthrad import convert_synthrad

        folder, skipped = convert_synthrad(
            args.synthrad_root, raw_root, args.id, args.name, args.input, args.file_ending, args.overwrite
        )
    elif args.kind == "synthetic-brain":
        from autosr.dataset_conversion.synthetic_brain import make_synthetic_brain_dataset

        settings = SyntheticBrainSettings(
            num_train=args.num_train,
            num_test=args.num_test,
            target_spacing_mm=args.target_spacing,
            input_spacing_mm=args.input_spacing,
            slice_thickness_mm=args.slice_thickness,
            slice_axis=args.slice_axis,
            contrast=args.contrast,
            tissue_labels=args.tissue_labels,
            misalign=args.misalign,
            seed=args.seed,
        )
        folder = make_synthetic_brain_dataset(
            raw_root, args.id, args.name, settings, args.num_processes, args.overwrite
        )
    elif args.kind == "thick-slices":
        from autosr.dataset_conversion.thick_slices import convert_thick_slices

        settings = ThickSliceSettings(
            factor=args.factor, axis=args.axis, profile=args.profile, fwhm_mm=args.fwhm, gap_mm=args.gap,
            slabs=args.slabs, num_test=args.num_test, no_reference=args.no_reference,
            target_modality=args.target_modality, file_ending=args.file_ending,
        )  # fmt: skip
        folder = convert_thick_slices(args.source, raw_root, args.id, args.name, settings, args.overwrite)
    else:
        from autosr.dataset_conversion.phantom import make_phantom_dataset
        from autosr.dataset_conversion.raw_writer import new_dataset_folder

        new_dataset_folder(raw_root, args.id, args.name, overwrite=args.overwrite)
        input_spacing, thick_axes = list(default_of(PhantomSettings, "input_spacing_zyx")), ()
        if args.slice_thickness is not None:
            input_spacing[args.slice_axis], thick_axes = args.slice_thickness, (args.slice_axis,)
        settings = PhantomSettings(
            num_train=args.num_train,
            num_test=args.num_test,
            shape_zyx=(args.size,) * 3,
            input_spacing_zyx=tuple(input_spacing),
            modality=args.modality,
            seed=args.seed,
            thick_axes=thick_axes,
        )
        folder = make_phantom_dataset(raw_root, args.id, args.name, settings)
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
