"""Reading benchmark: what autosr's checks on every image read (truncation, NaN/Inf) cost.

SimpleITK reads NaN/Inf in NIfTI as 0 and a truncated NIfTI with zeros, so `autosr.io.read_image` also
looks at the raw voxel bytes (`autosr.io.nifti_integrity`). This measures, on a 1 mm brain-sized volume
(the MNI152 2009a template from nilearn, 197 x 233 x 189 voxels, or a smooth synthetic head of that shape
when nilearn is missing), written as float32 .nii.gz (as is, and with scanner-like noise, which
compresses worse), int16 .nii.gz and float32 .nii:

  - bare: `sitk.ReadImage` + `GetArrayFromImage` + float32 (what `read_image` cost before the checks);
  - autosr: `autosr.io.read_image` (reading plus the checks);
  - check: `check_nifti_voxels` alone.

Median of --repeats runs, files in the page cache (read once before timing).

    python benchmarks/bench_reading.py --repeats 7 --folder /tmp/bench_reading
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autosr.io import read_image
from autosr.io.nifti_integrity import check_nifti_voxels

SHAPE_ZYX = (189, 233, 197)


def brain_volume() -> tuple[np.ndarray, str]:
    try:
        from nilearn.datasets import load_mni152_template

        template = load_mni152_template(resolution=1)
        array = np.asarray(template.get_fdata(), dtype=np.float32).transpose(2, 1, 0)
        return array * (1000 / float(array.max())), "MNI152 2009a template (nilearn), scaled to 0..1000"
    except Exception:  # noqa: BLE001 - any reason the template is unavailable: fall back
        z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE_ZYX], indexing="ij")
        head = (x**2 / 0.8 + y**2 / 0.9 + z**2 / 0.8) < 1
        return (head * (600 + 200 * np.cos(6 * x) * np.sin(5 * y))).astype(np.float32), "synthetic head"


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_read(path: Path) -> np.ndarray:
    """What `read_image` did before the checks: read, to numpy, to float32."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32, copy=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_reading"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    array, source = brain_volume()
    rng = np.random.default_rng(0)
    noisy = array + rng.normal(0, 20, array.shape).astype(np.float32)  # 2 % of the range, like a scan
    variants = {
        "float32 .nii.gz": (array, ".nii.gz"),
        "float32 .nii.gz + noise": (noisy, ".nii.gz"),
        "int16 .nii.gz + noise": (np.round(noisy).astype(np.int16), ".nii.gz"),
        "float32 .nii": (array, ".nii"),
    }
    print(f"volume: {source}, {' x '.join(map(str, array.shape[::-1]))} voxels (x, y, z), median of {args.repeats}")
    print(f"{'file':<26} {'MB on disk':>10} {'bare s':>8} {'autosr s':>9} {'check s':>8} {'overhead':>9}")
    for name, (values, ending) in variants.items():
        path = args.folder / f"{name.replace(' ', '_').replace('+', 'plus').replace('.', '')}{ending}"
        image = sitk.GetImageFromArray(values)
        image.SetSpacing((1.0, 1.0, 1.0))
        sitk.WriteImage(image, str(path), useCompression=ending.endswith(".gz"))
        read_image(path)  # into the page cache
        bare = timed(lambda p=path: bare_read(p), args.repeats)
        full = timed(lambda p=path: read_image(p), args.repeats)
        check = timed(lambda p=path: check_nifti_voxels(p), args.repeats)
        size = path.stat().st_size / 1e6
        print(f"{name:<26} {size:>10.1f} {bare:>8.3f} {full:>9.3f} {check:>8.3f} {full / bare - 1:>8.0%}")


if __name__ == "__main__":
    main()
