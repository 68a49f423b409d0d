"""Folder prediction and the `autosr predict` / `autosr ensemble` commands.

Folder mechanics (resume, parts, per-case failures) are tested with `GridPredictor`, a Predictor whose
preprocessing is "read the channels as they are" and whose export is "write on the input grid", so they
hold whatever the preprocessing does. The end-to-end tests go through the real preprocessing and network.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from grid_worker import GridScanWorker
from test_predictor import make_model_folder, tiny_builder

from autosr.cli import main
from autosr.errors import AutosrError
from autosr.inference.api import ensemble_folders
from autosr.inference.folder import select_part
from autosr.inference.predictor import Predictor
from autosr.inference.settings import FolderSettings, PredictionSettings
from autosr.io import Geometry, grid_covering, read_image, write_image

torch.set_num_threads(1)

OBLIQUE = (0.8660254037844387, -0.5, 0.0, 0.5, 0.8660254037844387, 0.0, 0.0, 0.0, 1.0)


class GridPredictor(Predictor):
    """A Predictor whose scans go through `GridScanWorker` (also in the folder pipeline's worker processes)."""

    fail_after: int | None = None  # raise KeyboardInterrupt after this many cases (an interrupted run)

    def scan_worker(self):
        return GridScanWorker(self.plans.raw, self.configuration_name, self.settings.background_fill)

    def predict_preprocessed(self, *args, **kwargs):
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise KeyboardInterrupt
            self.fail_after -= 1
        return super().predict_preprocessed(*args, **kwargs)


def write_cases(folder: Path, case_ids, num_channels: int = 1, shape=(9, 10, 11)) -> None:
    rng = np.random.default_rng(0)
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), shape)
    for case_id in case_ids:
        for c in range(num_channels):
            write_image(rng.normal(size=shape).astype(np.float32), geometry, folder / f"{case_id}_{c:04d}.nii.gz")


def grid_predictor(tmp_path: Path, num_channels: int = 1) -> GridPredictor:
    folder = make_model_folder(tmp_path / "results", folds=(0,), num_channels=num_channels)
    return GridPredictor.from_trained(
        folder, folds=(0,), network_builder=tiny_builder, settings=PredictionSettings(use_mirroring=False)
    )


def test_interrupted_folder_prediction_resumes_without_redoing_cases(tmp_path):
    cases = [f"case{i}" for i in range(5)]
    write_cases(tmp_path / "in", cases)
    out = tmp_path / "out"
    predictor = grid_predictor(tmp_path)
    predictor.fail_after = 2
    with pytest.raises(KeyboardInterrupt):  # in worker processes: the two predicted cases are still written
        predictor.predict_folder(tmp_path / "in", out, FolderSettings(progress=False, num_workers=1))
    done = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "summary.csv")
    # nothing half-written beside them; each prediction with its provenance sidecar
    assert done == ["case0.json", "case0.nii.gz", "case1.json", "case1.nii.gz"]
    assert sorted(p.name for p in (out / "qc").glob("*.json")) == ["case0.json", "case1.json"]
    stamps = {name: os.stat(out / name).st_mtime_ns for name in done}

    predictor.fail_after = None
    summary = predictor.predict_folder(tmp_path / "in", out, FolderSettings(progress=False, num_workers=0))
    assert summary.skipped == ["case0", "case1"] and summary.predicted == ["case2", "case3", "case4"]
    assert summary.ok and {n: os.stat(out / n).st_mtime_ns for n in done} == stamps
    again = predictor.predict_folder(
        tmp_path / "in", out, FolderSettings(overwrite=True, progress=False, num_workers=0)
    )
    assert again.predicted == cases
    prediction, geometry = read_image(out / "case3.nii.gz")
    assert prediction.shape == (9, 10, 11) and np.isfinite(prediction).all()


def test_two_parts_split_the_folder_without_overlap(tmp_path):
    cases = [f"s{i:02d}" for i in range(7)]
    write_cases(tmp_path / "in", cases)
    predictor = grid_predictor(tmp_path)
    parts = [
        predictor.predict_folder(
            tmp_path / "in", tmp_path / f"out{k}", FolderSettings(num_parts=2, part_id=k, progress=False, num_workers=0)
        )
        for k in (0, 1)
    ]
    first, second = set(parts[0].predicted), set(parts[1].predicted)
    assert first and second and not first & second and first | second == set(cases)
    assert {p.name for p in (tmp_path / "out0").glob("*.nii.gz")} == {f"{c}.nii.gz" for c in first}
    assert select_part(cases, 1, 0) == cases
    with pytest.raises(AutosrError, match="--part-id"):
        select_part(cases, 2, 2)


def test_bad_cases_fail_alone_and_are_summarised(tmp_path):
    inp = tmp_path / "in"
    write_cases(inp, ["good1", "good2", "extra"], num_channels=2)
    write_cases(inp, ["extra"], num_channels=3)  # a third channel the model never saw
    write_cases(inp, ["missing"], num_channels=1)  # no _0001
    write_cases(inp, ["broken"], num_channels=2)
    (inp / "broken_0001.nii.gz").write_bytes(b"this is not an image")
    predictor = grid_predictor(tmp_path, num_channels=2)
    summary = predictor.predict_folder(inp, tmp_path / "out", FolderSettings(progress=False, num_workers=2))
    assert summary.predicted == ["good1", "good2"]
    assert set(summary.failed) == {"extra", "missing", "broken"}
    assert "_0002" in summary.failed["extra"] and "2 channels" in summary.failed["extra"]
    assert "_0001" in summary.failed["missing"]
    assert "broken_0001.nii.gz" in summary.failed["broken"]
    text = summary.describe()
    assert "2 predicted" in text and "3 failed" in text and "missing" in text
    table = pd.read_csv(tmp_path / "out" / "summary.csv")  # failures have their row too
    assert list(table["case"]) == ["broken", "extra", "good1", "good2", "missing"]
    assert list(table["status"]) == ["failed", "failed", "predicted", "predicted", "failed"]
    assert table.set_index("case").loc["good1", "spacing_z"] == 1.0


def test_uncertainty_is_written_beside_the_prediction(tmp_path):
    write_cases(tmp_path / "in", ["a"])
    folder = make_model_folder(tmp_path / "results", folds=(0, 1))
    predictor = GridPredictor.from_trained(folder, folds=(0, 1), network_builder=tiny_builder)
    predictor.predict_folder(
        tmp_path / "in", tmp_path / "out", FolderSettings(uncertainty=True, progress=False, num_workers=0)
    )
    spread, _ = read_image(tmp_path / "out" / "uncertainty" / "a.nii.gz")
    assert spread.shape == (9, 10, 11) and (spread >= 0).all() and spread.max() > 0


# --- the command line ------------------------------------------------------------------------------------


def test_cli_input_folder_without_matching_files(tmp_path, capsys):
    from autosr.network import build_network

    folder = make_model_folder(tmp_path / "results", folds=(0,), builder=build_network)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "scan.nii.gz").write_bytes(b"")
    code = main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(folder), "-f", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "<case>_<XXXX>.nii.gz" in err and "scan.nii.gz" in err


def test_cli_missing_fold_names_the_file_and_the_fix(tmp_path, capsys):
    folder = make_model_folder(tmp_path / "results", folds=(0, 1))
    write_cases(tmp_path / "in", ["a"])
    code = main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(folder)])
    assert code == 2
    err = capsys.readouterr().err
    assert "fold_2/checkpoint_final.pt" in err and "-f 0 1" in err


def test_cli_dataset_never_trained(autosr_roots, phantom_dataset, tmp_path, capsys):
    write_cases(tmp_path / "in", ["a"])
    argv = ["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-d", "999", "-c", "3d_fullres"]
    assert main(argv) == 2
    assert "never trained" in capsys.readouterr().err
    (autosr_roots.results / "Dataset999_Phantom" / "Trainer__autosrPlans__2d").mkdir(parents=True)
    assert main(argv) == 2
    assert "Trainer__autosrPlans__2d" in capsys.readouterr().err


def test_ensemble_averages_and_rejects_mismatched_grids(tmp_path, capsys):
    geometry = Geometry((1.0, 2.0, 0.5), (3.0, -4.0, 5.5), OBLIQUE, (4, 5, 6))
    for k, value in enumerate((1.0, 3.0)):
        write_image(np.full((4, 5, 6), value, np.float32), geometry, tmp_path / f"p{k}" / "case.nii.gz")
    assert main(["ensemble", "-i", str(tmp_path / "p0"), str(tmp_path / "p1"), "-o", str(tmp_path / "mean")]) == 0
    mean, mean_geometry = read_image(tmp_path / "mean" / "case.nii.gz")
    np.testing.assert_allclose(mean, 2.0)
    assert mean_geometry == read_image(tmp_path / "p0" / "case.nii.gz")[1]

    shifted = grid_covering(geometry, (1.0, 1.0, 1.0))
    write_image(np.zeros(shifted.size_zyx, np.float32), shifted, tmp_path / "p2" / "case.nii.gz")
    with pytest.raises(AutosrError, match="case case.nii.gz"):
        ensemble_folders([tmp_path / "p0", tmp_path / "p2"], tmp_path / "bad")
    write_image(np.zeros((4, 5, 6), np.float32), geometry, tmp_path / "p3" / "other.nii.gz")
    assert main(["ensemble", "-i", str(tmp_path / "p0"), str(tmp_path / "p3"), "-o", str(tmp_path / "x")]) == 2
    assert "other.nii.gz" in capsys.readouterr().err


# --- end to end through the real preprocessing, network and export ---------------------------------------


def trained_like_model_folder(raw_dataset: Path, results: Path, configuration: str = "3d_fullres") -> Path:
    """Plans from the real planner (networks shrunk for speed) and randomly initialised folds 0 and 1."""
    from autosr.formats.dataset_spec import load_dataset_spec
    from autosr.network import build_network
    from autosr.planning.fingerprint import extract_fingerprint
    from autosr.planning.planner import plan_experiment

    spec = load_dataset_spec(raw_dataset)
    plans = plan_experiment(extract_fingerprint(raw_dataset, progress=False), spec).to_json()
    for c in plans["configurations"].values():
        c["network"]["features_per_stage"] = [4] * len(c["network"]["features_per_stage"])
    return make_model_folder(results, configuration, folds=(0, 1), plans=plans, builder=build_network)


def test_cli_end_to_end_geometry_resume_and_failures(phantom_dataset, autosr_roots, tmp_path, capsys):
    from autosr.formats.plans import Plans

    folder = trained_like_model_folder(phantom_dataset, autosr_roots.results)
    spacing = Plans.load(folder / "plans.json").configuration("3d_fullres").spacing_zyx
    inp = tmp_path / "in"
    rng = np.random.default_rng(3)
    odd = Geometry((1.3, 1.7, 1.1), (-20.5, 14.25, 3.0), OBLIQUE, (13, 17, 23))  # oblique, no nice shape
    write_image(rng.normal(300, 50, size=odd.size_zyx).astype(np.float32), odd, inp / "odd_0000.nii.gz")
    src = phantom_dataset / "imagesTs"
    for p in sorted(src.iterdir()):
        (inp / p.name).write_bytes(p.read_bytes())
    (inp / "broken_0000.nii.gz").write_bytes(b"garbage")
    out = tmp_path / "out"
    argv = ["predict", "-i", str(inp), "-o", str(out), "-d", "999", "-c", "3d_fullres", "-f", "0", "1"]
    assert main(argv + ["--uncertainty"]) == 1  # 'broken' failed, the others were predicted
    err = capsys.readouterr().err
    assert "broken" in err and "1 failed" in err
    prediction, geometry = read_image(out / "odd.nii.gz")
    expected = grid_covering(odd, spacing)
    assert geometry.size_zyx == expected.size_zyx and prediction.shape == expected.size_zyx
    np.testing.assert_allclose(geometry.spacing_zyx, expected.spacing_zyx, rtol=1e-6)
    np.testing.assert_allclose(geometry.origin_xyz, expected.origin_xyz, atol=1e-4)
    np.testing.assert_allclose(geometry.direction, expected.direction, atol=1e-6)
    assert np.isfinite(prediction).all() and (out / "uncertainty" / "odd.nii.gz").is_file()

    (inp / "broken_0000.nii.gz").unlink()
    stamp = os.stat(out / "odd.nii.gz").st_mtime_ns
    assert main(argv) == 0  # resumed: nothing left to do
    assert "already done" in capsys.readouterr().out and os.stat(out / "odd.nii.gz").st_mtime_ns == stamp


def test_predict_array_from_python_matches_the_planned_grid(phantom_dataset, autosr_roots):
    from autosr.formats.plans import Plans

    folder = trained_like_model_folder(phantom_dataset, autosr_roots.results)
    spacing = Plans.load(folder / "plans.json").configuration("3d_fullres").spacing_zyx
    predictor = Predictor.from_trained(folder, folds=(0,), settings=PredictionSettings(use_mirroring=False))
    odd = Geometry((1.3, 1.7, 1.1), (5.0, -2.0, 1.5), OBLIQUE, (11, 9, 14))
    array = np.random.default_rng(0).normal(300, 50, size=odd.size_zyx).astype(np.float32)
    prediction, geometry = predictor.predict_array(array, odd)
    assert geometry.same_grid(grid_covering(odd, spacing)) and prediction.shape == geometry.size_zyx
    on_input, input_geometry = predictor.predict_array(array, odd, on_input_grid=True)
    assert input_geometry.same_grid(odd) and on_input.shape == odd.size_zyx
