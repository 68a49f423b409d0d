"""`evaluate_folders` / `autosr evaluate` on the phantom dataset: tables, summary, baseline, bad input."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autosr.cli import main
from autosr.errors import AutosrError
from autosr.evaluation import metrics
from autosr.evaluation.baseline import baseline_prediction, fit_baselines
from autosr.evaluation.evaluate import evaluate_folders
from autosr.evaluation.normalization import normalize_pair
from autosr.evaluation.settings import EvaluationSettings
from autosr.evaluation.summary import best_baseline, summarize_table
from autosr.io import Geometry, read_image, write_image

FAST = EvaluationSettings(ms_ssim=False, backend="scipy")


def perturbed_copies(source: Path, destination: Path, noise: float, seed: int = 0) -> Path:
    """The images of `source` with Gaussian noise of std `noise` added, written to `destination`."""
    rng = np.random.default_rng(seed)
    destination.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.nii.gz")):
        array, geometry = read_image(path)
        write_image(
            array + rng.normal(0, noise, array.shape).astype(np.float32) if noise else array,
            geometry,
            destination / path.name,
        )
    return destination


def copy_of(folder: Path, tmp_path: Path) -> Path:
    """Byte-identical copies of a folder's images: predictions that must score perfectly (evaluating a folder
    against itself is refused)."""
    return Path(shutil.copytree(folder, tmp_path / f"copy_of_{folder.name}"))


def test_identical_predictions_score_perfectly(phantom_dataset: Path, tmp_path: Path, capsys) -> None:
    targets = phantom_dataset / "targetsTr"
    table, summary = evaluate_folders(
        targets,
        copy_of(targets, tmp_path),
        mask_dir=phantom_dataset / "masksTr",
        out_dir=tmp_path / "out",
        settings=FAST,
    )
    assert "every prediction (6) is a byte-identical copy of its reference" in capsys.readouterr().err
    assert len(table) == 6 and set(table["method"]) == {"model"}
    assert np.allclose(table["ssim"], 1.0) and np.allclose(table["mae"], 0.0)
    assert (table["psnr"] == metrics.PSNR_CAP_DB).all()
    assert all((table[f"tissue_dice_{c}"] == 1.0).all() for c in ("low", "mid", "high"))
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["psnr_cap_db"] == metrics.PSNR_CAP_DB and written["normalization"] == "none"
    assert written["num_cases"] == 6 and written["metrics"]["model"]["ssim"]["mean"] == pytest.approx(1.0)
    assert {"data_range_lo", "data_range_hi"} <= set(pd.read_csv(tmp_path / "out" / "cases.csv").columns)
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 6


def test_baseline_row_and_gain(phantom_dataset: Path, tmp_path: Path) -> None:
    predictions = perturbed_copies(phantom_dataset / "targetsTr", tmp_path / "pred", noise=15.0)
    table, summary = evaluate_folders(
        phantom_dataset / "targetsTr",
        predictions,
        mask_dir=phantom_dataset / "masksTr",
        input_dir=phantom_dataset / "imagesTr",
        settings=FAST,
    )
    assert set(table["method"]) == {"model", "baseline_linear", "baseline_standardized"} and len(table) == 18
    assert set(summary["metrics"]) == {"model", "baseline", "baseline_linear", "baseline_standardized"}
    assert summary["baseline"]["fitted_on"] == sorted(table["case"].unique().tolist())
    assert "in-sample" in summary["baseline"]["note"]
    gain = summary["gain_over_baseline"]["model_minus_baseline"]
    assert gain["ssim"] > 0 and gain["mae"] < 0


def test_linear_baseline_recovers_a_known_map(tmp_path: Path) -> None:
    geometry = Geometry((1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (12, 12, 12))
    pairs = []
    for i in range(2):
        x = np.random.default_rng(i).random((12, 12, 12)).astype(np.float32) * 100
        write_image(x, geometry, tmp_path / f"c{i}_0000.nii.gz")
        write_image(3 * x - 7, geometry, tmp_path / f"c{i}.nii.gz")
        pairs.append((tmp_path / f"c{i}_0000.nii.gz", tmp_path / f"c{i}.nii.gz", None))
    params = fit_baselines(pairs)
    linear = params["baseline_linear"]
    assert linear["a"] == pytest.approx(3.0, rel=1e-5) and linear["b"] == pytest.approx(-7.0, abs=1e-3)
    params["background"] = None  # the map alone: no background level outside the subject (noise has no outline)
    guess = baseline_prediction([tmp_path / "c0_0000.nii.gz"], geometry, params)["baseline_linear"]
    assert np.allclose(guess, read_image(tmp_path / "c0.nii.gz")[0], atol=1e-3)


def test_standardized_baseline_removes_a_per_scan_gain_the_line_cannot(tmp_path: Path) -> None:
    geometry = Geometry((1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (20, 20, 20))
    anatomy = np.zeros((20, 20, 20), np.float32)
    anatomy[4:16, 4:16, 4:16] = np.random.default_rng(0).uniform(50, 100, size=(12, 12, 12))
    inside = anatomy > 0
    target = np.where(inside, 2 * anatomy + 100, 0).astype(np.float32)
    pairs = []
    for i, gain in enumerate((0.5, 1.0, 2.0, 1.5)):  # the same anatomy, scanned with different gains
        write_image(gain * anatomy, geometry, tmp_path / f"c{i}_0000.nii.gz")
        write_image(target, geometry, tmp_path / f"c{i}.nii.gz")
        pairs.append((tmp_path / f"c{i}_0000.nii.gz", tmp_path / f"c{i}.nii.gz", None))
    params = fit_baselines(pairs[:3])
    guesses = baseline_prediction([tmp_path / "c3_0000.nii.gz"], geometry, params)
    standardized_error = np.abs(guesses["baseline_standardized"] - target)[inside].mean()
    linear_error = np.abs(guesses["baseline_linear"] - target)[inside].mean()
    assert standardized_error < 1e-3 * target[inside].mean() < linear_error


def test_the_baseline_row_is_the_better_baseline_per_metric() -> None:
    table = pd.DataFrame(
        [
            {"case": c, "method": m, "psnr": p, "mae": a}
            for c, rows in {"a": ((20.0, 5.0), (18.0, 3.0)), "b": ((22.0, 7.0), (19.0, 4.0))}.items()
            for m, (p, a) in zip(("baseline_linear", "baseline_standardized"), rows)
        ]
        + [{"case": c, "method": "model", "psnr": 25.0, "mae": 2.0} for c in "ab"]
    )
    combined, choice = best_baseline(table)
    assert choice == {"mae": "baseline_standardized", "psnr": "baseline_linear"}
    assert combined.set_index("case").loc["b", "psnr"] == 22.0 and combined.set_index("case").loc["b", "mae"] == 4.0
    summary = summarize_table(table)
    assert (
        summary["metrics"]["baseline"]["psnr"]["mean"] == 21.0 and summary["metrics"]["baseline"]["mae"]["mean"] == 3.5
    )
    assert summary["gain_over_baseline"]["model_minus_baseline"] == {"mae": -1.5, "psnr": 4.0}


def test_missing_prediction_is_listed_and_others_scored(phantom_dataset: Path, tmp_path: Path) -> None:
    predictions = perturbed_copies(phantom_dataset / "targetsTr", tmp_path / "pred", noise=10.0)
    (predictions / "phantom_002.nii.gz").unlink()
    table, summary = evaluate_folders(phantom_dataset / "targetsTr", predictions, settings=FAST)
    assert summary["cases_missing_prediction"] == ["phantom_002"]
    assert summary["num_cases"] == 5 and "phantom_002" not in set(table["case"])


def test_different_grid_is_named_and_resample_fixes_it(phantom_dataset: Path, tmp_path: Path) -> None:
    predictions = perturbed_copies(phantom_dataset / "targetsTr", tmp_path / "pred", noise=0.0)
    array, geometry = read_image(predictions / "phantom_001.nii.gz")
    shifted = Geometry(geometry.spacing_zyx, (0.5, 0.0, 0.0), geometry.direction, geometry.size_zyx)
    write_image(array, shifted, predictions / "phantom_001.nii.gz")
    with pytest.raises(AutosrError, match=r"phantom_001.*different grid.*--resample"):
        evaluate_folders(phantom_dataset / "targetsTr", predictions, settings=FAST)
    table, summary = evaluate_folders(
        phantom_dataset / "targetsTr", predictions, settings=replace(FAST, resample=True, tissue=False)
    )
    assert summary["resampled_predictions"] is True
    row = table.set_index("case").loc["phantom_001"]
    assert 0.5 < row["ssim"] < 1.0


def test_empty_mask_names_the_case(phantom_dataset: Path, tmp_path: Path) -> None:
    mask, geometry = read_image(phantom_dataset / "masksTr" / "phantom_003.nii.gz")
    write_image(np.zeros_like(mask), geometry, phantom_dataset / "masksTr" / "phantom_003.nii.gz", dtype=np.uint8)
    targets = phantom_dataset / "targetsTr"
    with pytest.raises(AutosrError, match=r"phantom_003.*mask.*empty"):
        evaluate_folders(targets, copy_of(targets, tmp_path), mask_dir=phantom_dataset / "masksTr", settings=FAST)


def test_no_matching_files(phantom_dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "pred"
    other.mkdir()
    shutil.copy(phantom_dataset / "targetsTr" / "phantom_000.nii.gz", other / "something_else.nii.gz")
    with pytest.raises(AutosrError, match="no matching files"):
        evaluate_folders(phantom_dataset / "targetsTr", other, settings=FAST)
    with pytest.raises(AutosrError, match="no reference images"):
        evaluate_folders(tmp_path / "pred" / "..", other, settings=FAST)


def test_user_segmentations_and_ct(tmp_path: Path) -> None:
    from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_dataset

    ct = make_phantom_dataset(tmp_path, 998, "CT", PhantomSettings(num_train=2, num_test=0, modality="CT"))
    labels = tmp_path / "labels"
    for path in sorted((ct / "targetsTr").glob("*.nii.gz")):
        array, geometry = read_image(path)
        write_image((array > 500).astype(np.uint8) + (array > 0), geometry, labels / path.name, dtype=np.uint8)
    table, summary = evaluate_folders(
        ct / "targetsTr",
        copy_of(ct / "targetsTr", tmp_path),
        settings=replace(FAST, modality="CT"),
        seg_ref_dir=labels,
        seg_pred_dir=labels,
    )
    assert summary["normalization"] == "ct_clip" and summary["data_range"]["window_hu"] == [-1024.0, 3000.0]
    assert (table["data_range_hi"] == 4024.0).all()
    assert (table["seg_dice_1"] == 1.0).all() and (table["seg_dice_2"] == 1.0).all()
    assert (table["tissue_dice_bone"] == 1.0).all()


def test_cli_end_to_end(phantom_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    predictions = perturbed_copies(phantom_dataset / "targetsTr", tmp_path / "pred", noise=10.0)
    (predictions / "phantom_005.nii.gz").unlink()
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            str(phantom_dataset / "targetsTr"),
            str(predictions),
            "--mask-dir",
            str(phantom_dataset / "masksTr"),
            "--input-dir",
            str(phantom_dataset / "imagesTr"),
            "--normalization",
            "zscore",
            "--data-range",
            "-3",
            "4",
            "-o",
            str(out),
            "-np",
            "2",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "phantom_005" in printed and "ssim" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["normalization"] == "zscore" and summary["data_range"]["lo"] == -3.0
    assert summary["cases_missing_prediction"] == ["phantom_005"]
    assert len(list((out / "images").glob("*.png"))) == 5
    assert main(["evaluate", str(tmp_path / "nowhere"), str(predictions)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_baseline_params_and_no_pictures(phantom_dataset: Path, tmp_path: Path) -> None:
    params = tmp_path / "baseline.json"
    params.write_text(json.dumps({"a": 1.25, "b": -50.0, "order": 1}))
    out = tmp_path / "eval"
    targets = str(phantom_dataset / "targetsTr")
    args = [
        "evaluate",
        targets,
        str(copy_of(phantom_dataset / "targetsTr", tmp_path)),
        "--input-dir",
        str(phantom_dataset / "imagesTr"),
        "--no-pictures",
        "-o",
        str(out),
        "-np",
        "1",
    ]
    assert main(args + ["--baseline-params", str(params)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"]["a"] == 1.25 and "--baseline-params" in summary["baseline"]["note"]
    assert not (out / "images").exists()
    params.write_text(json.dumps({"a": 1.0}))
    assert main(args + ["--baseline-params", str(params)]) == 2


def test_normalizations() -> None:
    rng = np.random.default_rng(0)
    reference = rng.random((8, 8, 8)) * 500 + 100
    mask = np.ones(reference.shape, dtype=bool)
    pred, ref = normalize_pair(2 * reference + 7, reference, mask, "zscore")
    assert np.allclose(pred, ref, atol=1e-5) and abs(ref.mean()) < 1e-5
    pred, ref = normalize_pair(2 * reference + 7, reference, mask, "percentile")
    assert np.allclose(pred, ref, atol=1e-5) and np.percentile(ref, 0.1) == pytest.approx(0.0, abs=1e-6)
    pred, ref = normalize_pair(np.full(3, 5000.0), np.full(3, -3000.0), np.ones(3, bool), "ct_clip")
    assert pred.tolist() == [4024.0] * 3 and ref.tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize_pair(reference, reference, mask, "minmax")


def test_resample_leaves_out_reference_voxels_the_prediction_does_not_cover(
    phantom_dataset: Path, tmp_path: Path
) -> None:
    """A prediction covering only part of the reference (a new scan's own field of view) is scored where it
    exists, not against zeros elsewhere."""
    predictions = perturbed_copies(phantom_dataset / "targetsTr", tmp_path / "pred", noise=0.0)
    options = dict(mask_dir=phantom_dataset / "masksTr", settings=replace(FAST, resample=True, tissue=False))
    whole, _ = evaluate_folders(phantom_dataset / "targetsTr", predictions, **options)
    array, geometry = read_image(predictions / "phantom_001.nii.gz")
    kept = array[8:-8]  # 16 slices fewer (into the head), same physical positions for the rest
    origin = geometry.index_to_world([[0, 0, 8]])[0]
    cropped = Geometry(geometry.spacing_zyx, tuple(origin), geometry.direction, kept.shape)
    write_image(kept, cropped, predictions / "phantom_001.nii.gz")
    part, _ = evaluate_folders(phantom_dataset / "targetsTr", predictions, **options)
    before, after = whole.set_index("case").loc["phantom_001"], part.set_index("case").loc["phantom_001"]
    assert after["num_voxels"] < before["num_voxels"]
    assert after["mae"] == pytest.approx(0.0, abs=1e-3)  # identical where it exists, no zeros scored


def test_whole_image_metrics_beside_the_mask_and_the_report_shows_an_evaluation(
    phantom_dataset: Path, tmp_path: Path, autosr_roots
) -> None:
    """A prediction right inside the mask but with a grey background: the masked scores stay perfect, the
    whole-image ones and the error outside the mask show the background; `autosr report --evaluation` puts
    the folder's table and pictures (worst case first) into the page."""
    predictions = perturbed_copies(phantom_dataset / "targetsTr", tmp_path / "pred", noise=0.0)
    for path in sorted(predictions.glob("*.nii.gz"))[:2]:
        array, geometry = read_image(path)
        mask = read_image(phantom_dataset / "masksTr" / path.name)[0] > 0
        write_image(np.where(mask, array, 300.0), geometry, path)  # grey outside the head
    out = tmp_path / "evaluation"
    table, summary = evaluate_folders(
        phantom_dataset / "targetsTr", predictions, mask_dir=phantom_dataset / "masksTr", out_dir=out,
        settings=replace(FAST, tissue=False),
    )  # fmt: skip
    grey = table.set_index("case").loc[["phantom_000", "phantom_001"]]
    clean = table.set_index("case").loc[["phantom_002", "phantom_003"]]
    assert (grey["psnr"] == clean["psnr"].max()).all()  # inside the mask they are perfect
    assert (grey["mae_outside_mask"] > 100).all() and (clean["mae_outside_mask"] < 1e-3).all()
    assert (grey["ssim_image"] < clean["ssim_image"].min()).all()
    assert "whole" not in summary["region"] and "every reference voxel" in summary["image_region"]
    assert main(["report", "999", "--evaluation", "Held-out scans", str(out), "--max-pictures", "2"]) == 0
    page = (autosr_roots.results / "Dataset999_Phantom" / "report.html").read_text()
    assert "Held-out scans" in page and "mae_outside_mask" in page
    worst = page.index("Worst 2 cases")
    shown = [page.index(f"<p>{c}</p>", worst) for c in ("phantom_000", "phantom_001")]
    assert len(shown) == 2 and page.count("data:image/png;base64,") == 2
