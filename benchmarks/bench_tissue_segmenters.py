"""Tissue segmenters against the truth: the quick intensity-only mixture of `tissue.py` versus the
built-in `segment_tissue` (bias correction + MRF prior), on synthetic brains whose tissue maps are known.

Generates `--cases` synthetic brains (`make_synthetic_brain_dataset(..., tissue_labels=True)`, MNI152
template from nilearn) with a given seed, then for every case segments, inside the brain mask,

  - the target (high-field-like: strong contrast, little noise, no bias), and
  - the input (low-field-like: weaker contrast, +-15% bias field, Rician noise, coarser grid) resampled
    onto the target grid (linear), as `autosr evaluate` gives it to a segmenter,

with each segmenter, and reports Dice per class (1 CSF, 2 GM, 3 WM) against the true label map
(mean +- std over cases, population std) and CPU seconds per case (`time.process_time`, run with
OMP_NUM_THREADS=1: robust to other jobs sharing the machine, unlike wall time). `--betas` and `--bias-degrees` sweep the new model's
parameters (the measurement behind `tissue_segmenter.BETA` and `BIAS_DEGREE`; sweep on one seed, report
on another).

    python benchmarks/bench_tissue_segmenters.py --cases 6 --seed 1 --spacing 2 --out /tmp/seg_bench
    python benchmarks/bench_tissue_segmenters.py --cases 4 --seed 0 --betas 0 0.25 0.5 1 --bias-degrees 0 3
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from autosr.evaluation.tissue_segmenter import (
    BETA,
    BIAS_DEGREE,
    segment_tissue,
    segment_tissue_intensity_only,
)
from autosr.io import read_image, resample_to_geometry

CLASSES = {1: "csf", 2: "gm", 3: "wm"}


def dice_per_class(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    result = {}
    for value, name in CLASSES.items():
        a, b = truth == value, labels == value
        result[name] = 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--spacing", type=float, default=2.0, help="target voxel size in mm")
    parser.add_argument("--out", default="/tmp/tissue_segmenter_bench", help="where the synthetic brains go")
    parser.add_argument("--betas", type=float, nargs="+", default=[BETA])
    parser.add_argument("--bias-degrees", type=int, nargs="+", default=[BIAS_DEGREE])
    parser.add_argument("-np", "--num-processes", type=int, default=2)
    args = parser.parse_args()

    from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset

    brains = SyntheticBrainSettings(
        num_train=args.cases, num_test=0, target_spacing_mm=args.spacing, seed=args.seed, tissue_labels=True
    )
    folder = make_synthetic_brain_dataset(args.out, 970, "TissueBench", brains, args.num_processes, overwrite=True)
    methods = {"intensity-only mixture (tissue.py)": None}
    for beta, degree in itertools.product(args.betas, args.bias_degrees):
        methods[f"segment_tissue beta={beta:g} bias degree={degree}"] = (beta, degree)
    scores: dict[tuple[str, str], list[dict[str, float]]] = {}
    seconds: dict[tuple[str, str], list[float]] = {}
    for case in sorted(p.name[: -len(".nii.gz")] for p in (folder / "targetsTr").glob("*.nii.gz")):
        truth, grid = read_image(folder / "labelsTr" / f"{case}.nii.gz")
        mask = read_image(folder / "masksTr" / f"{case}.nii.gz")[0] > 0
        target = read_image(folder / "targetsTr" / f"{case}.nii.gz")[0]
        source, source_grid = read_image(folder / "imagesTr" / f"{case}_0000.nii.gz")
        images = {"target": target, "input on target grid": resample_to_geometry(source, source_grid, grid, order=1)}
        for (image_name, image), (method, params) in itertools.product(images.items(), methods.items()):
            start = time.process_time()
            if params is None:
                labels = segment_tissue_intensity_only(image, mask)
            else:
                labels = segment_tissue(image, grid.spacing_zyx, mask, beta=params[0], bias_degree=params[1])
            seconds.setdefault((image_name, method), []).append(time.process_time() - start)
            scores.setdefault((image_name, method), []).append(dice_per_class(truth, labels))
    print(f"{args.cases} synthetic brains, seed {args.seed}, target {args.spacing:g} mm; Dice against the true labels")
    print("| image | segmenter | CSF | GM | WM | mean | CPU s/case |")
    print("|---|---|---|---|---|---|---|")
    for (image_name, method), rows in scores.items():
        cells = []
        for name in CLASSES.values():
            values = np.array([r[name] for r in rows])
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
        mean = np.mean([np.mean(list(r.values())) for r in rows])
        print(
            f"| {image_name} | {method} | {' | '.join(cells)} | {mean:.3f} | {np.mean(seconds[(image_name, method)]):.2f} |"
        )


if __name__ == "__main__":
    main()
