"""The whole workflow through the real CLI on a generated dataset: plan, 5 folds, find-best, predict, evaluate;
and the demo on a tiny schedule."""

from __future__ import annotations

import json

import numpy as np
from conftest import TINY_NETWORK_2D, needs_nilearn

from autosr.cli import main
from autosr.formats.plans import Plans
from autosr.io import grid_covering, read_image


def test_cli_workflow_end_to_end(phantom_dataset, autosr_roots, tmp_path, capsys):
    assert main(["verify", "999"]) == 0
    assert main(["plan", "999", "-c", "2d", "-np", "1"]) == 0
    plans_path = autosr_roots.preprocessed / phantom_dataset.name / "plans.json"
    plans = Plans.load(plans_path)  # shrink the network for a CPU test, as a user may edit plans.json
    plans.raw["configurations"]["2d"].update(patch_size=[32, 32], batch_size=4, network=TINY_NETWORK_2D)
    plans.save(plans_path)
    for fold in range(5):
        args = ["train", "999", "2d", str(fold), "--epochs", "1", "--iters-per-epoch", "2", "--num-workers", "0"]
        assert main(args + ["--device", "cpu"]) == 0
    assert main(["find-best", "999", "--no-ensembles"]) == 0
    best = json.loads((autosr_roots.results / phantom_dataset.name / "best.json").read_text())
    assert best["best"] == "Trainer__autosrPlans__2d"
    assert "autosr predict" in best["predict_commands"][0]

    out = tmp_path / "predictions"
    args = ["predict", "-i", str(phantom_dataset / "imagesTs"), "-o", str(out), "-d", "999", "-c", "2d"]
    assert main(args + ["--device", "cpu"]) == 0
    predictions = sorted(out.glob("*.nii.gz"))
    assert [p.name for p in predictions] == ["phantom_006.nii.gz", "phantom_007.nii.gz"]
    array, geometry = read_image(predictions[0])
    input_geometry = read_image(phantom_dataset / "imagesTs" / "phantom_006_0000.nii.gz")[1]
    assert np.all(np.isfinite(array))
    # the planned spacing over the input's field of view (rounded to whole voxels, centred on it)
    assert geometry == grid_covering(input_geometry, plans.configuration("2d").spacing_zyx)

    evaluation = tmp_path / "evaluation"
    args = ["evaluate", str(phantom_dataset / "targetsTs"), str(out), "--mask-dir", str(phantom_dataset / "masksTs")]
    args += ["--input-dir", str(phantom_dataset / "imagesTs"), "--resample", "-o", str(evaluation)]
    assert main(args) == 0
    summary = json.loads((evaluation / "summary.json").read_text())
    assert summary["num_cases"] == 2 and {"model", "baseline"} <= set(summary["metrics"])
    assert main(["report", "999"]) == 0
    assert (autosr_roots.results / phantom_dataset.name / "report.html").is_file()


@needs_nilearn
def test_demo_runs_and_resumes_on_a_tiny_schedule(tmp_path, capsys):
    from autosr.demo import DemoSchedule, run_demo

    tiny = DemoSchedule(
        target_spacing_mm=8.0,
        num_train=5,
        num_test=1,
        configurations=("2d",),
        epochs=1,
        iters_per_epoch=2,
        max_features=8,
        max_batch_size=2,
        trainer="TrainerSSIMLoss",
    )
    summary = run_demo(tmp_path / "work", device="cpu", num_processes=1, schedule=tiny)
    assert summary["num_cases"] == 1 and {"model", "baseline"} <= set(summary["metrics"])
    out = capsys.readouterr().out
    assert "baseline" in out and "HTML report" in out
    # running it again resumes: nothing is trained twice
    run_demo(tmp_path / "work", device="cpu", num_processes=1, schedule=tiny)
    assert "is trained and validated, skipping" in capsys.readouterr().out
