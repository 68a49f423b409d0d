"""Cross-validation merging, `autosr find-best` and `autosr report` on fake-but-real model folders.

The model folders hold NIfTI validation predictions made by adding noise of a known size to the phantom
targets, so the right ranking is known without training anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from autosr.cli import main
from autosr.evaluation.crossval import merge_crossval
from autosr.io import atomic_write_json, read_image, write_image
from autosr.paths import AutosrPaths

DATASET = "Dataset999_Phantom"
CASES = [f"phantom_{i:03d}" for i in range(6)]
SPLITS = [
    {"train": [c for c in CASES if c not in val], "val": val}
    for val in (CASES[0:2], CASES[2:3], CASES[3:4], CASES[4:5], CASES[5:6])
]


def fake_model(
    roots: AutosrPaths, raw: Path, configuration: str, noise: float, seed: int, progress: bool = False
) -> Path:
    """A model folder whose fold_k/validation/ holds the targets of fold k's cases plus noise."""
    model = roots.results / DATASET / f"Trainer__autosrPlans__{configuration}"
    rng = np.random.default_rng(seed)
    for k, split in enumerate(SPLITS):
        for case in split["val"]:
            target, geometry = read_image(raw / "targetsTr" / f"{case}.nii.gz")
            noisy = target + rng.normal(0, noise, target.shape).astype(np.float32)
            write_image(noisy, geometry, model / f"fold_{k}" / "validation" / f"{case}.nii.gz")
        if progress:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig = plt.figure(figsize=(2, 1))
            plt.plot([3, 2, 1])
            fig.savefig(model / f"fold_{k}" / "progress.png")
            plt.close(fig)
    return model


def write_splits(roots: AutosrPaths) -> None:
    atomic_write_json(SPLITS, roots.preprocessed / DATASET / "splits.json")


def test_crossval_merges_folds_with_per_fold_baseline(autosr_roots: AutosrPaths, phantom_dataset: Path) -> None:
    write_splits(autosr_roots)
    model = fake_model(autosr_roots, phantom_dataset, "3d_fullres", noise=10.0, seed=0)
    (model / "fold_4" / "validation" / "phantom_005.nii.gz").unlink()
    table, summary = merge_crossval(model, phantom_dataset, autosr_roots.preprocessed / DATASET)
    assert summary["cases_missing_prediction"] == ["phantom_005"] and summary["num_cases"] == 5
    assert sorted(table.loc[table["method"] == "model", "fold"].tolist()) == [0, 0, 1, 2, 3]
    per_fold = summary["baseline"]["per_fold"]
    linear = [per_fold[k]["baseline_linear"]["a"] for k in ("0", "1")]
    assert len(per_fold) == 5 and linear[0] != linear[1]  # fitted on different cases
    written = pd.read_csv(model / "crossval_results" / "cases.csv")
    assert set(written["method"]) == {"model", "baseline_linear", "baseline_standardized"}
    assert len(list((model / "crossval_results" / "images").glob("*.png"))) == 5
    assert main(["report", "999", "--max-pictures", "3", "-o", str(autosr_roots.results / "r.html")]) == 0
    page = (autosr_roots.results / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "No <code>best.json</code> yet" in page


def test_find_best_ranks_less_perturbed_first_and_reports(
    autosr_roots: AutosrPaths, phantom_dataset: Path, capsys
) -> None:
    write_splits(autosr_roots)
    fake_model(autosr_roots, phantom_dataset, "3d_fullres", noise=10.0, seed=0, progress=True)
    fake_model(autosr_roots, phantom_dataset, "2d", noise=60.0, seed=1)
    assert main(["find-best", "999", "--no-pictures"]) == 0
    printed = capsys.readouterr().out
    best = json.loads((autosr_roots.results / DATASET / "best.json").read_text())
    names = [entry["name"] for entry in best["ranking"]]
    assert names[0] == "Trainer__autosrPlans__3d_fullres"
    assert names.index("Trainer__autosrPlans__2d") == 2  # the ensemble sits in between
    assert best["predict_commands"] == [
        f"autosr predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d {DATASET} -c 3d_fullres -f 0 1 2 3 4"
    ]
    assert best["ensemble_command"] is None and best["predict_commands"][0] in printed
    assert best["metric"] == "ssim" and best["cases_compared"] == CASES
    assert best["baseline_means"]["ssim"] < best["ranking"][-1]["means"]["ssim"]
    ensemble = (
        autosr_roots.results
        / DATASET
        / "ensembles"
        / "ensemble__Trainer__autosrPlans__2d--Trainer__autosrPlans__3d_fullres"
    )
    assert len(list(ensemble.glob("*.nii.gz"))) == 6

    assert main(["report", "999", "--max-pictures", "2"]) == 0
    page = (autosr_roots.results / DATASET / "report.html").read_text()
    assert "Trainer__autosrPlans__3d_fullres" in page and "autosr predict" in page
    assert page.count("data:image/png;base64,") == 5  # the five training curves; find-best drew no pictures
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from the network


def test_find_best_picks_an_ensemble_and_restricts_configurations(
    autosr_roots: AutosrPaths, phantom_dataset: Path
) -> None:
    write_splits(autosr_roots)
    fake_model(autosr_roots, phantom_dataset, "3d_fullres", noise=30.0, seed=0)
    fake_model(autosr_roots, phantom_dataset, "3d_lowres", noise=30.0, seed=1)
    assert main(["find-best", "999", "--no-pictures", "--metric", "mae"]) == 0
    best = json.loads((autosr_roots.results / DATASET / "best.json").read_text())
    assert best["best"].startswith("ensemble__")
    assert (
        best["ensemble_command"]
        == "autosr ensemble -i OUTPUT_FOLDER_3d_fullres OUTPUT_FOLDER_3d_lowres -o OUTPUT_FOLDER"
    )
    assert len(best["predict_commands"]) == 2
    assert main(["find-best", "999", "-c", "3d_lowres", "--no-pictures"]) == 0
    best = json.loads((autosr_roots.results / DATASET / "best.json").read_text())
    assert [e["name"] for e in best["ranking"]] == ["Trainer__autosrPlans__3d_lowres"]
    assert (
        main(["find-best", "999", "--no-ensembles", "--no-pictures", "--trainers", "Trainer", "-p", "autosrPlans"]) == 0
    )
    best = json.loads((autosr_roots.results / DATASET / "best.json").read_text())
    assert all(e["kind"] == "model" for e in best["ranking"]) and len(best["ranking"]) == 2
    assert main(["find-best", "999", "--trainers", "OtherTrainer"]) == 2


def test_find_best_without_models_or_splits(autosr_roots: AutosrPaths, phantom_dataset: Path, capsys) -> None:
    (autosr_roots.results / DATASET).mkdir()
    assert main(["find-best", "999"]) == 2
    assert "no trained model folders" in capsys.readouterr().err
    fake_model(autosr_roots, phantom_dataset, "3d_fullres", noise=10.0, seed=0)
    assert main(["find-best", "999"]) == 2
    assert "splits.json" in capsys.readouterr().err


def test_predict_lines_name_non_default_trainer_and_plans(tmp_path: Path) -> None:
    from autosr.evaluation.find_best import predict_lines
    from autosr.model_layout import ModelFolder

    member = ModelFolder.create(tmp_path, "TrainerGAN", "bigPlans", "3d_fullres")
    lines, ensemble = predict_lines(DATASET, [member], [0, 1, 2])
    assert lines == [
        f"autosr predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d {DATASET} -c 3d_fullres -f 0 1 2 --trainer TrainerGAN --plans bigPlans"
    ]
    assert ensemble is None
