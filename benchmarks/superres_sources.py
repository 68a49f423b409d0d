"""Real high-resolution scans shipped inside public packages, as source folders for `autosr convert thick-slices`.

Nothing here is synthetic. The packages are downloaded with their ordinary clients into a data folder
outside the repository (`--downloads`); this script only reads them:

- `pycortex-1.4.0.tar.gz` (pip download pycortex==1.4.0): subject S1's T1w head, 1 mm, 256^3.
- `brainbrowser-2.3.0.tgz` (npm pack brainbrowser@2.3.0): two T1w heads as MINC volumes split into a JSON
  header and raw uint8 voxels (`structural1`, `structural2`), 1 mm.
- `tptbox-1.1.0-py3-none-any.whl` (pip download tptbox==1.1.0): a spine CT crop (1.5 mm) and a spine T2w
  crop (1.5 mm) from its test samples.

Every scan is re-indexed to LPS axis order (exact: a permutation and flips), so array axis 0 runs
inferior-superior in all of them. Brains are cropped to the head (intensity above 5% of the 99th percentile, 2 voxels margin) and block-averaged
to 2 mm to keep CPU training within the quick demo's budget; spine scans keep their 1.5 mm grid. Geometry
(spacing, origin, direction) is carried exactly through crop and block averaging.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def minc_raw(tar: tarfile.TarFile, stem: str) -> sitk.Image:
    """A BrainBrowser MINC header + raw pair as an image with the header's world geometry."""
    header = json.loads(gzip.decompress(tar.extractfile(f"package/examples/models/{stem}.mnc.header.gz").read()))
    raw = gzip.decompress(tar.extractfile(f"package/examples/models/{stem}.mnc.raw.gz").read())
    order = header["order"]  # slowest to fastest
    shape = [header[a]["space_length"] for a in order]
    array = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    # array axes -> (z, y, x) index order of SimpleITK: fastest axis is x
    zyx = array  # index axis k (slowest) .. i (fastest)
    image = sitk.GetImageFromArray(zyx.astype(np.float32))
    spacing, columns, origin = [], [], np.zeros(3)
    for name in order[::-1]:  # fastest first = SimpleITK's i, j, k
        step = header[name]["step"]
        cosines = np.asarray(header[name]["direction_cosines"], dtype=np.float64)
        spacing.append(abs(step))
        columns.append(np.sign(step) * cosines)
        origin += header[name]["start"] * cosines
    direction = np.stack(columns, axis=1)
    u, _, vt = np.linalg.svd(direction)  # orthonormalize (the header's cosines are rounded)
    direction = u @ vt
    image.SetSpacing(spacing)
    image.SetDirection(tuple(direction.ravel()))
    # MINC world is RAS, SimpleITK's LPS: flip x and y
    flip = np.diag([-1.0, -1.0, 1.0])
    image.SetDirection(tuple((flip @ direction).ravel()))
    image.SetOrigin(tuple(flip @ origin))
    return image


def crop_to_head(image: sitk.Image, margin: int = 2) -> sitk.Image:
    array = sitk.GetArrayViewFromImage(image)
    threshold = 0.05 * np.percentile(array, 99)
    inside = np.argwhere(array > threshold)
    low = np.maximum(inside.min(axis=0) - margin, 0)
    high = np.minimum(inside.max(axis=0) + margin + 1, array.shape)
    return image[int(low[2]) : int(high[2]), int(low[1]) : int(high[1]), int(low[0]) : int(high[0])]


def block_average(image: sitk.Image, block: int) -> sitk.Image:
    """Average `block`^3 voxels into one (exact geometry: the new grid tiles the old field of view)."""
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    shape = [s - s % block for s in array.shape]
    array = array[: shape[0], : shape[1], : shape[2]]
    array = array.reshape(shape[0] // block, block, shape[1] // block, block, shape[2] // block, block).mean((1, 3, 5))
    out = sitk.GetImageFromArray(array.astype(np.float32))
    spacing = np.asarray(image.GetSpacing()) * block
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = np.asarray(image.GetOrigin()) + direction @ ((block - 1) / 2.0 * np.asarray(image.GetSpacing()))
    out.SetSpacing(tuple(spacing))
    out.SetDirection(image.GetDirection())
    out.SetOrigin(tuple(origin))
    return out


def read_from_tar_gz(path: Path, member: str) -> sitk.Image:
    with tarfile.open(path) as tar:
        data = tar.extractfile(member).read()
    return nifti_bytes(data)


def nifti_bytes(data: bytes) -> sitk.Image:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".nii.gz") as handle:
        handle.write(data if data[:2] == b"\x1f\x8b" else gzip.compress(data))
        handle.flush()
        return sitk.ReadImage(handle.name, sitk.sitkFloat32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=Path, required=True, help="folder holding the downloaded packages")
    parser.add_argument("--out", type=Path, required=True, help="where the source folders go")
    parser.add_argument("--brain-block", type=int, default=2, help="block averaging of the 1 mm brains (default 2)")
    args = parser.parse_args()
    brains, ct, mr_spine = args.out / "brain_t1", args.out / "spine_ct", args.out / "spine_t2"
    for folder in (brains, ct, mr_spine):
        folder.mkdir(parents=True, exist_ok=True)
    heads = {
        "pycortexS1": read_from_tar_gz(
            args.downloads / "pycortex-1.4.0.tar.gz", "pycortex-1.4.0/filestore/db/S1/anatomicals/raw.nii.gz"
        )
    }
    with tarfile.open(args.downloads / "brainbrowser-2.3.0.tgz") as tar:
        for stem in ("structural1", "structural2"):
            heads[f"brainbrowser{stem[-1]}"] = minc_raw(tar, stem)
    for name, image in heads.items():
        image = block_average(crop_to_head(sitk.DICOMOrient(image, "LPS")), args.brain_block)
        sitk.WriteImage(image, str(brains / f"{name}.nii.gz"))
        print(name, image.GetSize(), image.GetSpacing())
    with zipfile.ZipFile(args.downloads / "tptbox-1.1.0-py3-none-any.whl") as wheel:
        for member, folder in (
            ("TPTBox/tests/sample_ct/sub-ct_label-22_ct.nii.gz", ct),
            ("TPTBox/tests/sample_mri/sub-mri_label-6_T2w.nii.gz", mr_spine),
        ):
            image = sitk.DICOMOrient(nifti_bytes(io.BytesIO(wheel.read(member)).read()), "LPS")
            sitk.WriteImage(image, str(folder / "tptbox.nii.gz"))
            print(member, image.GetSize(), image.GetSpacing())


if __name__ == "__main__":
    main()
