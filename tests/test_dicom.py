"""`autosr predict -i` on a folder of DICOM series: the same prediction as the NIfTI the series was written from,
geometry exact; a mixed or incomplete series is one clear message, and the other series are still predicted."""

from __future__ import annotations

import json
import locale
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from autosr.cli import main
from autosr.errors import AutosrError
from autosr.formats.dicom_series import find_series, read_series
from autosr.io import read_image

UID = "1.2.826.0.1.3680043.8.498.27"


@pytest.fixture(autouse=True)
def kept_locale():
    """GDCM may set the process locale to C: later tests see the locale they started with."""
    saved = locale.setlocale(locale.LC_ALL, None)
    yield
    locale.setlocale(locale.LC_ALL, saved)


def write_series(image: sitk.Image, folder: Path, uid: str = UID, number: int = 1) -> list[Path]:
    """One DICOM file per slice (MR Image Storage) with the tags a reader needs for the geometry."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    orientation = "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    files = []
    for k in range(image.GetDepth()):
        slice_k = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0018": f"{uid}.{k + 1}",
            "0020|000d": f"{uid}.0", "0020|000e": uid, "0020|0011": str(number), "0020|0013": str(k + 1),
            "0020|0037": orientation, "0020|0032": "\\".join(repr(float(v)) for v in position),
            "0018|0050": repr(image.GetSpacing()[2]),
        }  # fmt: skip
        for tag, value in tags.items():
            slice_k.SetMetaData(tag, value)
        files.append(folder / f"slice{k:03d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(slice_k)
    return files


def integer_scan(path: Path) -> sitk.Image:
    """A phantom scan as int16 (what scanners store), the same in the NIfTI and in the series."""
    return sitk.Cast(sitk.Round(sitk.ReadImage(str(path))), sitk.sitkInt16)


def test_a_series_predicts_exactly_like_its_nifti(trained_phantom, tmp_path, capsys):
    source = sorted((trained_phantom["raw"] / "Dataset999_Phantom" / "imagesTs").glob("*_0000.nii.gz"))[0]
    image = integer_scan(source)
    nifti_in, dicom_in = tmp_path / "nifti", tmp_path / "dicom"
    nifti_in.mkdir()
    sitk.WriteImage(image, str(nifti_in / "patient01_t1_0000.nii.gz"))
    files = write_series(image, dicom_in / "patient01" / "t1")
    broken = write_series(image, dicom_in / "patient02" / "t1", uid=UID + ".2")
    broken[10].unlink()  # a missing slice: SimpleITK alone would stretch the volume silently
    model = ["-d", "999", "-c", "2d", "-f", "0", "--no-tta", "--device", "cpu", "--num-workers", "0"]
    assert (
        main(["predict", "-i", str(nifti_in), "-o", str(tmp_path / "from_nifti"), *model, *trained_phantom["flags"]])
        == 0
    )
    code = main(["predict", "-i", str(dicom_in), "-o", str(tmp_path / "from_dicom"), *model, *trained_phantom["flags"]])
    output = capsys.readouterr()
    assert code == 1  # the broken series failed, the good one was predicted
    assert "1 predicted, 0 already done (skipped), 1 failed" in output.err
    assert "patient02_t1: DICOM series patient02_t1" in output.err and "a missing slice?" in output.err
    expected, expected_geometry = read_image(tmp_path / "from_nifti" / "patient01_t1.nii.gz")
    predicted, geometry = read_image(tmp_path / "from_dicom" / "patient01_t1.nii.gz")
    assert np.array_equal(predicted, expected) and geometry == expected_geometry
    record = json.loads((tmp_path / "from_dicom" / "patient01_t1.json").read_text())
    assert record["inputs"] == [str(f) for f in files]  # the provenance names the DICOM files
    summary = (tmp_path / "from_dicom" / "summary.csv").read_text()
    assert "patient02_t1,failed" in summary

    assert (
        main(["predict", "-i", str(dicom_in), "-o", str(tmp_path / "from_dicom"), *model, *trained_phantom["flags"]])
        == 1
    )
    assert "0 predicted, 1 already done (skipped), 1 failed" in capsys.readouterr().err


def test_a_mixed_series_is_refused_with_its_folder(tmp_path):
    image = sitk.Cast(sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)), sitk.sitkInt16)
    write_series(image, tmp_path / "in" / "scan")
    other = sitk.Cast(sitk.GetImageFromArray(np.zeros((4, 7, 6), np.float32)), sitk.sitkInt16)
    extra = write_series(other, tmp_path / "other")
    extra[0].rename(tmp_path / "in" / "scan" / "foreign.dcm")  # another size, the same series UID
    (series,) = find_series(tmp_path / "in")
    with pytest.raises(AutosrError, match=r"DICOM series scan \(.*scan\) mixes slices of 2 sizes"):
        read_series(series)


def test_series_geometry_and_voxels_are_exactly_the_niftis(tmp_path):
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(-1000, 3000, size=(7, 9, 11)).astype(np.int16))
    image.SetSpacing((0.75, 0.5, 1.25))
    image.SetOrigin((-12.5, 3.25, 7.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # rotated 90 degrees in plane
    write_series(image, tmp_path / "in" / "scan")
    (series,) = find_series(tmp_path / "in")
    read = read_series(series)
    assert series.case_id == "scan" and len(series.files) == 7
    assert read.GetSpacing() == image.GetSpacing() and read.GetOrigin() == image.GetOrigin()
    assert read.GetDirection() == image.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
