"""`autosr ensemble`: voxel-wise mean of the predictions of several configurations.

    autosr ensemble -i predictions_3d_fullres/ predictions_2d/ -o predictions_ensemble/

Predictions are averaged in the target's units, voxel by voxel, so they must be the same cases on the
same grids (`autosr predict` writes every configuration on the planned grid over the input's extent, so
predictions of one dataset's configurations line up). A mismatch is an error naming the case; nothing is
resampled silently. The first folder's geometry is written unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autosr.errors import AutosrError
from autosr.io import file_ending_of, read_image, write_image
from autosr.paths import ensure_writable_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--inputs", nargs="+", required=True, help="two or more prediction folders")
    parser.add_argument("-o", "--output", required=True, help="folder for the averaged predictions")
    parser.add_argument("--overwrite", action="store_true", help="recompute cases whose output already exists")


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
        total, geometry = read_image(listings[0][name])
        total = total.astype(np.float64)
        for listing in listings[1:]:
            array, other = read_image(listing[name])
            if not other.same_grid(geometry):
                raise AutosrError(
                    f"case {name}: {listing[name]} is on a different grid ({other.describe()}, origin "
                    f"{other.origin_xyz}) than {listings[0][name]} ({geometry.describe()}, origin "
                    f"{geometry.origin_xyz}); ensemble predictions made on the same grid"
                )
            total += array
        write_image((total / len(folders)).astype(np.float32), geometry, destination)
        written.append(name)
    return written


def run(args: argparse.Namespace) -> int:
    written = ensemble_folders(args.inputs, args.output, overwrite=args.overwrite)
    print(f"autosr ensemble: wrote {len(written)} case(s) to {args.output}", file=sys.stdout)
    return 0
