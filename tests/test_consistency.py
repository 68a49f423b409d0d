"""The two consistency properties of the learning core.

1. Cross-validation = prediction: a fold's validation prediction of a case is the file `autosr predict`
   writes for that case's raw input with that fold.
2. One orientation: the network sees every scan in the same canonical orientation, whatever order and
   direction its file stores the axes in, at training and at prediction, and predictions come back in
   the input's own orientation. A scan stored permuted and flipped gives exactly the same prediction in
   world space; an oblique copy gives the same anatomy up to its resampling.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from test_training import DATASET, make_tiny_dataset

from autosr.cli import main
from autosr.formats.dataset_spec import discover_cases, load_dataset_spec
from autosr.formats.plans import Plans
from autosr.io import Geometry, read_image, resample_to_geometry
from autosr.io.image_io import geometry_of
from autosr.io.orientation import IDENTITY_DIRECTION, output_grid
from autosr.paths import AutosrPaths
from autosr.preprocessing.preprocess import preprocess_for_inference, preprocess_training_case
from autosr.training.run import train_fold

ORIENTATIONS = ("RIP", "SAL", "PLI")  # ITK orientation codes: axes stored in other orders, some flipped


def store_reoriented(source: Path, destination: Path, code: str) -> None:
    """The same voxels (same world positions) stored with another axis order/direction, by ITK itself."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(str(source)), code), str(destination))


def store_oblique(source: Path, destination: Path, degrees: float = 20.0) -> None:
    """An oblique copy: the grid rotated about the image centre, resampled (linear) from the original."""
    image = sitk.ReadImage(str(source))
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    rotation = sitk.Euler3DTransform(centre, 0.0, np.deg2rad(degrees), np.deg2rad(degrees / 2))
    matrix = np.asarray(rotation.GetMatrix()).reshape(3, 3)
    direction = matrix @ np.asarray(image.GetDirection()).reshape(3, 3)
    origin = rotation.TransformPoint(image.GetOrigin())
    reference = sitk.Image(image.GetSize(), sitk.sitkFloat32)
    reference.SetSpacing(image.GetSpacing())
    reference.SetOrigin(origin)
    reference.SetDirection(tuple(direction.ravel()))
    sitk.WriteImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0), str(destination))


def test_training_arrays_do_not_depend_on_how_files_store_their_axes(autosr_roots: AutosrPaths, tmp_path: Path):
    pre = make_tiny_dataset(autosr_roots)
    plans = Plans.load(pre / "plans.json")
    raw = autosr_roots.raw / DATASET
    case = discover_cases(raw, load_dataset_spec(raw), "Tr")["phantom_000"]
    reference = preprocess_training_case(case, plans, "3d_fullres")
    for code in ORIENTATIONS:
        # the input stored one way, the target another way, the mask a third: the same case in world space
        moved = type(case)(
            case.case_id,
            [tmp_path / code / "input_0000.nii.gz"],
            tmp_path / code / "target.nii.gz",
            tmp_path / code / "mask.nii.gz",
        )
        store_reoriented(case.channels[0], moved.channels[0], code)
        store_reoriented(case.target, moved.target, code[::-1])
        store_reoriented(case.mask, moved.mask, ORIENTATIONS[0])
        result = preprocess_training_case(moved, plans, "3d_fullres")
        for expected, got in zip(reference[:3], result[:3]):
            np.testing.assert_array_equal(got, expected)
        scan = preprocess_for_inference(moved.channels, plans, "3d_fullres")
        np.testing.assert_array_equal(scan.input, preprocess_for_inference(case.channels, plans, "3d_fullres").input)


def _predict(folder: Path, out: Path, configuration: str = "3d_fullres") -> None:
    assert main(["predict", "-i", str(folder), "-o", str(out), "-d", "901", "-c", configuration, "-f", "0"]) == 0


def _train(paths: AutosrPaths, configuration: str) -> Path:
    return train_fold(901, configuration, 0, paths=paths, device="cpu", epochs=2, iters_per_epoch=3, num_workers=0)


def _crossval_equals_predict(paths: AutosrPaths, fold_dir: Path, tmp_path: Path, configuration: str):
    raw = paths.raw / DATASET
    (validation_file,) = sorted((fold_dir / "validation").glob("*.nii.gz"))
    original = raw / "imagesTr" / f"{validation_file.name.removesuffix('.nii.gz')}_0000.nii.gz"
    single = tmp_path / f"single_{configuration}"
    single.mkdir()
    shutil.copy(original, single / original.name)
    _predict(single, tmp_path / f"predicted_{configuration}", configuration)
    predicted, predicted_geometry = read_image(tmp_path / f"predicted_{configuration}" / validation_file.name)
    crossval, crossval_geometry = read_image(validation_file)
    assert predicted_geometry == crossval_geometry
    np.testing.assert_allclose(predicted, crossval, rtol=0, atol=1e-4 * np.abs(crossval).max())
    return validation_file, original, predicted, predicted_geometry


def test_2d_on_the_planes_holding_a_coarse_axis_matches_predict_and_keeps_geometry(autosr_roots, tmp_path):
    pre = make_tiny_dataset(autosr_roots)
    plans = Plans.load(pre / "plans.json")
    plans.raw["configurations"]["2d"]["slice_axes"] = [1, 2]  # slices holding z, as for thick axial input
    plans.save(pre / "plans.json")
    fold_dir = _train(autosr_roots, "2d")
    _, original, _, geometry = _crossval_equals_predict(autosr_roots, fold_dir, tmp_path, "2d")
    input_geometry = read_image(original)[1]
    assert geometry == output_grid(input_geometry, plans.configuration("2d").spacing_zyx)


def test_crossval_equals_predict_and_orientation_round_trips(autosr_roots: AutosrPaths, tmp_path: Path):
    make_tiny_dataset(autosr_roots)
    fold_dir = _train(autosr_roots, "3d_fullres")
    # 1. the cross-validation prediction is what `autosr predict` gives for the raw scan
    validation_file, original, predicted, predicted_geometry = _crossval_equals_predict(
        autosr_roots, fold_dir, tmp_path, "3d_fullres"
    )

    # 2. the same scan stored in other orientations: predictions on the input's own grid, same world content
    reference_image = sitk.ReadImage(str(tmp_path / "predicted_3d_fullres" / validation_file.name))
    for code in ORIENTATIONS:
        folder = tmp_path / f"in_{code}"
        store_reoriented(original, folder / original.name, code)
        _predict(folder, tmp_path / f"out_{code}")
        out_file = tmp_path / f"out_{code}" / validation_file.name
        out_image = sitk.ReadImage(str(out_file))
        np.testing.assert_allclose(
            out_image.GetDirection(), sitk.ReadImage(str(folder / original.name)).GetDirection(), atol=1e-6
        )
        # the same voxel centres in another storage order: nearest neighbour maps them back exactly
        back = sitk.GetArrayFromImage(
            sitk.Resample(out_image, reference_image, sitk.Transform(), sitk.sitkNearestNeighbor)
        )
        np.testing.assert_allclose(back, predicted, rtol=0, atol=1e-4 * np.abs(predicted).max())

    folder = tmp_path / "in_oblique"
    folder.mkdir()
    store_oblique(original, folder / original.name)
    _predict(folder, tmp_path / "out_oblique")
    oblique, oblique_geometry = read_image(tmp_path / "out_oblique" / validation_file.name)
    stored = geometry_of(sitk.ReadImage(str(folder / original.name)))
    np.testing.assert_allclose(oblique_geometry.direction, stored.direction, atol=1e-6)
    # the network saw the oblique scan on a world-aligned grid, the same anatomy the same way round as the
    # original: both network inputs, compared in world space, agree up to the oblique copy's interpolation
    plans = Plans.load(autosr_roots.results / DATASET / "Trainer__autosrPlans__3d_fullres" / "plans.json")
    seen = {}
    for name, files in (("original", [original]), ("oblique", [folder / original.name])):
        scan = preprocess_for_inference(files, plans, "3d_fullres")
        grid = Geometry.from_json(scan.properties["planned_geometry"])
        assert grid.direction == IDENTITY_DIRECTION
        box = scan.properties["crop_box_zyx"]
        full = np.full(grid.size_zyx, np.nan, np.float32)
        full[tuple(slice(lo, hi) for lo, hi in box)] = scan.input[0]
        seen[name] = (full, grid)
    (original_seen, grid), (oblique_seen, oblique_grid) = seen["original"], seen["oblique"]
    on_original = resample_to_geometry(
        np.nan_to_num(oblique_seen, nan=-9.0), oblique_grid, grid, order=0, default_value=-9.0
    )
    both = np.isfinite(original_seen) & (on_original > -9.0)
    correlation = np.corrcoef(original_seen[both], on_original[both])[0, 1]
    assert correlation > 0.9, correlation


def test_exported_background_is_the_training_targets_level_outside_the_subject(autosr_roots, tmp_path):
    """Outside the input's foreground (grown by the subject margin) a prediction holds the plans' background
    level exactly; --keep-background keeps the network's own values there."""
    from autosr.imaging.foreground import subject_region

    make_tiny_dataset(autosr_roots)
    _train(autosr_roots, "3d_fullres")
    raw = autosr_roots.raw / DATASET
    folder = tmp_path / "in"
    folder.mkdir()
    scan_file = raw / "imagesTr" / "phantom_001_0000.nii.gz"
    shutil.copy(scan_file, folder / scan_file.name)
    _predict(folder, tmp_path / "filled")
    assert main(["predict", "-i", str(folder), "-o", str(tmp_path / "raw_out"), "-d", "901", "-c", "3d_fullres",
                 "-f", "0", "--keep-background"]) == 0  # fmt: skip
    plans = Plans.load(autosr_roots.results / DATASET / "Trainer__autosrPlans__3d_fullres" / "plans.json")
    level = plans.target_normalization["background"]
    scan = preprocess_for_inference([scan_file], plans, "3d_fullres")
    grid = Geometry.from_json(scan.properties["planned_geometry"])
    subject = np.zeros(grid.size_zyx, bool)
    subject[tuple(slice(lo, hi) for lo, hi in scan.properties["crop_box_zyx"])] = subject_region(scan.foreground)
    filled, geometry = read_image(tmp_path / "filled" / "phantom_001.nii.gz")
    kept, _ = read_image(tmp_path / "raw_out" / "phantom_001.nii.gz")
    assert geometry.same_grid(grid) and 0.1 < subject.mean() < 0.9  # axis-aligned: the working grid itself
    assert np.all(filled[~subject] == np.float32(level))
    np.testing.assert_array_equal(filled[subject], kept[subject])
    assert np.abs(kept[~subject] - level).mean() > 1.0  # the untrained network does not produce it alone
