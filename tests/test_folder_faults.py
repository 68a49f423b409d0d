"""A folder prediction with bad scans among good ones, for every worker count: the fault matrix.

One line per (worker count, where the bad scans stand, what is wrong with them). Each runs the real CLI
(`python -m autosr.cli predict`) as the child of a subreaper (tests/process_tree.py) and checks:

- the exit code: 1 when a scan failed, 0 when none did;
- one message per bad scan naming it and what is wrong, in the output and in summary.csv, and no traceback;
- every good scan's prediction is written and reads back whole (finite voxels, its grid); no bad scan has one;
- no process is left behind once the command has ended (workers, fork server, resource tracker).

Kinds: NaN voxels, a truncated file, a 2D image, a channel too many, and a worker killed with SIGKILL while
it writes the scan (tests/fault_injection/sitecustomize.py; as the system's out-of-memory killer would). With
`--num-workers 0` there is no worker to kill: that scan is predicted like the others.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from test_predictor import make_model_folder, plans_dict

from autosr.dataset_conversion.phantom import PhantomSettings, make_phantom_dataset
from autosr.io import read_image
from autosr.network import build_network

TESTS = Path(__file__).resolve().parent
WORKERS = (0, 1, 2)
POSITIONS = {"only": ([0], 1), "first": ([0], 3), "middle": ([1], 3), "last": ([2], 3), "all": ([0, 1, 2], 3)}
KINDS = {
    "nan": "NaN/Inf voxels",
    "truncated": "truncated",
    "2d": "is a 2D image",
    "channels": "the model was trained on 1 channel",
    "sigkill": "the worker process writing this scan died",
}
TIMEOUT_S = 600  # generous: a loaded machine; nothing here depends on how long a step takes


@pytest.fixture(scope="module")
def model_and_scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    plans = plans_dict()
    plans["normalization"]["target"].update(export_mean=0.0, export_std=1.0)
    model = make_model_folder(root / "results", folds=(0,), builder=build_network, plans=plans)
    # small scans (16^3 target grid) and no mirroring below: the network's time is not what is tested
    raw = make_phantom_dataset(
        root / "raw", 999, "Small", PhantomSettings(num_train=3, num_test=0, shape_zyx=(16,) * 3)
    )
    return model, sorted((raw / "imagesTr").glob("*_0000.nii.gz"))


def _make_bad(kind: str, folder: Path, case: str) -> None:
    """Break `case`'s input the way `kind` says (as a scanner, a copy or a user might)."""
    path = folder / f"{case}_0000.nii.gz"
    if kind == "nan":
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        array.flat[:: max(1, array.size // 16)] = np.nan
        changed = sitk.GetImageFromArray(array)
        changed.CopyInformation(image)
        sitk.WriteImage(changed, str(path))
    elif kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
    elif kind == "2d":
        volume = sitk.ReadImage(str(path))
        sitk.WriteImage(volume[:, :, volume.GetSize()[2] // 2], str(path))
    elif kind == "channels":
        shutil.copyfile(path, folder / f"{case}_0001.nii.gz")
    # sigkill: the scan is fine; its writer is killed (environment of the run)


@dataclass
class Run:
    returncode: int
    output: str
    leftovers: list


def predict_in_subreaper(model: Path, inputs: Path, out: Path, workers: int, env_extra: dict) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSR_")}
    env.update(OMP_NUM_THREADS="1", AUTOSR_TEST_RUNNER_PID="0", **env_extra)
    argv = [sys.executable, "-m", "autosr.cli", "predict", "-i", str(inputs), "-o", str(out), "-m", str(model)]
    argv += ["-f", "0", "--device", "cpu", "--no-tta", "--num-workers", str(workers)]
    runner = [sys.executable, str(TESTS / "process_tree.py"), str(TIMEOUT_S), "20", "--", *argv]
    if "AUTOSR_TEST_KILL_CASES" in env:  # the runner's child is the `autosr predict` process: never killed
        runner = [
            sys.executable, "-c",
            "import os, sys, runpy; os.environ['AUTOSR_TEST_RUNNER_PID'] = str(os.getpid()); "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
            *runner[1:],
        ]  # fmt: skip
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS / "fault_injection"), env.get("PYTHONPATH", "")])
    finished = subprocess.run(runner, env=env, capture_output=True, text=True, timeout=TIMEOUT_S + 60)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return Run(**json.loads(finished.stdout.strip().splitlines()[-1]))


MATRIX = [(w, p, k) for w in WORKERS for p in POSITIONS for k in KINDS]


@pytest.mark.parametrize(("workers", "position", "kind"), MATRIX, ids=[f"{w}w-{p}-{k}" for w, p, k in MATRIX])
def test_bad_scans_fail_alone(model_and_scans, tmp_path, workers, position, kind):
    model, sources = model_and_scans
    bad_indices, count = POSITIONS[position]
    cases = [f"c{i}" for i in range(count)]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case, source in zip(cases, sources):
        shutil.copyfile(source, inputs / f"{case}_0000.nii.gz")
    bad = [cases[i] for i in bad_indices]
    for case in bad:
        _make_bad(kind, inputs, case)
    env = {"AUTOSR_TEST_KILL_CASES": ",".join(bad)} if kind == "sigkill" else {}
    out = tmp_path / "out"
    run = predict_in_subreaper(model, inputs, out, workers, env)

    failing = [] if (kind == "sigkill" and workers == 0) else bad  # no worker to kill without workers
    assert "Traceback" not in run.output, run.output
    assert run.returncode == (1 if failing else 0), run.output
    assert run.leftovers == [], run.leftovers
    table = pd.read_csv(out / "summary.csv")
    status = dict(zip(table["case"], table["status"]))
    for case in cases:
        prediction = out / f"{case}.nii.gz"
        if case in failing:
            assert status[case] == "failed" and not prediction.exists()
            reason = table.set_index("case").loc[case, "reason"]
            assert KINDS[kind] in reason, reason
            assert any(case in line and KINDS[kind] in line for line in run.output.splitlines()), run.output
        else:
            assert status[case] == "predicted", run.output
            array, geometry = read_image(prediction)  # whole: the reader refuses a truncated file
            assert np.isfinite(array).all() and array.ndim == 3 and geometry.size_zyx == array.shape


def test_kill_9_of_the_run_leaves_no_process_behind_and_a_rerun_finishes(model_and_scans, tmp_path):
    """kill -9 of `autosr predict` with workers, once its first prediction is on disk: its workers, fork server
    and resource tracker end by themselves (they watch the main process), and the same command finishes."""
    model, sources = model_and_scans
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(24):
        shutil.copyfile(sources[i % len(sources)], inputs / f"s{i:02d}_0000.nii.gz")
    out = tmp_path / "out"
    killed = predict_in_subreaper(model, inputs, out, 2, {"PROCESS_TREE_KILL_WHEN": str(out / "s00.nii.gz")})
    assert killed.returncode == -9, killed.output
    assert killed.leftovers == [], killed.leftovers
    again = predict_in_subreaper(model, inputs, out, 2, {})
    assert again.returncode == 0 and again.leftovers == [], again.output
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"s{i:02d}.nii.gz" for i in range(24)]
