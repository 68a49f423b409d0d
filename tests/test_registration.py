"""Co-registration of pairs: transform arithmetic, N4, recovery of known displacements, the command's
resume and bad-input behaviour, the misalignment measured by verify, and the `n4_zscore` scheme."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest
import SimpleITK as sitk

from autosr.cli import main
from autosr.dataset.verify import verify_dataset
from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset
from autosr.errors import AutosrError
from autosr.imaging.bias_field import correct_bias_field, correct_bias_field_array, estimate_log_bias_field
from autosr.io import Geometry, read_image, write_image
from autosr.io.image_io import apply_geometry
from autosr.preprocessing.normalization import N4ZScore, normalize_image, target_export_parameters
from autosr.registration.api import register_dataset, registered_dataset_folder
from autosr.registration.pairwise import RegistrationSettings, pyramid
from autosr.registration.transforms import (
    LinearMap,
    difference_mm,
    displace_geometry,
    linear_map_of,
    random_rigid_displacement,
    region_points,
    rotation_angle_deg,
)

OBLIQUE = (0.8660254037844387, -0.5, 0.0, 0.5, 0.8660254037844387, 0.0, 0.0, 0.0, 1.0)


# --- transforms -----------------------------------------------------------------------------------------


def test_linear_map_matches_simpleitk_for_euler_affine_composite_and_files(tmp_path):
    euler = sitk.Euler3DTransform((4.0, 5.0, 6.0), 0.1, -0.2, 0.3, (1.0, -2.0, 3.0))
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((1.1, 0.1, 0.0, 0.0, 0.9, 0.05, 0.0, 0.2, 1.0))
    affine.SetTranslation((1.0, -2.0, 3.0))
    affine.SetCenter((7.0, 8.0, 9.0))
    composite = sitk.CompositeTransform([euler, affine])
    sitk.WriteTransform(euler, str(tmp_path / "euler.tfm"))
    points = np.random.default_rng(0).uniform(-80, 80, size=(20, 3))
    for transform in (euler, affine, composite, sitk.ReadTransform(str(tmp_path / "euler.tfm"))):
        expected = np.array([transform.TransformPoint(p.tolist()) for p in points])
        np.testing.assert_allclose(linear_map_of(transform).apply(points), expected, atol=1e-9)
    inverse = linear_map_of(euler).inverse()
    np.testing.assert_allclose(inverse.apply(linear_map_of(euler).apply(points)), points, atol=1e-9)


def test_random_rigid_displacement_has_the_stated_size():
    centre = np.array([10.0, -20.0, 30.0])
    linear_map, parameters = random_rigid_displacement(np.random.default_rng(3), 8.0, 8.0, centre)
    assert linear_map.is_rigid
    assert rotation_angle_deg(linear_map.matrix) == pytest.approx(8.0, abs=1e-9)
    # the centre of rotation only translates, by exactly the stated distance
    assert np.linalg.norm(linear_map.apply(centre)[0] - centre) == pytest.approx(8.0, abs=1e-9)
    assert LinearMap.from_json(json.loads(json.dumps(parameters))).apply(centre)[0] == pytest.approx(
        linear_map.apply(centre)[0]
    )


def test_displace_geometry_moves_every_voxel_centre_and_refuses_non_rigid_maps():
    geometry = Geometry((2.0, 1.5, 1.0), (-10.0, 5.0, 2.5), OBLIQUE, (7, 9, 11))
    linear_map, _ = random_rigid_displacement(np.random.default_rng(1), 5.0, 12.0, np.zeros(3))
    moved = displace_geometry(geometry, linear_map)
    index = np.random.default_rng(2).integers(0, 7, size=(30, 3)).astype(np.float64)
    np.testing.assert_allclose(moved.index_to_world(index), linear_map.apply(geometry.index_to_world(index)), atol=1e-9)
    assert moved.spacing_zyx == geometry.spacing_zyx and moved.size_zyx == geometry.size_zyx
    with pytest.raises(ValueError, match="rigid"):
        displace_geometry(geometry, LinearMap(np.diag([1.1, 1.0, 1.0]), np.zeros(3)))


def test_pyramid_goes_from_about_8_mm_to_the_image_own_voxels():
    settings = RegistrationSettings()
    assert pyramid((2.0, 2.0, 2.0), (90, 110, 90), settings) == ([4, 2, 1], [2.0, 1.0, 0.0])
    assert pyramid((1.0, 1.0, 1.0), (256, 256, 180), settings)[0] == [8, 4, 2, 1]
    assert pyramid((1.0, 1.0, 1.0), (32, 32, 32), settings)[0] == [2, 1]  # at least 16 voxels per axis
    assert pyramid((0.5, 0.5, 0.5), (400, 400, 400), RegistrationSettings(finest_level_mm=2.0))[0] == [16, 8, 4]
    with pytest.raises(AutosrError, match="valid: rigid, affine"):
        RegistrationSettings(transform="bspline")


# --- N4 ---------------------------------------------------------------------------------------------------


def _two_tissue_volume_with_bias(shape=(40, 44, 48)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A head-like volume (two tissues inside an ellipsoid, zero outside), a smooth +-20 % field, tissue A."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (z / 0.85) ** 2 + (y / 0.9) ** 2 + (x / 0.9) ** 2 < 1
    tissue_a = head & (np.sin(6 * x) * np.cos(5 * y) > 0)
    clean = np.where(tissue_a, 1000.0, 600.0) * head
    field = 1.0 + 0.2 * (0.6 * x + 0.3 * y - 0.4 * z)
    noise = np.random.default_rng(0).normal(0, 10, shape)
    return ((clean + noise * head) * field).astype(np.float32), field, tissue_a


def test_n4_removes_a_smooth_field_and_keeps_the_grid():
    biased, _, tissue_a = _two_tissue_volume_with_bias()
    corrected = correct_bias_field_array(biased)
    assert corrected.shape == biased.shape and corrected.dtype == np.float32

    def cv(values):
        return values.std() / values.mean()

    assert cv(corrected[tissue_a]) < 0.5 * cv(biased[tissue_a])  # the field dominated the spread
    assert np.all(corrected[biased == 0] == 0)  # background stays background
    image = apply_geometry(sitk.GetImageFromArray(biased), Geometry((2.0, 1.0, 1.5), (1, 2, 3), OBLIQUE, biased.shape))
    on_grid = correct_bias_field(image)
    assert on_grid.GetOrigin() == image.GetOrigin() and on_grid.GetDirection() == image.GetDirection()
    flat = sitk.Image(image.GetSize(), sitk.sitkFloat32)  # nothing to fit: a zero field, not an error
    assert not np.any(sitk.GetArrayViewFromImage(estimate_log_bias_field(flat)))


def test_n4_zscore_scheme_corrects_then_standardizes_and_exports_with_the_dataset_scale():
    biased, _, tissue_a = _two_tissue_volume_with_bias()
    mask = biased > 0
    normalized, params = normalize_image(biased, {"scheme": "n4_zscore"}, mask)
    assert params["scheme"] == "n4_zscore"
    assert abs(normalized[mask].mean()) < 1e-4 and normalized[mask].std() == pytest.approx(1.0, rel=1e-3)
    # the correction is the image's own (no mask from elsewhere): identical whatever mask the caller has
    np.testing.assert_array_equal(N4ZScore.correct(biased), N4ZScore.correct(biased))
    plain, _ = normalize_image(biased, {"scheme": "zscore"}, mask)
    assert normalized[tissue_a].std() < 0.6 * plain[tissue_a].std()
    export = target_export_parameters({"scheme": "n4_zscore", "export_mean": 500.0, "export_std": 100.0})
    assert export == {"scheme": "n4_zscore", "mean": 500.0, "std": 100.0}


def test_n4_zscore_from_dataset_json_through_planning_and_preprocessing(phantom_dataset, autosr_roots):
    from autosr.formats.dataset_spec import discover_cases, load_dataset_spec
    from autosr.planning.api import plan_dataset
    from autosr.preprocessing.preprocess import preprocess_for_inference, preprocess_training_case

    content = json.loads((phantom_dataset / "dataset.json").read_text())
    content["normalization"] = {"0": "n4_zscore", "target": "n4_zscore"}
    (phantom_dataset / "dataset.json").write_text(json.dumps(content))
    plans = plan_dataset(phantom_dataset.name, autosr_roots, configurations=["3d_fullres"], progress=False)
    assert plans.input_normalization[0]["scheme"] == "n4_zscore"
    assert {"export_mean", "export_std"} <= set(plans.target_normalization)
    case = next(iter(discover_cases(phantom_dataset, load_dataset_spec(phantom_dataset), "Tr").values()))
    inputs, target, _, properties = preprocess_training_case(case, plans, "3d_fullres")
    assert properties["input_normalization"][0]["scheme"] == "n4_zscore"
    assert np.isfinite(inputs).all() and np.isfinite(target).all()
    scan = preprocess_for_inference(case.channels, plans, "3d_fullres")
    assert scan.properties["input_normalization"][0]["scheme"] == "n4_zscore"
    # one preprocessing path: the input is corrected and normalized identically at training and prediction
    assert scan.input.shape == inputs.shape
    np.testing.assert_allclose(scan.input, inputs, atol=1e-5)


# --- recovery of known displacements (the acceptance figure, on small volumes) ----------------------------


@pytest.fixture(scope="module")
def misaligned_brains(tmp_path_factory):
    """Two synthetic brains at 3 mm (inputs 4.5 mm), each input displaced by 8 mm and 8 degrees."""
    root = tmp_path_factory.mktemp("misaligned")
    settings = SyntheticBrainSettings(num_train=2, num_test=0, target_spacing_mm=3.0, misalign=(8.0, 8.0))
    folder = make_synthetic_brain_dataset(root, 961, "Misaligned", settings, num_processes=1)
    return folder


def _recovery_errors(record: dict, truth: dict, mask_file) -> tuple[float, float]:
    """Mean disagreement (mm) over the brain between found and true transform, and the rotation between."""
    mask, geometry = read_image(mask_file)
    points = region_points(mask, geometry)
    found, true = LinearMap.from_json(record["linear_map"]), LinearMap.from_json(truth)
    return float(difference_mm(found, true, points).mean()), rotation_angle_deg(found.matrix.T @ true.matrix)


def test_generator_misalignment_moves_only_the_input_header(misaligned_brains, tmp_path):
    settings = SyntheticBrainSettings(num_train=2, num_test=0, target_spacing_mm=3.0)
    aligned = make_synthetic_brain_dataset(tmp_path, 962, "Aligned", settings, num_processes=1)
    truth = json.loads((misaligned_brains / "misalignment.json").read_text())["cases"]
    assert set(truth) == {"brain_000", "brain_001"}
    for case_id, displacement in truth.items():
        assert displacement["translation_mm"] == 8.0 and displacement["rotation_deg"] == 8.0
        moved, moved_geometry = read_image(misaligned_brains / "imagesTr" / f"{case_id}_0000.nii.gz")
        original, original_geometry = read_image(aligned / "imagesTr" / f"{case_id}_0000.nii.gz")
        np.testing.assert_array_equal(moved, original)
        expected = displace_geometry(original_geometry, LinearMap.from_json(displacement))
        np.testing.assert_allclose(moved_geometry.origin_xyz, expected.origin_xyz, atol=1e-4)
        np.testing.assert_allclose(moved_geometry.direction, expected.direction, atol=1e-6)
        target_file = f"targetsTr/{case_id}.nii.gz"
        moved_target, moved_target_geometry = read_image(misaligned_brains / target_file)
        original_target, original_target_geometry = read_image(aligned / target_file)
        np.testing.assert_array_equal(moved_target, original_target)
        assert moved_target_geometry == original_target_geometry


def test_register_recovers_8_mm_8_degrees_within_half_a_mm_and_half_a_degree(misaligned_brains, tmp_path):
    out = tmp_path / "Dataset963_Registered"
    summary = register_dataset(misaligned_brains, out, num_processes=1, progress=False)
    summary.raise_if_failed()
    truth = json.loads((misaligned_brains / "misalignment.json").read_text())["cases"]
    for case_id, displacement in truth.items():
        record = json.loads((out / "registration" / "Tr" / f"{case_id}.json").read_text())
        error_mm, error_deg = _recovery_errors(
            record, displacement, misaligned_brains / "masksTr" / f"{case_id}.nii.gz"
        )
        assert error_mm < 0.5 and error_deg < 0.5, (case_id, error_mm, error_deg)
        assert record["metric"]["registered"] < record["metric"]["at_headers"]
        # rigid: voxels untouched, the header carries the move; the .tfm file holds the same transform
        source, _ = read_image(misaligned_brains / "imagesTr" / f"{case_id}_0000.nii.gz")
        registered, registered_geometry = read_image(out / "imagesTr" / f"{case_id}_0000.nii.gz")
        np.testing.assert_array_equal(registered, source)
        from_file = linear_map_of(sitk.ReadTransform(str(out / "registration" / "Tr" / f"{case_id}.tfm")))
        np.testing.assert_allclose(
            from_file.apply(np.zeros(3)), LinearMap.from_json(record["linear_map"]).apply(np.zeros(3)), atol=1e-6
        )
        for folder in ("targetsTr", "masksTr"):
            assert filecmp.cmp(
                misaligned_brains / folder / f"{case_id}.nii.gz", out / folder / f"{case_id}.nii.gz", shallow=False
            )
    content = json.loads((out / "dataset.json").read_text())
    assert content["registration"]["source"] == misaligned_brains.name and content["numTraining"] == 2
    # what verify measures on the registered copy: below the flag threshold, no warnings
    report = verify_dataset(out, num_folds=2, measure_misalignment=True)
    assert report.problems == [] and report.warnings == []
    assert "misalignment of input and target" in report.summary()


def test_affine_registration_resamples_onto_the_rigidly_moved_grid(misaligned_brains, tmp_path):
    out = tmp_path / "Dataset964_Affine"
    settings = RegistrationSettings(transform="affine")
    register_dataset(misaligned_brains, out, settings=settings, num_processes=1, progress=False).raise_if_failed()
    truth = json.loads((misaligned_brains / "misalignment.json").read_text())["cases"]["brain_000"]
    record = json.loads((out / "registration" / "Tr" / "brain_000.json").read_text())
    error_mm, _ = _recovery_errors(record, truth, misaligned_brains / "masksTr" / "brain_000.nii.gz")
    assert error_mm < 1.0  # 12 parameters fit a rigid truth a little less tightly than 6 (documentation)
    assert record["inputs_written_as"] == "resampled" and [s["stage"] for s in record["stages"]] == ["rigid", "affine"]
    source, source_geometry = read_image(misaligned_brains / "imagesTr" / "brain_000_0000.nii.gz")
    registered, geometry = read_image(out / "imagesTr" / "brain_000_0000.nii.gz")
    rigid_geometry = displace_geometry(source_geometry, LinearMap.from_json(record["rigid_map"]).inverse())
    assert geometry.same_grid(rigid_geometry)
    assert source.min() <= registered.min() and registered.max() <= source.max()  # clipped B-spline


# --- the command: resume, bad input, default output --------------------------------------------------------


def test_register_cli_resumes_names_a_bad_case_and_registers_the_others(phantom_dataset, autosr_roots, capsys):
    bad = phantom_dataset / "imagesTr" / "phantom_003_0000.nii.gz"
    array, geometry = read_image(bad)
    write_image(np.zeros_like(array), geometry, bad)
    assert main(["register", "999", "-np", "1"]) == 2
    captured = capsys.readouterr()
    assert "case phantom_003 (Tr)" in captured.err and "empty" in captured.err and "Traceback" not in captured.err
    out = autosr_roots.raw / "Dataset000_PhantomRegistered"  # the first free id after 999 wraps to 0
    assert (out / "registration" / "Tr" / "phantom_000.json").is_file()
    assert not (out / "imagesTr" / "phantom_003_0000.nii.gz").exists()
    content = json.loads((out / "dataset.json").read_text())
    assert content["numTraining"] == 5 and content["registration"]["cases_left_out"] == ["phantom_003 (Tr)"]
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [
        "phantom_006_0000.nii.gz",
        "phantom_007_0000.nii.gz",
    ]
    before = (out / "registration" / "Tr" / "phantom_000.json").stat().st_mtime_ns
    # the bad case fixed: a rerun finds the same output folder, registers only that case
    write_image(array, geometry, bad)
    assert main(["register", "999", "-np", "2"]) == 0
    out_text = capsys.readouterr().out
    assert "(done before)" in out_text and str(out) in out_text
    assert (out / "registration" / "Tr" / "phantom_000.json").stat().st_mtime_ns == before
    assert (out / "registration" / "Tr" / "phantom_003.json").is_file()
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 6
    assert verify_dataset(out).problems == []
    # the source was never written to
    assert np.array_equal(read_image(bad)[0], array)


def test_a_pair_that_does_not_overlap_is_named(phantom_dataset, autosr_roots, capsys):
    # a tiny input far outside the target: no alignment of headers or centres of mass makes them overlap
    far = Geometry((1.0, 1.0, 1.0), (500.0, 500.0, 500.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (3, 3, 3))
    write_image(
        np.random.default_rng(0).uniform(1, 100, (3, 3, 3)),
        far,
        phantom_dataset / "imagesTr" / "phantom_001_0000.nii.gz",
    )
    summary = register_dataset(phantom_dataset, autosr_roots.raw / "Dataset500_Out", num_processes=1, progress=False)
    assert [o.case_id for o in summary.failed] == ["phantom_001"]
    assert "do not overlap" in summary.failed[0].message
    assert sum(o.status == "registered" for o in summary.outcomes) == 7  # 5 training + 2 test pairs
    with pytest.raises(AutosrError, match="phantom_001"):
        summary.raise_if_failed()


def test_output_folder_naming_and_id_conflicts(phantom_dataset, autosr_roots):
    assert registered_dataset_folder(phantom_dataset, 5).name == "Dataset005_PhantomRegistered"
    assert registered_dataset_folder(phantom_dataset, 5, "Reg").name == "Dataset005_Reg"
    with pytest.raises(AutosrError, match="source dataset's own"):
        registered_dataset_folder(phantom_dataset, 999)
    (autosr_roots.raw / "Dataset005_Other").mkdir()
    (autosr_roots.raw / "Dataset005_Other" / "dataset.json").write_text("{}")
    with pytest.raises(AutosrError, match="taken by"):
        registered_dataset_folder(phantom_dataset, 5)


# --- misalignment in verify -------------------------------------------------------------------------------


def test_verify_measures_misalignment_and_names_the_fix(phantom_dataset, capsys):
    shifted = phantom_dataset / "imagesTr" / "phantom_002_0000.nii.gz"
    array, geometry = read_image(shifted)
    origin = np.asarray(geometry.origin_xyz) + np.array([4.0, 0.0, 3.0])
    write_image(array, Geometry(geometry.spacing_zyx, origin, geometry.direction, geometry.size_zyx), shifted)
    report = verify_dataset(phantom_dataset, measure_misalignment=True)
    assert report.problems == []
    assert report.misalignment["phantom_002"].mean_mm == pytest.approx(5.0, abs=1.0)
    assert "phantom_006 (Ts)" in report.misalignment
    assert len(report.warnings) == 1 and "phantom_002" in report.warnings[0]
    assert "autosr register Dataset999_Phantom" in report.warnings[0]
    assert main(["verify", "999"]) == 0
    out = capsys.readouterr().out
    assert "median" in out and "(1 warning(s) above)" in out and "phantom_002" in out
    assert main(["verify", "999", "--no-misalignment"]) == 0
    assert "misalignment" not in capsys.readouterr().out


def test_convert_with_misalign_and_register_through_the_cli(autosr_roots, capsys):
    args = ["convert", "synthetic-brain", "7", "--num-train", "2", "--num-test", "1", "--target-spacing", "6"]
    assert main([*args, "--misalign", "3", "3", "-np", "1", "--register"]) == 0
    out = capsys.readouterr().out
    source = autosr_roots.raw / "Dataset007_SyntheticBrain"
    registered = autosr_roots.raw / "Dataset008_SyntheticBrainRegistered"
    assert f"registered dataset: {registered}" in out
    assert set(json.loads((source / "misalignment.json").read_text())["cases"]) == {
        "brain_000",
        "brain_001",
        "brain_002",
    }
    assert sorted(p.name for p in (registered / "registration" / "Tr").glob("*.tfm")) == [
        "brain_000.tfm",
        "brain_001.tfm",
    ]
    assert (registered / "registration" / "Ts" / "brain_002.json").is_file()
    with pytest.raises(SystemExit):  # argparse: --misalign needs both numbers
        main([*args, "--misalign", "3", "-np", "1"])
    assert main([*args, "--misalign", "3", "-1", "--name", "Negative"]) == 2
    assert "two non-negative numbers" in capsys.readouterr().err
