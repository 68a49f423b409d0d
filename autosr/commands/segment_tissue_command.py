"""`autosr segment-tissue IMAGE OUTPUT [--mask MASK]`: the built-in tissue segmenter on one image file.

It is an ordinary segmentation command, so `autosr evaluate --segmenter builtin` runs it through the
same hook as any external tool (see tissue_segmenter.py for the model, segmenter_hook.py for the hook).
"""

from __future__ import annotations

import argparse

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="the image to segment (any format SimpleITK reads)")
    parser.add_argument(
        "output", help="label map to write, on the image's grid: 1 csf, 2 gm, 3 wm on T1w (by intensity), 0 outside"
    )
    parser.add_argument(
        "--mask",
        default=None,
        help="region to segment (non-zero voxels; resampled by nearest neighbour when on another grid); "
        "default: voxels above 5%% of the image's 99th percentile, holes filled (skull-stripped images)",
    )


def segment_tissue_file(image_path: str, output_path: str, mask_path: str | None = None) -> None:
    """Read, segment with `segment_tissue`, write the label map (uint8) with the image's geometry."""
    from autosr.errors import AutosrError
    from autosr.evaluation.tissue_segmenter import segment_tissue
    from autosr.io import read_image, resample_to_geometry, write_image

    image, geometry = read_image(image_path)
    mask = None
    if mask_path is not None:
        mask_array, mask_geometry = read_image(mask_path)
        if not mask_geometry.same_grid(geometry):
            mask_array = resample_to_geometry(mask_array, mask_geometry, geometry, order=0)
        mask = mask_array > 0
        if not mask.any():
            raise AutosrError(f"{mask_path}: the mask is empty on the grid of {image_path}")
    labels = segment_tissue(image, geometry.spacing_zyx, mask)
    write_image(labels, geometry, output_path, dtype=np.uint8)


def run(args: argparse.Namespace) -> int:
    segment_tissue_file(args.image, args.output, args.mask)
    return 0
