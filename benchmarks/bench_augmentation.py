"""How much spatial augmentation blurs the training targets.

    python benchmarks/bench_augmentation.py PREPROCESSED_FOLDER --patch 32 32 32 [--samples 200]

For `--samples` random patch centres inside the masks of the preprocessed cases in PREPROCESSED_FOLDER (a data identifier
folder, e.g. $AUTOSR_PREPROCESSED/Dataset990_X/autosrPlans_3d_fullres), the target patch is cut plainly and
through each spatial policy of autosr.training.augmentation (with the interpolating policy's rotation and
scaling forced on, and as configured, p = 0.2 each). Sharpness = mean gradient magnitude of the augmented
target patches / that of the plain patches at the same centres, summed over all samples (centres whose
enlarged sample would leave the volume are skipped, so no patch holds padding) (rotation leaves the gradient magnitude of a
continuous image unchanged and the affine's scaling s multiplies it by s, divided out here), so values below 1
are detail lost to interpolation. A 2-number --patch samples (y, x) slices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

from autosr.preprocessing.case_store import list_cases, load_case
from autosr.training.augmentation import sample_size, spatial_transforms
from autosr.training.data import crop_padded


def gradient_energy(patch: np.ndarray) -> float:
    return float(np.sqrt(sum(g**2 for g in np.gradient(patch.astype(np.float64)))).mean())


def measure(folder: Path, patch: list[int], samples: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    cases = [load_case(folder, c) for c in list_cases(folder)]
    settings = {
        "interpolating, rotation forced": dict(p_rotation=1.0, p_scaling=0.0),
        "interpolating, scaling forced": dict(p_rotation=0.0, p_scaling=1.0),
        "interpolating as configured": {},
    }
    energy: dict[str, float] = {name: 0.0 for name in settings}
    plain_energy = 0.0
    big = sample_size(patch, "interpolating")
    taken = 0
    while taken < samples:
        case = cases[rng.integers(len(cases))]
        target, mask = np.asarray(case.target, dtype=np.float32), np.asarray(case.mask)
        if len(patch) == 2:
            z = rng.integers(target.shape[1])
            target, mask = target[:, z], mask[:, z]
        # a centre inside the mask whose enlarged sample lies inside the volume: no padding in any patch
        inside = np.argwhere(mask[0] > 0)
        if not len(inside):
            continue
        centre = inside[rng.integers(len(inside))]
        start = [c - b // 2 for c, b in zip(centre, big)]
        if any(s < 0 or s + b > n for s, b, n in zip(start, big, target.shape[1:])):
            continue
        wide = crop_padded(target, start, big)
        offset = [(b - p) // 2 for b, p in zip(big, patch)]
        plain = wide[(0, *(slice(o, o + p) for o, p in zip(offset, patch)))]
        plain_energy += gradient_energy(plain)
        for name, overrides in settings.items():
            transform = spatial_transforms(patch, mirror_axes=(), policy="interpolating")[0]
            assert isinstance(transform, SpatialTransform)
            for key, value in overrides.items():
                setattr(transform, key, value)
            params = transform.get_parameters(image=torch.from_numpy(wide))
            out = transform._apply_to_image(torch.from_numpy(wide), **params)[0].numpy()
            scale = 1.0
            if params["affine"] is not None:  # undo the change of gradient magnitude that scaling causes
                scale = float(abs(np.linalg.det(params["affine"])) ** (1.0 / len(patch)))
            energy[name] += gradient_energy(out) / scale
        taken += 1
    return {name: value / plain_energy for name, value in energy.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--patch", type=int, nargs="+", required=True)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.folder, args.patch, args.samples)
    result["lossless and mirror policies"] = 1.0  # permutations and flips move voxels without interpolating
    for name, value in result.items():
        print(f"{name:34s} target sharpness {value:.3f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
