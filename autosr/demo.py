"""`autosr demo`: the whole pipeline on a synthetic paired brain dataset, from nothing to a results table.

It generates a low-field-like → high-field-like brain dataset from the MNI152 template, verifies it, plans
and preprocesses, trains the five folds, ranks configurations by cross-validation, predicts the held-out
test scans with the fold ensemble of the winner, evaluates them against their targets next to the
no-learning baseline, and writes the HTML report. Every stage skips work that is already done, so running
the same command again resumes where a killed run stopped.

`--quick` sizes the schedule to a small CPU machine (minutes on 2 cores): 3 mm target voxels, the
`2d` configuration with a narrower network and a smaller batch (plans.json is edited, as a user would, before
training), and a short schedule. Without it the planner's own plans and the full schedule run, which wants
a GPU.

`--task super-resolution` runs the same pipeline on thick-slice brains instead: the input has the target's
contrast, 3 mm in-plane voxels and 12 mm slices that average the signal over their thickness (4x the target's
3 mm), so the model must restore through-plane detail; the planner's 2D slices then contain the thick axis.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autosr.errors import AutosrError
from autosr.model_layout import ModelFolder
from autosr.paths import DEFAULT_PLANS_NAME, AutosrPaths

DEMO_DATASET_ID = 990
DEMO_DATASET_NAME = "SyntheticBrain"
TASKS = ("contrast", "super-resolution")


@dataclass(frozen=True)
class DemoData:
    """The synthetic dataset of a demo task (arguments of `make_synthetic_brain_dataset`)."""

    dataset_id: int
    name: str
    input_spacing_mm: float | None = None  # None: 1.5 x the target's
    slice_thickness_mm: float | None = None
    contrast: str = "low-field"


DATA = {
    "contrast": DemoData(DEMO_DATASET_ID, DEMO_DATASET_NAME),
    "super-resolution": DemoData(991, "SyntheticBrainThickSlices", 3.0, 12.0, "same"),
}


@dataclass(frozen=True)
class DemoSchedule:
    """How much data and training the demo uses. `epochs`/`iters_per_epoch` None = the trainer's default."""

    target_spacing_mm: float
    num_train: int
    num_test: int
    configurations: tuple[str, ...]
    epochs: int | None
    iters_per_epoch: int | None
    max_features: int | None  # cap on features per stage written into plans.json; None keeps the planner's
    max_batch_size: int | None  # cap on the batch written into plans.json; None keeps the planner's
    trainer: str


# Quick: sized on the 2-core CPU machine of documentation/benchmark.md ("Demo") so the whole demo ends
# within 15 minutes there (measured: 669 s). On that machine one epoch of 10 iterations took 5 s for the 2d
# configuration (batch 16 of 80x56 slices) and 30 s for 3d_fullres (batch 2 of 56x80x56), so quick mode
# trains the 2d configuration.
QUICK = DemoSchedule(
    target_spacing_mm=3.0,
    num_train=20,
    num_test=4,
    configurations=("2d",),
    epochs=10,
    iters_per_epoch=25,
    max_features=64,
    max_batch_size=16,
    # 12 x 25 iterations on fold 1 of this dataset (same machine): TrainerSSIMLoss reached SSIM 0.905 /
    # PSNR 20.6 dB against the baseline's 0.873 / 18.5 dB; plain L1 (Trainer) only 0.875 / 21.0 dB. A short
    # schedule needs the SSIM term to beat the baseline on structure.
    trainer="TrainerSSIMLoss",
)
# Super-resolution learns detail the input lacks, not only a new contrast: twice the quick schedule (20 x 25
# iterations, about 2 min per fold on the 2-core CPU) is where the fold ensemble beats B-spline interpolation
# by more than 1 dB (documentation/benchmark.md, "Demo: super-resolution").
QUICK_SUPER_RESOLUTION = replace(QUICK, epochs=20)
FULL = DemoSchedule(
    target_spacing_mm=2.0,
    num_train=20,
    num_test=4,
    configurations=("2d", "3d_fullres"),
    epochs=None,
    iters_per_epoch=None,
    max_features=None,
    max_batch_size=None,
    trainer="Trainer",
)


def _say(message: str) -> None:
    print(f"[autosr demo] {message}", flush=True)


def size_plans_for_cpu(plans_path: Path, configurations: tuple[str, ...], max_features: int, max_batch: int) -> bool:
    """Edit plans.json as a user would for a small CPU: halve the features per stage (at least 8, at most
    `max_features`) and cap the batch. Marked in the plan so a resumed demo does not halve twice; True when
    it changed anything."""
    from autosr.formats.plans import Plans

    plans = Plans.load(plans_path)
    changed = False
    for name in configurations:
        config = plans.configuration(name).raw
        if config.get("sized_for_cpu_by_demo"):
            continue
        network = config["network"]
        network["features_per_stage"] = [min(max(8, f // 2), max_features) for f in network["features_per_stage"]]
        config["batch_size"] = min(config["batch_size"], max_batch)
        config["sized_for_cpu_by_demo"] = True
        changed = True
    if changed:
        plans.save(plans_path)
    return changed


def run_demo(
    workdir: str | os.PathLike = "autosr_work",
    quick: bool = False,
    device: str | None = None,
    num_processes: int | None = None,
    schedule: DemoSchedule | None = None,
    task: str = "contrast",
) -> dict[str, Any]:
    """Run (or resume) the demo in `workdir`; returns the held-out evaluation summary.

    `schedule` replaces the QUICK/FULL presets (e.g. a smaller one for a smoke test from Python); `task` is
    "contrast" (low-field to high-field brains) or "super-resolution" (thick slices to thin).
    """
    from autosr.dataset.verify import verify_dataset
    from autosr.dataset_conversion.synthetic_brain import SyntheticBrainSettings, make_synthetic_brain_dataset
    from autosr.evaluation.baseline import fit_baselines
    from autosr.evaluation.evaluate import evaluate_folders
    from autosr.evaluation.find_best import find_best
    from autosr.evaluation.report import write_report
    from autosr.evaluation.report_text import summary_lines
    from autosr.evaluation.settings import EvaluationSettings
    from autosr.inference.api import predict
    from autosr.inference.settings import ModelSource, PredictionSettings
    from autosr.planning.api import plan_dataset
    from autosr.training.run import train_fold

    if task not in TASKS:
        raise AutosrError(f"unknown demo task '{task}' (valid: {', '.join(TASKS)})")
    data = DATA[task]
    schedule = schedule or ((QUICK_SUPER_RESOLUTION if task == "super-resolution" else QUICK) if quick else FULL)
    workdir = Path(workdir).resolve()
    paths = AutosrPaths.resolve(workdir / "raw", workdir / "preprocessed", workdir / "results")
    for root in (paths.raw, paths.preprocessed, paths.results):
        root.mkdir(parents=True, exist_ok=True)
    num_processes = num_processes or max(1, min(4, os.cpu_count() or 1))
    timings: dict[str, float] = {}
    dataset_name = f"Dataset{data.dataset_id:03d}_{data.name}"
    raw_dir = paths.raw / dataset_name

    t0 = time.perf_counter()
    if (raw_dir / "dataset.json").is_file():
        _say(f"dataset {raw_dir} exists, reusing it")
    else:
        _say(
            f"generating {schedule.num_train}+{schedule.num_test} synthetic paired brains "
            f"at {schedule.target_spacing_mm:g} mm"
        )
        settings = SyntheticBrainSettings(
            num_train=schedule.num_train,
            num_test=schedule.num_test,
            target_spacing_mm=schedule.target_spacing_mm,
            input_spacing_mm=data.input_spacing_mm,
            slice_thickness_mm=data.slice_thickness_mm,
            contrast=data.contrast,
        )
        make_synthetic_brain_dataset(paths.raw, data.dataset_id, data.name, settings, num_processes=num_processes)
    report = verify_dataset(raw_dir)
    report.raise_if_problems()
    print(report.summary())
    timings["generate_and_verify_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say("planning and preprocessing")
    plan_dataset(
        dataset_name,
        paths,
        configurations=list(schedule.configurations),
        num_processes=num_processes,
    )
    plans_path = paths.preprocessed / dataset_name / "plans.json"
    if schedule.max_features is not None and size_plans_for_cpu(
        plans_path, schedule.configurations, schedule.max_features, schedule.max_batch_size
    ):
        _say(f"quick mode: narrowed the network and capped the batch in {plans_path} for CPU training")
    timings["plan_and_preprocess_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model_root = paths.results / dataset_name
    for configuration in schedule.configurations:
        for fold in range(5):
            model = ModelFolder.create(model_root, schedule.trainer, DEFAULT_PLANS_NAME, configuration)
            fold_dir = model.fold(fold)
            if fold_dir.checkpoint("final").is_file() and (fold_dir.validation_dir / "summary.json").is_file():
                _say(f"{configuration} fold {fold} is trained and validated, skipping")
                continue
            _say(f"training {configuration} fold {fold}")
            train_fold(
                dataset_name,
                configuration,
                fold,
                trainer=schedule.trainer,
                paths=paths,
                device=device,
                continue_training=fold_dir.path.is_dir(),
                epochs=schedule.epochs,
                iters_per_epoch=schedule.iters_per_epoch,
            )
    timings["training_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say("ranking configurations by cross-validation")
    best = find_best(dataset_name, paths, configurations=list(schedule.configurations), trainers=[schedule.trainer])
    winner = best["ranking"][0]
    timings["find_best_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    prediction_dirs = []
    for member in winner["members"]:
        model = ModelFolder.parse(model_root / member)
        out = workdir / "predictions" / member
        _say(f"predicting the held-out scans with the 5-fold ensemble of {member}")
        source = ModelSource(dataset_name, model.configuration, model.trainer, model.plans_name)
        predict(raw_dir / "imagesTs", out, source, PredictionSettings(device=device), paths=paths)
        prediction_dirs.append(out)
    if len(prediction_dirs) > 1:
        from autosr.inference.api import ensemble_folders

        final_dir = workdir / "predictions" / "ensemble"
        ensemble_folders(prediction_dirs, final_dir)
    else:
        final_dir = prediction_dirs[0]
    timings["predict_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say("evaluating against the held-out targets (baseline fitted on the training cases)")
    from autosr.formats.dataset_spec import discover_cases, load_dataset_spec

    spec = load_dataset_spec(raw_dir)
    training_cases = discover_cases(raw_dir, spec, "Tr")
    baseline_params = fit_baselines([(c.channels, c.target, c.mask) for c in training_cases.values()])
    _, summary = evaluate_folders(
        raw_dir / "targetsTs",
        final_dir,
        mask_dir=raw_dir / "masksTs",
        input_dir=raw_dir / "imagesTs",
        out_dir=workdir / "evaluation",
        # predictions of new scans lie on the planned grid over the *input's* field of view; the held-out
        # targets may differ from it by rounding, so they are compared on the target grid
        settings=EvaluationSettings(modality=spec.target_modality, resample=True),
        baseline_params=baseline_params,
        num_processes=num_processes,
    )
    report_path = write_report(dataset_name, paths, evaluations={"Held-out test scans": workdir / "evaluation"})
    timings["evaluate_s"] = time.perf_counter() - t0

    print()
    print(f"Held-out test cases, {winner['name']} (fold ensemble) vs the no-learning baseline:")
    for line in summary_lines(summary):
        print("  " + line)
    print()
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"per-case table:  {workdir / 'evaluation' / 'cases.csv'}")
    print(f"HTML report:     {report_path}")
    summary["timings_s"] = timings
    return summary
