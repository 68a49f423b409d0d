"""Preprocessing and its inverse: round trips, exact CT inversion, the inference grid, resumability."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autosr.cli import main
from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_dataset
from autosr.errors import AutosrError
from autosr.formats.dataset_spec import discover_cases, load_dataset_spec
from autosr.formats.plans import Plans
from autosr.io import Geometry, grid_covering, read_image
from autosr.planning.api import plan_dataset
from autosr.preprocessing.case_store import list_cases, load_case
from autosr.preprocessing.inverse import revert_prediction
from autosr.preprocessing.normalization import CTClip, ZScore, normalize_image
from autosr.preprocessing.preprocess import preprocess_for_inference, preprocess_training_case

OBLIQUE = (0.8660254037844387, -0.5, 0.0, 0.5, 0.8660254037844387, 0.0, 0.0, 0.0, 1.0)


def test_ct_normalization_inverse_is_exact_inside_the_window():
    params = {"scheme": "ct", "clip_low": -1000.0, "clip_high": 2000.0, "mean": 40.0, "std": 350.0}
    hu = np.array([-1000.0, -200.5, 0.0, 41.25, 1999.0], dtype=np.float32)
    back = CTClip.invert(CTClip.normalize(hu, params), params)
    np.testing.assert_allclose(back, hu, atol=1e-3)
    assert CTClip.invert(CTClip.normalize(np.array([3000.0]), params), params)[0] == pytest.approx(2000.0)


def test_zscore_uses_the_mask_and_inverts():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, size=(8, 8, 8)).astype(np.float32)
    mask = np.zeros_like(image, dtype=bool)
    mask[2:6, 2:6, 2:6] = True
    normalized, params = normalize_image(image, {"scheme": "zscore"}, mask)
    assert abs(normalized[mask].mean()) < 1e-5 and normalized[mask].std() == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_allclose(ZScore.invert(normalized, params), image, rtol=1e-5)


def _plan(raw_dir, autosr_roots, **kwargs):
    return plan_dataset(raw_dir.name, autosr_roots, configurations=["3d_fullres"], progress=False, **kwargs)


def test_preprocess_then_invert_reproduces_the_target(phantom_dataset, autosr_roots):
    plans = _plan(phantom_dataset, autosr_roots)
    spec = load_dataset_spec(phantom_dataset)
    case = next(iter(discover_cases(phantom_dataset, spec, "Tr").values()))
    inputs, target, mask, properties = preprocess_training_case(case, plans, "3d_fullres")
    assert inputs.shape[1:] == target.shape[1:] == mask.shape[1:]
    # invert with the case's own normalization to isolate the geometric part of the round trip
    properties = dict(properties, export_normalization=properties["target_normalization"])
    restored, geometry = revert_prediction(target[0], properties, plans, "3d_fullres")
    reference, reference_geometry = read_image(case.target)
    assert geometry == reference_geometry
    inside = read_image(case.mask)[0] > 0
    error = np.abs(restored - reference)[inside]
    assert error.mean() < 1e-3 * np.abs(reference[inside]).mean()  # same grid here: only float error


def test_resampled_round_trip_stays_within_interpolation_error(autosr_roots):
    raw = make_phantom_dataset(
        autosr_roots.raw, 998, "Coarse", PhantomSettings(num_train=5, num_test=0, target_spacing_zyx=(1.0, 1.0, 1.0))
    )
    plans = plan_dataset(raw.name, autosr_roots, configurations=["3d_fullres"], progress=False, preprocess=False)
    plans.raw["configurations"]["3d_fullres"]["spacing_zyx"] = [0.5, 0.5, 0.5]  # force a resampling
    plans.raw["configurations"]["3d_fullres"]["patch_size"] = [64, 64, 64]
    spec = load_dataset_spec(raw)
    case = next(iter(discover_cases(raw, spec, "Tr").values()))
    _, target, _, properties = preprocess_training_case(case, plans, "3d_fullres")
    properties = dict(properties, export_normalization=properties["target_normalization"])
    restored, geometry = revert_prediction(target[0], properties, plans, "3d_fullres")
    reference, reference_geometry = read_image(case.target)
    assert geometry == reference_geometry
    inside = read_image(case.mask)[0] > 0
    relative = np.abs(restored - reference)[inside].mean() / np.abs(reference[inside]).mean()
    assert relative < 0.05


def test_inference_grid_is_the_planned_spacing_over_the_input_extent(phantom_dataset, autosr_roots, tmp_path):
    plans = _plan(phantom_dataset, autosr_roots)
    from autosr.io import write_image

    rng = np.random.default_rng(1)
    geometry = Geometry((1.7, 1.3, 1.1), (-20.0, 11.5, 3.25), OBLIQUE, (13, 17, 19))
    scan = tmp_path / "scan_0000.nii.gz"
    write_image(rng.uniform(1, 100, size=(13, 17, 19)), geometry, scan)
    written = read_image(scan)[1]
    scan_data = preprocess_for_inference([scan], plans, "3d_fullres")
    inputs, properties = scan_data.input, scan_data.properties
    expected = grid_covering(written, plans.configuration("3d_fullres").spacing_zyx)
    assert Geometry.from_json(properties["output_geometry"]) == expected
    restored, out_geometry = revert_prediction(np.zeros(inputs.shape[1:]), properties, plans, "3d_fullres")
    assert out_geometry == expected and restored.shape == expected.size_zyx
    on_input, input_geometry = revert_prediction(
        np.zeros(inputs.shape[1:]), properties, plans, "3d_fullres", on_input_grid=True
    )
    assert input_geometry == written and on_input.shape == (13, 17, 19)


def test_inference_rejects_a_wrong_channel_count(phantom_dataset, autosr_roots):
    plans = _plan(phantom_dataset, autosr_roots)
    files = sorted((phantom_dataset / "imagesTs").iterdir())
    with pytest.raises(AutosrError, match="2 channel file.*trained on 1"):
        preprocess_for_inference(files[:2], plans, "3d_fullres")


def test_plan_cli_end_to_end_and_resume(phantom_dataset, autosr_roots, capsys):
    assert main(["plan", "999", "-np", "1"]) == 0
    out = capsys.readouterr().out
    assert "3d_fullres" in out and "2d" in out
    pre = autosr_roots.preprocessed / phantom_dataset.name
    for name in ("plans.json", "fingerprint.json", "dataset.json"):
        assert (pre / name).is_file()
    data = pre / "autosrPlans_3d_fullres"
    assert len(list_cases(data)) == 6
    case = load_case(data, "phantom_000")
    assert case.input.dtype == np.float32 and case.mask.dtype == np.uint8
    # an interrupted run: one case lost its completion marker -> only that case is redone
    (data / "phantom_001.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in data.glob("phantom_000*")}
    assert main(["plan", "999", "-np", "1"]) == 0
    assert (data / "phantom_001.json").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in data.glob("phantom_000*")} == before


def test_edited_plans_are_kept_and_validated(phantom_dataset, autosr_roots, capsys):
    assert main(["plan", "999", "-c", "3d_fullres", "--no-preprocess"]) == 0
    path = autosr_roots.preprocessed / phantom_dataset.name / "plans.json"
    raw = json.loads(path.read_text())
    raw["configurations"]["3d_fullres"]["patch_size"] = [30, 32, 32]
    path.write_text(json.dumps(raw))
    assert main(["plan", "999", "--no-preprocess"]) == 2
    err = capsys.readouterr().err
    assert "plans.json" in err and "patch_size" in err and "divisible" in err
    with pytest.raises(AutosrError, match="not valid JSON"):
        path.write_text("{broken")
        Plans.load(path)


def test_plan_refuses_a_dataset_that_fails_verify(phantom_dataset, autosr_roots, capsys):
    next((phantom_dataset / "targetsTr").iterdir()).unlink()
    assert main(["plan", "999"]) == 2
    assert "phantom_000" in capsys.readouterr().err


def test_unknown_configuration_and_unwritable_folder(phantom_dataset, autosr_roots, capsys, tmp_path):
    assert main(["plan", "999", "-c", "3d_giant"]) == 2
    assert "3d_giant" in capsys.readouterr().err
    blocked = tmp_path / "file_not_folder"
    blocked.write_text("x")
    assert main(["plan", "999", "--preprocessed", str(blocked / "sub")]) == 2
    assert "cannot be created" in capsys.readouterr().err
