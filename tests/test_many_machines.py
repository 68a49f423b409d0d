"""The documented recipes for many machines and many GPUs (documentation/examples/), run as written: three
`autosr predict` processes at once into one output folder, each a part; nothing collides, nothing is
predicted twice, summary.csv lists every scan, and the outputs equal a single process's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autosr.cli import main
from autosr.io import read_image
from autosr.io.atomic import TEMP_MARKER

EXAMPLES = Path(__file__).resolve().parents[1] / "documentation" / "examples"
PARTS = 3


@pytest.fixture
def package_and_scans(trained_phantom, tmp_path, monkeypatch):
    for name in ("AUTOSR_RAW", "AUTOSR_PREPROCESSED", "AUTOSR_RESULTS"):
        monkeypatch.delenv(name, raising=False)
    package = tmp_path / "model.zip"
    args = ["export-model", "-d", "999", "-c", "2d", "-f", "0", "1", "-o", str(package), *trained_phantom["flags"]]
    assert main(args) == 0
    raw = trained_phantom["raw"] / "Dataset999_Phantom"
    scans = tmp_path / "scans"
    scans.mkdir()
    sources = sorted((raw / "imagesTr").glob("*_0000.nii.gz"))[:5] + sorted((raw / "imagesTs").glob("*_0000.nii.gz"))
    for i, source in enumerate(sources):
        shutil.copyfile(source, scans / f"scan{i:02d}_0000.nii.gz")
    return package, scans, [f"scan{i:02d}" for i in range(len(sources))]


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOSR_", "SLURM_"))}
    env.update(AUTOSR=f"{sys.executable} -m autosr.cli", OMP_NUM_THREADS="1", **extra)
    return env


def _check_folder(out: Path, cases: list[str]) -> dict[str, np.ndarray]:
    table = pd.read_csv(out / "summary.csv")
    assert sorted(table["case"]) == cases and (table["status"] == "predicted").all()
    assert sorted(table["part"].value_counts().tolist()) == [2, 2, 3] and table["part"].nunique() == PARTS
    leftovers = [p for p in out.rglob("*") if TEMP_MARKER in p.name]
    assert not leftovers, leftovers
    return {c: read_image(out / f"{c}.nii.gz")[0] for c in cases}


def test_slurm_array_and_several_gpus_recipes_share_one_output_folder(package_and_scans, tmp_path):
    package, scans, cases = package_and_scans
    array_out = tmp_path / "array_out"
    tasks = [
        subprocess.Popen(
            [
                "bash",
                str(EXAMPLES / "predict_array.sbatch"),
                str(package),
                str(scans),
                str(array_out),
                "--device",
                "cpu",
            ],
            env=_environment(SLURM_ARRAY_TASK_ID=str(k), SLURM_ARRAY_TASK_COUNT=str(PARTS), SLURM_CPUS_PER_TASK="2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(PARTS)
    ]
    logs = [task.communicate(timeout=900)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0] * PARTS, logs
    from_array = _check_folder(array_out, cases)

    gpus_out = tmp_path / "gpus_out"
    result = subprocess.run(
        ["bash", str(EXAMPLES / "predict_gpus.sh"), str(package), str(scans), str(gpus_out), "--device", "cpu"],
        env=_environment(GPUS="0 1 2", WORKERS_PER_GPU="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in (gpus_out / "logs").iterdir()) == ["part0.log", "part1.log", "part2.log"]
    from_gpus = _check_folder(gpus_out, cases)

    # one process, all scans, with the parts' thread count: the same outputs bit for bit. What is promised is
    # equality at equal torch/OpenMP thread counts (documentation/inference.md, "Many machines"): a sum over
    # another number of threads may round differently, so the reference runs in a process of its own with the
    # parts' environment, whatever threads this test process happens to use.
    single_out = tmp_path / "single_out"
    args = ["predict", "--model", str(package), "-i", str(scans), "-o", str(single_out), "--device", "cpu"]
    single_run = subprocess.run(
        [sys.executable, "-m", "autosr.cli", *args, "--num-workers", "0"],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert single_run.returncode == 0, single_run.stdout + single_run.stderr
    for case in cases:
        single = read_image(single_out / f"{case}.nii.gz")[0]
        assert np.array_equal(from_array[case], single) and np.array_equal(from_gpus[case], single)
