"""Distillation end to end on the tiny trained phantom (2 folds of a 2d network, two iterations each), through
the real CLI: distill with unpaired scans, predict -f distilled (mirroring off by default, on with --tta or
--uncertainty), export and install with the student, resume after a real kill, and the teacher cache
invalidated when a teacher checkpoint changes."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import kill_training_after_first_checkpoint

from autosr.checkpoint import load_checkpoint, save_checkpoint
from autosr.cli import main
from autosr.errors import AutosrError
from autosr.formats.plans import Plans
from autosr.inference.predictor import Predictor
from autosr.inference.settings import ModelSource, PredictionSettings
from autosr.io import read_image
from autosr.model_layout import ModelFolder
from autosr.preprocessing.case_store import case_paths, list_cases
from autosr.training.distillation.api import draw_list
from autosr.training.distillation.student import StudentSpec, build_student, perturb_like_another_scanner

torch.set_num_threads(1)
MODEL = "Trainer__autosrPlans__2d"
FAST = ["--epochs", "1", "--iters-per-epoch", "2", "--num-workers", "0", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _no_autosr_environment(monkeypatch):
    for name in ("AUTOSR_RAW", "AUTOSR_PREPROCESSED", "AUTOSR_RESULTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def model(trained_phantom, tmp_path) -> dict:
    """A private copy of the trained phantom's folders (distillation writes into the model folder)."""
    roots = {key: tmp_path / key for key in ("raw", "preprocessed", "results")}
    for key, folder in roots.items():
        shutil.copytree(trained_phantom[key], folder)
    unpaired = tmp_path / "unpaired"
    shutil.copytree(roots["raw"] / "Dataset999_Phantom" / "imagesTs", unpaired)
    flags = [f"--{key}={folder}" for key, folder in roots.items()]
    return {**roots, "flags": flags, "unpaired": unpaired, "model_dir": roots["results"] / "Dataset999_Phantom" / MODEL}


def _distill(model: dict, *extra: str) -> int:
    return main(["distill", "999", "-c", "2d", "-f", "0", "1", *FAST, *model["flags"], *extra])


def _predict(model: dict, out: Path, *extra: str) -> dict[str, tuple[np.ndarray, object]]:
    inputs = model["raw"] / "Dataset999_Phantom" / "imagesTs"
    assert main(["predict", "-i", str(inputs), "-o", str(out), "--num-workers", "0", "--device", "cpu", *extra]) == 0
    return {p.name: read_image(p) for p in sorted(out.glob("*.nii.gz"))}


def test_distill_predict_export_install(model, tmp_path, capsys):
    assert _distill(model, "--unpaired", str(model["unpaired"])) == 0
    fold = model["model_dir"] / "fold_distilled"
    cache = model["model_dir"] / "distillation_cache"
    assert (fold / "checkpoint_final.pt").is_file() and (fold / "progress.png").is_file()
    cases = list_cases(cache / "cases")
    assert len(cases) == 8 and sum(c.startswith("unpaired__") for c in cases) == 2
    teacher = json.loads((cache / "teacher.json").read_text())
    assert teacher["folds"] == [0, 1] and set(teacher["sha256"]) == {"0", "1"}
    assert json.loads((fold / "teacher.json").read_text()) == teacher
    assert load_checkpoint(fold / "checkpoint_final.pt")["student_start"] == "fold_0/checkpoint_final.pt"  # default
    # the unpaired scans are copies of test inputs (voxels of the training inputs' size): no blur was measured
    recorded = load_checkpoint(fold / "checkpoint_final.pt")["student_scanner_shift"]
    assert set(recorded) == {"blur_sigma", "noise_sigma", "bias_slope"} and recorded["blur_sigma"] == [0.0, 0.0, 0.0]
    # the cached target is the teacher's prediction of the cached input (folds 0+1 with their mirroring)
    teacher_model = Predictor.from_trained(model["model_dir"], (0, 1), settings=PredictionSettings(device="cpu"))
    cached_input = np.load(cache / "cases" / f"{cases[0]}_input.npy")
    expected, _ = teacher_model.predict_preprocessed(cached_input)
    assert np.allclose(np.load(cache / "cases" / f"{cases[0]}_target.npy")[0], expected, atol=1e-5)

    # already distilled: refused without --continue; with it nothing is done, the teacher cache not even looked at
    assert _distill(model) == 2
    assert "already distilled" in capsys.readouterr().err
    missing = case_paths(cache / "cases", cases[0])["properties"]
    missing.unlink()
    assert _distill(model, "--continue") == 0 and "nothing left to do" in capsys.readouterr().out
    assert not missing.exists()

    flags = ["-d", "999", "-c", "2d", *model["flags"]]
    ensemble = _predict(model, tmp_path / "ensemble", *flags, "-f", "0", "1")
    student = _predict(model, tmp_path / "student", *flags, "-f", "distilled")
    assert list(student) == list(ensemble) == ["phantom_006.nii.gz", "phantom_007.nii.gz"]
    for name, (array, geometry) in student.items():
        assert geometry == ensemble[name][1] and np.all(np.isfinite(array))
    source = ModelSource(dataset=999, configuration="2d", folds=("distilled",))
    assert source.folds == ("distilled",)
    with pytest.raises(AutosrError, match="predicts alone"):
        ModelSource(dataset=999, configuration="2d", folds=(0, "distilled"))
    one_pass = Predictor.from_trained(model["model_dir"], ("distilled",), settings=PredictionSettings(device="cpu"))
    mirrored = Predictor.from_trained(
        model["model_dir"], ("distilled",), settings=PredictionSettings(device="cpu", mirror_student=True)
    )
    assert one_pass.num_members == 1 and mirrored.num_members == 4  # 2d: two mirrored axes
    tta = _predict(model, tmp_path / "student_tta", *flags, "-f", "distilled", "--tta")
    assert any(not np.array_equal(tta[n][0], student[n][0]) for n in student)
    # --uncertainty: the spread of the student's mirrorings, flagged against the student's own reference
    assert main(["qc-reference", *flags, "-f", "distilled", "--uncertainty", "--device", "cpu"]) == 0
    reference = json.loads((model["model_dir"] / "qc_reference.json").read_text())
    key = "folds=distilled;checkpoint=final;mirror=0,1;step=0.5"
    assert key in reference["uncertainty"]
    _predict(model, tmp_path / "student_unc", *flags, "-f", "distilled", "--uncertainty")
    spread, _ = read_image(tmp_path / "student_unc" / "uncertainty" / "phantom_006.nii.gz")
    assert spread.max() > 0
    assert json.loads((tmp_path / "student_unc" / "qc_thresholds.json").read_text())["uncertainty_key"] == key

    package = tmp_path / "model.zip"
    assert main(["export-model", "-d", "999", "-c", "2d", "-f", "0", "1", "-o", str(package), *model["flags"]]) == 0
    with zipfile.ZipFile(package) as z:
        names = z.namelist()
    assert f"Dataset999_Phantom/{MODEL}/fold_distilled/checkpoint_final.pt" in names
    assert not any("distillation_cache" in n or "fold_distilled/checkpoint_latest" in n for n in names)
    fresh = tmp_path / "installed"
    assert main(["install-model", str(package), "--results", str(fresh)]) == 0
    from_install = _predict(
        model, tmp_path / "from_install", "-d", "999", "-c", "2d", "-f", "distilled", f"--results={fresh}"
    )
    from_zip = _predict(model, tmp_path / "from_zip", "--model", str(package), "-f", "distilled")
    for name, (array, geometry) in student.items():
        for other in (from_install, from_zip):
            assert np.array_equal(other[name][0], array) and other[name][1] == geometry


def test_resume_after_kill_and_cache_invalidation(model, capsys):
    fold = model["model_dir"] / "fold_distilled"
    cache = model["model_dir"] / "distillation_cache"
    latest = fold / "checkpoint_latest.pt"
    args = ["999", "-c", "2d", "-f", "0", "1", "--epochs", "200", "--iters-per-epoch", "2", "--num-workers", "0"]
    kill_training_after_first_checkpoint([*args, *model["flags"]], latest, command="distill")
    assert not (fold / "checkpoint_final.pt").exists()
    epoch = load_checkpoint(latest)["epoch"]
    assert 1 <= epoch < 200
    assert _distill(model) == 2 and "--continue to resume" in capsys.readouterr().err
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("cases/*.json")}
    resume = ["--epochs", str(epoch + 1), "--iters-per-epoch", "2", "--num-workers", "0", "--device", "cpu"]
    assert main(["distill", "999", "-c", "2d", "-f", "0", "1", *resume, "--continue", *model["flags"]]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("cases/*.json")} == before  # the cache was reused
    final = load_checkpoint(fold / "checkpoint_final.pt")
    assert final["epoch"] == epoch + 1 and final["student_plan"] == "planned"
    assert f"resuming at epoch {epoch}" in (fold / "training_log.txt").read_text()

    # a teacher fold retrained (here: its checkpoint rewritten with other weights): continuing is refused, and
    # a new student's distillation discards every cached prediction first
    teacher = model["model_dir"] / "fold_1" / "checkpoint_final.pt"
    state = load_checkpoint(teacher)
    state["network_weights"] = {
        k: v + 0.01 if v.is_floating_point() else v for k, v in state["network_weights"].items()
    }
    save_checkpoint(state, teacher)
    assert _distill(model, "--continue") == 2 and "other teacher checkpoints" in capsys.readouterr().err
    shutil.rmtree(fold)
    assert _distill(model, "--student-plan", "half-width") == 0
    out = capsys.readouterr().out
    assert "cached predictions discarded" in out, out
    after = {p.name: p.stat().st_mtime_ns for p in cache.glob("cases/*.json")}
    assert set(after) == set(before) and all(after[n] != before[n] for n in after), [
        (n, before[n], after[n]) for n in after
    ]
    student = load_checkpoint(fold / "checkpoint_final.pt")
    assert student["student_plan"] == "half-width" and student["student_start"] is None  # a half-width one: random
    assert student["network_plan"]["features_per_stage"] == [2, 4, 8]  # half of the tiny network's 4, 8, 16


def test_student_options(model, capsys):
    """--init-fold, --perturb-inputs and --unpaired-share through the CLI; wrong combinations refused first."""
    fold = model["model_dir"] / "fold_distilled"
    assert _distill(model, "--student-plan", "half-width", "--init-fold", "0") == 2
    assert "only with --student-plan planned" in capsys.readouterr().err
    assert _distill(model, "--unpaired-share", "0.25") == 2 and "needs --unpaired" in capsys.readouterr().err
    assert _distill(model, "--init-fold", "1", "--from-scratch") == 2 and "contradict" in capsys.readouterr().err
    unpaired = ["--unpaired", str(model["unpaired"])]
    assert _distill(model, *unpaired, "--unpaired-share", "1") == 2 and "between 0 and 1" in capsys.readouterr().err
    assert not fold.exists()
    options = ["--unpaired-share", "0.25", "--init-fold", "0", "--perturb-inputs", "--no-unpaired-match"]
    assert _distill(model, *unpaired, *options) == 0
    final = load_checkpoint(fold / "checkpoint_final.pt")
    assert final["student_start"] == "fold_0/checkpoint_final.pt" and final["student_perturb_inputs"] is True
    assert final["student_scanner_shift"] is None

    # the fresh student's weights are fold 0's before its first step (the optimizer starts fresh)
    shutil.rmtree(fold)
    fold_0 = model["model_dir"] / "fold_0" / "checkpoint_final.pt"
    cases = model["model_dir"] / "distillation_cache" / "cases"
    budget = {"num_epochs": 1, "iters_per_epoch": 1, "num_workers": 0, "seed": 0}
    runner = build_student(
        Plans.load(model["model_dir"] / "plans.json"), "2d", ModelFolder.at(model["model_dir"]).distilled, cases,
        list_cases(cases), StudentSpec(init_checkpoint=fold_0), torch.device("cpu"), budget, False, {},
    )  # fmt: skip
    weights = load_checkpoint(fold_0)["network_weights"]
    assert all(torch.equal(v, weights[k]) for k, v in runner.network.state_dict().items())


def test_draw_list_and_perturbation():
    paired, unpaired = [f"p{i}" for i in range(20)], [f"u{i}" for i in range(20)]
    assert draw_list(paired, unpaired, None) == paired + unpaired
    for share in (0.25, 0.5, 0.75):
        draws = draw_list(paired, unpaired, share)
        assert sum(d.startswith("u") for d in draws) / len(draws) == pytest.approx(share)
        assert set(draws) == set(paired + unpaired)
    assert draw_list(paired, [], 0.25) == paired
    inputs = torch.rand(2, 1, 8, 8, 8) + 1.0
    first = perturb_like_another_scanner(inputs, torch.Generator().manual_seed(3))
    again = perturb_like_another_scanner(inputs, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and first.shape == inputs.shape and not torch.equal(first, inputs)
